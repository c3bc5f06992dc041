"""``fit(config)``: the training loop.

One plain function drives a run: build data, model, loss and optimizer from the config; check shapes with
``jax.eval_shape`` before compiling; then run the compiled step in *segments* — stretches of steps that end at a
chunk boundary, an epoch end, an evaluation or a checkpoint. Between segments it evaluates, logs, checkpoints, checks
early stopping and stops on a non-finite loss.

Two drivers run a segment (``train.driver``):

- ``scan``: the training set lives on the device; ``lax.scan`` runs up to ``train.chunk_steps`` steps per dispatch.
- ``host``: one jitted step per dispatch, fed by a background thread that prefetches device batches — for data that
  does not fit on the device, and for models whose loop bodies XLA compiles poorly (convolutions on CPU).
- ``auto``: a short timed probe of both picks the faster; the choice is cached per model signature and device kind.

Both drivers see the same batches: the permutation of epoch ``e`` is ``epoch_permutation(n, seed, e)``, so the data
position is a function of the step alone and a resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import data as data_lib
from jaxdl import augment as augment_lib
from jaxdl import models, optim, parallel, transfer
from jaxdl.checkpoint import Checkpointer
from jaxdl.config import Config, check_types
from jaxdl.errors import CheckpointError, ConfigError, DivergenceError, JaxdlError
from jaxdl.train import rundir
from jaxdl.train.step import (TrainState, init_state, make_eval_step, make_hparams, make_loss, make_train_step,
                              signature, uses_dropout)

DRIVERS = ("auto", "scan", "host")
MONITORS = ("val/loss", "val/accuracy", "train/loss", "train/accuracy")


@dataclasses.dataclass
class FitResult:
    run_dir: Path
    summary: dict[str, Any]
    state: TrainState
    config: Config


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    """Everything derived from a config before training starts."""

    cfg: Config
    dataset: data_lib.Dataset
    model: models.Model
    optimizer: optim.Optimizer
    hparams: dict[str, jax.Array]
    train_step: Any
    eval_step: Any
    steps_per_epoch: int
    total_steps: int
    fused: bool = False  # a population trained as one vmapped program
    dropout: bool = True  # the step draws dropout masks (False: every member's rate is 0, see uses_dropout)


def validate(cfg: Config) -> None:
    check_types(cfg)
    t = cfg.train
    if t.driver not in DRIVERS:
        raise ConfigError(f"train.driver: expected one of {', '.join(DRIVERS)}, got {t.driver!r}")
    for key in ("batch_size", "epochs", "chunk_steps", "eval_batch_size", "keep_checkpoints", "prefetch"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key}: expected a positive integer, got {getattr(t, key)}")
    for key in ("steps", "eval_every", "checkpoint_every"):
        value = getattr(t, key)
        if value is not None and value < 1:
            raise ConfigError(f"train.{key}: expected a positive integer or none, got {value}")
    es = t.early_stopping
    if es.monitor not in MONITORS:
        raise ConfigError(f"train.early_stopping.monitor: expected one of {', '.join(MONITORS)}, got {es.monitor!r}")
    if es.mode not in ("auto", "min", "max"):
        raise ConfigError(f"train.early_stopping.mode: expected auto, min or max, got {es.mode!r}")
    if t.batch_stats not in ("update", "frozen"):
        raise ConfigError(f"train.batch_stats: expected 'update' or 'frozen', got {t.batch_stats!r}")
    if es.patience < 1:
        raise ConfigError(f"train.early_stopping.patience: expected >= 1, got {es.patience}")
    optim.validate(cfg.optim)


def setup(cfg: Config, dataset: data_lib.Dataset | None = None, dropout: bool | None = None) -> Setup:
    """Load data and build the model, loss, optimizer and steps; check shapes abstractly before compiling.

    ``dropout``: whether the step draws dropout masks; default: whether ``cfg`` has a nonzero rate. A group of runs
    passes ``uses_dropout(cfgs)``, so members with rates 0 and 0.3 share one step (rate 0 keeps everything).
    """
    validate(cfg)
    ds = dataset if dataset is not None else data_lib.load(cfg.data)
    model = models.from_config(cfg.model, num_classes=ds.num_classes, input_shape=ds.input_shape)
    n_out = model.config.num_classes
    if n_out != 1 and n_out < ds.num_classes:
        raise ConfigError(f"model.num_classes={n_out} but data set {ds.name!r} has {ds.num_classes} classes")
    n_train = len(ds.train)
    if cfg.train.batch_size > n_train:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} exceeds the {n_train} training examples of "
                          f"{ds.name!r}")
    steps_per_epoch = n_train // cfg.train.batch_size
    total = cfg.train.steps if cfg.train.steps is not None else cfg.train.epochs * steps_per_epoch
    optimizer = optim.build(cfg.optim, total)
    loss_fn = make_loss(cfg.loss, model, ds.num_classes)
    hp = make_hparams(cfg)
    dropout = uses_dropout([cfg]) if dropout is None else dropout
    train_step = make_train_step(model, optimizer, loss_fn, augment_lib.make_augment(cfg.augment, ds.num_classes),
                                 model_train_mode=cfg.train.batch_stats == "update", dropout=dropout)
    eval_step = make_eval_step(model, loss_fn)
    s = Setup(cfg, ds, model, optimizer, hp, train_step, eval_step, steps_per_epoch, total, dropout=dropout)
    check_shapes(s)
    return s


def abstract_batch(s: Setup, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    x, y = s.dataset.train.x, s.dataset.train.y
    return {"x": jax.ShapeDtypeStruct((batch_size, *x.shape[1:]), x.dtype),
            "y": jax.ShapeDtypeStruct((batch_size, *y.shape[1:]), y.dtype)}


def check_shapes(s: Setup) -> None:
    """Trace init and one step abstractly (``jax.eval_shape``): errors surface before anything compiles."""
    batch = abstract_batch(s, s.cfg.train.batch_size)
    example = jax.ShapeDtypeStruct((1, *batch["x"].shape[1:]), batch["x"].dtype)
    params = jax.eval_shape(s.model.init, jax.random.PRNGKey(0), example)["params"]
    optim.check_groups(s.cfg.optim, params)
    state = jax.eval_shape(lambda x: init_state(s.model, s.optimizer, x, 0, s.hparams), batch["x"])
    jax.eval_shape(s.train_step, state, batch, s.hparams)


def initial_state(s: Setup) -> TrainState:
    example = jnp.zeros((1, *s.dataset.input_shape), s.dataset.train.x.dtype)
    return jax.jit(lambda: init_state(s.model, s.optimizer, example, s.cfg.seed, s.hparams))()


def stack_hparams(cfgs: list[Config]) -> dict[str, jax.Array]:
    """Per-member hyperparameters as arrays with a leading population axis."""
    each = [make_hparams(c) for c in cfgs]
    return {k: jnp.stack([h[k] for h in each]) for k in each[0]}


def stack_members(trees: list[Any]) -> Any:
    """Member pytrees stacked on a leading population axis, on the host (numpy; no device program per leaf)."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def member(tree: Any, i: int) -> Any:
    """Member ``i`` of a stacked (population) pytree. Give it host (numpy) arrays in loops: slicing device arrays
    eagerly compiles one small program per leaf shape."""
    return jax.tree.map(lambda x: x[i], tree)


