"""Checkpoints: a small wrapper over Orbax's ``CheckpointManager`` with a checksum manifest per step.

- ``save(step, state, meta)`` writes the state pytree and a JSON ``meta`` dict (loop position, early-stopping
  counters, running metric sums …) asynchronously and keeps the newest ``keep`` steps.
- Once Orbax has committed a step (known at the next ``save``, ``wait`` or ``close``: Orbax itself waits for the
  previous save before starting the next one), the step is *sealed*: ``jaxdl_manifest.json`` in the step folder
  holds the sha256 and size of every other file of the step. Orbax has no content checksums of its own (its zarr3
  shard indexes carry a crc32c; the array data does not), so a flipped byte would otherwise be restored silently.
- ``restore(step, target)`` checks the manifest before Orbax reads anything and checks that every restored floating
  leaf is finite. A checksum mismatch, a missing, unreadable-as-data or garbled file, or a non-finite leaf is
  *verified damage* (:class:`~jaxdl.errors.CheckpointDamagedError`). A filesystem error (permission denied, I/O
  error) says nothing about the contents: :class:`~jaxdl.errors.CheckpointIOError`, raised at once.
- A step without a manifest is *unverified*: the process died after Orbax committed it and before it was sealed (it
  is then the newest step), or it was written by an older jaxdl. It is accepted only when no newer step is sealed and
  it restores with finite leaves (it is then sealed); an unverified step older than a sealed one is skipped
  (:class:`~jaxdl.errors.CheckpointUnverifiedError`) and left in place.
- ``restore_latest(target)`` restores the newest *valid* step, walking back past damaged steps with a
  :class:`CheckpointWarning` (and, when resuming, renaming them ``damaged-<step>``). Only verified damage is walked
  past or renamed; I/O errors and a sealed step that does not fit the target (a changed config) stop the walk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxdl.errors import CheckpointDamagedError, CheckpointError, CheckpointIOError, CheckpointUnverifiedError

log = logging.getLogger(__name__)

MANIFEST = "jaxdl_manifest.json"
_CHUNK = 1 << 20
# errors whose text says the filesystem, not the data, failed (TensorStore reports them as ValueError with a status)
_IO_MARKERS = ("PERMISSION_DENIED", "Permission denied", "Input/output error", "UNAVAILABLE:", "Stale file handle",
               "DEADLINE_EXCEEDED", "Read-only file system")
# OSErrors that describe the step's contents (a file is missing or in the wrong place): damage, not a read failure
_DAMAGE_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it could not be restored."""


def _abstract(tree: Any) -> Any:
    """Restore targets: each leaf's shape, dtype and placement. A leaf without a placement (e.g. from
    ``jax.eval_shape``) restores onto this process's first device — never onto the saved topology, which may not
    exist here (a checkpoint written on 4 devices restores on 1, and the loop then places it for its own mesh)."""
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def one(x):
        x = ocp.utils.to_shape_dtype_struct(x)
        if getattr(x, "sharding", None) is None:
            x = jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=default)
        return x

    return jax.tree.map(one, tree)


def _file_digest(path: Path) -> str:
    """sha256 of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _step_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and ".tmp-" not in p.name)


def write_manifest(folder: Path) -> Path:
    """Seal a committed step folder: sha256 and size of each of its files, written atomically."""
    files = {p.relative_to(folder).as_posix(): {"sha256": _file_digest(p), "size": p.stat().st_size}
             for p in _step_files(folder)}
    path = folder / MANIFEST
    tmp = folder / f"{MANIFEST}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"format": 1, "algorithm": "sha256", "files": files}, f, indent=0, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _is_io_error(e: BaseException) -> bool:
    """True when ``e`` (or an exception it was raised from) is a filesystem failure rather than bad data."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, CheckpointIOError):
            return True
        if isinstance(e, OSError) and not isinstance(e, _DAMAGE_OS_ERRORS):
            return True
        if any(marker in str(e) for marker in _IO_MARKERS):
            return True
        e = e.__cause__ or e.__context__
    return False


