"""Checkpoint faults: a flipped byte is detected by the checksum manifest and walked back past, a filesystem error
fails loudly without renaming anything, and a directory that holds a run never starts over without --restart."""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxdl import checkpoint as ckpt_lib
from jaxdl.checkpoint import MANIFEST, Checkpointer, CheckpointWarning
from jaxdl.cli import main
from jaxdl.config import Config, DataConfig, TrainConfig, model_config
from jaxdl.errors import CheckpointError, CheckpointIOError
from jaxdl.train import fit

STEPS, EVERY = 30, 10


def small_cfg(**train) -> Config:
    t = dict(batch_size=32, steps=STEPS, checkpoint_every=EVERY, eval_every=EVERY, keep_checkpoints=3,
             progress=False, plots=False)
    t.update(train)
    return Config(name="faults", model=model_config("mlp", widths=(16,)), data=DataConfig(name="digits"),
                  train=TrainConfig(**t))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: its directory (copied by each test) and its result."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = fit(small_cfg(), workdir=run_dir)
    return run_dir, result


def copy_run(reference, tmp_path: Path, *, killed: bool = True) -> Path:
    """A copy of the reference run; ``killed``: without summary.json, as a run killed before its end leaves it."""
    d = tmp_path / "run"
    shutil.copytree(reference[0], d)
    if killed:
        (d / "summary.json").unlink()
    return d


def largest_file(step_dir: Path) -> Path:
    return max((p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST), key=lambda p: p.stat().st_size)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def steps_of(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def damaged(run_dir: Path) -> list[str]:
    return sorted(p.name for sub in ("checkpoints", "best") for p in (run_dir / sub).glob("damaged-*"))


def test_every_saved_step_is_sealed_with_a_manifest(reference):
    run_dir = reference[0]
    for sub in ("checkpoints", "best"):
        steps = [p for p in (run_dir / sub).iterdir() if p.name.isdigit()]
        assert steps
        for step in steps:
            manifest = json.loads((step / MANIFEST).read_text())
            assert manifest["algorithm"] == "sha256"
            assert set(manifest["files"]) == {p.relative_to(step).as_posix() for p in step.rglob("*")
                                              if p.is_file() and p.name != MANIFEST}


def test_flipped_byte_in_newest_step_falls_back_and_matches_uninterrupted_run(reference, tmp_path):
    d = copy_run(reference, tmp_path)
    flip_byte(largest_file(d / "checkpoints" / str(STEPS)))
    with pytest.warns(CheckpointWarning, match=rf"step {STEPS}.*checksum mismatch"):
        result = fit(small_cfg(), workdir=d, resume=True)
    ref = reference[1]
    assert json.loads((d / "config.json").read_text())["resumed_from"] == STEPS - EVERY
    assert damaged(d) == [f"damaged-{STEPS}"]
    assert result.summary["status"] == "completed"
    for split in ("val", "test"):
        for k, v in ref.summary[split].items():
            assert math.isfinite(result.summary[split][k]) and np.allclose(result.summary[split][k], v), (split, k)
    assert leaves_equal(result.state.params, ref.state.params)
    assert steps_of(d) == steps_of(reference[0]) == [10, 20, 30]


def test_newest_step_with_non_finite_leaves_is_damaged(reference, tmp_path):
    # a NaN written into the newest step (its manifest matches: the bytes are as saved) is still damage
    d = copy_run(reference, tmp_path)
    target = jax.eval_shape(lambda: reference[1].state)
    with Checkpointer(d / "checkpoints", keep=3) as c:
        state, meta = c.restore(STEPS, target)
        leaf = jax.tree.leaves(state.params)[0]
        poisoned = state.replace(params=jax.tree.map(lambda x: x if x is not leaf else x.at[0].set(np.nan),
                                                     state.params))
        c.save(STEPS, poisoned, meta)
    assert (d / "checkpoints" / str(STEPS) / MANIFEST).is_file()
    with pytest.warns(CheckpointWarning, match=rf"step {STEPS}.*non-finite values"):
        result = fit(small_cfg(), workdir=d, resume=True)
    assert damaged(d) == [f"damaged-{STEPS}"]
    assert leaves_equal(result.state.params, reference[1].state.params)


def test_unsealed_newest_step_that_restores_finite_is_accepted_and_sealed(reference, tmp_path):
    d = copy_run(reference, tmp_path)
    newest = d / "checkpoints" / str(STEPS)
    (newest / MANIFEST).unlink()
    target = jax.eval_shape(lambda: reference[1].state)
    with Checkpointer(d / "checkpoints", keep=3) as c:
        _, _, step = c.restore_latest(target)
        assert step == STEPS and (newest / MANIFEST).is_file()
        # an unsealed step older than a sealed one cannot be verified: skipped, never restored, left in place
        (d / "checkpoints" / "20" / MANIFEST).unlink()
        with pytest.raises(CheckpointError, match="no checksum manifest"):
            c.restore(20, target)
    assert (d / "checkpoints" / "20").is_dir()


def eval_cli(run_dir: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["eval", str(run_dir)])
    return rc, capsys.readouterr().err


def test_flipped_byte_in_best_step_eval_falls_back_never_writes_nan(reference, tmp_path, capsys):
    d = copy_run(reference, tmp_path, killed=False)
    best = sorted(int(p.name) for p in (d / "best").iterdir() if p.name.isdigit())
    assert len(best) == 2, best
    flip_byte(largest_file(d / "best" / str(best[-1])))
    with pytest.warns(CheckpointWarning, match=rf"step {best[-1]}.*checksum mismatch"):
        rc, err = eval_cli(d, capsys)
    assert rc == 0, err
    results = json.loads((d / "eval.json").read_text())
    losses = [results[s]["loss"] for s in ("val", "test")]
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses), results
    assert damaged(d) == []  # eval reads; it never renames


