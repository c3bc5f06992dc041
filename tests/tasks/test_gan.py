"""GAN task: the three losses against a hand computation, the gradient penalty against finite differences, a traced
penalty weight (no retrace), each player's update lowering its own loss, a fused population of GANs equal to its
members' one-by-one runs and compiled once — with a diverging member frozen alone — and the errors a user can
reach."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import data as data_lib
from jaxdl.config import Config, DataConfig, LossConfig, OptimConfig, TrainConfig, model_config
from jaxdl.errors import ConfigError, DataError
from jaxdl.tasks.gan import D_NOISE, EVAL_SEED, G_NOISE, GAN, LOSSES
from jaxdl.train import Programs, setup, train_group


@pytest.fixture(scope="module")
def digits():
    return data_lib.load(DataConfig(name="digits", standardize=False, train_limit=96, eval_limit=40))


def gan_cfg(i: int = 0, *, kind: str = "wgan_gp", conditional: bool = True, steps: int = 6, **over) -> Config:
    """A tiny GAN on 8x8 digits: generator 4x4 -> 8x8, discriminator 8x8 -> 4x4 (one layer each keeps compiling
    cheap; the model tests cover deeper stacks)."""
    cfg = Config(name=f"gan{i}", seed=i, task="gan",
                 model=model_config("dcgan", latent=6, g_channels=(8,), d_channels=(8,), conditional=conditional,
                                    spectral_norm=True),
                 data=DataConfig(name="digits", standardize=False), loss=LossConfig(name=kind, score_samples=0),
                 optim=OptimConfig(name="adam", lr=2e-3, b1=0.5), optim2=OptimConfig(name="adam", lr=2e-3, b1=0.5),
                 train=TrainConfig(batch_size=16, steps=steps, eval_every=3, driver="scan", chunk_steps=3,
                                   progress=False, plots=False, checkpoints=False))
    return dataclasses.replace(cfg, **over)


@pytest.fixture(scope="module")
def population(digits, tmp_path_factory):
    """A fused group of four conditional, spectrally normalised WGAN-GPs differing in both players' learning rates,
    the penalty weight and the seed; member 3's generator learning rate is absurd, so it diverges."""
    root = tmp_path_factory.mktemp("gan_population")
    cfgs = [gan_cfg(0),
            gan_cfg(1, optim=OptimConfig(name="adam", lr=5e-3, b1=0.5),
                    loss=LossConfig(name="wgan_gp", gp_weight=2.0, score_samples=0)),
            gan_cfg(2, optim2=OptimConfig(name="adam", lr=1e-3, b1=0.0)),
            gan_cfg(3, optim=OptimConfig(name="adam", lr=1e30, b1=0.5))]
    s = setup(cfgs[0], digits)
    programs = Programs(dataclasses.replace(s, fused=True))
    fused = train_group(cfgs, [root / f"f{i}" for i in range(4)], fused=True, dataset=digits, programs=programs,
                        on_divergence="mark")
    # the healthy members one by one, each with its own state and numbers (one unfused program for the three)
    alone = train_group(cfgs[:3], [root / f"s{i}" for i in range(3)], fused=False, dataset=digits)
    return dict(cfgs=cfgs, fused=fused, alone=alone, programs=programs, s=s)


@pytest.fixture(scope="module")
def unit(population, digits):
    """Member 0's setup (a conditional WGAN-GP with spectral and batch norms), its state after its run, a batch and
    a jitted train step that counts its traces."""
    s = population["s"]
    batch = {k: jnp.asarray(v) for k, v in digits.train.batch(np.arange(16)).items()}
    traces = []

    def counted(state, batch, hp):
        traces.append(1)
        return s.train_step(state, batch, hp)

    return dict(s=s, state=population["alone"][0].state, batch=batch, step=jax.jit(counted), traces=traces)


