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
from jaxdl import models, optim
from jaxdl.checkpoint import Checkpointer
from jaxdl.config import Config, check_types
from jaxdl.errors import CheckpointError, ConfigError, DivergenceError, JaxdlError
from jaxdl.train import rundir
from jaxdl.train.step import TrainState, init_state, make_eval_step, make_hparams, make_loss, make_train_step

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
    if es.patience < 1:
        raise ConfigError(f"train.early_stopping.patience: expected >= 1, got {es.patience}")
    optim.validate(cfg.optim)


def setup(cfg: Config, dataset: data_lib.Dataset | None = None) -> Setup:
    """Load data and build the model, loss, optimizer and steps; check shapes abstractly before compiling."""
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
    train_step = make_train_step(model, optimizer, loss_fn)
    eval_step = make_eval_step(model, loss_fn)
    s = Setup(cfg, ds, model, optimizer, hp, train_step, eval_step, steps_per_epoch, total)
    check_shapes(s)
    return s


def abstract_batch(s: Setup, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    x, y = s.dataset.train.x, s.dataset.train.y
    return {"x": jax.ShapeDtypeStruct((batch_size, *x.shape[1:]), x.dtype),
            "y": jax.ShapeDtypeStruct((batch_size, *y.shape[1:]), y.dtype)}


def check_shapes(s: Setup) -> None:
    """Trace init and one step abstractly (``jax.eval_shape``): errors surface before anything compiles."""
    batch = abstract_batch(s, s.cfg.train.batch_size)
    state = jax.eval_shape(lambda x: init_state(s.model, s.optimizer, x, 0, s.hparams), batch["x"])
    jax.eval_shape(s.train_step, state, batch, s.hparams)


def initial_state(s: Setup) -> TrainState:
    example = jnp.zeros((1, *s.dataset.input_shape), s.dataset.train.x.dtype)
    return jax.jit(lambda: init_state(s.model, s.optimizer, example, s.cfg.seed, s.hparams))()


# --------------------------------------------------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------------------------------------------------


def _scan_runner(s: Setup):
    """``run(state, perm, offset, length) -> (state, metrics[length])`` with the training set on the device."""
    batch_size = s.cfg.train.batch_size
    x_all = jax.device_put(s.dataset.train.x)
    y_all = jax.device_put(s.dataset.train.y)
    hp = s.hparams

    def chunk(state, hp, x_all, y_all, perm, offset, length):
        def body(st, i):
            idx = jax.lax.dynamic_slice(perm, ((offset + i) * batch_size,), (batch_size,))  # (B,)
            return s.train_step(st, {"x": x_all[idx], "y": y_all[idx]}, hp)

        return jax.lax.scan(body, state, jnp.arange(length))

    compiled = jax.jit(chunk, static_argnames="length", donate_argnums=0)
    perms: dict[int, jax.Array] = {}

    def run(state, epoch, offset, length):
        if epoch not in perms:
            perms.clear()
            perms[epoch] = jax.device_put(data_lib.epoch_permutation(len(s.dataset.train), s.cfg.seed, epoch)
                                          .astype(np.int32))
        return compiled(state, hp, x_all, y_all, perms[epoch], jnp.int32(offset), length=length)

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


def host_batches(split: data_lib.Split, batch_size: int, seed: int, epoch: int, offset: int, length: int):
    """Batches ``offset … offset+length-1`` of ``epoch`` (numpy, on the host)."""
    perm = data_lib.epoch_permutation(len(split), seed, epoch)
    for i in range(offset, offset + length):
        idx = perm[i * batch_size:(i + 1) * batch_size]
        yield {"x": split.x[idx], "y": split.y[idx]}


def _host_runner(s: Setup):
    step = jax.jit(s.train_step, donate_argnums=0)
    hp = s.hparams

    def run(state, epoch, offset, length):
        batches = Prefetcher(host_batches(s.dataset.train, s.cfg.train.batch_size, s.cfg.seed, epoch, offset, length),
                             s.cfg.train.prefetch)
        metrics = []
        for batch in batches:
            state, m = step(state, batch, hp)
            metrics.append(m)
        return state, jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)

    return run


