"""The timing probe: which driver (scan or host) — and, in a sweep, whether to fuse a group — is measured, not assumed.

A candidate is compiled and timed on a copy of the state for a small fraction of the work it decides; close
candidates are re-timed in alternation (:func:`race`) so a burst of load on a shared machine cannot decide alone.
Decisions are cached in ``$JAXDL_CACHE_DIR`` (``~/.cache/jaxdl``) per model signature, device kind and jaxdl version;
the cache files are JSON, written atomically under a lock (several sweep workers share them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

import jaxdl
from jaxdl.train.drivers import RUNNERS

# Timed probes (driver choice, fuse or not): segments of about PROBE_SEGMENT_S until PROBE_BUDGET_S is spent.
PROBE_SEGMENT_S = 0.1
PROBE_BUDGET_S = 0.3
# ... or, when the work a candidate decides is known, PROBE_FRACTION of it (at least PROBE_MIN_S); at least
# PROBE_MIN_SEGMENTS timed segments unless one step alone exceeds the budget.
PROBE_FRACTION = 0.01
PROBE_MIN_S = 0.1
PROBE_MIN_SEGMENTS = 3
# Candidates within RACE_WITHIN× of each other are re-timed in alternation: at least RACE_ROUNDS rounds and RACE_MIN_S
# seconds, stopping early after a round that leaves the leader RACE_CLEAR× ahead of the next (see race).
RACE_WITHIN = 4.0
RACE_ROUNDS = 3
RACE_MIN_S = 0.2
RACE_CLEAR = 1.5
# The scan driver is probed only when a host-driven step is faster than this (see probe_drivers).
SCAN_PROBE_BELOW_S = 2e-3


def speed_fields(model_cfg: Any) -> dict[str, Any]:
    """A model config's fields that shape a step's cost, for probe cache keys: all but the dropout rate (a number;
    whether dropout is on at all is keyed separately)."""
    return {k: v for k, v in dataclasses.asdict(model_cfg).items() if k != "dropout"}


def probe_key(s, members: int) -> str:
    device = jax.devices()[0]
    model_fields = speed_fields(s.model.config) if s.model.config is not None else {"user_model": s.model.name}
    sig = {"model": model_fields, "input": {k: [list(v[0]), str(v[1])] for k, v in
                                            s.dataset.train.example_spec().items()}, "task": s.task.name,
           "batch": s.cfg.train.batch_size, "optim": s.cfg.optim.name, "chunk": s.cfg.train.chunk_steps,
           "members": members if s.fused else 1, "dropout": s.dropout,
           "device": f"{device.platform}:{device.device_kind}",
           "jax": jax.__version__}
    return hashlib.sha1(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_file(name: str) -> Path:
    """A file in jaxdl's cache directory (``$JAXDL_CACHE_DIR`` or ``~/.cache/jaxdl``)."""
    root = os.environ.get("JAXDL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "jaxdl")
    return Path(root) / name


def _versioned(key: str) -> str:
    # decisions measured by other code are not reused: every entry is keyed by the jaxdl version too
    return f"{jaxdl.__version__}:{key}"


def _read_all(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_cache(name: str) -> dict[str, Any]:
    """The cache's entries for this jaxdl version, by key (a missing or unreadable file is an empty cache)."""
    prefix = _versioned("")
    return {k[len(prefix):]: v for k, v in _read_all(cache_file(name)).items() if k.startswith(prefix)}


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path.lock`` (a no-op where ``fcntl`` is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover — non-POSIX
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_cache(name: str, key: str, record: dict[str, Any]) -> None:
    """Add ``record`` under ``key``: read-modify-write under a lock, then an atomic rename, so concurrent writers
    never leave a torn file or lose each other's entries. A cache that cannot be written is skipped silently."""
    path = cache_file(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            cache = _read_all(path)
            cache[_versioned(key)] = record
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(cache, f, indent=1)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except OSError:
        pass


class _CompileClock:
    """Seconds JAX spends tracing, lowering and compiling while the context is open (``jax.monitoring`` events)."""

    def __init__(self):
        self.seconds = 0.0
        self.available = hasattr(jax.monitoring, "unregister_event_duration_listener")

    def _listen(self, event: str, duration: float, **_):
        if event.startswith("/jax/core/compile/"):
            self.seconds += duration

    def __enter__(self):
        if self.available:
            jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc):
        if self.available:
            jax.monitoring.unregister_event_duration_listener(self._listen)


class Timing:
    """Timed segments of one compiled candidate (a runner) on its own copy of ``state``.

    Creating it runs one step, which compiles the program (every segment length shares it); what that call spent
    beyond compiling (``jax.monitoring`` compile events) estimates the step's cost. Each :meth:`segment` then runs
    ``steps`` steps of a new epoch and keeps the fastest per-step time in ``per_step``; the next segment is sized to
    take about ``target_s`` (at most ``max_steps`` steps)."""

    def __init__(self, run, state, active, hp, seeds: list[int], max_steps: int):
        self._run, self._hp, self._seeds, self.max_steps = run, hp, seeds, max_steps
        self._state = jax.tree.map(jnp.copy, state)
        t0 = time.perf_counter()
        with _CompileClock() as clock:
            self._state, self._active, m = run(self._state, active, hp, seeds, 0, 0, 1)
            jax.block_until_ready(m)
        first = time.perf_counter() - t0
        self.compile_s = clock.seconds if clock.available else 0.0
        self.first_step_s = first - self.compile_s if clock.available else None
        self.per_step, self.spent, self.segments, self.steps = float("inf"), 0.0, 0, 1

    def segment(self, target_s: float) -> float:
        # each segment starts a new epoch, as training segments regularly do: drawing the members' epoch order (and
        # moving it to the device) is part of what a segment costs — once per member one by one, once per group fused
        epoch = self.segments + 1
        t0 = time.perf_counter()
        self._state, self._active, m = self._run(self._state, self._active, self._hp, self._seeds, epoch, 1,
                                                 self.steps)
        jax.block_until_ready(m)
        took = time.perf_counter() - t0
        self.per_step = min(self.per_step, took / self.steps)
        self.spent, self.segments = self.spent + took, self.segments + 1
        self.steps = int(max(1, min(self.max_steps, target_s / max(self.per_step, 1e-9))))
        return took


def time_runner(run, state, active, hp, seeds: list[int], max_steps: int, budget_s: float = PROBE_BUDGET_S,
                segment_s: float = PROBE_SEGMENT_S, work_steps: int | None = None) -> Timing:
    """Time ``run`` on a copy of ``state``: see :class:`Timing` (``.compile_s``, ``.per_step``).

    Segments of about ``segment_s`` run until the budget is spent and at least ``PROBE_MIN_SEGMENTS`` segments ran;
    the fastest counts. The budget is ``budget_s`` or, when ``work_steps`` (the steps this candidate would run if
    chosen) is given, ``PROBE_FRACTION`` of the work it decides if that is less (but at least ``PROBE_MIN_S``): a
    probe never costs much next to a short run. A step that alone exceeds the budget is not run again — enough to
    rank it: a slow candidate (e.g. a vmapped convolution on a CPU) costs its compilation and one step."""

    def budget(per_step: float) -> float:
        if work_steps is None:
            return budget_s
        return min(budget_s, max(PROBE_MIN_S, PROBE_FRACTION * work_steps * per_step))

    t = Timing(run, state, active, hp, seeds, max_steps)
    if t.first_step_s is not None and t.first_step_s >= budget(t.first_step_s):
        t.per_step = t.first_step_s
        return t
    while True:
        took = t.segment(min(segment_s, budget(t.per_step) / 2))
        if t.spent >= budget(t.per_step) and (t.segments >= PROBE_MIN_SEGMENTS or took >= budget(t.per_step)):
            return t


def race(timings: list[Timing], scale: list[float] | None = None, rounds: int = RACE_ROUNDS,
         clear: float = RACE_CLEAR, min_s: float = RACE_MIN_S) -> int:
    """Re-time close candidates in alternation, so a burst of load on a shared machine cannot decide alone.

    Only when the (``scale``-weighted) per-step times are within ``RACE_WITHIN`` of each other: rounds of one segment
    per candidate, keeping every candidate's fastest time, until ``rounds`` rounds have run and they took ``min_s``
    seconds (a close call between millisecond segments gets many alternations for a fifth of a second) — or earlier,
    after any round that leaves the leader ``clear``× ahead of the runner-up (every candidate then has a steady-state
    time, and a lead that wide is not load noise). A first estimate can be a lone first step, slower than the steady
    state, so one round always runs. Returns the rounds run."""
    if len(timings) < 2:
        return 0
    scale = scale or [1.0] * len(timings)

    def costs() -> list[float]:
        return sorted(t.per_step * k for t, k in zip(timings, scale))

    if costs()[-1] > RACE_WITHIN * costs()[0]:
        return 0
    t0, done = time.perf_counter(), 0
    while True:
        for t in timings:
            t.segment(min(PROBE_SEGMENT_S, t.per_step * t.steps))
        done += 1
        best, runner_up = costs()[:2]
        if runner_up >= clear * best or (done >= rounds and time.perf_counter() - t0 >= min_s):
            return done


def choose_driver(s, state, active, hp, seeds: list[int], runner=None, work_steps: int | None = None
                  ) -> tuple[str, dict[str, Any]]:
    """Pick the scan or host driver. ``auto`` times the candidates on copies of ``state`` (cached per signature);
    ``work_steps``: the steps the choice will run (default: this run's)."""
    if s.cfg.train.driver != "auto":
        return s.cfg.train.driver, {"chosen": s.cfg.train.driver, "how": "config"}
    if jax.process_count() > 1:  # every process must run the same driver, and each feeds only its own rows
        return "host", {"chosen": "host", "how": "multi-process: each process feeds its own rows of every batch"}
    key = probe_key(s, len(seeds))
    cached = read_cache("driver_probe.json").get(key)
    if cached:
        return cached["chosen"], {**cached, "how": "cached probe"}
    record, _ = probe_drivers(s, state, active, hp, seeds, runner or (lambda name: RUNNERS[name](s)), work_steps)
    write_cache("driver_probe.json", key, record)
    return record["chosen"], {**record, "how": "probe"}


def probe_steps(s) -> int:
    """The longest timed segment a probe may run: one chunk, within the first epoch and the run."""
    return max(1, min(s.cfg.train.chunk_steps, s.steps_per_epoch - 1, s.total_steps - 1))


def probe_drivers(s, state, active, hp, seeds: list[int], runner, work_steps: int | None = None
                  ) -> tuple[dict[str, Any], dict[str, Timing]]:
    """With ``train.driver=auto``, time the host driver, and the scan driver only where it could win: what scan saves
    is the per-step dispatch and transfer, so a host step slower than ``SCAN_PROBE_BELOW_S`` leaves it nothing worth
    a compilation. Otherwise time the configured driver.
    ``work_steps``: the steps the chosen driver will run (default: this run's), which bounds the timing.
    Returns ``({"chosen", "seconds_per_step": {driver: s}, "compile_s": {driver: s}, "skipped"?}, {driver: Timing})``.
    """
    n = probe_steps(s)
    clocks: dict[str, Timing] = {}
    record: dict[str, Any] = {"probe_steps": n}
    candidates = ("host", "scan") if s.cfg.train.driver == "auto" else (s.cfg.train.driver,)
    for name in candidates:
        if name == "scan" and "host" in clocks and clocks["host"].per_step >= SCAN_PROBE_BELOW_S:
            record["skipped"] = (f"scan not probed: a host step takes {clocks['host'].per_step * 1e3:.1f} ms "
                                 f"(>= {SCAN_PROBE_BELOW_S * 1e3:g} ms)")
            continue
        clocks[name] = time_runner(runner(name), state, active, hp, seeds, n, work_steps=work_steps or s.total_steps)
    rounds = race(list(clocks.values()))
    timings = {name: t.per_step for name, t in clocks.items()}
    compile_s = {name: t.compile_s for name, t in clocks.items()}
    record.update(chosen=min(timings, key=timings.get), seconds_per_step=timings, compile_s=compile_s,
                  race_rounds=rounds)
    return record, clocks

