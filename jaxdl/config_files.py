"""Running config and experiment files: trusted Python executed as a module, with failures reported as
:class:`~jaxdl.errors.ConfigError` naming the file and the line (re-exported by :mod:`jaxdl.config`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from jaxdl.errors import ConfigError


def _python_failure(path: Path, e: BaseException, what: str) -> ConfigError:
    """A ConfigError naming the config file, the line in it and the exception that running it raised."""
    import traceback

    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) and e.filename == str(path) else None
    for frame in traceback.extract_tb(e.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    where = f"{path}, line {line}" if line else str(path)
    text = str(e.msg if isinstance(e, SyntaxError) else e).strip()
    return ConfigError(f"{where}: {what} raised {type(e).__name__}" + (f": {text}" if text else ""))


def load_module(path: str | Path):
    """Run a config or experiment file (trusted Python) as a module. A file that fails to run — a syntax error, an
    exception at import — raises ConfigError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"jaxdl_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 — a user's file can raise anything
        raise _python_failure(path.resolve() if not path.is_absolute() else path, e, "running the file") from e
    return module


def call_file(path: str | Path, fn, *args: Any) -> Any:
    """``fn(*args)`` — a function defined in the config or experiment file ``path`` (``get_config``,
    ``get_sweep``); an exception other than a jaxdl error becomes a ConfigError naming the file and the line."""
    from jaxdl.errors import JaxdlError

    try:
        return fn(*args)
    except JaxdlError:
        raise
    except Exception as e:  # noqa: BLE001
        path = Path(path)
        raise _python_failure(path.resolve() if not path.is_absolute() else path, e,
                              f"{getattr(fn, '__name__', 'the function')}()") from e
