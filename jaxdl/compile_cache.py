"""JAX's persistent compilation cache under jaxdl's cache directory, and a count of what was compiled.

A second process that trains the same structure loads its compiled programs from disk instead of compiling them
again: :func:`enable` points JAX's own persistent cache at ``$JAXDL_CACHE_DIR/xla`` (default ``~/.cache/jaxdl/xla``,
next to the timing probe's decisions) and lowers JAX's thresholds to zero, so the small programs of a CPU run are
cached too (by default JAX only keeps programs that took over a second to compile).

What a user set stays theirs: a cache directory given to JAX (``jax_compilation_cache_dir``, e.g. through the
``JAX_COMPILATION_CACHE_DIR`` environment variable) is used as it is, with the user's thresholds, and
``JAXDL_COMPILATION_CACHE=0`` turns jaxdl's cache off.

:func:`counting` counts compilations with ``jax.monitoring`` events: every XLA compile request of a ``jit`` records a
backend-compile duration (a cache hit included: the request is timed around the cache lookup) and a hit records
``/jax/compilation_cache/cache_hits``; a program compiled anew is a request that was not a hit.

JAX's cache keys include the directory's path (XLA's GPU autotuning-cache option is derived from it and hashed into
the key): a cache directory that is moved or copied elsewhere starts cold.

The cache is trusted code: like any compilation cache, point it only at a directory no one else can write to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Iterator

import jax

ENV_SWITCH = "JAXDL_COMPILATION_CACHE"
SUBDIR = "xla"

# jax.monitoring event names (jax/_src/dispatch.py, jax/_src/compiler.py, jax/_src/compilation_cache.py)
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
CACHE_MISS_EVENT = "/jax/compilation_cache/cache_misses"  # recorded when a new entry is written
CACHE_REQUEST_EVENT = "/jax/compilation_cache/compile_requests_use_cache"

_OFF = ("0", "false", "no", "off")
_THRESHOLDS = {"jax_persistent_cache_min_compile_time_secs": 0.0, "jax_persistent_cache_min_entry_size_bytes": -1}
# the directory jaxdl set (None: none) and the thresholds it replaced
_STATE: dict = {"dir": None, "replaced": {}}


def disabled_by_env() -> bool:
    """``JAXDL_COMPILATION_CACHE`` is 0/false/no/off."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() in _OFF


def default_dir() -> Path:
    """``$JAXDL_CACHE_DIR/xla`` (``~/.cache/jaxdl/xla``): the directory of :func:`jaxdl.train.probe.cache_file`."""
    root = os.environ.get("JAXDL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "jaxdl")
    return Path(root) / SUBDIR


def enable() -> Path | None:
    """Turn on JAX's persistent compilation cache under jaxdl's cache directory; returns the directory in use, or
    None when it is off (``JAXDL_COMPILATION_CACHE=0``, ``jax_enable_compilation_cache=False``, or a directory that
    cannot be created).

    Idempotent: call it at every entry point. A directory the user gave JAX is kept with the user's thresholds;
    otherwise the cache goes to ``$JAXDL_CACHE_DIR/xla`` and every program is kept, however small or fast to
    compile. The directory is not bounded (JAX's default; delete it to clear it): JAX's LRU eviction reads an access-time
    file beside every entry, and one entry written by a process without eviction (another tool, an older jaxdl, a user's
    own settings) made every later write of the evicting processes fail. When ``JAXDL_CACHE_DIR`` changes between
    calls, the cache follows it.
    """
    if disabled_by_env() or not jax.config.jax_enable_compilation_cache:
        return None
    current = jax.config.jax_compilation_cache_dir
    if current and current != _STATE["dir"]:  # the user's own cache: theirs to configure
        return Path(current)
    path = default_dir()
    if current == str(path):
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    # JAX's defaults keep only programs that compiled for over a second: a CPU run's small programs would be
    # compiled again in every process (-1: no minimum entry size)
    settings = dict(_THRESHOLDS)
    for name, value in settings.items():
        if not current:
            _STATE["replaced"][name] = getattr(jax.config, name)
        jax.config.update(name, value)
    if current:  # jaxdl's directory moved ($JAXDL_CACHE_DIR changed): JAX opens a cache once, so reopen it
        _reset_jax_cache()
    _STATE["dir"] = str(path)
    return path


def enabled() -> bool:
    """Whether :func:`enable` turned the cache on in this process (library code follows this choice; it never
    enables the cache in a user's own process by itself)."""
    return _STATE["dir"] is not None


def disable() -> None:
    """Undo :func:`enable` (only what jaxdl set: a user's own cache directory stays)."""
    if _STATE["dir"] is not None and jax.config.jax_compilation_cache_dir == _STATE["dir"]:
        jax.config.update("jax_compilation_cache_dir", None)
        for name, value in _STATE["replaced"].items():
            jax.config.update(name, value)
        _reset_jax_cache()
    _STATE["dir"], _STATE["replaced"] = None, {}


def _reset_jax_cache() -> None:
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()


@dataclasses.dataclass
class CompileCount:
    """What was compiled while :func:`counting` was open.

    ``requests``: XLA compile requests (one per new jitted program and shape in this process); ``cache_hits``: of
    those, loaded from the persistent cache; ``compiled``: compiled anew (``requests - cache_hits``);
    ``cache_writes``: new entries written to the cache; ``traced``: Python functions traced to jaxprs;
    ``compile_s``: seconds spent in the requests (compiling or loading)."""

    requests: int = 0
    cache_hits: int = 0
    cache_writes: int = 0
    traced: int = 0
    compile_s: float = 0.0

    @property
    def compiled(self) -> int:
        return self.requests - self.cache_hits

    def as_dict(self) -> dict[str, float]:
        return {"compiled": self.compiled, "cache_hits": self.cache_hits, "requests": self.requests,
                "cache_writes": self.cache_writes, "traced": self.traced, "compile_s": round(self.compile_s, 4)}


@contextlib.contextmanager
def counting() -> Iterator[CompileCount]:
    """Count compilations (see :class:`CompileCount`) while the block runs, in every thread of this process.

    >>> with counting() as n:
    ...     jax.jit(lambda x: x + 1)(1.0)
    >>> n.compiled + n.cache_hits
    1
    """
    count = CompileCount()

    def on_event(event: str, **_):
        if event == CACHE_HIT_EVENT:
            count.cache_hits += 1
        elif event == CACHE_MISS_EVENT:
            count.cache_writes += 1

    def on_duration(event: str, seconds: float, **_):
        if event == BACKEND_COMPILE_EVENT:
            count.requests += 1
            count.compile_s += seconds
        elif event == TRACE_EVENT:
            count.traced += 1

    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_listener(on_event)
        jax.monitoring.unregister_event_duration_listener(on_duration)
