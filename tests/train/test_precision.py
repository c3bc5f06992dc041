"""Mixed precision: bf16 computes in bfloat16 while parameters, optimizer and normalisation state, losses and metrics
stay float32 and training tracks fp32; fp16's dynamic loss scale skips and counts overflowing steps (per member
under vmap), halves and grows, and the loop does not take a handled overflow for a divergence; fp32 states keep
the pytree (and checkpoint) layout they always had; bad values are refused naming the key."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import config as C
from jaxdl import precision
from jaxdl.data import load
from jaxdl.errors import ConfigError, JaxdlError
from jaxdl.precision import LossScale, Policy
from jaxdl.train import fit, initial_state, setup, validate
from jaxdl.train.step import make_train_step

BATCH = 32


@pytest.fixture(scope="module")
def digits():
    return load(C.DataConfig(name="digits"))


def cfg(precision_name: str = "fp32", **overrides) -> C.Config:
    base = C.Config(name="p", seed=0, model=C.model_config("mlp", widths=(32,), batch_norm=True),
                    data=C.DataConfig(name="digits"), optim=C.OptimConfig(name="adam", lr=3e-3),
                    train=C.TrainConfig(batch_size=BATCH, steps=12, eval_every=6, chunk_steps=6, progress=False,
                                        plots=False, checkpoints=False, driver="scan", precision=precision_name))
    return C.apply_overrides(base, overrides)


def batches(ds, n: int):
    return [{"image": jnp.asarray(ds.train.x[i * BATCH:(i + 1) * BATCH]),
             "label": jnp.asarray(ds.train.y[i * BATCH:(i + 1) * BATCH])} for i in range(n)]


def run_steps(step, state, hp, data):
    losses, first = [], None
    for b in data:
        state, m = step(state, b, hp)
        losses.append(float(m["loss"]))
        first = state if first is None else first
    return state, m, losses, first


@pytest.fixture(scope="module")
def fp32_and_bf16(digits):
    """The digits MLP (with batch norm) trained 12 steps in fp32 and in bf16 from the same initial state (the
    policy does not change initialisation: one init serves both)."""
    out = {}
    data = batches(digits, 12)
    state0 = None
    for name in ("fp32", "bf16"):
        s = setup(cfg(name), digits)
        state0 = initial_state(s) if state0 is None else state0
        state, m, losses, first = run_steps(jax.jit(s.train_step), state0, s.hparams, data)
        out[name] = dict(s=s, state0=state0, state=state, metrics=m, losses=losses, data=data, first=first)
    return out


def test_bf16_computes_in_bfloat16_and_keeps_state_float32(fp32_and_bf16):
    run = fp32_and_bf16["bf16"]
    s, state = run["s"], run["state"]
    assert s.task.precision.name == "bf16" and s.model.compute_dtype == jnp.bfloat16
    jaxpr = str(jax.make_jaxpr(s.train_step)(run["state0"], run["data"][0], s.hparams))
    dots = [line for line in jaxpr.splitlines() if "dot_general" in line]
    assert dots and all(re.search(r"bf16\[\d+,\d+\] = dot_general", line) for line in dots), dots[:3]
    eval_jaxpr = str(jax.make_jaxpr(s.eval_step)(state.params, state.model_state, run["data"][0], s.hparams))
    assert re.search(r"bf16\[\d+,\d+\] = dot_general", eval_jaxpr)  # evaluation computes in bf16 too
    for tree in (state.params, state.opt_state, state.model_state):
        for leaf in jax.tree.leaves(tree):
            assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    assert state.model_state["batch_stats"]["bn0"]["mean"].dtype == jnp.float32
    m = run["metrics"]
    assert m["loss"].dtype == jnp.float32 and m["grad_norm"].dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for pair in m["stats"].values() for x in pair)
    assert state.loss_scale is None  # bf16 needs no loss scaling
    # the fp32 run's step has no half-precision op at all
    f = fp32_and_bf16["fp32"]
    assert "bf16" not in str(jax.make_jaxpr(f["s"].train_step)(f["state0"], f["data"][0], f["s"].hparams))


def test_bf16_training_tracks_fp32(fp32_and_bf16):
    """Same initial state, same batches: bf16 losses stay within 3% of fp32's over 12 Adam steps; after one step the
    batch-norm running statistics (float32 reductions of bf16 activations) agree with fp32's to within 1% of their
    scale (bf16 keeps 8 significant bits: 0.4% per value)."""
    a, b = np.asarray(fp32_and_bf16["fp32"]["losses"]), np.asarray(fp32_and_bf16["bf16"]["losses"])
    assert a[-1] < a[0] * 0.8  # it trains
    np.testing.assert_allclose(b, a, rtol=0.03)
    for stat in ("mean", "var"):
        ra = fp32_and_bf16["fp32"]["first"].model_state["batch_stats"]["bn0"][stat]
        rb = fp32_and_bf16["bf16"]["first"].model_state["batch_stats"]["bn0"][stat]
        assert 0 < float(jnp.max(jnp.abs(ra - rb))) < 0.01 * float(jnp.max(jnp.abs(ra)))


@pytest.fixture(scope="module")
def fp16_overflow(digits, fp32_and_bf16):
    """fp16 with an initial loss scale of 2**24: the scaled output gradients overflow float16 (max 65504), so the
    first steps are skipped until the scale has halved enough."""
    s = setup(cfg("fp16"), digits)
    assert s.task.precision.name == "fp16" and s.model.compute_dtype == jnp.float16
    assert isinstance(jax.eval_shape(lambda: initial_state(s)).loss_scale, LossScale)
    assert s.task.precision.init_scale == 2.0 ** 15  # the default policy's starting scale
    task = s.task.with_precision(Policy("fp16", init_scale=2.0 ** 24, growth_interval=1000))
    state0 = fp32_and_bf16["fp32"]["state0"].replace(loss_scale=precision.init_loss_scale(task.precision))
    raw = make_train_step(task, s.optimizers)
    return dict(s=s, task=task, state0=state0, raw=raw, step=jax.jit(raw), data=batches(digits, 12))


def test_fp16_overflow_is_skipped_counted_and_training_continues(fp16_overflow):
    f = fp16_overflow
    state, hp = f["state0"], f["s"].hparams
    assert isinstance(state.loss_scale, LossScale) and float(state.loss_scale.scale) == 2.0 ** 24
    first, m = f["step"](state, f["data"][0], hp)
    # skipped: variables unchanged, the step counted, the scale halved, no statistics, and not a divergence
    assert bool(m["finite"]) and int(m["skipped"]) == 1 and float(m["loss_scale"]) == 2.0 ** 24
    assert float(first.loss_scale.scale) == 2.0 ** 23 and int(first.step) == 1
    for new, old in zip(jax.tree.leaves((first.params, first.opt_state, first.model_state)),
                        jax.tree.leaves((state.params, state.opt_state, state.model_state))):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    assert all(float(w) == 0.0 for _, w in m["stats"].values())
    scales, skipped, losses = [], [], []
    state = first
    for b in f["data"][1:]:
        state, m = f["step"](state, b, hp)
        scales.append(float(m["loss_scale"]))
        skipped.append(int(m["skipped"]))
        losses.append(float(m["loss"]))
        assert bool(m["finite"])
    n = skipped[-1]
    assert 2 <= n < 11  # several overflows, then the scale fits and updates happen
    assert scales[n - 1] == 2.0 ** 24 / 2 ** n and float(state.loss_scale.scale) == scales[-1]
    assert np.all(np.isfinite(losses[n:])) and losses[-1] < losses[n - 1]  # trains after the overflows
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    assert not jnp.allclose(state.params["head"]["kernel"], first.params["head"]["kernel"])


def test_fp16_population_skips_per_member(fp16_overflow):
    """Under vmap each member keeps its own scale: member 0 (scale 2**24) skips while member 1 (2**10) updates,
    and each equals its standalone step."""
    f = fp16_overflow
    low = f["state0"].replace(loss_scale=f["state0"].loss_scale.replace(scale=jnp.asarray(2.0 ** 10, jnp.float32)))
    pop = jax.tree.map(lambda a, b: jnp.stack([a, b]), f["state0"], low)
    hps = jax.tree.map(lambda a: jnp.stack([a, a * 0.5]), f["s"].hparams)
    new, m = jax.jit(jax.vmap(f["raw"], in_axes=(0, None, 0)))(pop, f["data"][0], hps)
    assert np.asarray(m["skipped"]).tolist() == [1, 0] and np.asarray(m["finite"]).all()
    for i, st in enumerate((f["state0"], low)):
        alone, _ = f["step"](st, f["data"][0], jax.tree.map(lambda a: a[i], hps))
        for x, y in zip(jax.tree.leaves(new), jax.tree.leaves(alone)):
            np.testing.assert_allclose(np.asarray(x[i]), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_loss_scale_grows_after_good_steps_and_respects_its_bounds():
    p = Policy("fp16", init_scale=4.0, growth_interval=2, min_scale=1.0, max_scale=8.0)
    s = precision.init_loss_scale(p)
    yes, no = jnp.asarray(True), jnp.asarray(False)
    trail = []
    for ok in (yes, yes, yes, yes, no, no, no, no):
        s = precision.next_loss_scale(s, ok, p)
        trail.append((float(s.scale), int(s.good_steps), int(s.skipped)))
    assert trail == [(4, 1, 0), (8, 0, 0), (8, 1, 0), (8, 0, 0),  # doubled after 2 good steps, capped at 8
                     (4, 0, 1), (2, 0, 2), (1, 0, 3), (1, 0, 4)]  # halved per overflow, floored at min_scale
    assert precision.init_loss_scale(Policy("bf16")) is None


def test_fit_with_fp16_overflows_completes(digits, tmp_path, monkeypatch):
    """The loop runs through handled overflows (not a divergence) and ends finite; the skipped steps are counted in
    the state."""
    monkeypatch.setattr(precision, "policy", lambda name: Policy(name, init_scale=2.0 ** 24))
    res = fit(cfg("fp16", **{"model.batch_norm": False}), workdir=tmp_path / "run", dataset=digits)
    assert res.summary["status"] == "completed" and res.summary["steps"] == 12
    assert np.isfinite(res.summary["val"]["loss"]) and res.summary["val"]["accuracy"] > 0.2
    assert 2 <= int(res.state.loss_scale.skipped) < 12
    assert res.summary["skipped_steps"] == int(res.state.loss_scale.skipped)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped"] == res.summary["skipped_steps"] and records[-1]["loss_scale"] >= 1.0


def test_fp32_state_layout_is_unchanged(fp32_and_bf16, fp16_overflow, tmp_path):
    """A None loss scale is no pytree child: fp32/bf16 states have exactly the five fields' leaves (old checkpoints
    restore); an fp16 state adds ``loss_scale`` and round-trips through a checkpoint."""
    from jaxdl.checkpoint import Checkpointer

    state = fp32_and_bf16["fp32"]["state"]
    tops = {jax.tree_util.keystr(p[:1]) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert tops == {".step", ".params", ".model_state", ".opt_state", ".rng"}
    f16 = fp16_overflow["state0"]
    assert ".loss_scale" in {jax.tree_util.keystr(p[:1]) for p, _ in jax.tree_util.tree_flatten_with_path(f16)[0]}
    with Checkpointer(tmp_path / "ck", asynchronous=False) as c:
        c.save(1, f16)
        back, _, step = c.restore_latest(jax.tree.map(jnp.zeros_like, f16))
    assert step == 1 and float(back.loss_scale.scale) == 2.0 ** 24


def test_bad_precision_values_are_refused():
    with pytest.raises(ConfigError, match=r"train.precision: expected one of fp32, bf16, fp16, got 'fp8'"):
        validate(cfg("fp8"))
    with pytest.raises(ConfigError, match=r"train.precision: expected one of fp32, bf16, fp16, got 'float16'"):
        precision.policy("float16")
    with pytest.raises(ConfigError, match=r"loss scaling: expected 0 < min_scale <= init_scale"):
        precision.policy("fp16", init_scale=0.5)
    from jaxdl import models

    with pytest.raises(JaxdlError, match=r"model 'mlp': compute dtype must be a floating dtype, got int32"):
        models.get("mlp", num_classes=3).with_compute_dtype(jnp.int32)
