"""``fit(config)`` and ``train_group``: the training loop.

One plain function drives a run (or a fused population): build data, task and optimizers from the config (see
:mod:`.setup`), then run the compiled step in *segments* — stretches of steps that end at a chunk boundary, an epoch
end, an evaluation or a checkpoint (:mod:`.drivers`). Between segments it evaluates, logs, checkpoints, checks early
stopping and freezes runs whose loss or gradient turned non-finite. Nothing here knows the objective: metric names,
the monitored metric and its direction come from the task (:mod:`jaxdl.tasks`).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl import distributed, models, parallel, transfer
from jaxdl.checkpoint import Checkpointer
from jaxdl.config import Config
from jaxdl.errors import CheckpointError, ConfigError, DivergenceError, JaxdlError, PreemptedError
from jaxdl.tasks import Task, mode_for
from jaxdl.train import rundir
from jaxdl.train.members import Member, Progress, boundaries, fmt, latest_step, restore_group
from jaxdl.train.population import member, stack_hparams, stack_members, to_host
from jaxdl.train.programs import Programs
from jaxdl.train.setup import Setup, initial_state, setup, validate
from jaxdl.train.step import TrainState, by_player, make_hparams, signature, uses_dropout


@dataclasses.dataclass
class FitResult:
    """A finished run: its directory, ``summary.json`` contents, final (or best) state and config.

    ``predict(inputs)`` runs the trained model on new inputs (see :meth:`predict`)."""

    run_dir: Path
    summary: dict[str, Any]
    state: TrainState
    config: Config
    setup: Setup | None = None

    def predict(self, inputs: Any, *, batch_size: int = 1024, standardize: bool = True) -> np.ndarray:
        """The task's predictions for ``inputs`` (a batch: one array, or a dict of named arrays).

        Classification returns class probabilities (argmax for the class), regression the predicted values.
        Inputs are in the units of the data passed to ``fit``: when the data set was standardised, the training
        split's mean and std are applied first (``standardize=False`` if ``inputs`` already are).
        """
        s = self.setup
        if s is None:
            raise JaxdlError("this FitResult has no task attached (it was built by hand); use jaxdl.train.restore")
        ds = s.dataset
        x = inputs
        if standardize and getattr(ds, "mean", None) is not None and not isinstance(x, dict):
            x = (np.asarray(x, np.float32) - ds.mean) / ds.std
        params, model_state = by_player(s.task, self.state.params), by_player(s.task, self.state.model_state)
        fn = jax.jit(lambda p, m, b: s.task.predict(p, m, b))
        n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
        outs = [np.asarray(fn(params, model_state, jax.tree.map(lambda a: a[i:i + batch_size], x)))
                for i in range(0, n, batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0,))


class Preemption:
    """SIGTERM and SIGINT set a flag the loop reads between segments: the run checkpoints where it is, records status
    ``preempted`` and raises :class:`~jaxdl.errors.PreemptedError` (the CLI exits with code 4). A second SIGINT
    interrupts at once. Handlers are installed only in the main thread and restored on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def recorded_driver(run_dir: Path) -> str | None:
    """The driver a run's ``config.json`` says it trained with (reused on resume)."""
    try:
        record = json.loads((run_dir / rundir.CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    driver = record.get("driver")
    return driver.get("chosen") if isinstance(driver, dict) else None


def _data_named(cfgs: list[Config], ds) -> list[Config]:
    """Configs recording the data set actually trained on (a data set or in-memory source passed from Python)."""
    return [c if c.data.name == ds.name else dataclasses.replace(c, data=dataclasses.replace(c.data, name=ds.name))
            for c in cfgs]


def train_group(cfgs: list[Config], run_dirs: list[str | Path], *, fused: bool = False, resume: bool = False,
                dataset=None, on_divergence: str = "raise", extra_config: dict[str, Any] | None = None,
                title: str | None = None, programs: Programs | None = None, model: Any = None,
                source: Any = None, restart: bool = False) -> list[FitResult]:
    """Train runs that share their static structure: fused into one vmapped program, or one after the other.

    Either way the runs share one set of compiled programs (hyperparameters and seeds are arguments) and each
    writes the run directory ``fit`` writes. In a fused group, member ``i`` follows the computation of its standalone
    run (same initial parameters, batches and RNG keys); its updates are masked once it stops early, and a member
    whose loss or gradient turns non-finite is frozen and marked ``diverged`` while the others go on.

    Args:
      cfgs: member configs; they must share :func:`jaxdl.train.step.signature`.
      run_dirs: one run directory per member.
      fused: train the members as one vmapped population (else one by one).
      resume: continue each member from its newest valid checkpoint (members without one start fresh; the others'
        checkpoints are kept).
      restart: discard what a run directory already holds (checkpoints, damaged steps, metrics) and train from
        step 0; with ``resume``, only for runs with nothing left to resume from. Without it, a fresh start into a
        directory that holds a run is a CheckpointError.
      dataset: a ready data set instead of ``cfg.data``; source: an in-memory source that ``cfg.data``'s splitting
        applies to (:func:`jaxdl.data.from_arrays`).
      model: a user's model instead of ``cfg.model`` (a Model, Linen module or NNX module/constructor).
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
        s = setup(cfgs[0], dataset, dropout=dropout, model=model, source=source)
        s.fused = fused
        programs = Programs(s)
    s = programs.s
    if dataset is not None or source is not None:
        cfgs = _data_named(cfgs, s.dataset)
    options = {"resume": resume, "restart": restart, "on_divergence": on_divergence, "extra": extra_config or {},
               "title": title or s.cfg.name, "members": len(cfgs)}
    dirs = [Path(d) for d in run_dirs]
    if not fused:
        return [r for c, d in zip(cfgs, dirs) for r in _train_unit(programs, [c], [d], **options)]
    if resume:
        units = _resume_units(cfgs, dirs)
        if len(units) > 1:
            results: dict[int, FitResult] = {}
            for idx in units:
                for i, r in zip(idx, _train_unit(programs, [cfgs[i] for i in idx], [dirs[i] for i in idx],
                                                 **options)):
                    results[i] = r
            return [results[i] for i in range(len(cfgs))]
    return _train_unit(programs, cfgs, dirs, **options)


def checkpoint_steps(cfg: Config, run_dir: Path) -> set[int]:
    """Steps of a run's checkpoint directory (step folders; not yet verified)."""
    folder = run_dir / "checkpoints"
    if not cfg.train.checkpoints or not folder.is_dir():
        return set()
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()}


def _resume_units(cfgs: list[Config], dirs: list[Path]) -> list[list[int]]:
    """How a fused group resumes: one unit when every member has a checkpoint step in common (restored at the newest
    shared step); otherwise units of members at the same newest step — members without checkpoints start fresh
    together, a member that lags continues from its own step — so nobody's checkpoints are deleted or skipped."""
    steps = [checkpoint_steps(c, d) for c, d in zip(cfgs, dirs)]
    if all(steps) and set.intersection(*steps):
        return [list(range(len(cfgs)))]
    units: dict[int | None, list[int]] = {}
    for i, s in enumerate(steps):
        units.setdefault(max(s) if s else None, []).append(i)
    return list(units.values())


def _diverged_message(m: Member, metrics: dict[str, Any], first: int, i: int, count: int, at: int) -> str:
    loss = float(np.asarray(metrics["loss"]).reshape(-1, count)[first, i])
    lr = float(np.asarray(metrics["lr"]).reshape(-1, count)[first, i])
    what = f"loss became {loss}"
    if np.isfinite(loss):
        norms = {k: float(np.asarray(v).reshape(-1, count)[first, i]) for k, v in metrics.items()
                 if k.endswith("grad_norm")}
        what = "gradient norm became " + ", ".join(f"{v}" for v in norms.values() if not np.isfinite(v))
    return f"run {m.cfg.name!r}: {what} at step {at} (lr={lr:.3g}); last good checkpoint: {m.last_good_checkpoint()}"


def _record_preempted(runs: list[Member], step: int, s: Setup, signum: int, wall0: float) -> None:
    """Write each run's ``summary.json`` with status ``preempted`` (its checkpoint at ``step`` was just saved) and
    raise :class:`PreemptedError` naming how to continue."""
    name = signal.Signals(signum).name
    for m in runs:
        for c in (m.ckpt, m.best_ckpt):  # the asynchronous checkpoints are complete before anyone is told
            if c is not None:
                c.wait()
        rundir.write_summary(m.run_dir, {
            "name": m.cfg.name, "status": "preempted", "task": s.task.name, "model": s.model_name,
            "data": s.dataset.name, "steps": step, "preempted_by": name, "checkpointed": m.ckpt is not None,
            "wall_time_s": round(m.elapsed_before + time.perf_counter() - wall0, 3)})
    where = ", ".join(str(m.run_dir) for m in runs)
    how = ("continue with `jaxdl resume RUN_DIR` (or rerun the sweep)" if all(m.ckpt is not None for m in runs)
           else "train.checkpoints=false: nothing was saved")
    raise PreemptedError(f"{name}: stopped at step {step} of {s.total_steps} and checkpointed {where}; {how}",
                         step=step, signal=signum)


def _train_metrics(task, sums: dict[str, list[float]]) -> dict[str, float]:
    return {f"train/{k}": v for k, v in task.finalize({k: tuple(v) for k, v in sums.items()}).items()}


def _live_info(metrics: dict[str, Any], live: list[int], count: int) -> str:
    """The progress line: the last step's loss and the other statistics, averaged over live members."""
    parts = [f"loss {np.mean(np.asarray(metrics['loss']).reshape(-1, count)[-1, live]):.4f}"]
    for name, (total, weight) in metrics["stats"].items():
        if name == "loss" or len(parts) >= 3:
            continue
        t = np.asarray(total).reshape(-1, count)[-1, live]
        w = np.asarray(weight).reshape(-1, count)[-1, live]
        parts.append(f"{name} {np.sum(t) / max(np.sum(w), 1e-12):.3f}")
    return " ".join(parts)


def _train_unit(programs: Programs, cfgs: list[Config], run_dirs: list[Path], *, resume: bool, on_divergence: str,
                extra: dict[str, Any], title: str, members: int, restart: bool = False) -> list[FitResult]:
    """The loop for one run, or for one fused population."""
    wall0 = time.perf_counter()
    s = programs.s
    fused = s.fused
    t = s.cfg.train
    count = len(cfgs)
    seeds = [c.seed for c in cfgs]
    hp = stack_hparams(cfgs) if fused else make_hparams(cfgs[0])
    runs = [Member.open(c, d) for c, d in zip(cfgs, run_dirs)]
    state = programs.init(seeds, hp)
    step = 0
    restored = restore_group(runs, state, fused) if resume and all(latest_step(m) is not None for m in runs) else None
    pretrained = None
    if t.init_from and restored is None:
        state, report = transfer.apply_pretrained(state, t.init_from, t.init_skip, fused, s.cfg.model.name)
        pretrained = {"from": t.init_from, "report": report.summary()}
    if restored is not None:
        state, metas, step = restored
        host = to_host(state)
        for i, (m, meta) in enumerate(zip(runs, metas)):
            single = member(host, i) if fused else host
            m.resume_from(meta, step, {"params": single.params, "model_state": single.model_state})
    else:
        for m in runs:
            m.fresh_start(resume=resume, restart=restart)
    active_host = np.array([m.status == "running" for m in runs])
    active = jax.numpy.asarray(active_host) if fused else jax.numpy.asarray(bool(active_host[0]))
    mesh = programs.place(count)
    state, hp, active = parallel.place((state, hp, active), mesh, parallel.state_spec(fused))
    # one-by-one members share the programs, so the driver choice covers the whole group's steps
    driver, driver_info = programs.choose_driver(state, active, hp, seeds,
                                                 s.total_steps * (1 if fused else max(members, 1)),
                                                 recorded=recorded_driver(run_dirs[0]) if restored else None)
    n_params = models.count_params(state.params) // (count if fused else 1)
    task = s.task
    monitor = {"name": task.monitor, "mode": mode_for(task.monitor)}
    for m in runs:
        rundir.write_config(m.run_dir, m.cfg, driver=driver_info, data=s.dataset.describe(), params=n_params,
                            resumed_from=step if restored else None, fused=fused, group_members=members,
                            placement=parallel.describe(mesh, t.mesh), pretrained=pretrained, task=task.describe(),
                            model_name=s.model_name, **extra)
    run = programs.runner(driver)
    evaluate = programs.evaluate
    hooked = type(task).on_evaluation is not Task.on_evaluation  # e.g. sample grids at every evaluation
    is_eval, is_ckpt, next_stop = boundaries(t, s.steps_per_epoch, s.total_steps)
    progress = Progress(cfgs[0].train.progress and distributed.is_primary(), s.total_steps, step, title if fused else cfgs[0].name)
    train_time, train_steps = 0.0, 0
    preemption = Preemption()
    try:
        preemption.__enter__()
        while step < s.total_steps and active_host.any():
            end = next_stop(step)
            epoch, offset = divmod(step, s.steps_per_epoch)
            t0 = time.perf_counter()
            state, active, metrics = run(state, active, hp, seeds, epoch, offset, end - step)
            metrics = to_host(metrics)  # one host sync per segment
            train_time += time.perf_counter() - t0
            train_steps += end - step
            length = end - step
            finite = np.asarray(metrics["finite"]).reshape(length, count)
            ran = np.asarray(metrics["active"]).reshape(length, count)
            for i, m in enumerate(runs):
                if not active_host[i]:
                    continue
                bad = ran[:, i] & ~finite[:, i]
                if bad.any():
                    first = int(np.argmax(bad))
                    at = step + first + 1
                    msg = _diverged_message(m, metrics, first, i, count, at)
                    if on_divergence == "raise":
                        raise DivergenceError(msg, step=at)
                    m.status, m.diverged_at = "diverged", at
                    active_host[i] = False
                    progress.log(f"diverged: {msg}")
                    continue
                m.accumulate(metrics["stats"], ran[:, i], i if fused else None)
            step = end
            live = [i for i in range(count) if active_host[i]]
            if live:
                progress.advance(step, _live_info(metrics, live, count)
                                 + (f" ({len(live)}/{count} members)" if fused else ""))
            host = None  # a host copy of the state, fetched at most once per segment
            if is_eval(step) and live:
                val = evaluate(state.params, state.model_state, s.dataset.val, hp)
                for i in live:
                    m = runs[i]
                    record = {"step": step, "epoch": round(step / s.steps_per_epoch, 3),
                              **_train_metrics(task, m.sums),
                              "lr": float(np.asarray(metrics["lr"]).reshape(-1, count)[-1, i]),
                              # fp16: the current loss scale and the overflowing steps skipped so far
                              **{k: float(np.asarray(metrics[k]).reshape(-1, count)[-1, i])
                                 for k in ("loss_scale", "skipped") if k in metrics},
                              **{f"val/{k}": v for k, v in (val[i] if val else {}).items()},
                              "time": round(m.elapsed_before + time.perf_counter() - wall0, 3)}
                    m.sums = {}
                    if hooked and m.cfg.train.plots:
                        host = to_host(state) if host is None else host
                        mine = member(host, i) if fused else host
                        record.update(task.on_evaluation(by_player(task, mine.params), by_player(task, mine.model_state),
                                                         s.dataset, m.run_dir, step))
                    m.log.append(record)
                    m.last_eval = record
                    if not fused:
                        progress.log(f"step {step} (epoch {record['epoch']:g}) "
                                     + fmt({k: v for k, v in record.items() if "/" in k}))
                    if m.es.update(record.get(m.cfg.train.early_stopping.monitor), step):
                        host = to_host(state) if host is None else host
                        mine = member(host, i) if fused else host
                        m.best_vars = {"params": mine.params, "model_state": mine.model_state}
                    if m.es.should_stop:
                        m.status = "stopped"
                        active_host[i] = False
                if fused:
                    active = parallel.place(jax.numpy.asarray(active_host), mesh, parallel.state_spec(fused))
            preempted = preemption.signum is not None and step < s.total_steps
            if is_ckpt(step) or not active_host.any() or preempted:
                elapsed = time.perf_counter() - wall0
                if fused:
                    host = to_host(state) if host is None else host
                for i, m in enumerate(runs):
                    m.save(step, member(host, i) if fused else state, elapsed)
            if preempted:
                _record_preempted(runs, step, s, preemption.signum, wall0)
    finally:
        preemption.__exit__()
        progress.close()
        for m in runs:
            m.close()

    # Final evaluation of each member's final (or best) variables, all at once.
    chosen, restored_best = [], []
    host = to_host(state) if fused else state
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
        es_monitor = m.cfg.train.early_stopping.monitor
        summary = {
            "name": m.cfg.name, "status": "diverged" if m.status == "diverged" or not all(
                np.isfinite(float((per[i] or {}).get("loss", 0.0))) for per in splits.values()) else "completed",
            "task": task.name, "model": s.model_name, "data": s.dataset.name, "params": n_params,
            "steps": m.diverged_at or (m.last_eval.get("step", step) if m.status == "stopped" else step),
            "epochs": round(step / s.steps_per_epoch, 3), "stopped_early": m.status == "stopped",
            "restored_best": restored_best[i], "diverged_at": m.diverged_at,
            "monitor": monitor,
            "best": {"step": m.es.best_step, es_monitor: m.es.best},
            "final": {k: v for k, v in m.last_eval.items() if "/" in k},
            **{name: per_member[i] for name, per_member in splits.items()},
            "driver": driver, "fused": fused, "group_members": members,
            "wall_time_s": round(m.elapsed_before + wall, 3),
            "steps_per_s": round(train_steps / train_time, 2) if train_time > 0 else None,
        }
        if getattr(mine_state := (member(host, i) if fused else host), "loss_scale", None) is not None:
            summary["skipped_steps"] = int(np.asarray(mine_state.loss_scale.skipped))
        if summary["status"] == "completed":
            summary.update(task.artifacts(by_player(task, chosen[i]["params"]),
                                          by_player(task, chosen[i]["model_state"]), s.dataset, m.run_dir,
                                          plots=m.cfg.train.plots))
        rundir.write_summary(m.run_dir, summary)
        records = m.log.read()
        if m.cfg.train.plots:
            rundir.plot_curves(records, m.run_dir / rundir.CURVES_FILE,
                               title=f"{m.cfg.name}: {s.model_name} on {s.dataset.name}")
        rundir.write_tensorboard(m.run_dir, records)
        final = jax.device_put(member(host, i)) if fused else state
        if restored_best[i]:
            final = final.replace(params=jax.device_put(m.best_vars["params"]),
                                  model_state=jax.device_put(m.best_vars["model_state"]))
        results.append(FitResult(m.run_dir, summary, final, m.cfg, s))
    return results


def fit(cfg: Config, *, workdir: str | Path | None = None, resume: bool = False, dataset=None,
        runs_root: str | Path = "runs", data: Any = None, model: Any = None, restart: bool = False) -> FitResult:
    """Train ``cfg`` to the end (or until early stopping) and write its run directory.

    Args:
      cfg: the run's config (a name such as ``load_config("digits_mlp")`` or a :class:`~jaxdl.config.Config`).
      workdir: the run directory; default ``runs/<name>/<timestamp>``.
      resume: continue from the newest valid checkpoint in ``workdir`` (exactly: same batches, same RNG keys).
      restart: train from step 0 even though ``workdir`` holds a run (its checkpoints, damaged steps and metrics
        are discarded); with ``resume``, only when nothing can be resumed. Without it that is a CheckpointError.
      data: in-memory data — a :func:`jaxdl.data.from_arrays` source (``cfg.data``'s splitting, limits and
        standardisation apply to it) or a ready :class:`~jaxdl.data.Dataset`; the run records its name.
      dataset: a ready data set (same as ``data=`` with a Dataset).
      model: a user's model instead of ``cfg.model``: a Flax Linen module, an NNX module (or a ``rngs ->
        nnx.Module`` constructor, so each seed initialises its own parameters) or a :class:`~jaxdl.models.Model`.

    Returns:
      FitResult with the run directory, the summary written to ``summary.json``, the final state and ``predict``.

    Raises:
      ConfigError / ModelInputError / DataError before compiling, for bad configs and shapes;
      DivergenceError naming the step when the loss or gradient becomes NaN/Inf (the last good checkpoint, a
      verified one, stays restorable); CheckpointError when ``workdir`` holds a run and neither ``resume`` nor
      ``restart`` is given, or when a checkpoint cannot be read (CheckpointIOError: nothing is renamed).
    """
    source = None
    if data is not None:
        if hasattr(data, "train"):
            dataset = data
        else:
            source = data
    run_dir = Path(workdir) if workdir is not None else rundir.new_run_dir(cfg, runs_root)
    run_dir = Path(distributed.agree(str(run_dir)))  # a multi-process run: process 0 names it
    if workdir is not None:
        rundir.ensure_dir(run_dir, "workdir")
    return train_group([cfg], [run_dir], resume=resume, dataset=dataset, model=model, source=source,
                       restart=restart)[0]


def restore(run_dir: str | Path, which: str = "best", *, data: Any = None, model: Any = None
            ) -> tuple[Setup, dict[str, Any]]:
    """Rebuild a run from its directory and restore its variables (``best`` if saved, else the newest step).

    A run trained on data or a model passed from Python needs them again: ``data=`` (the source or data set) and
    ``model=`` (the same module), as given to ``fit``.
    """
    run_dir = Path(run_dir)
    cfg = rundir.read_config(run_dir)
    if data is not None and hasattr(data, "train"):
        s = setup(cfg, data, model=model)
    else:
        s = setup(cfg, model=model, source=data)
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