# --------------------------------------------------------------------------------------------------------------------
# Drivers. A runner is ``run(state, active, epoch, offset, length) -> (state, active, metrics)``; metrics are host
# (numpy) arrays of shape (length,) for a single run and (length, P) for a population. In a population, a member
# whose loss turns non-finite and a member that is no longer ``active`` (stopped early) keep their previous state:
# updates are masked per member.
# --------------------------------------------------------------------------------------------------------------------


def _select(keep: jax.Array, new: Any, old: Any) -> Any:
    def pick(n, o):
        return jnp.where(keep.reshape(keep.shape + (1,) * (n.ndim - keep.ndim)), n, o)

    return jax.tree.map(pick, new, old)


def _advance(s: Setup, fused: bool):
    """One step of a single run, or of a population (vmapped, with per-member masking)."""
    if not fused:
        def single(state, active, batch, hp):
            state, metrics = s.train_step(state, batch, hp)
            return state, active, metrics

        return single
    vstep = jax.vmap(s.train_step)

    def population(state, active, batch, hp):
        new, metrics = vstep(state, batch, hp)
        ok = active & jnp.isfinite(metrics["loss"])
        return _select(ok, new, state), ok, {**metrics, "active": active}

    return population


def _perms(s: Setup, seeds: list[int], epoch: int) -> np.ndarray:
    """Epoch order of each member, (P, n) — or (n,) for a single run."""
    n = len(s.dataset.train)
    perms = np.stack([data_lib.epoch_permutation(n, seed, epoch) for seed in seeds]).astype(np.int32)
    return perms[0] if len(seeds) == 1 and not s.fused else perms