def _probe_key(s: Setup) -> str:
    device = jax.devices()[0]
    sig = {"model": dataclasses.asdict(s.model.config), "input": list(s.dataset.input_shape),
           "batch": s.cfg.train.batch_size, "optim": s.cfg.optim.name, "chunk": s.cfg.train.chunk_steps,
           "device": f"{device.platform}:{device.device_kind}", "jax": jax.__version__}
    return hashlib.sha1(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cache_path() -> Path:
    root = os.environ.get("JAXDL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "jaxdl")
    return Path(root) / "driver_probe.json"


def choose_driver(s: Setup, state: TrainState) -> tuple[str, dict[str, Any]]:
    """Pick the scan or host driver. ``auto`` times both on copies of ``state`` (cached per signature)."""
    if s.cfg.train.driver != "auto":
        return s.cfg.train.driver, {"chosen": s.cfg.train.driver, "how": "config"}
    key = _probe_key(s)
    path = _cache_path()
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]["chosen"], {**cache[key], "how": "cached probe"}
    n = max(1, min(s.cfg.train.chunk_steps, s.steps_per_epoch, 20))
    timings = {}
    for name, runner in (("scan", _scan_runner(s)), ("host", _host_runner(s))):
        probe_state = jax.tree.map(jnp.copy, state)
        probe_state, m = runner(probe_state, 0, 0, n)  # compile + warm up
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        probe_state, m = runner(probe_state, 0, 0, n)
        jax.block_until_ready(m)
        timings[name] = (time.perf_counter() - t0) / n
    chosen = min(timings, key=timings.get)
    record = {"chosen": chosen, "seconds_per_step": timings, "probe_steps": n}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache[key] = record
        path.write_text(json.dumps(cache, indent=1))
    except OSError:
        pass
    return chosen, {**record, "how": "probe"}


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------


def make_evaluator(s: Setup):
    """``evaluate(params, model_state, split) -> {"loss", "accuracy"}`` over a whole split (padded last batch)."""
    step = jax.jit(s.eval_step)
    size = s.cfg.train.eval_batch_size

    def evaluate(params, model_state, split: data_lib.Split) -> dict[str, float]:
        n = len(split)
        if n == 0:
            return {}
        bs = min(size, n)
        totals = None
        for start in range(0, n, bs):
            x, y = split.x[start:start + bs], split.y[start:start + bs]
            real = len(x)
            mask = np.zeros(bs, np.float32)
            mask[:real] = 1.0
            if real < bs:  # pad to a fixed shape: one compilation for every batch
                x = np.concatenate([x, np.zeros((bs - real, *x.shape[1:]), x.dtype)])
                y = np.concatenate([y, np.zeros((bs - real, *y.shape[1:]), y.dtype)])
            out = step(params, model_state, {"x": x, "y": y, "mask": mask}, s.hparams)
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        totals = jax.device_get(totals)
        count = float(totals["count"])
        return {"loss": float(totals["loss"]) / count, "accuracy": float(totals["correct"]) / count}

    return evaluate


def evaluate_splits(s: Setup, params, model_state, splits=("val", "test")) -> dict[str, dict[str, float]]:
    evaluate = make_evaluator(s)
    return {name: evaluate(params, model_state, getattr(s.dataset, name)) for name in splits
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

        self.console = Console(stderr=True)
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("steps"), TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=self.console)
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
    wall0 = time.perf_counter()
    s = setup(cfg, dataset)
    t = cfg.train
    run_dir = Path(workdir) if workdir is not None else rundir.new_run_dir(cfg, runs_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = rundir.MetricsLog(run_dir / rundir.METRICS_FILE)
    ckpt = Checkpointer(run_dir / "checkpoints", keep=t.keep_checkpoints) if t.checkpoints else None
    # keep=2: after a resume the best step recorded in the restored checkpoint is still on disk
    best_ckpt = Checkpointer(run_dir / "best", keep=2) if t.checkpoints else None

    state = initial_state(s)
    es = EarlyStopping(t.early_stopping)
    sums = {"loss": 0.0, "accuracy": 0.0, "n": 0}
    elapsed_before, step = 0.0, 0
    best_vars = None
    restored = None
    if resume and ckpt is not None:
        restored = ckpt.restore_latest(state, quarantine=True)
    if restored is not None:
        state, meta, step = restored
        es = EarlyStopping(t.early_stopping, **meta.get("early_stopping", {}))
        sums = meta.get("train_sums", sums)
        elapsed_before = float(meta.get("elapsed", 0.0))
        log.truncate_after(step)
        if best_ckpt is not None:
            for later in [b for b in best_ckpt.steps() if b > step]:  # written after the restored checkpoint
                best_ckpt.delete(later)
            if es.best_step in best_ckpt.steps():
                target = {"params": state.params, "model_state": state.model_state}
                best_vars = _to_host(best_ckpt.restore(es.best_step, target)[0])
    else:
        if log.path.exists():
            log.path.unlink()
        if ckpt is not None and ckpt.steps():
            raise JaxdlError(f"{run_dir} already holds checkpoints; use `jaxdl resume {run_dir}` or another workdir")
    driver, driver_info = choose_driver(s, state)
    rundir.write_config(run_dir, cfg, driver=driver_info, data=s.dataset.describe(),
                        params=models.count_params(state.params), resumed_from=step if restored else None)
    run = _scan_runner(s) if driver == "scan" else _host_runner(s)
    evaluate = make_evaluator(s)
    is_eval, is_ckpt, next_stop = _boundaries(t, s.steps_per_epoch, s.total_steps)
    progress = _Progress(t.progress, s.total_steps, step, cfg.name)
    last_eval: dict[str, Any] = {}
    train_time, train_steps = 0.0, 0
    stopped_early = False
    try:
        while step < s.total_steps and not stopped_early:
            end = next_stop(step)
            epoch, offset = divmod(step, s.steps_per_epoch)
            t0 = time.perf_counter()
            state, metrics = run(state, epoch, offset, end - step)
            metrics = _to_host(metrics)  # one host sync per segment
            train_time += time.perf_counter() - t0
            train_steps += end - step
            losses = metrics["loss"]
            if not np.all(np.isfinite(losses)):
                bad = int(np.argmax(~np.isfinite(losses)))
                last_good = ckpt.steps()[-1] if ckpt is not None and ckpt.steps() else None
                raise DivergenceError(
                    f"run {cfg.name!r}: loss became {losses[bad]} at step {step + bad + 1} "
                    f"(lr={float(metrics['lr'][bad]):.3g}); last good checkpoint: "
                    + (f"step {last_good} in {ckpt.directory}" if last_good is not None else "none"),
                    step=step + bad + 1)
            sums = {"loss": sums["loss"] + float(losses.sum()), "accuracy": sums["accuracy"] +
                    float(metrics["accuracy"].sum()), "n": sums["n"] + len(losses)}
            step = end
            progress.advance(step, f"loss {losses[-1]:.4f} acc {float(metrics['accuracy'][-1]):.3f}")
            if is_eval(step):
                record = {"step": step, "epoch": round(step / s.steps_per_epoch, 3),
                          "train/loss": sums["loss"] / sums["n"], "train/accuracy": sums["accuracy"] / sums["n"],
                          "lr": float(metrics["lr"][-1])}
                sums = {"loss": 0.0, "accuracy": 0.0, "n": 0}
                val = evaluate(state.params, state.model_state, s.dataset.val)
                record.update({f"val/{k}": v for k, v in val.items()})
                record["time"] = round(elapsed_before + time.perf_counter() - wall0, 3)
                log.append(record)
                last_eval = record
                progress.log(f"step {step} (epoch {record['epoch']:g}) " + _fmt(
                    {k: v for k, v in record.items() if "/" in k}))
                if es.update(record.get(t.early_stopping.monitor), step):
                    best_vars = _to_host({"params": state.params, "model_state": state.model_state})
                    if best_ckpt is not None:
                        best_ckpt.save(step, best_vars, {"step": step, "monitor": t.early_stopping.monitor,
                                                         "value": es.best})
                stopped_early = es.should_stop
            if ckpt is not None and (is_ckpt(step) or stopped_early):
                meta = {"early_stopping": es.state(), "train_sums": sums,
                        "elapsed": elapsed_before + time.perf_counter() - wall0}
                ckpt.save(step, state, meta)
    finally:
        progress.close()
        for c in (ckpt, best_ckpt):
            if c is not None:
                c.close()

    final_vars = {"params": state.params, "model_state": state.model_state}
    use_best = t.early_stopping.enabled and t.early_stopping.restore_best and best_vars is not None
    chosen = best_vars if use_best else final_vars
    results = evaluate_splits(s, chosen["params"], chosen["model_state"])
    wall = elapsed_before + time.perf_counter() - wall0
    summary = {
        "name": cfg.name, "status": "completed", "model": cfg.model.name, "data": cfg.data.name,
        "params": models.count_params(state.params), "steps": step, "epochs": round(step / s.steps_per_epoch, 3),
        "stopped_early": stopped_early, "restored_best": use_best,
        "best": {"step": es.best_step, t.early_stopping.monitor: es.best},
        "final": {k: v for k, v in last_eval.items() if "/" in k},
        **results,
        "driver": driver, "wall_time_s": round(wall, 3),
        "steps_per_s": round(train_steps / train_time, 2) if train_time > 0 else None,
    }
    rundir.write_summary(run_dir, summary)
    if t.plots:
        rundir.plot_curves(log.read(), run_dir / rundir.CURVES_FILE, title=f"{cfg.name}: {cfg.model.name} on "
                                                                            f"{cfg.data.name}")
    if use_best:
        state = state.replace(params=jax.device_put(best_vars["params"]),
                              model_state=jax.device_put(best_vars["model_state"]))
    return FitResult(run_dir, summary, state, cfg)


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
