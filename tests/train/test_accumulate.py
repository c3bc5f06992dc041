"""Gradient accumulation (train.accumulate = k): one step over k strided micro-batches equals one step on the whole
batch (also with an uneven example mask, which needs the per-micro-batch loss weights); batch norm is per
micro-batch with running statistics updated once per micro-batch, in order, and dropout keys are fold_in(step key, i)
(both against a hand computation); a two-player GAN accumulates each player's gradient before its update; a fused
population with k micro-batches equals each member's standalone step; bad values are refused naming the key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import config as C
from jaxdl.data import load
from jaxdl.errors import ConfigError
from jaxdl.train import initial_state, setup, validate
from jaxdl.train.step import make_train_step, micro_batches

BATCH, K = 24, 4


@pytest.fixture(scope="module")
def digits():
    return load(C.DataConfig(name="digits"))


def cfg(accumulate: int = 1, **overrides) -> C.Config:
    base = C.Config(name="a", seed=0, model=C.model_config("mlp", widths=(16,)), data=C.DataConfig(name="digits"),
                    optim=C.OptimConfig(name="adam", lr=1e-2, clip_norm=1.0),
                    train=C.TrainConfig(batch_size=BATCH, steps=4, progress=False, plots=False, checkpoints=False,
                                        accumulate=accumulate))
    return C.apply_overrides(base, overrides)


def batch_of(ds, start: int = 0, n: int = BATCH, mask: bool = False):
    """``n`` training examples; with ``mask``, an all-ones example mask (the plain tests share the masked test's
    compiled steps that way)."""
    b = {"image": jnp.asarray(ds.train.x[start:start + n]), "label": jnp.asarray(ds.train.y[start:start + n])}
    return {**b, "mask": jnp.ones((n,), jnp.float32)} if mask else b


def assert_trees_close(a, b, rtol=2e-5, atol=1e-6):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def plain(digits):
    """The MLP (no batch norm, no dropout) with accumulate 1 and K: setups, a shared initial state and both steps."""
    one, acc = setup(cfg(1), digits), setup(cfg(K), digits)
    return dict(one=one, acc=acc, state=initial_state(one), step1=jax.jit(one.train_step),
                stepk=jax.jit(acc.train_step))


def test_micro_batches_are_strided():
    b = {"x": jnp.arange(12).reshape(6, 2), "y": jnp.arange(6)}
    m = micro_batches(b, 3)
    assert m["x"].shape == (3, 2, 2) and m["y"].tolist() == [[0, 3], [1, 4], [2, 5]]  # micro i: examples i, i+3
    assert m["x"][1].tolist() == [[2, 3], [8, 9]]


def test_accumulated_step_equals_the_full_batch_step(plain, digits):
    state, hp = plain["state"], plain["one"].hparams
    for start in (0, BATCH):  # two steps: the second from the (equal) states after the first
        b = batch_of(digits, start, mask=True)
        s1, m1 = plain["step1"](state, b, hp)
        sk, mk = plain["stepk"](state, b, hp)
        assert_trees_close(sk.params, s1.params)
        assert_trees_close(sk.opt_state, s1.opt_state)
        np.testing.assert_allclose(float(mk["loss"]), float(m1["loss"]), rtol=1e-5)
        np.testing.assert_allclose(float(mk["grad_norm"]), float(m1["grad_norm"]), rtol=1e-5)
        assert_trees_close(mk["stats"], m1["stats"], rtol=1e-5)
        assert float(mk["stats"]["loss"][1]) == BATCH
        state = s1


def test_uneven_mask_is_weighted_exactly(plain, digits):
    """A mask that leaves micro-batches with 6, 3, 1 and 0 examples: each micro-batch's gradient counts by its
    share of the loss weight, so the step equals the full masked batch's (an unweighted mean of micro-batch
    gradients would not)."""
    mask = np.zeros(BATCH, np.float32)
    mask[0::K] = 1.0  # micro-batch 0: all 6
    mask[[1, 5, 9]] = 1.0  # micro-batch 1: 3
    mask[2] = 1.0  # micro-batch 2: 1; micro-batch 3: none
    b = {**batch_of(digits), "mask": jnp.asarray(mask)}
    state, hp = plain["state"], plain["one"].hparams
    s1, m1 = plain["step1"](state, b, hp)
    sk, mk = plain["stepk"](state, b, hp)
    assert_trees_close(sk.params, s1.params)
    np.testing.assert_allclose(float(mk["loss"]), float(m1["loss"]), rtol=1e-5)
    assert float(mk["stats"]["loss"][1]) == 10.0
    # the unweighted mean over the non-empty micro-batches is a different loss (the test can fail)
    task, params, ms = plain["one"].task, {"model": state.params}, {"model": state.model_state}
    losses = [float(task.loss("model", params, ms, jax.tree.map(lambda x: x[i], micro_batches(b, K)), None, hp,
                              False)[0]) for i in range(3)]
    assert abs(np.mean(losses) - float(m1["loss"])) > 1e-3


def test_batch_norm_and_dropout_against_a_hand_computation(digits):
    """Batch norm with k=2: each micro-batch is normalised with its own statistics (ghost batch norm), the running
    mean moves once per micro-batch in order, m ← 0.9 m + 0.1 mean_i; dropout in micro-batch i uses
    task.rngs(fold_in(step key, i)); plain SGD makes the update p − lr · mean_i(grad_i)."""
    c = cfg(2, **{"model.batch_norm": True, "model.dropout": 0.3, "optim.name": "sgd", "optim.lr": 0.1,
                  "optim.clip_norm": None})
    s = setup(c, digits)
    state = initial_state(s)
    b = batch_of(digits)
    new, metrics = jax.jit(s.train_step)(state, b, s.hparams)

    task, hp = s.task, s.hparams

    @jax.jit
    def by_hand(state, b):
        step_key = jax.random.fold_in(state.rng, state.step)
        ms, grads, means = {"model": state.model_state}, [], []
        for i in range(2):
            mb = {k: v[i::2] for k, v in b.items()}
            h = mb["image"].reshape(BATCH // 2, -1) @ state.params["dense0"]["kernel"]  # pre-batch-norm activations
            means.append(jnp.mean(h, axis=0))
            rngs = task.rngs(jax.random.fold_in(step_key, i))
            g, (_, ms) = jax.grad(lambda p: task.loss("model", {"model": p}, ms, mb, rngs, hp, True), has_aux=True)(
                state.params)
            grads.append(g)
        return ms, grads, means

    ms, grads, means = by_hand(state, b)
    m0 = state.model_state["batch_stats"]["bn0"]["mean"]
    want_mean = 0.9 * (0.9 * m0 + 0.1 * means[0]) + 0.1 * means[1]
    np.testing.assert_allclose(np.asarray(new.model_state["batch_stats"]["bn0"]["mean"]), np.asarray(want_mean),
                               rtol=1e-5, atol=1e-6)
    assert_trees_close(new.model_state, ms["model"])
    want = jax.tree.map(lambda p, g0, g1: p - 0.1 * (g0 + g1) / 2, state.params, *grads)
    assert_trees_close(new.params, want)
    # not one update with the whole batch's mean (the test can fail)
    once = 0.9 * m0 + 0.1 * (means[0] + means[1]) / 2
    assert float(jnp.max(jnp.abs(once - want_mean))) > 1e-3


def test_gan_players_accumulate_before_their_updates(digits):
    """Two players, k=2: the discriminator's update uses its gradient accumulated over both micro-batches (latent
    noise from fold_in(step key, i)), then the generator's accumulates against the updated discriminator."""
    small = load(C.DataConfig(name="digits", standardize=False, train_limit=64, eval_limit=32))
    c = C.Config(name="g", seed=0, task="gan",
                 model=C.model_config("dcgan", latent=4, g_channels=(4,), d_channels=(4,), conditional=False,
                                      spectral_norm=False),
                 data=C.DataConfig(name="digits", standardize=False), loss=C.LossConfig(name="non_saturating",
                                                                                       score_samples=0),
                 optim=C.OptimConfig(name="sgd", lr=0.05), optim2=C.OptimConfig(name="sgd", lr=0.02),
                 train=C.TrainConfig(batch_size=8, steps=2, progress=False, plots=False, checkpoints=False,
                                     accumulate=2))
    s = setup(c, small)
    state = initial_state(s)
    b = {k: jnp.asarray(v) for k, v in small.train.batch(np.arange(8)).items()}
    new, _ = jax.jit(s.train_step)(state, b, s.hparams)

    task, hp = s.task, s.hparams

    @jax.jit
    def by_hand(state, b):
        step_key = jax.random.fold_in(state.rng, state.step)
        params, ms = dict(state.params), dict(state.model_state)
        lrs = {"generator": 0.05, "discriminator": 0.02}  # optim configures the first player, optim2 the second
        for player in ("discriminator", "generator"):  # the task's schedule
            total = None
            for i in range(2):
                mb = {k: v[i::2] for k, v in b.items()}
                rngs = task.rngs(jax.random.fold_in(step_key, i))
                g, (_, ms) = jax.grad(lambda p: task.loss(player, {**params, player: p}, ms, mb, rngs, hp, True),
                                      has_aux=True)(params[player])
                total = g if total is None else jax.tree.map(jnp.add, total, g)
            params[player] = jax.tree.map(lambda p, g: p - lrs[player] * g / 2, params[player], total)
        return params

    assert task.players == ("generator", "discriminator") and task.update_order == ("discriminator", "generator")
    params = by_hand(state, b)
    assert_trees_close(new.params, params, rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.asarray(jax.tree.leaves(new.params["generator"])[0]),
                           np.asarray(jax.tree.leaves(state.params["generator"])[0]))