def _scan_runner(s: Setup):
    """Up to K steps per dispatch with ``lax.scan``; the training set lives on the device.

    The scan always has K = min(chunk_steps, steps per epoch, total steps) iterations and runs the first ``n``
    of them (a ``lax.cond`` skips the rest), so segments of every length share one compiled program.
    """
    batch_size = s.cfg.train.batch_size
    chunk_len = max(1, min(s.cfg.train.chunk_steps, s.steps_per_epoch, s.total_steps))
    x_all = jax.device_put(s.dataset.train.x)
    y_all = jax.device_put(s.dataset.train.y)
    advance = _advance(s, s.fused)

    def chunk(state, active, hp, x_all, y_all, perm, offset, n):
        def step(carry, i):
            st, act = carry
            start = (offset + i) * batch_size
            if perm.ndim == 2:
                idx = jax.lax.dynamic_slice(perm, (0, start), (perm.shape[0], batch_size))  # (P, B)
            else:
                idx = jax.lax.dynamic_slice(perm, (start,), (batch_size,))  # (B,)
            st, act, metrics = advance(st, act, {"x": x_all[idx], "y": y_all[idx]}, hp)
            return (st, act), metrics

        def body(carry, i):
            shapes = jax.eval_shape(step, carry, i)[1]
            skip = lambda c, i: (c, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))  # noqa: E731
            return jax.lax.cond(i < n, step, skip, carry, i)

        (state, active), metrics = jax.lax.scan(body, (state, active), jnp.arange(chunk_len))
        return state, active, metrics

    compiled = jax.jit(chunk, donate_argnums=0)
    cache: dict[tuple, jax.Array] = {}  # epoch orders on the device: this segment's epoch and the next

    def perms(seeds, epoch):
        key = (tuple(seeds), epoch)
        if key not in cache:
            cache[key] = jax.device_put(_perms(s, seeds, epoch))
        return cache[key]

    def run(state, active, hp, seeds, epoch, offset, length):
        if length > chunk_len:
            raise JaxdlError(f"scan driver: segment of {length} steps exceeds its chunk of {chunk_len}")
        perm = perms(seeds, epoch)
        for key in [k for k in cache if k != (tuple(seeds), epoch)]:
            del cache[key]
        state, active, metrics = compiled(state, active, hp, x_all, y_all, perm, np.int32(offset), np.int32(length))
        if offset + length >= s.steps_per_epoch:  # the next epoch's order is drawn while this chunk runs
            perms(seeds, epoch + 1)
        # the first `length` of the chunk's K rows, cut on the host (cutting device arrays dispatches a program per
        # metric and chunk — more than a small model's whole chunk on a CPU)
        return state, active, jax.tree.map(lambda m: m[:length], jax.device_get(metrics))

    run.compiled = compiled  # for inspection (e.g. counting compilations)
    return run


class Prefetcher:
    """Iterate ``batches`` in a background thread, keeping up to ``size`` device batches in flight."""

    _DONE = object()

    def __init__(self, batches, size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(iter(batches),), daemon=True)
        self._thread.start()

    def _work(self, it):
        try:
            for batch in it:
                self._queue.put(jax.device_put(batch))
        except BaseException as e:  # noqa: BLE001 — re-raised in the consumer
            self._error = e
        self._queue.put(self._DONE)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item


def host_batches(split: data_lib.Split, batch_size: int, perm: np.ndarray, offset: int, length: int):
    """Batches ``offset … offset+length-1`` of an epoch order ``perm`` ((n,) or per member (P, n)), on the host."""
    for i in range(offset, offset + length):
        idx = perm[..., i * batch_size:(i + 1) * batch_size]  # (B,) or (P, B)
        yield {"x": split.x[idx], "y": split.y[idx]}


def _host_runner(s: Setup):
    """One jitted step per dispatch, fed by a prefetching host iterator."""
    step = jax.jit(_advance(s, s.fused), donate_argnums=0)

    def run(state, active, hp, seeds, epoch, offset, length):
        perm = _perms(s, seeds, epoch)
        batches = Prefetcher(host_batches(s.dataset.train, s.cfg.train.batch_size, perm, offset, length),
                             s.cfg.train.prefetch)
        metrics = []
        for batch in batches:
            state, active, m = step(state, active, batch, hp)
            metrics.append(m)
        # stacked on the host: one fetch, no device program per metric and segment length
        return state, active, jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(metrics))

    return run


RUNNERS = {"scan": _scan_runner, "host": _host_runner}

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


