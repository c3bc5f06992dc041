"""SIGTERM / SIGINT: the run finishes its segment, checkpoints, records ``preempted``, exits with code 4, and
``jaxdl resume`` continues it bitwise-equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdl import config as C
from jaxdl.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["train.steps=1200", "train.checkpoint_every=100", "train.eval_every=400", "train.driver=host",
             "train.progress=false", "train.plots=false", "model.widths=32", "model.dropout=0.2"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def train_cmd(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "jaxdl.cli", "train", "digits_mlp", *OVERRIDES, "--workdir", str(workdir)]


def wait_for_checkpoint(proc: subprocess.Popen, ckpts: Path, at_least: int = 200) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.exists() else []
        if any(s >= at_least for s in steps):
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint >= {at_least} before the run ended: {proc.poll()}")


def final_state(run_dir: Path):
    from jaxdl.train import initial_state, setup

    s = setup(C.load_json(run_dir / "config.json"))
    target = jax.eval_shape(lambda: initial_state(s))
    with Checkpointer(run_dir / "checkpoints") as c:
        state, _, step = c.restore_latest(target)
    return state, step


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_marks_preempted_and_resume_is_exact(tmp_path, sig):
    run = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(run), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    wait_for_checkpoint(proc, run / "checkpoints")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err[-2000:]
    assert f"preempted: {signal.Signals(sig).name}: stopped at step" in err and "jaxdl resume" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["steps"] < 1200
    with Checkpointer(run / "checkpoints") as c:
        assert c.steps()[-1] == summary["steps"]  # checkpointed where it stopped, not at the last boundary

    resumed = subprocess.run([sys.executable, "-m", "jaxdl.cli", "resume", str(run)], cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = tmp_path / "straight"
    ok = subprocess.run(train_cmd(straight), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]

    (a, step_a), (b, step_b) = final_state(run), final_state(straight)
    assert step_a == step_b == 1200
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    ma = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == [400, 800, 1200]
    for ra, rb in zip(ma, mb):
        assert ra["val/loss"] == rb["val/loss"] and ra["train/loss"] == rb["train/loss"]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_preemption_handlers_are_restored(tmp_path):
    from jaxdl.train.loop import Preemption

    before = signal.getsignal(signal.SIGTERM)
    with Preemption() as p:
        assert signal.getsignal(signal.SIGTERM) != before
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert p.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_through_a_sweep_resumes_exactly(tmp_path):
    """The same through `jaxdl sweep`: the driver exits 4, the run is recorded preempted, a rerun finishes it, and
    the result is bitwise the uninterrupted run's."""
    from jaxdl.train import fit

    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "jaxdl.cli", "sweep", str(ROOT / "configs" / "digits_mlp.py"), *OVERRIDES,
           "--sweep", "seed=3", "--workdir", str(sweep), "--fuse", "never"]
    env = {**ENV, "JAXDL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not list(sweep.glob("runs/*/checkpoints/[0-9]*")):
        time.sleep(0.05)
    (run,) = [p.parent.parent for p in sweep.glob("runs/*/checkpoints/[0-9]*")][:1]
    wait_for_checkpoint(proc, run / "checkpoints")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err[-2000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "preempted"

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    straight = fit(C.load_json(run / "config.json"), workdir=tmp_path / "straight")
    (a, step_a), (b, step_b) = final_state(run), final_state(tmp_path / "straight")
    assert step_a == step_b == 1200
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    ma = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val/loss"], r["train/loss"]) for r in ma] == [(r["step"], r["val/loss"], r["train/loss"])
                                                                         for r in mb]
    assert straight.summary["test"] == json.loads((run / "summary.json").read_text())["test"]