def test_every_best_step_damaged_eval_fails_cleanly(reference, tmp_path, capsys):
    d = copy_run(reference, tmp_path, killed=False)
    for step in (p for p in (d / "best").iterdir() if p.name.isdigit()):
        flip_byte(largest_file(step))
    with pytest.warns(CheckpointWarning):
        rc, err = eval_cli(d, capsys)
    assert rc == 2 and err.startswith("error: no valid checkpoint") and "checksum mismatch" in err, err
    assert not (d / "eval.json").exists()


def test_permission_error_fails_loudly_and_renames_nothing(reference, tmp_path, monkeypatch, capsys):
    d = copy_run(reference, tmp_path)
    digest = ckpt_lib._file_digest

    def refuse(path):
        if f"checkpoints/{STEPS}/" in Path(path).as_posix():
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return digest(path)

    monkeypatch.setattr(ckpt_lib, "_file_digest", refuse)
    with pytest.raises(CheckpointIOError, match=rf"step {STEPS} in .*checkpoints/{STEPS}.*Permission denied") as e:
        fit(small_cfg(), workdir=d, resume=True)
    assert e.value.step == STEPS
    capsys.readouterr()
    assert main(["resume", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read checkpoint step {STEPS}") and "Permission denied" in err, err
    assert damaged(d) == []
    assert sorted(int(p.name) for p in (d / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20, 30]
    assert steps_of(d) == [10, 20, 30]  # the log is not truncated either
    # once the filesystem reads again, the run resumes from its newest step: nothing was lost
    monkeypatch.setattr(ckpt_lib, "_file_digest", digest)
    result = fit(small_cfg(), workdir=d, resume=True)
    assert json.loads((d / "config.json").read_text())["resumed_from"] == STEPS
    assert leaves_equal(result.state.params, reference[1].state.params)


def test_io_error_from_orbax_on_an_unsealed_step_renames_nothing(reference, tmp_path, monkeypatch):
    d = copy_run(reference, tmp_path)
    (d / "checkpoints" / str(STEPS) / MANIFEST).unlink()  # Orbax is the first to read this step

    def eio(self, step, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ocp.CheckpointManager, "restore", eio)
    with pytest.raises(CheckpointIOError, match=rf"step {STEPS}.*Input/output error"):
        fit(small_cfg(), workdir=d, resume=True)
    assert damaged(d) == []
    assert (d / "checkpoints" / str(STEPS)).is_dir()


def test_all_steps_damaged_resume_refuses_to_start_from_zero_without_restart(reference, tmp_path, capsys):
    d = copy_run(reference, tmp_path)
    log_before = (d / "metrics.jsonl").read_text()
    for step in (10, 20, 30):
        flip_byte(largest_file(d / "checkpoints" / str(step)))
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError, match=r"--restart"):
        fit(small_cfg(), workdir=d, resume=True)
    assert damaged(d) == ["damaged-10", "damaged-20", "damaged-30"]
    # the next resume does not silently train from step 0 either
    capsys.readouterr()
    assert main(["resume", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot resume") and "damaged-30" in err and "--restart" in err, err
    assert (d / "metrics.jsonl").read_text() == log_before
    # the user says so: the run starts over and ends where an uninterrupted run ends
    capsys.readouterr()
    assert main(["resume", str(d), "--restart"]) == 0
    assert damaged(d) == []
    assert steps_of(d) == [10, 20, 30]
    assert json.loads((d / "summary.json").read_text())["status"] == "completed"


def test_fresh_start_into_a_run_directory_needs_restart(reference, tmp_path):
    d = copy_run(reference, tmp_path, killed=False)
    with pytest.raises(CheckpointError, match=r"already holds a run.*jaxdl resume.*--restart"):
        fit(small_cfg(), workdir=d)
    assert steps_of(d) == [10, 20, 30]
    # a run without checkpoints but with logged records counts as a run too
    logged = tmp_path / "logged"
    logged.mkdir()
    shutil.copy(d / "metrics.jsonl", logged / "metrics.jsonl")
    with pytest.raises(CheckpointError, match=r"metrics.jsonl"):
        fit(small_cfg(checkpoints=False), workdir=logged)
    result = fit(small_cfg(), workdir=d, restart=True)
    assert leaves_equal(result.state.params, reference[1].state.params)
    assert steps_of(d) == [10, 20, 30] and damaged(d) == []
