"""End-to-end behaviour of the training loop on the real digits data (tiny runs)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import config as C
from jaxdl.checkpoint import Checkpointer, CheckpointWarning
from jaxdl.data import Dataset, Split, load
from jaxdl.errors import ConfigError, DivergenceError, ModelInputError
from jaxdl.train import fit
from jaxdl.train import setup

ROOT = Path(__file__).resolve().parents[2]


def small_cfg(**overrides) -> C.Config:
    cfg = C.Config(name="t", model=C.model_config("mlp", widths=(32,), dropout=0.1),
                   data=C.DataConfig(name="digits"),
                   optim=C.OptimConfig(name="adam", lr=3e-3),
                   train=C.TrainConfig(batch_size=64, epochs=2, chunk_steps=8, progress=False, plots=False,
                                       driver="scan"))
    return C.apply_overrides(cfg, overrides)


@pytest.fixture(scope="module")
def digits():
    return load(C.DataConfig(name="digits"))


def leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_run_directory_contents(tmp_path, digits):
    cfg = small_cfg(**{"train.plots": True})
    result = fit(cfg, workdir=tmp_path, dataset=digits)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert C.from_dict(meta["config"]) == cfg
    assert {"git_commit", "versions", "device", "driver"} <= meta.keys()
    assert meta["versions"]["jax"] == jax.__version__
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    spe = len(digits.train) // 64
    assert [r["step"] for r in records] == [spe, 2 * spe]
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"} <= records[0].keys()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == result.summary
    assert 0.5 < summary["test"]["accuracy"] <= 1.0
    assert summary["steps"] == 2 * spe and summary["wall_time_s"] > 0 and summary["steps_per_s"] > 0
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert Checkpointer(tmp_path / "checkpoints").steps()[-1] == 2 * spe


def test_scan_and_host_drivers_agree(tmp_path, digits):
    a = fit(small_cfg(**{"train.driver": "scan"}), workdir=tmp_path / "a", dataset=digits)
    b = fit(small_cfg(**{"train.driver": "host"}), workdir=tmp_path / "b", dataset=digits)
    for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    assert a.summary["driver"] == "scan" and b.summary["driver"] == "host"


def test_auto_driver_probes_and_caches(tmp_path, digits, monkeypatch):
    from jaxdl.train import probe

    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(probe, "SCAN_PROBE_BELOW_S", float("inf"))  # both drivers, whatever the machine's load
    cfg = small_cfg(**{"train.driver": "auto", "train.checkpoints": False})
    fit(cfg, workdir=tmp_path / "a", dataset=digits)
    info = json.loads((tmp_path / "a" / "config.json").read_text())["driver"]
    assert info["how"] == "probe" and info["chosen"] in ("scan", "host")
    assert set(info["seconds_per_step"]) == {"scan", "host"}
    fit(cfg, workdir=tmp_path / "b", dataset=digits)
    again = json.loads((tmp_path / "b" / "config.json").read_text())["driver"]
    assert again["how"] == "cached probe" and again["chosen"] == info["chosen"]


def test_probe_skips_scan_when_a_host_step_is_slow(tmp_path, digits, monkeypatch):
    """What scan saves is per-step dispatch; a host step above the threshold is not worth a scan compilation."""
    from jaxdl.train import probe

    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(probe, "SCAN_PROBE_BELOW_S", 0.0)
    fit(small_cfg(**{"train.driver": "auto", "train.checkpoints": False}), workdir=tmp_path / "a", dataset=digits)
    info = json.loads((tmp_path / "a" / "config.json").read_text())["driver"]
    assert info["chosen"] == "host" and set(info["seconds_per_step"]) == {"host"}
    assert "scan not probed: a host step takes" in info["skipped"]


def test_time_runner_caps_a_slow_candidate():
    """A candidate whose first step (beyond compiling) costs more than the probe budget is not run again."""
    from jaxdl.train import time_runner

    calls = []

    def slow(state, active, hp, seeds, epoch, offset, length):
        calls.append(length)
        time.sleep(0.2 * length)
        return state, active, jnp.zeros(length)

    t = time_runner(slow, {"w": jnp.ones(3)}, True, {}, [0], max_steps=50, budget_s=0.15)
    assert calls == [1] and t.per_step == pytest.approx(0.2, rel=0.5) and t.compile_s < 0.1  # its one step ranks it

    calls.clear()

    def fast(state, active, hp, seeds, epoch, offset, length):
        calls.append(length)
        time.sleep(0.001 * length)
        return state, active, jnp.zeros(length)

    time_runner(fast, {"w": jnp.ones(3)}, True, {}, [0], max_steps=50, budget_s=0.2, segment_s=0.05)
    assert calls[:2] == [1, 1] and 10 < max(calls) <= 50 and sum(calls) < 400  # grows, capped; stops on budget

    calls.clear()
    jitted = jax.jit(lambda w: jnp.sin(w) @ w)

    def compiling(state, active, hp, seeds, epoch, offset, length):  # compiles on its first call, then is fast
        calls.append(length)
        return state, active, jnp.stack([jitted(state["w"]) for _ in range(length)])

    t = time_runner(compiling, {"w": jnp.ones((64, 64))}, True, {}, [0], max_steps=50, budget_s=0.2, segment_s=0.05)
    assert t.compile_s > 0 and t.per_step < t.compile_s and len(calls) > 1  # compilation is not the step's cost


def test_race_retimes_close_candidates_in_alternation(monkeypatch):
    """A burst of load during one candidate's timing is undone by re-timing close candidates in turn. The probe's
    clock is a fake one that each segment advances by its cost, so the test cannot flake under real load."""
    import types

    from jaxdl.train import probe
    from jaxdl.train.probe import Timing, race

    clock = [0.0]
    monkeypatch.setattr(probe, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    order = []

    def runner(name, cost):
        def run(state, active, hp, seeds, epoch, offset, length):
            order.append(name)
            clock[0] += cost * length
            return state, active, jnp.zeros(length)
        return run

    a = Timing(runner("a", 0.002), {"w": jnp.ones(2)}, True, {}, [0], max_steps=4)
    b = Timing(runner("b", 0.002), {"w": jnp.ones(2)}, True, {}, [0], max_steps=4)
    a.per_step, b.per_step = 0.006, 0.002  # as if a burst of load hit a's timing
    order.clear()
    assert race([a, b], rounds=2, min_s=0.0) == 2  # neck and neck after the first round: both rounds run
    assert order == ["a", "b", "a", "b"] and a.per_step < 0.0045
    slow = Timing(runner("slow", 0.01), {"w": jnp.ones(2)}, True, {}, [0], max_steps=4)
    slow.per_step, b.per_step = 0.006, 0.002  # within RACE_WITHIN, so raced ...
    order.clear()
    assert race([slow, b], rounds=3) == 1  # ... but one round shows a clear lead (>= RACE_CLEAR): no more rounds
    assert order == ["slow", "b"]
    b.per_step = a.per_step = 0.002
    t0 = clock[0]
    assert race([a, b], rounds=1, min_s=0.05) > 1 and clock[0] - t0 >= 0.05  # close: re-timed for min_s
    far = Timing(runner("far", 0.0), {"w": jnp.ones(2)}, True, {}, [0], max_steps=4)
    far.per_step = 1.0
    order.clear()
    race([far, b])  # more than RACE_WITHIN apart: nothing is re-timed
    race([b])  # nothing to race against
    assert order == []


def test_hparams_change_without_retracing(digits):
    s = setup(small_cfg(), digits)
    from jaxdl.train import initial_state
    from jaxdl.train.step import make_hparams

    traces = []

    def counted(state, batch, hp):
        traces.append(1)
        return s.train_step(state, batch, hp)

    step = jax.jit(counted, donate_argnums=0)
    state = initial_state(s)
    batch = {"image": digits.train.x[:64], "label": digits.train.y[:64]}
    for lr, wd, dropout, smoothing in [(1e-3, 0.0, 0.0, 0.0), (3e-2, 1e-2, 0.5, 0.1), (1e-4, 0.3, 0.9, 0.2)]:
        cfg = small_cfg(**{"optim.lr": lr, "optim.weight_decay": wd, "model.dropout": dropout,
                           "loss.label_smoothing": smoothing, "optim.l2": wd, "optim.l1": wd / 10})
        state, metrics = step(state, batch, make_hparams(cfg))
        assert np.isclose(float(metrics["lr"]), lr)
    assert len(traces) == 1


def test_resume_after_sigkill_is_bitwise_exact(tmp_path):
    """Kill a real training process mid-run, resume it, and compare with an uninterrupted run."""
    overrides = ["train.steps=1500", "train.checkpoint_every=100", "train.eval_every=500", "train.driver=host",
                 "train.progress=false", "train.plots=false", "model.widths=64", "model.dropout=0.2"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "jaxdl.cli", "train", "configs/digits_mlp.py", *overrides]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--workdir", str(killed)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    ckpts = killed / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        done = [int(p.name) for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.exists() else []
        if any(step >= 300 for step in done):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (killed / "summary.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "jaxdl.cli", "resume", str(killed)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = tmp_path / "straight"
    ok = subprocess.run(cmd + ["--workdir", str(straight)], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]

    cfg = C.load_json(straight / "config.json")
    s = setup(cfg)
    from jaxdl.train import initial_state

    target = jax.eval_shape(lambda: initial_state(s))
    with Checkpointer(killed / "checkpoints") as a, Checkpointer(straight / "checkpoints") as b:
        sa, _, step_a = a.restore_latest(target)
        sb, _, step_b = b.restore_latest(target)
    assert step_a == step_b == 1500
    assert leaves_equal(sa, sb)
    ma = [json.loads(l) for l in (killed / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(l) for l in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == [500, 1000, 1500]
    for ra, rb in zip(ma, mb):
        assert ra["val/loss"] == rb["val/loss"] and ra["train/loss"] == rb["train/loss"]


def test_corrupt_newest_checkpoint_is_skipped(tmp_path, digits):
    cfg = small_cfg(**{"train.steps": 30, "train.checkpoint_every": 10, "train.keep_checkpoints": 3})
    fit(cfg, workdir=tmp_path, dataset=digits)
    ckpt_dir = tmp_path / "checkpoints"
    assert Checkpointer(ckpt_dir).steps() == [10, 20, 30]
    for f in (ckpt_dir / "30").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\x00garbage")
    s = setup(cfg, digits)
    from jaxdl.train import initial_state

    target = jax.eval_shape(lambda: initial_state(s))
    with pytest.warns(CheckpointWarning, match="step 30"):
        state, meta, step = Checkpointer(ckpt_dir).restore_latest(target)
    assert step == 20 and int(state.step) == 20
    # The loop resumes from step 20 and finishes the run.
    with pytest.warns(CheckpointWarning, match="step 30"):
        result = fit(cfg, workdir=tmp_path, resume=True, dataset=digits)
    assert result.summary["steps"] == 30


def test_nan_loss_stops_with_the_step_and_keeps_last_good_checkpoint(tmp_path, digits):
    bs = 32
    x = digits.train.x.copy()
    perm_pos = 5 * bs + 3  # an example seen in the 6th step of epoch 0
    from jaxdl.data import epoch_permutation

    x[epoch_permutation(len(x), 0, 0)[perm_pos]] = np.nan
    bad = dataclasses.replace(digits, train=Split(x, digits.train.y))
    cfg = small_cfg(**{"train.batch_size": bs, "train.checkpoint_every": 2, "train.chunk_steps": 4})
    with pytest.raises(DivergenceError, match=r"loss became nan at step 6") as info:
        fit(cfg, workdir=tmp_path, dataset=bad)
    assert info.value.step == 6
    assert "step 4" in str(info.value)
    s = setup(cfg, digits)
    from jaxdl.train import initial_state

    target = jax.eval_shape(lambda: initial_state(s))
    state, _, step = Checkpointer(tmp_path / "checkpoints").restore_latest(target)
    assert step == 4 and all(np.isfinite(np.asarray(l)).all() for l in jax.tree.leaves(state.params))


def test_early_stopping_restores_best(tmp_path, digits):
    cfg = small_cfg(**{"train.epochs": 6, "train.early_stopping.enabled": True,
                       "train.early_stopping.patience": 1, "train.early_stopping.min_delta": 100.0})
    result = fit(cfg, workdir=tmp_path, dataset=digits)
    spe = len(digits.train) // 64
    # min_delta=100: the first evaluation is the best, the second fails to improve and stops the run.
    assert result.summary["stopped_early"] and result.summary["steps"] == 2 * spe
    assert result.summary["best"]["step"] == spe and result.summary["restored_best"]
    with Checkpointer(tmp_path / "best") as c:
        best, meta, step = c.restore_latest({"params": result.state.params, "model_state": result.state.model_state})
    assert step == spe and leaves_equal(best["params"], result.state.params)


def test_config_errors_before_compiling(digits):
    with pytest.raises(ConfigError, match=r"train.batch_size=5000 exceeds the \d+ training examples"):
        fit(small_cfg(**{"train.batch_size": 5000}), dataset=digits)
    with pytest.raises(ConfigError, match=r"model.num_classes=3 but data set 'digits' has 10 classes"):
        fit(small_cfg(**{"model.num_classes": 3}), dataset=digits)
    with pytest.raises(ConfigError, match=r"train.driver"):
        fit(small_cfg(**{"train.driver": "fast"}), dataset=digits)
    with pytest.raises(ConfigError, match=r"train.early_stopping.monitor"):
        fit(small_cfg(**{"train.early_stopping.monitor": "val/acc"}), dataset=digits)
    with pytest.raises(ConfigError, match=r"cross_entropy needs a model that outputs logits"):
        fit(small_cfg(**{"model.name": "perceptron", "model.output": "step"}), dataset=digits)


def test_wrong_input_shape_names_model_and_shapes(tmp_path, digits):
    """Data whose examples do not match the model's expected input is caught before tracing the step."""
    cfg = small_cfg(**{"model.name": "lenet5"})
    s = setup(cfg, digits)
    from jaxdl.train import initial_state

    state = initial_state(s)
    bad_batch = {"image": jnp.zeros((64, 28, 28, 1)), "label": jnp.zeros((64,), jnp.int32)}
    with pytest.raises(ModelInputError, match=r"'lenet5' expects inputs of shape \(batch, 8, 8, 1\) float, got "
                                              r"\(64, 28, 28, 1\) float32"):
        jax.jit(s.train_step)(state, bad_batch, s.hparams)


def test_other_datasets_and_uint8_inputs_fail_clearly(digits):
    raw = dataclasses.replace(digits, train=Split((digits.train.x * 16).astype(np.uint8), digits.train.y))
    with pytest.raises(ModelInputError, match=r"'mlp' expects floating-point inputs.*uint8"):
        fit(small_cfg(), dataset=raw)