def verify_manifest(folder: Path, step: int) -> bool:
    """Check a step folder against its manifest: True if it matches, False if it has none (unverified).

    Raises CheckpointDamagedError (mismatch, missing file, garbled manifest) or CheckpointIOError (the filesystem
    refused a read)."""
    path = folder / MANIFEST

    def io_error(e: OSError, what: Path) -> CheckpointIOError:
        return CheckpointIOError(f"cannot read checkpoint step {step} in {folder} ({what.name}): "
                                 f"{type(e).__name__}: {e}; the step is left in place — fix the filesystem "
                                 "problem and retry", step=step, directory=str(folder))

    try:
        text = path.read_text()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise io_error(e, path) from e
    try:
        files = json.loads(text)["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointDamagedError(f"checkpoint step {step} in {folder}: garbled checksum manifest ({e})",
                                     step=step, directory=str(folder)) from e
    present = {p.relative_to(folder).as_posix() for p in _step_files(folder)}
    for rel, want in sorted(files.items()):
        file = folder / rel
        try:
            got = _file_digest(file)
        except _DAMAGE_OS_ERRORS as e:
            raise CheckpointDamagedError(f"checkpoint step {step} in {folder}: file {rel} is missing",
                                         step=step, directory=str(folder)) from e
        except OSError as e:
            raise io_error(e, file) from e
        if got != want.get("sha256"):
            raise CheckpointDamagedError(f"checkpoint step {step} in {folder}: checksum mismatch in {rel}",
                                         step=step, directory=str(folder))
    extra = present - set(files)
    if extra:  # not read by Orbax's restore as far as the manifest knows: noted, not damage
        log.info("checkpoint step %s in %s: files not in its manifest: %s", step, folder, sorted(extra)[:5])
    return True