def test_fused_population_with_accumulation_equals_members(plain, digits):
    """A vmapped population (two learning rates) with k micro-batches: each member equals its standalone k step
    and its accumulate=1 step on the same batch."""
    b = batch_of(digits, mask=True)
    one, acc = plain["one"], plain["acc"]
    states = [plain["state"], plain["state"].replace(params=jax.tree.map(lambda x: x * 0.5, plain["state"].params))]
    hps = [one.hparams, {**one.hparams, "lr": one.hparams["lr"] * 0.3}]
    pop = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    hp_pop = jax.tree.map(lambda *xs: jnp.stack(xs), *hps)
    fused, fm = jax.jit(jax.vmap(acc.train_step, in_axes=(0, None, 0)))(pop, b, hp_pop)
    for i in range(2):
        alone_k, mk = plain["stepk"](states[i], b, hps[i])
        alone_1, _ = plain["step1"](states[i], b, hps[i])
        mine = jax.tree.map(lambda x: x[i], fused)
        assert_trees_close(mine.params, alone_k.params)
        assert_trees_close(mine.params, alone_1.params)
        np.testing.assert_allclose(float(fm["loss"][i]), float(mk["loss"]), rtol=1e-5)


def test_bad_accumulate_values_are_refused(digits):
    with pytest.raises(ConfigError, match=r"train.accumulate: expected a positive divisor of "
                                          r"train.batch_size=24 \(micro-batches per step\), got 5"):
        validate(cfg(5))
    with pytest.raises(ConfigError, match=r"train.accumulate: expected a positive divisor .* got 0"):
        validate(cfg(0))
    with pytest.raises(ConfigError, match=r"train.accumulate=4 must divide the batch size: batch array "
                                          r"\['y'\] has shape \(6,\)"):
        micro_batches({"y": jnp.zeros(6)}, 4)
    with pytest.raises(ConfigError, match=r"train.accumulate: expected a positive integer, got 0"):
        make_train_step(None, {}, accumulate=0)
