"""What a sweep defined from Python hands its executors: in-memory data and a user's model, made available to every
worker (inline, a process pool, Ray tasks on other nodes) through the sweep directory.

- **Data.** An :class:`~jaxdl.data.ArraySource` (``jaxdl.data.from_arrays(...)``) is written once to
  ``SWEEP_DIR/data/<fingerprint[:16]>.npz`` and every run's config reads it back as the registered data set
  ``arrays`` (``data.name="arrays"``, ``data.root=<that file>``). Workers need no registry of the parent's, and run
  ids follow the data's content (the path holds its fingerprint).
- **Model.** A user's model (Linen module, NNX module or constructor, jaxdl Model) is pickled to
  ``SWEEP_DIR/model.pkl`` (with ``cloudpickle`` when it is importable, else ``pickle``) for the process and Ray
  executors; the inline executor passes the object itself. Its identity (:func:`model_key`) enters the run ids, so a
  different model trains anew instead of reusing another model's results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

from jaxdl.config import Config
from jaxdl.errors import ConfigError

MODEL_FILE = "model.pkl"
DATA_DIR = "data"


def _atomic_write(path: Path, write) -> None:
    """``write(f)`` to a temporary file beside ``path``, then rename it into place (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def is_dataset(data: Any) -> bool:
    return hasattr(data, "train") and hasattr(data, "val") and hasattr(data, "test")


def data_file(source, sweep_dir: str | Path) -> Path:
    """Write ``source`` (an ArraySource) once into the sweep directory; returns the absolute path of its ``.npz``."""
    path = (Path(sweep_dir) / DATA_DIR / f"{source.fingerprint()[:16]}.npz").resolve()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            source.save(tmp)  # a file object inside: no ".npz" is appended to the temporary name
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return path


def with_data(base: Config, data: Any, sweep_dir: str | Path) -> Config:
    """``base`` reading ``data`` (a ``from_arrays`` source) from its file in the sweep directory."""
    if data is None:
        return base
    if is_dataset(data):
        raise ConfigError(
            f"run_sweep(data=...): got a split Dataset ({getattr(data, 'name', '?')!r}); a sweep needs the data "
            "before splitting, so every worker (and every rerun) loads the same arrays and splits them as each "
            "run's config says: pass jaxdl.data.from_arrays(...) (e.g. from_arrays(x=X, y=y, name='mydata'))")
    if not (hasattr(data, "fingerprint") and hasattr(data, "save")):
        raise ConfigError(f"run_sweep(data=...): expected jaxdl.data.from_arrays(...), got {type(data).__name__}")
    path = data_file(data, sweep_dir)
    return dataclasses.replace(base, data=dataclasses.replace(base.data, name="arrays", root=str(path)))


# --------------------------------------------------------------------------------------------------------------------
# A user's model
# --------------------------------------------------------------------------------------------------------------------


def model_label(model: Any) -> str:
    """The name runs record for a user's model (what ``summary.json``'s ``model`` will say)."""
    from jaxdl.models import as_model

    try:
        return as_model(model).name
    except Exception:  # noqa: BLE001 — a model that needs its data to be built: name it by its type
        return getattr(model, "__name__", type(model).__name__).lower()


def model_key(model: Any) -> str:
    """A stable identity of a user's model for run ids and probe caches: its type's qualified name and, for a Linen
    module (a dataclass), its fields; for an NNX constructor its qualified name. Changing the model (its class or
    its fields) changes the runs' ids."""
    kind = type(model)
    parts = [kind.__module__, kind.__qualname__]
    try:
        import flax.linen as nn

        if isinstance(model, nn.Module):
            parts.append(repr(model))
    except ImportError:  # pragma: no cover
        pass
    if callable(model) and hasattr(model, "__qualname__"):
        parts += [getattr(model, "__module__", ""), model.__qualname__]
    from jaxdl.models import Model

    if isinstance(model, Model):
        parts.append(model.name)
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _user_modules(model: Any) -> list[Any]:
    """The modules defining ``model`` (its class, or the function itself) that a worker may be unable to import: a
    script, a test file, a notebook's helper module — anything but jaxdl, Flax, JAX and installed packages.
    cloudpickle ships their definitions by value, so a Ray worker on another node (or without the caller's
    ``sys.path``) needs only the pickle."""
    import sys

    found = []
    for obj in (type(model), model):
        name = getattr(obj, "__module__", None)
        module = sys.modules.get(name or "")
        if module is None or name == "__main__" or name.split(".")[0] in ("jaxdl", "flax", "jax", "builtins"):
            continue
        path = getattr(module, "__file__", None) or ""
        if not path or "site-packages" in path or "dist-packages" in path or path.startswith(sys.base_prefix):
            continue
        if module not in found:
            found.append(module)
    return found


def _dumps(model: Any) -> bytes:
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover — cloudpickle comes with Ray
        return pickle.dumps(model)
    modules = [m for m in _user_modules(model) if m.__name__ not in cloudpickle.list_registry_pickle_by_value()]
    for m in modules:
        cloudpickle.register_pickle_by_value(m)
    try:
        return cloudpickle.dumps(model)
    finally:
        for m in modules:
            cloudpickle.unregister_pickle_by_value(m)


def save_model(model: Any, sweep_dir: str | Path, executor: str) -> Path:
    """Pickle ``model`` to ``SWEEP_DIR/model.pkl`` for worker processes; ConfigError naming the problem if it
    cannot be pickled."""
    try:
        blob = _dumps(model)
        pickle.loads(blob)
    except Exception as e:  # noqa: BLE001 — anything pickling raises: say which model and why
        raise ConfigError(
            f"run_sweep(model=...): the {type(model).__name__} model cannot be pickled for the {executor!r} "
            f"executor ({type(e).__name__}: {e}); define it at module level in an importable file, or run with "
            "executor='inline'") from None
    path = (Path(sweep_dir) / MODEL_FILE).resolve()
    _atomic_write(path, lambda f: f.write(blob))
    return path


def load_model(path: str | Path) -> Any:
    """The user's model a sweep pickled (in a worker)."""
    with open(path, "rb") as f:
        return pickle.load(f)


def check_model_axes(spec_points, model: Any) -> None:
    """A user's model replaces ``cfg.model``: a sweep that also varies ``model`` settings would vary nothing."""
    if model is None:
        return
    for p in spec_points:
        bad = [k for k in p.overrides if k == "model" or k.startswith("model.")]
        if bad:
            raise ConfigError(f"run_sweep(model=...): the sweep sets {bad[0]!r}, but a user's model replaces "
                              "cfg.model, so model settings have no effect; drop that axis (sweep several models by "
                              "running one sweep per model)")