def _probe_key(s: Setup, members: int) -> str:
    device = jax.devices()[0]
    sig = {"model": speed_fields(s.model.config), "input": list(s.dataset.input_shape),
           "batch": s.cfg.train.batch_size, "optim": s.cfg.optim.name, "chunk": s.cfg.train.chunk_steps,
           "members": members if s.fused else 1, "dropout": s.dropout,
           "device": f"{device.platform}:{device.device_kind}",
           "jax": jax.__version__}
    return hashlib.sha1(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_file(name: str) -> Path:
    """A file in jaxdl's cache directory (``$JAXDL_CACHE_DIR`` or ``~/.cache/jaxdl``)."""
    root = os.environ.get("JAXDL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "jaxdl")
    return Path(root) / name


def read_cache(name: str) -> dict[str, Any]:
    path = cache_file(name)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def write_cache(name: str, key: str, record: dict[str, Any]) -> None:
    path = cache_file(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = read_cache(name)
        cache[key] = record
        path.write_text(json.dumps(cache, indent=1))
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


class Programs:
    """The compiled pieces of one signature — initialisation, drivers, evaluation — built once and shared by every
    run of a group (hyperparameters and seeds are arguments, so members never recompile)."""

    def __init__(self, s: Setup, share: Programs | None = None):
        self.s = s
        self.runners: dict[str, Any] = {}
        self.driver: tuple[str, dict[str, Any]] | None = None
        self.evaluate = make_evaluator(s, s.fused)
        if share is not None:  # same model and optimizer (e.g. the single and the fused candidates of a probe)
            self._init = share._init
        else:
            example = jnp.zeros((1, *s.dataset.input_shape), s.dataset.train.x.dtype)
            self._init = jax.jit(lambda key, hp: init_state(s.model, s.optimizer, example, key, hp))

    def init(self, seeds: list[int], hp) -> TrainState:
        """The initial state of one run, or of a population: each member initialised by the single-run program
        (so a fused member starts exactly where its standalone run starts, and both modes share one compilation),
        stacked on the host."""
        if not self.s.fused:
            return self._init(jax.random.PRNGKey(seeds[0]), hp)
        host_hp = _to_host(hp)
        each = [self._init(jax.random.PRNGKey(seed), jax.tree.map(jnp.asarray, member(host_hp, i)))
                for i, seed in enumerate(seeds)]
        return jax.device_put(stack_members(each))

    def runner(self, name: str):
        if name not in self.runners:
            self.runners[name] = RUNNERS[name](self.s)
        return self.runners[name]

    def choose_driver(self, state, active, hp, seeds: list[int], work_steps: int | None = None
                      ) -> tuple[str, dict[str, Any]]:
        if self.driver is None:
            self.driver = choose_driver(self.s, state, active, hp, seeds, self.runner, work_steps)
        return self.driver


def choose_driver(s: Setup, state, active, hp, seeds: list[int], runner=None, work_steps: int | None = None
                  ) -> tuple[str, dict[str, Any]]:
    """Pick the scan or host driver. ``auto`` times the candidates on copies of ``state`` (cached per signature);
    ``work_steps``: the steps the choice will run (default: this run's)."""
    if s.cfg.train.driver != "auto":
        return s.cfg.train.driver, {"chosen": s.cfg.train.driver, "how": "config"}
    key = _probe_key(s, len(seeds))
    cached = read_cache("driver_probe.json").get(key)
    if cached:
        return cached["chosen"], {**cached, "how": "cached probe"}
    record, _ = probe_drivers(s, state, active, hp, seeds, runner or (lambda name: RUNNERS[name](s)), work_steps)
    write_cache("driver_probe.json", key, record)
    return record["chosen"], {**record, "how": "probe"}


def probe_steps(s: Setup) -> int:
    """The longest timed segment a probe may run: one chunk, within the first epoch and the run."""
    return max(1, min(s.cfg.train.chunk_steps, s.steps_per_epoch - 1, s.total_steps - 1))


def probe_drivers(s: Setup, state, active, hp, seeds: list[int], runner, work_steps: int | None = None
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


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------


def make_evaluator(s: Setup, fused: bool = False):
    """``evaluate(params, model_state, split, hp) -> [{"loss", "accuracy"}, …]`` (one dict per member).

    Batches of ``train.eval_batch_size``; the last one is padded and masked so every batch has one shape.
    """
    step = jax.jit(jax.vmap(s.eval_step, in_axes=(0, 0, None, 0)) if fused else s.eval_step)
    # one batch shape for every split: a single compilation
    bs = max(1, min(s.cfg.train.eval_batch_size, max(len(s.dataset.val), len(s.dataset.test), 1)))

    def evaluate(params, model_state, split: data_lib.Split, hp) -> list[dict[str, float]]:
        n = len(split)
        totals = None
        for start in range(0, n, bs):
            x, y = split.x[start:start + bs], split.y[start:start + bs]
            real = len(x)
            mask = np.zeros(bs, np.float32)
            mask[:real] = 1.0
            if real < bs:
                x = np.concatenate([x, np.zeros((bs - real, *x.shape[1:]), x.dtype)])
                y = np.concatenate([y, np.zeros((bs - real, *y.shape[1:]), y.dtype)])
            out = step(params, model_state, {"x": x, "y": y, "mask": mask}, hp)
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        totals = {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in jax.device_get(totals).items()}
        return [{"loss": float(totals["loss"][i] / totals["count"][i]),
                 "accuracy": float(totals["correct"][i] / totals["count"][i])} for i in range(len(totals["count"]))]

    return evaluate


def evaluate_splits(s: Setup, params, model_state, splits=("val", "test")) -> dict[str, dict[str, float]]:
    """Metrics of one model on each named split."""
    evaluate = make_evaluator(s)
    return {name: evaluate(params, model_state, getattr(s.dataset, name), s.hparams)[0] for name in splits
            if len(getattr(s.dataset, name))}


# --------------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------------


class EarlyStopping:
    """Tracks the best value of the monitored metric and how many evaluations passed without improvement."""

    def __init__(self, cfg, best=None, best_step=None, bad=0):
        self.cfg = cfg
        mode = cfg.mode if cfg.mode != "auto" else ("max" if "accuracy" in cfg.monitor else "min")
        self.sign = 1.0 if mode == "min" else -1.0
        self.best, self.best_step, self.bad = best, best_step, bad

    def update(self, value: float, step: int) -> bool:
        """Record ``value``; True if it improved on the best by more than ``min_delta``."""
        if value is None or not math.isfinite(value):
            self.bad += 1
            return False
        if self.best is None or self.sign * (self.best - value) > self.cfg.min_delta:
            self.best, self.best_step, self.bad = value, step, 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.cfg.enabled and self.bad >= self.cfg.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad}


def _boundaries(t, steps_per_epoch: int, total: int):
    def is_eval(step):
        if step >= total:
            return True
        return step % t.eval_every == 0 if t.eval_every else step % steps_per_epoch == 0

    def is_ckpt(step):
        if step >= total:
            return True
        return step % t.checkpoint_every == 0 if t.checkpoint_every else is_eval(step)

    def next_stop(step):
        candidates = [total, (step // steps_per_epoch + 1) * steps_per_epoch,
                      (step // t.chunk_steps + 1) * t.chunk_steps]
        for every in (t.eval_every, t.checkpoint_every):
            if every:
                candidates.append((step // every + 1) * every)
        return min(c for c in candidates if c > step)

    return is_eval, is_ckpt, next_stop


def _to_host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


class _Progress:
    """A rich progress bar with live loss/accuracy (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int, title: str):
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("steps"), TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=Console(stderr=True))
        self.task = self.bar.add_task(title, total=total, completed=start, info="")
        self.bar.start()

    def advance(self, step: int, info: str) -> None:
        if self.enabled:
            self.bar.update(self.task, completed=step, info=info)

    def log(self, text: str) -> None:
        if self.enabled:
            self.bar.console.print(text)

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))


@dataclasses.dataclass
class _Member:
    """Host-side bookkeeping of one run (a population has one per member)."""

    cfg: Config
    run_dir: Path
    log: rundir.MetricsLog
    es: EarlyStopping
    ckpt: Checkpointer | None
    best_ckpt: Checkpointer | None
    sums: dict[str, float]
    elapsed_before: float = 0.0
    best_vars: Any = None
    last_eval: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: str = "running"  # running | stopped (early) | diverged
    diverged_at: int | None = None
    best_saved: int | None = None  # step of the best variables last written to best/

    @classmethod
    def open(cls, cfg: Config, run_dir: Path) -> _Member:
        run_dir.mkdir(parents=True, exist_ok=True)
        t = cfg.train
        ckpt = Checkpointer(run_dir / "checkpoints", keep=t.keep_checkpoints) if t.checkpoints else None
        # keep=2: after a resume the best step recorded in the restored checkpoint is still on disk
        best = Checkpointer(run_dir / "best", keep=2) if t.checkpoints else None
        return cls(cfg, run_dir, rundir.MetricsLog(run_dir / rundir.METRICS_FILE), EarlyStopping(t.early_stopping),
                   ckpt, best, {"loss": 0.0, "accuracy": 0.0, "n": 0})

    def resume_from(self, meta: dict[str, Any], step: int, target_vars: Any) -> None:
        self.es = EarlyStopping(self.cfg.train.early_stopping, **meta.get("early_stopping", {}))
        self.sums = meta.get("train_sums", self.sums)
        self.elapsed_before = float(meta.get("elapsed", 0.0))
        self.status = meta.get("status", "running")
        self.diverged_at = meta.get("diverged_at")
        self.log.truncate_after(step)
        if self.best_ckpt is not None:
            for later in [b for b in self.best_ckpt.steps() if b > step]:  # written after the restored checkpoint
                self.best_ckpt.delete(later)
            if self.es.best_step in self.best_ckpt.steps():
                self.best_vars = _to_host(self.best_ckpt.restore(self.es.best_step, target_vars)[0])
                self.best_saved = self.es.best_step

    def fresh_start(self, clear: bool = False) -> None:
        """Start from step 0. Existing checkpoints are an error, or (``clear``: a resume that found no step common
        to the whole group) deleted."""
        if self.log.path.exists():
            self.log.path.unlink()
        for c in (self.ckpt, self.best_ckpt):
            if c is None or not c.steps():
                continue
            if not clear:
                raise JaxdlError(f"{self.run_dir} already holds checkpoints; use `jaxdl resume {self.run_dir}` or "
                                 "another workdir")
            for step in c.steps():
                c.delete(step)

    def save(self, step: int, state: TrainState, elapsed: float) -> None:
        """Checkpoint the state, and the best variables if they changed since the last save."""
        if self.ckpt is None:
            return
        if self.best_vars is not None and self.es.best_step != self.best_saved:
            self.best_ckpt.save(self.es.best_step, self.best_vars,
                                {"step": self.es.best_step, "monitor": self.cfg.train.early_stopping.monitor,
                                 "value": self.es.best})
            self.best_saved = self.es.best_step
        self.ckpt.save(step, state, self.meta(elapsed))

    def meta(self, elapsed: float) -> dict[str, Any]:
        return {"early_stopping": self.es.state(), "train_sums": self.sums, "elapsed": self.elapsed_before + elapsed,
                "status": self.status, "diverged_at": self.diverged_at}

    def close(self) -> None:
        for c in (self.ckpt, self.best_ckpt):
            if c is not None:
                c.close()


def _restore_group(members: list[_Member], target: TrainState, fused: bool):
    """Newest checkpoint step valid for every member, and the (stacked) state there; None to start fresh."""
    single = jax.eval_shape(lambda: member(target, 0)) if fused else target
    latest = []
    for m in members:
        got = m.ckpt.restore_latest(single, quarantine=True) if m.ckpt is not None else None
        if got is None:
            return None
        latest.append(got)
    step = min(g[2] for g in latest)
    states, metas = [], []
    for m, (state, meta, at) in zip(members, latest):
        if at != step:
            state, meta = m.ckpt.restore(step, single)
        states.append(state)
        metas.append(meta)
    stacked = jax.device_put(stack_members(states)) if fused else states[0]
    return stacked, metas, step


def train_group(cfgs: list[Config], run_dirs: list[str | Path], *, fused: bool = False, resume: bool = False,
                dataset: data_lib.Dataset | None = None, on_divergence: str = "raise",
                extra_config: dict[str, Any] | None = None, title: str | None = None,
                programs: Programs | None = None) -> list[FitResult]:
    """Train runs that share their static structure: fused into one vmapped program, or one after the other.

    Either way the runs share one set of compiled programs (hyperparameters and seeds are arguments) and each
    writes the run directory ``fit`` writes. In a fused group, member ``i`` follows exactly the computation of its
    standalone run (same initial parameters, batches and RNG keys); its updates are masked once it stops early, and a
    member whose loss turns non-finite is frozen and marked ``diverged`` while the others go on.

    Args:
      cfgs: member configs; they must share :func:`jaxdl.train.step.signature`.
      run_dirs: one run directory per member.
      fused: train the members as one vmapped population (else one by one).
      resume: continue from the newest checkpoint valid for every member.
      on_divergence: ``raise`` (DivergenceError naming the step) or ``mark`` (record status ``diverged``).
      extra_config: more entries for each member's ``config.json`` (e.g. the sweep group).
      programs: already compiled programs for this signature and mode (e.g. from the fusion probe).
    """
    if not cfgs or len(cfgs) != len(run_dirs):
        raise JaxdlError(f"train_group: {len(cfgs)} configs for {len(run_dirs)} run directories")
    if len({signature(c) for c in cfgs}) != 1:
        raise ConfigError("train_group: members differ in static structure (model, data, optimizer kind, batch "
                          "size, steps …) and cannot share one compiled program")
    if on_divergence not in ("raise", "mark"):
        raise ConfigError(f"on_divergence: expected 'raise' or 'mark', got {on_divergence!r}")
    for c in cfgs:
        validate(c)
    dropout = uses_dropout(cfgs)
    if programs is None or programs.s.fused != fused or (dropout and not programs.s.dropout):
        s = setup(cfgs[0], dataset, dropout=dropout)
        s.fused = fused
        programs = Programs(s)
    s = programs.s
    options = {"resume": resume, "on_divergence": on_divergence, "extra": extra_config or {},
               "title": title or s.cfg.name, "members": len(cfgs)}
    if fused:
        return _train_unit(programs, cfgs, [Path(d) for d in run_dirs], **options)
    return [r for c, d in zip(cfgs, run_dirs) for r in _train_unit(programs, [c], [Path(d)], **options)]


def _train_unit(programs: Programs, cfgs: list[Config], run_dirs: list[Path], *, resume: bool, on_divergence: str,
                extra: dict[str, Any], title: str, members: int) -> list[FitResult]:
    """The loop for one run, or for one fused population."""
    wall0 = time.perf_counter()
    s = programs.s
    fused = s.fused
    t = s.cfg.train
    count = len(cfgs)
    seeds = [c.seed for c in cfgs]
    hp = stack_hparams(cfgs) if fused else make_hparams(cfgs[0])
    runs = [_Member.open(c, d) for c, d in zip(cfgs, run_dirs)]
    state = programs.init(seeds, hp)
    step = 0
    restored = _restore_group(runs, state, fused) if resume else None
    pretrained = None
    if t.init_from and restored is None:
        state, report = transfer.apply_pretrained(state, t.init_from, t.init_skip, fused, s.cfg.model.name)
        pretrained = {"from": t.init_from, "report": report.summary()}
    if restored is not None:
        state, metas, step = restored
        host = _to_host(state)
        for i, (m, meta) in enumerate(zip(runs, metas)):
            single = member(host, i) if fused else host
            m.resume_from(meta, step, {"params": single.params, "model_state": single.model_state})
    else:
        for m in runs:
            m.fresh_start(clear=resume)
    active_host = np.array([m.status == "running" for m in runs])
    active = jnp.asarray(active_host) if fused else jnp.asarray(True)
    mesh = parallel.population_mesh(count) if fused else None
    state, hp, active = parallel.shard_population((state, hp, active), mesh)
    # one-by-one members share the programs, so the driver choice covers the whole group's steps
    driver, driver_info = programs.choose_driver(state, active, hp, seeds,
                                                 s.total_steps * (1 if fused else max(members, 1)))
    n_params = models.count_params(state.params) // (count if fused else 1)
    for m in runs:
        rundir.write_config(m.run_dir, m.cfg, driver=driver_info, data=s.dataset.describe(), params=n_params,
                            resumed_from=step if restored else None, fused=fused, group_members=members,
                            placement=parallel.describe(mesh), pretrained=pretrained, **extra)
    run = programs.runner(driver)
    evaluate = programs.evaluate
    is_eval, is_ckpt, next_stop = _boundaries(t, s.steps_per_epoch, s.total_steps)
    progress = _Progress(cfgs[0].train.progress, s.total_steps, step, title if fused else cfgs[0].name)
    train_time, train_steps = 0.0, 0
    try:
        while step < s.total_steps and active_host.any():
            end = next_stop(step)
            epoch, offset = divmod(step, s.steps_per_epoch)
            t0 = time.perf_counter()
            state, active, metrics = run(state, active, hp, seeds, epoch, offset, end - step)
            metrics = _to_host(metrics)  # one host sync per segment
            train_time += time.perf_counter() - t0
            train_steps += end - step
            losses = metrics["loss"].reshape(end - step, count)  # (L, P)
            accs = metrics["accuracy"].reshape(end - step, count)
            ran = metrics["active"].reshape(end - step, count) if fused else np.ones_like(losses, bool)
            for i, m in enumerate(runs):
                if not active_host[i]:
                    continue
                bad = ran[:, i] & ~np.isfinite(losses[:, i])
                if bad.any():
                    first = int(np.argmax(bad))
                    at = step + first + 1
                    last = m.ckpt.steps()[-1] if m.ckpt is not None and m.ckpt.steps() else None
                    msg = (f"run {m.cfg.name!r}: loss became {losses[first, i]} at step {at} "
                           f"(lr={float(metrics['lr'].reshape(-1, count)[first, i]):.3g}); last good checkpoint: "
                           + (f"step {last} in {m.ckpt.directory}" if last is not None else "none"))
                    if on_divergence == "raise":
                        raise DivergenceError(msg, step=at)
                    m.status, m.diverged_at = "diverged", at
                    active_host[i] = False
                    progress.log(f"diverged: {msg}")
                    continue
                keep = ran[:, i]
                m.sums = {"loss": m.sums["loss"] + float(losses[keep, i].sum()),
                          "accuracy": m.sums["accuracy"] + float(accs[keep, i].sum()),
                          "n": m.sums["n"] + int(keep.sum())}
            step = end
            live = [i for i in range(count) if active_host[i]]
            if live:
                progress.advance(step, f"loss {np.mean(losses[-1, live]):.4f} acc {np.mean(accs[-1, live]):.3f}"
                                 + (f" ({len(live)}/{count} members)" if fused else ""))
            host = None  # a host copy of the state, fetched at most once per segment
            if is_eval(step) and live:
                val = evaluate(state.params, state.model_state, s.dataset.val, hp)
                for i in live:
                    m = runs[i]
                    record = {"step": step, "epoch": round(step / s.steps_per_epoch, 3),
                              "train/loss": m.sums["loss"] / max(m.sums["n"], 1),
                              "train/accuracy": m.sums["accuracy"] / max(m.sums["n"], 1),
                              "lr": float(metrics["lr"].reshape(-1, count)[-1, i]),
                              **{f"val/{k}": v for k, v in val[i].items()},
                              "time": round(m.elapsed_before + time.perf_counter() - wall0, 3)}
                    m.sums = {"loss": 0.0, "accuracy": 0.0, "n": 0}
                    m.log.append(record)
                    m.last_eval = record
                    if not fused:
                        progress.log(f"step {step} (epoch {record['epoch']:g}) "
                                     + _fmt({k: v for k, v in record.items() if "/" in k}))
                    if m.es.update(record.get(m.cfg.train.early_stopping.monitor), step):
                        host = _to_host(state) if host is None else host
                        mine = member(host, i) if fused else host
                        m.best_vars = {"params": mine.params, "model_state": mine.model_state}
                    if m.es.should_stop:
                        m.status = "stopped"
                        active_host[i] = False
                if fused:
                    active = parallel.shard_population(jnp.asarray(active_host), mesh)
            if is_ckpt(step) or not active_host.any():
                elapsed = time.perf_counter() - wall0
                if fused:
                    host = _to_host(state) if host is None else host
                for i, m in enumerate(runs):
                    m.save(step, member(host, i) if fused else state, elapsed)
    finally:
        progress.close()
        for m in runs:
            m.close()

    # Final evaluation of each member's final (or best) variables, all at once.
    chosen, restored_best = [], []
    host = _to_host(state) if fused else state
    for i, m in enumerate(runs):
        mine = member(host, i) if fused else state
        es_cfg = m.cfg.train.early_stopping
        use_best = es_cfg.enabled and es_cfg.restore_best and m.best_vars is not None and m.status != "diverged"
        restored_best.append(use_best)
        chosen.append(m.best_vars if use_best else {"params": mine.params, "model_state": mine.model_state})
    stacked = stack_members(chosen) if fused else chosen[0]
    splits = {name: evaluate(stacked["params"], stacked["model_state"], getattr(s.dataset, name), hp)
              for name in ("val", "test") if len(getattr(s.dataset, name))}
    wall = time.perf_counter() - wall0
    results = []
    for i, m in enumerate(runs):
        monitor = m.cfg.train.early_stopping.monitor
        summary = {
            "name": m.cfg.name, "status": "diverged" if m.status == "diverged" else "completed",
            "model": m.cfg.model.name, "data": m.cfg.data.name, "params": n_params,
            "steps": m.diverged_at or (m.last_eval.get("step", step) if m.status == "stopped" else step),
            "epochs": round(step / s.steps_per_epoch, 3), "stopped_early": m.status == "stopped",
            "restored_best": restored_best[i], "diverged_at": m.diverged_at,
            "best": {"step": m.es.best_step, monitor: m.es.best},
            "final": {k: v for k, v in m.last_eval.items() if "/" in k},
            **{name: per_member[i] for name, per_member in splits.items()},
            "driver": driver, "fused": fused, "group_members": members,
            "wall_time_s": round(m.elapsed_before + wall, 3),
            "steps_per_s": round(train_steps / train_time, 2) if train_time > 0 else None,
        }
        rundir.write_summary(m.run_dir, summary)
        records = m.log.read()
        if m.cfg.train.plots:
            rundir.plot_curves(records, m.run_dir / rundir.CURVES_FILE,
                               title=f"{m.cfg.name}: {m.cfg.model.name} on {m.cfg.data.name}")
        rundir.write_tensorboard(m.run_dir, records)
        final = jax.device_put(member(host, i)) if fused else state
        if restored_best[i]:
            final = final.replace(params=jax.device_put(m.best_vars["params"]),
                                  model_state=jax.device_put(m.best_vars["model_state"]))
        results.append(FitResult(m.run_dir, summary, final, m.cfg))
    return results


def fit(cfg: Config, *, workdir: str | Path | None = None, resume: bool = False,
        dataset: data_lib.Dataset | None = None, runs_root: str | Path = "runs") -> FitResult:
    """Train ``cfg`` to the end (or until early stopping) and write its run directory.

    Args:
      cfg: the run's config.
      workdir: the run directory; default ``runs/<name>/<timestamp>``.
      resume: continue from the newest valid checkpoint in ``workdir`` (exactly: same batches, same RNG keys).
      dataset: use this data set instead of loading ``cfg.data``.

    Returns:
      FitResult with the run directory, the summary written to ``summary.json`` and the final state.

    Raises:
      ConfigError / ModelInputError / DataError before compiling, for bad configs and shapes;
      DivergenceError naming the step when the loss becomes NaN/Inf (the last good checkpoint stays restorable).
    """
    run_dir = Path(workdir) if workdir is not None else rundir.new_run_dir(cfg, runs_root)
    return train_group([cfg], [run_dir], resume=resume, dataset=dataset)[0]


def restore(run_dir: str | Path, which: str = "best") -> tuple[Setup, dict[str, Any]]:
    """Rebuild a run from its directory and restore its variables (``best`` if saved, else the newest step)."""
    run_dir = Path(run_dir)
    cfg = rundir.read_config(run_dir)
    s = setup(cfg)
    state = jax.eval_shape(lambda: initial_state(s))
    variables = None
    if which == "best" and (run_dir / "best").is_dir():
        with Checkpointer(run_dir / "best", keep=2) as c:
            got = c.restore_latest({"params": state.params, "model_state": state.model_state})
        variables = got[0] if got else None
    if variables is None:
        with Checkpointer(run_dir / "checkpoints") as c:
            got = c.restore_latest(state)
        if got is None:
            raise CheckpointError(f"{run_dir} has no checkpoints to evaluate")
        variables = {"params": got[0].params, "model_state": got[0].model_state}
    return s, variables