def test_losses_match_a_hand_computation(unit):
    s, state = unit["s"], unit["state"]
    batch = {**unit["batch"], "mask": jnp.asarray([1.0] * 13 + [0.0] * 3)}  # a padded evaluation batch
    task = s.task
    params, ms = dict(state.params), dict(state.model_state)
    key = jax.random.PRNGKey(EVAL_SEED)
    x, y = batch["image"], batch["label"]

    hp = {**s.hparams, "gp_weight": jnp.asarray(0.0, jnp.float32)}  # the penalty is checked on its own below
    kinds = {kind: GAN(task.models, inputs=task.inputs, targets=task.targets, kind=kind, latent=task.latent,
                       image_shape=task.image_shape, num_classes=task.num_classes) for kind in LOSSES}

    @jax.jit
    def everything(batch):  # one compilation: the scores by hand and every kind's statistics
        fd, _ = task.fakes(params, ms, jax.random.fold_in(key, D_NOISE), y, 16, False)
        fg, _ = task.fakes(params, ms, jax.random.fold_in(key, G_NOISE), y, 16, False)
        scores = [task.scores_of(params, ms, a, y, False)[0] for a in (x, fd, fg)]
        return scores, {kind: other.eval_stats(params, ms, batch, hp) for kind, other in kinds.items()}

    scores, all_stats = everything(batch)
    real, fake_d, fake_g = (np.asarray(a, np.float64) for a in scores)
    m = np.asarray(batch["mask"], np.float64)
    sp = lambda a: np.log1p(np.exp(a))  # noqa: E731
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    expected = {
        "non_saturating": (-np.log(sig(real)) - np.log(1.0 - sig(fake_d)), sp(-fake_g), sig(real), sig(fake_d)),
        "hinge": (np.maximum(0, 1 - real) + np.maximum(0, 1 + fake_d), -fake_g, real, fake_d),
        "wgan_gp": (fake_d - real, -fake_g, real, fake_d),
    }
    assert set(expected) == set(LOSSES)
    for kind, (d_loss, g_loss, d_real, d_fake) in expected.items():
        stats = all_stats[kind]
        for name, want in (("d_loss", d_loss), ("g_loss", g_loss), ("d_real", d_real), ("d_fake", d_fake)):
            assert float(stats[name][1]) == 13.0
            np.testing.assert_allclose(float(stats[name][0]), (want * m).sum(), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{kind} {name}")
        right = ((real > 0).astype(float) + (fake_d < 0).astype(float)) * m
        assert float(stats["d_accuracy"][0]) == right.sum() and float(stats["d_accuracy"][1]) == 26.0
        assert float(stats["loss"][0]) == float(stats["d_loss"][0])
        assert ("gp" in stats) == (kind == "wgan_gp")


def test_gradient_penalty_matches_forward_mode_and_finite_differences(unit):
    s, state, batch = unit["s"], unit["state"], unit["batch"]
    task, params, ms = s.task, dict(state.params), dict(state.model_state)
    x, y = batch["image"][:2], batch["label"][:2]
    h = 1e-2
    basis = np.eye(64, dtype=np.float32).reshape(64, 8, 8, 1) * h
    probes = np.concatenate([np.asarray(x)[i] + sign * basis for i in range(2) for sign in (1, -1)])  # (256, 8, 8, 1)
    labels = np.repeat(np.asarray(y), 128)

    def score(image, label):  # one image's score
        return task.scores_of(params, ms, image[None], label[None], False)[0][0]

    @jax.jit
    def everything(x, probes):
        return (task.penalty(params, ms, x, y),  # (2,): reverse mode inside the loss
                jax.vmap(jax.jacfwd(score))(x, y),  # (2, 8, 8, 1): forward mode, pixel by pixel
                task.scores_of(params, ms, probes, labels, False)[0])  # (256,)

    pen, jac, d = (np.asarray(a, np.float64) for a in everything(x, probes))
    norm = np.linalg.norm(jac.reshape(2, -1), axis=1)
    np.testing.assert_allclose(pen, (norm - 1.0) ** 2, rtol=1e-4, atol=1e-7)
    # central differences along every pixel (leaky-ReLU kinks and float32 make them approximate)
    d = d.reshape(2, 2, 64)
    fd = np.linalg.norm((d[:, 0] - d[:, 1]) / (2 * h), axis=1)  # (2,)
    np.testing.assert_allclose(fd, norm, rtol=5e-2)


def test_gp_weight_is_traced(unit):
    s, state, batch, step = unit["s"], unit["state"], unit["batch"], unit["step"]
    assert float(s.hparams["gp_weight"]) == 10.0
    hp1 = {**s.hparams, "gp_weight": jnp.asarray(1.0, jnp.float32)}
    _, ten = step(state, batch, s.hparams)
    _, one = step(state, batch, hp1)
    assert len(unit["traces"]) == 1  # λ is an array: no retrace
    d10, d1 = ten["stats"]["d_loss"][0], one["stats"]["d_loss"][0]
    gp = ten["stats"]["gp"][0]
    np.testing.assert_allclose(float(d10 - d1), 9.0 * float(gp), rtol=1e-4)  # same noise, only λ differs
    assert float(gp) > 0 and bool(one["finite"])
    # the penalty's input gradient is differentiated: the discriminator's gradient changes with λ
    assert float(ten["discriminator/grad_norm"]) != pytest.approx(float(one["discriminator/grad_norm"]), rel=1e-3)


def test_each_players_update_lowers_its_own_loss(unit):
    """With the other player's learning rate ~0 (a dynamic number: the same compiled step), repeated updates on one
    batch lower the critic's loss, or the generator's."""
    s, batch, step = unit["s"], unit["batch"], unit["step"]
    for frozen, active, metric in (("lr", "optim2.lr", "d_loss"), ("optim2.lr", "lr", "g_loss")):
        hp = {**s.hparams, frozen: jnp.asarray(1e-12, jnp.float32), active: jnp.asarray(1e-2, jnp.float32)}
        state, losses = unit["state"], []
        for _ in range(20):
            state, m = step(state, batch, hp)
            losses.append(float(m["stats"][metric][0]) / 16)
        assert losses[-1] < losses[0] - 0.1, (metric, losses)
    assert len(unit["traces"]) == 1


def test_fused_population_equals_one_by_one_runs_and_compiles_once(population):
    fused, alone = population["fused"], population["alone"]
    assert population["programs"].runners["scan"].compiled._cache_size() == 1
    first = [np.asarray(a) for a in jax.tree.leaves(fused[0].state.params)]
    for i in range(3):
        assert fused[i].summary["status"] == "completed" and fused[i].summary["fused"]
        mine = jax.tree.leaves(fused[i].state.params)
        for a, b in zip(mine, jax.tree.leaves(alone[i].state.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
        for a, b in zip(jax.tree.leaves(fused[i].state.model_state), jax.tree.leaves(alone[i].state.model_state)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
        for split in ("val", "test"):
            for k in ("d_loss", "g_loss", "d_real", "d_fake", "gp"):
                np.testing.assert_allclose(fused[i].summary[split][k], alone[i].summary[split][k], rtol=1e-4,
                                           atol=1e-5, err_msg=f"member {i} {split}/{k}")
        if i:  # each member's numbers took effect
            assert any(not np.allclose(a, b) for a, b in zip(mine, first))
    assert set(fused[0].state.params) == {"generator", "discriminator"}
    assert set(fused[0].summary["test"]) == {"loss", "g_loss", "d_loss", "d_real", "d_fake", "d_accuracy", "gp"}
    # the spectral norm's power iteration went through the population's model state
    sn = fused[1].state.model_state["discriminator"]["batch_stats"]["SpectralNorm_0"]["conv0/kernel/sigma"]
    assert float(sn) != 1.0


def test_a_diverging_member_is_frozen_alone(population):
    fused = population["fused"]
    bad = fused[3].summary
    assert bad["status"] == "diverged" and bad["diverged_at"] is not None and bad["diverged_at"] <= 6
    assert all(r.summary["status"] == "completed" and r.summary["diverged_at"] is None for r in fused[:3])


def test_conditional_samples_come_with_their_classes(population):
    r = population["fused"][0]
    task = r.setup.task
    images, labels = task.sample(dict(r.state.params), dict(r.state.model_state), 13)
    assert images.shape == (13, 8, 8, 1) and 0.0 <= images.min() <= images.max() <= 1.0
    assert labels.tolist() == [i % 10 for i in range(13)]


def test_errors_a_user_can_reach(digits):
    std = data_lib.load(DataConfig(name="digits", train_limit=64, eval_limit=32))
    with pytest.raises(ConfigError, match=r"task=gan generates pixels in \[0, 1\], but data set 'digits' is "
                                          r"standardised; set data.standardize=False"):
        setup(gan_cfg(), std)
    with pytest.raises(ConfigError, match=r"loss.name=mse is not a loss of task=gan; expected auto "
                                          r"\(non_saturating\), non_saturating, hinge, wgan_gp"):
        setup(gan_cfg(kind="mse"), digits)
    with pytest.raises(ConfigError, match=r"task=gan trains model dcgan .*, got model.name=mlp"):
        setup(gan_cfg(model=model_config("mlp", widths=(8,))), digits)
    with pytest.raises(ConfigError, match=r"loss.gp_weight: expected a gradient-penalty weight in \[0, 1e\+06\], "
                                          r"got -1.0"):
        setup(gan_cfg(loss=LossConfig(name="wgan_gp", gp_weight=-1.0)), digits)
    with pytest.raises(ConfigError, match=r"model.g_channels: 4 entries double .* divisible by 16; the data's "
                                          r"images are 8x8"):
        setup(gan_cfg(model=model_config("dcgan", g_channels=(8, 8, 8, 8))), digits)
    rng = np.random.default_rng(0)
    unlabelled = data_lib.load(DataConfig(name="faces", standardize=False), source=data_lib.from_arrays(
        x=rng.random((40, 8, 8, 1)).astype(np.float32), y=rng.random((40, 1)).astype(np.float32), name="faces"))
    with pytest.raises(DataError, match=r"model.conditional=True needs class labels, but data set 'faces' has "
                                        r"regression targets"):
        setup(gan_cfg(data=DataConfig(name="faces", standardize=False)), unlabelled)