class Checkpointer:
    """Save and restore ``(state, meta)`` pairs under ``directory``.

    Args:
      directory: where step folders are written (created if needed).
      keep: number of newest steps kept on disk (>= 2 leaves a fallback if the newest is damaged).
      asynchronous: write in a background thread; ``wait()`` blocks until pending writes are committed and sealed.
    """

    def __init__(self, directory: str | Path, keep: int = 2, asynchronous: bool = True):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=asynchronous,
                                                     create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)
        self._pending: list[int] = []  # saved steps not yet sealed with a manifest
        self._sealer: threading.Thread | None = None  # seals committed steps while training goes on

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def sealed(self, step: int) -> bool:
        """Whether ``step`` has a checksum manifest (not re-checked here)."""
        return (self.directory / str(int(step)) / MANIFEST).is_file()

    def damaged_steps(self) -> list[str]:
        """Names of the quarantined step folders (``damaged-<step>``)."""
        return sorted(p.name for p in self.directory.glob("damaged-*"))

    def last_verified_step(self) -> int | None:
        """The newest sealed step once pending saves are complete, or None: the step a message may call the last
        good checkpoint."""
        self.wait()
        sealed = [s for s in self.steps() if self.sealed(s)]
        return sealed[-1] if sealed else None

    def save(self, step: int, state: Any, meta: dict[str, Any] | None = None) -> None:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {}))
        if int(step) in self._manager.all_steps():  # e.g. re-reached after a resume: the new write wins
            self.delete(step)
        # Orbax waits for the previous save before starting this one: once it has, the previous step is committed
        # and is sealed in the background (one read of its files) while this one is written.
        self._manager.wait_until_finished()
        self._join_sealer()
        pending, self._pending = self._pending, []
        if pending:
            self._sealer = threading.Thread(target=self._seal, args=(pending,), name="jaxdl-seal", daemon=True)
            self._sealer.start()
        self._manager.save(int(step), args=args, force=True)
        self._pending.append(int(step))

    def delete(self, step: int) -> None:
        self.wait()
        self._manager.delete(int(step))

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """Restore ``step`` into the structure/shapes/dtypes of ``target`` (arrays or ShapeDtypeStructs).

        Raises CheckpointDamagedError (verified damage), CheckpointIOError (the filesystem failed),
        CheckpointUnverifiedError (no manifest, and a newer step is sealed) or CheckpointError (a sealed step that
        does not fit ``target``)."""
        step = int(step)
        folder = self.directory / str(step)
        self.wait()
        sealed = verify_manifest(folder, step)
        if not sealed:
            newer = [s for s in self.steps() if s > step and self.sealed(s)]
            if newer:
                raise CheckpointUnverifiedError(
                    f"checkpoint step {step} in {self.directory} has no checksum manifest although step {newer[0]} "
                    "has one: it cannot be verified and is not restored", step=step, directory=str(folder))
        args = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore())
        try:
            out = self._manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001 — classified below
            if _is_io_error(e):
                raise CheckpointIOError(f"cannot read checkpoint step {step} in {folder}: {type(e).__name__}: "
                                        f"{_first_line(e)}; the step is left in place — fix the filesystem problem "
                                        "and retry", step=step, directory=str(folder)) from e
            if sealed:
                raise CheckpointError(f"checkpoint step {step} in {folder} matches its checksums but cannot be "
                                      f"restored into this run's state (was the config changed?): "
                                      f"{type(e).__name__}: {_first_line(e)}") from e
            raise CheckpointDamagedError(f"checkpoint step {step} in {folder} (unverified: no manifest) is "
                                         f"unreadable: {type(e).__name__}: {_first_line(e)}",
                                         step=step, directory=str(folder)) from e
        state = out["state"]
        _check_leaves(state, target, step, folder)
        if not sealed and jax.process_index() == 0:
            try:  # verified as well as an unsealed step can be: restorable, every leaf finite
                write_manifest(folder)
            except OSError as e:
                log.info("could not seal checkpoint step %s in %s: %s", step, folder, e)
        return state, dict(out["meta"] or {})

    def restore_latest(self, target: Any, quarantine: bool = False) -> tuple[Any, dict[str, Any], int] | None:
        """Newest restorable ``(state, meta, step)``, skipping damaged steps with a warning; None if no step exists.

        Args:
          target: arrays or ShapeDtypeStructs with the structure to restore into.
          quarantine: rename verifiably damaged step folders to ``damaged-<step>`` so a resumed run can write that
            step again; when that leaves no step at all, None is returned (the caller decides whether the run may
            start over: see ``Member.fresh_start``).

        Raises CheckpointIOError at the first step the filesystem refuses to read (nothing is renamed from there on),
        CheckpointError for a sealed step that does not fit ``target``, and CheckpointError if steps exist but none
        of them can be restored (without ``quarantine``, or when some were only unverifiable).
        """
        self.wait()
        self._manager.reload()
        steps = self.steps()
        errors, renamed = [], []
        for step in reversed(steps):
            try:
                state, meta = self.restore(step, target)
                return state, meta, step
            except (CheckpointDamagedError, CheckpointUnverifiedError) as e:
                first = _first_line(e)
                errors.append(f"step {step}: {first}")
                damaged = isinstance(e, CheckpointDamagedError)
                what = "is damaged" if damaged else "cannot be verified"
                warnings.warn(f"checkpoint at step {step} in {self.directory} {what} and is skipped ({first})"
                              + ("; renamed damaged-" + str(step) if quarantine and damaged else ""),
                              CheckpointWarning, stacklevel=2)
                if quarantine and damaged:
                    renamed.append(self._quarantine(step))
        if steps and len(renamed) == len(steps):
            return None
        if steps:
            raise CheckpointError(f"no valid checkpoint in {self.directory}: " + "; ".join(errors))
        return None

    def quarantine(self, step: int) -> str:
        """Rename a verifiably damaged step folder ``damaged-<step>`` (kept for inspection; the step can be written
        again). Returns the new folder name."""
        return self._quarantine(step)

    def _quarantine(self, step: int) -> str:
        self.wait()
        folder = self.directory / str(step)
        target = self.directory / f"damaged-{step}"
        n = 1
        while target.exists():
            n += 1
            target = self.directory / f"damaged-{step}-{n}"
        if folder.exists() and jax.process_index() == 0:
            try:
                folder.rename(target)
            except OSError as e:
                raise CheckpointIOError(f"cannot rename damaged checkpoint step {step} in {self.directory}: "
                                        f"{type(e).__name__}: {e}", step=step, directory=str(folder)) from e
        # A fresh manager: Orbax caches the step list (reload() keeps the renamed step).
        self._manager.close()
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)
        return target.name

    def _join_sealer(self) -> None:
        if self._sealer is not None:
            self._sealer.join()
            self._sealer = None

    def _seal(self, pending: list[int]) -> None:
        if jax.process_index() != 0:  # a multi-process run writes its steps jointly; process 0 seals them
            return
        for step in pending:
            folder = self.directory / str(step)
            if not folder.is_dir() or (folder / MANIFEST).exists():  # removed by keep-N, or sealed already
                continue
            try:
                write_manifest(folder)
            except OSError as e:
                if not folder.is_dir():  # removed by keep-N while it was being read
                    continue
                warnings.warn(f"checkpoint step {step} in {self.directory} could not be sealed with a checksum "
                              f"manifest ({type(e).__name__}: {e}); it stays unverified", CheckpointWarning,
                              stacklevel=3)

    def wait(self) -> None:
        """Block until pending saves are committed, then seal them."""
        self._manager.wait_until_finished()
        self._join_sealer()
        pending, self._pending = self._pending, []
        self._seal(pending)

    def close(self) -> None:
        self.wait()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_leaves(state: Any, target: Any, step: int, folder: Path) -> None:
    """Restored leaves must match the target's shapes (Orbax already checks structure) and be finite: the loop never
    checkpoints a non-finite state, so a NaN or Inf in a checkpoint is damage."""
    finite = []
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(target)):
        if np.shape(got) != np.shape(want):
            raise CheckpointError(f"checkpoint step {step} in {folder}: leaf shape {np.shape(got)} != expected "
                                  f"{np.shape(want)}")
        if jnp.issubdtype(got.dtype, jnp.inexact):
            finite.append(jnp.all(jnp.isfinite(got)))
    if finite and not bool(jnp.all(jnp.stack(finite))):
        paths = [jax.tree_util.keystr(p) for p, leaf in jax.tree_util.tree_leaves_with_path(state)
                 if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(leaf)))]
        raise CheckpointDamagedError(f"checkpoint step {step} in {folder}: non-finite values in "
                                     + ", ".join(paths[:3]) + (" …" if len(paths) > 3 else ""),
                                     step=step, directory=str(folder))
