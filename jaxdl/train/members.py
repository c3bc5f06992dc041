"""Host-side bookkeeping of a run: early stopping, checkpoints and logs per member, progress, segment boundaries."""

from __future__ import annotations

import dataclasses
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl.checkpoint import Checkpointer, CheckpointWarning
from jaxdl.config import Config
from jaxdl.console import make_console
from jaxdl.errors import CheckpointDamagedError, CheckpointError, CheckpointUnverifiedError
from jaxdl.tasks import mode_for
from jaxdl.train import rundir
from jaxdl.train.population import member, stack_members, to_host
from jaxdl.train.step import TrainState

class EarlyStopping:
    """Tracks the best value of the monitored metric and how many evaluations passed without improvement."""

    def __init__(self, cfg, best=None, best_step=None, bad=0):
        self.cfg = cfg
        mode = cfg.mode if cfg.mode != "auto" else mode_for(cfg.monitor)
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


def boundaries(t, steps_per_epoch: int, total: int):
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


class Progress:
    """A rich progress bar with the live loss and metrics (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int, title: str):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("steps"), TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=make_console(stderr=True))
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


def fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))


@dataclasses.dataclass
class Member:
    """Host-side bookkeeping of one run (a population has one per member)."""

    cfg: Config
    run_dir: Path
    log: rundir.MetricsLog
    es: EarlyStopping
    ckpt: Checkpointer | None
    best_ckpt: Checkpointer | None
    sums: dict[str, list[float]]  # training statistics since the last evaluation: name -> [sum, weight]
    elapsed_before: float = 0.0
    best_vars: Any = None
    last_eval: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: str = "running"  # running | stopped (early) | diverged
    diverged_at: int | None = None
    best_saved: int | None = None  # step of the best variables last written to best/

    @classmethod
    def open(cls, cfg: Config, run_dir: Path) -> Member:
        """The run's bookkeeping; in a multi-process run only process 0 writes into ``run_dir`` (the others log to
        a scratch directory), while every process writes its share of the checkpoints there."""
        from jaxdl import distributed

        run_dir.mkdir(parents=True, exist_ok=True)
        distributed.barrier(f"jaxdl-open-{run_dir}")
        shared, run_dir = run_dir, Path(distributed.files_dir(run_dir))
        t = cfg.train
        ckpt = Checkpointer(shared / "checkpoints", keep=t.keep_checkpoints) if t.checkpoints else None
        # keep=2: after a resume the best step recorded in the restored checkpoint is still on disk
        best = Checkpointer(shared / "best", keep=2) if t.checkpoints else None
        return cls(cfg, run_dir, rundir.MetricsLog(run_dir / rundir.METRICS_FILE), EarlyStopping(t.early_stopping),
                   ckpt, best, {})

    def resume_from(self, meta: dict[str, Any], step: int, target_vars: Any) -> None:
        self.es = EarlyStopping(self.cfg.train.early_stopping, **meta.get("early_stopping", {}))
        sums = meta.get("train_sums", self.sums)
        if "n" in sums and not isinstance(sums.get("loss"), list):  # checkpoints written before tasks existed
            sums = {k: [float(v), float(sums["n"])] for k, v in sums.items() if k != "n"}
        self.sums = sums
        self.elapsed_before = float(meta.get("elapsed", 0.0))
        self.status = meta.get("status", "running")
        self.diverged_at = meta.get("diverged_at")
        self.log.truncate_after(step)
        if self.best_ckpt is not None:
            for later in [b for b in self.best_ckpt.steps() if b > step]:  # written after the restored checkpoint
                self.best_ckpt.delete(later)
            if self.es.best_step in self.best_ckpt.steps():
                try:
                    self.best_vars = to_host(self.best_ckpt.restore(self.es.best_step, target_vars)[0])
                    self.best_saved = self.es.best_step
                except (CheckpointDamagedError, CheckpointUnverifiedError) as e:
                    warnings.warn(f"the best variables (step {self.es.best_step}) in {self.best_ckpt.directory} "
                                  f"are unusable and dropped ({e}); the run ends with its final variables unless "
                                  f"{self.cfg.train.early_stopping.monitor} improves again", CheckpointWarning,
                                  stacklevel=2)
                    if isinstance(e, CheckpointDamagedError):
                        self.best_ckpt.quarantine(self.es.best_step)

    def accumulate(self, stats: dict[str, Any], keep: np.ndarray, i: int | None) -> None:
        """Add the training statistics of the kept steps (``(L,)`` or ``(L, P)`` sums and weights)."""
        for name, (total, weight) in stats.items():
            total, weight = np.asarray(total), np.asarray(weight)
            if i is not None:
                total, weight = total.reshape(len(keep), -1)[:, i], weight.reshape(len(keep), -1)[:, i]
            acc = self.sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(np.sum(total[keep], dtype=np.float64))
            acc[1] += float(np.sum(weight[keep], dtype=np.float64))

    def history(self) -> list[str]:
        """What this run directory already holds of a run: checkpoint steps, damaged steps, logged records."""
        found = []
        for name in ("checkpoints", "best"):
            folder = self.run_dir / name
            if not folder.is_dir():
                continue
            steps = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
            damaged = sorted(p.name for p in folder.glob("damaged-*"))
            if steps:
                found.append(f"{name}/ steps {', '.join(map(str, steps))}")
            if damaged:
                found.append(f"{name}/ {', '.join(damaged)}")
        if self.log.has_records():
            found.append(f"a non-empty {self.log.path.name}")
        return found

    def fresh_start(self, *, resume: bool = False, restart: bool = False) -> None:
        """Start from step 0 in a directory that holds no run, or (``restart``) discard the run it holds.

        A directory with checkpoints, damaged steps or logged records never starts over silently: without
        ``restart`` this raises CheckpointError telling the user to resume or to pass ``--restart``. When resuming,
        ``restart`` only applies to a run with nothing left to resume from (every step damaged, or none written).
        """
        found = self.history()
        if found and not restart:
            held = "; ".join(found)
            if resume:
                raise CheckpointError(f"cannot resume {self.run_dir}: no valid checkpoint to continue from ({held}); "
                                      "pass --restart (restart=True) to discard this run and train from step 0")
            raise CheckpointError(f"{self.run_dir} already holds a run ({held}); continue it with `jaxdl resume "
                                  f"{self.run_dir}` (fit(..., resume=True)), pass --restart (restart=True) to "
                                  "discard it and train from step 0, or use another workdir")
        if resume and self.ckpt is not None and self.ckpt.steps():
            raise CheckpointError(f"{self.run_dir} still has valid checkpoints (steps "
                                  f"{', '.join(map(str, self.ckpt.steps()))}) but its group could not resume "
                                  "together; run the resume again (members are regrouped by their checkpoints)")
        for c in (self.ckpt, self.best_ckpt):
            if c is not None:
                for step in c.steps():
                    c.delete(step)
        for name in ("checkpoints", "best"):
            folder = self.run_dir / name
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.is_dir() and (p.name.isdigit() or p.name.startswith("damaged-")):
                        shutil.rmtree(p)
        for name in (self.log.path.name, rundir.SUMMARY_FILE, "eval.json"):
            (self.run_dir / name).unlink(missing_ok=True)

    def last_good_checkpoint(self) -> str:
        """The newest verified (sealed) checkpoint, for messages: ``step N in DIR`` or ``none``."""
        last = self.ckpt.last_verified_step() if self.ckpt is not None else None
        return f"step {last} in {self.ckpt.directory}" if last is not None else "none"

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


def latest_step(m: Member) -> int | None:
    """The newest checkpoint step of a member (not yet verified), or None."""
    steps = m.ckpt.steps() if m.ckpt is not None else []
    return steps[-1] if steps else None


def restore_group(members: list[Member], target: TrainState, fused: bool):
    """The (stacked) state at the newest checkpoint step every member has and can restore, with each member's
    metadata and the step; None when a member has no checkpoint at all.

    Members whose newest steps differ (a driver died between member saves) go back to the newest step they share;
    ``train_group`` splits a group with no shared step into units by step before calling this.
    """
    single = jax.eval_shape(lambda: member(target, 0)) if fused else target
    latest = []
    for m in members:
        got = m.ckpt.restore_latest(single, quarantine=True) if m.ckpt is not None else None
        if got is None:
            return None
        latest.append(got)
    if len({g[2] for g in latest}) == 1:
        step = latest[0][2]
        states, metas = [g[0] for g in latest], [g[1] for g in latest]
    else:
        shared = set.intersection(*[{s for s in m.ckpt.steps() if s <= at} for m, (_, _, at) in zip(members, latest)])
        for step in sorted(shared, reverse=True):
            try:
                pairs = [(g[0], g[1]) if g[2] == step else m.ckpt.restore(step, single)
                         for m, g in zip(members, latest)]
            except (CheckpointDamagedError, CheckpointUnverifiedError):  # verified damage: try the step before
                continue
            states, metas = [p[0] for p in pairs], [p[1] for p in pairs]
            break
        else:
            raise CheckpointError("members " + ", ".join(repr(m.cfg.name) for m in members) + " share no "
                                  "restorable checkpoint step (newest: " + ", ".join(str(g[2]) for g in latest) + ")")
    stacked = jax.device_put(stack_members(states)) if fused else states[0]
    return stacked, metas, step
