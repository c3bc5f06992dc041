"""Checkpoints: a small wrapper over Orbax's ``CheckpointManager``.

- ``save(step, state, meta)`` writes the state pytree and a JSON ``meta`` dict (loop position, early-stopping
  counters, running metric sums …) asynchronously and keeps the newest ``keep`` steps.
- ``restore_latest(target)`` restores the newest *valid* step: a step whose files are corrupt or incomplete (a crash
  mid-write) is skipped with a warning and the one before it is tried — Orbax alone raises on the newest.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxdl.errors import CheckpointError

log = logging.getLogger(__name__)


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it could not be restored."""


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
    """Save and restore ``(state, meta)`` pairs under ``directory``.

    Args:
      directory: where step folders are written (created if needed).
      keep: number of newest steps kept on disk (>= 2 leaves a fallback if the newest is damaged).
      asynchronous: write in a background thread; ``wait()`` blocks until pending writes are committed.
    """

    def __init__(self, directory: str | Path, keep: int = 2, asynchronous: bool = True):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous,
                                                     create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any] | None = None) -> None:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {}))
        if int(step) in self._manager.all_steps():  # e.g. re-reached after a resume: the new write wins
            self.delete(step)
        self._manager.save(int(step), args=args, force=True)

    def delete(self, step: int) -> None:
        self._manager.wait_until_finished()
        self._manager.delete(int(step))

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """Restore ``step`` into the structure/shapes/dtypes of ``target`` (arrays or ShapeDtypeStructs)."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore())
        out = self._manager.restore(int(step), args=args)
        state = out["state"]
        _check_finite_structure(state, target, step)
        return state, dict(out["meta"] or {})

    def restore_latest(self, target: Any, quarantine: bool = False) -> tuple[Any, dict[str, Any], int] | None:
        """Newest restorable ``(state, meta, step)``, skipping damaged steps with a warning; None if no step exists.

        Args:
          target: arrays or ShapeDtypeStructs with the structure to restore into.
          quarantine: rename damaged step folders to ``damaged-<step>`` so a resumed run can write that step again.

        Raises CheckpointError if steps exist but none of them can be restored.
        """
        self.wait()
        self._manager.reload()
        steps = self.steps()
        errors = []
        for step in reversed(steps):
            try:
                state, meta = self.restore(step, target)
                return state, meta, step
            except Exception as e:  # noqa: BLE001 — any failure to read a step means "damaged"; try the previous
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                errors.append(f"step {step}: {first}")
                warnings.warn(f"checkpoint at step {step} in {self.directory} could not be restored and is skipped "
                              f"({type(e).__name__}: {first})", CheckpointWarning, stacklevel=2)
                if quarantine:
                    self._quarantine(step)
        if steps:
            raise CheckpointError(f"no valid checkpoint in {self.directory}: " + "; ".join(errors))
        return None

    def _quarantine(self, step: int) -> None:
        folder = self.directory / str(step)
        target = self.directory / f"damaged-{step}"
        n = 1
        while target.exists():
            n += 1
            target = self.directory / f"damaged-{step}-{n}"
        if folder.exists():
            folder.rename(target)
        # A fresh manager: Orbax caches the step list (reload() keeps the renamed step).
        self._manager.close()
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_finite_structure(state: Any, target: Any, step: int) -> None:
    """Restored leaves must match the target's shapes (Orbax already checks structure)."""
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(target)):
        if np.shape(got) != np.shape(want):
            raise CheckpointError(f"checkpoint step {step}: leaf shape {np.shape(got)} != expected {np.shape(want)}")
