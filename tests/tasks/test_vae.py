"""VAE task: the ELBO terms against a hand computation, the Gaussian likelihood, the importance-weighted bound,
a traced KL weight (no retrace; a fused member off the default gets its standalone step), training progress and
the errors a user can reach."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import data as data_lib
from jaxdl.config import Config, DataConfig, LossConfig, OptimConfig, TrainConfig, model_config
from jaxdl.errors import ConfigError
from jaxdl.tasks.vae import log_likelihood
from jaxdl.train.setup import initial_state, setup


@pytest.fixture(scope="module")
def digits():
    return data_lib.load(DataConfig(name="digits", standardize=False, train_limit=64, eval_limit=32))


def vae_cfg(**over) -> Config:
    cfg = Config(name="vae", task="vae", model=model_config("vae", widths=(16,), latent=3),
                 data=DataConfig(name="digits", standardize=False),
                 loss=LossConfig(iw_samples=8), optim=OptimConfig(name="adam", lr=1e-2),
                 train=TrainConfig(batch_size=16, steps=5, driver="host", progress=False, checkpoints=False,
                                   plots=False))
    return dataclasses.replace(cfg, **over)


@pytest.fixture(scope="module")
def run(digits):
    s = setup(vae_cfg(), dataset=digits)
    traces = []

    def counted(state, batch, hp):
        traces.append(1)
        return s.train_step(state, batch, hp)

    batch = {k: jnp.asarray(v) for k, v in digits.train.batch(np.arange(16)).items()}
    evaluate = jax.jit(lambda st, b, hp: s.task.loss("model", {"model": st.params}, {"model": st.model_state}, b,
                                                     None, hp, False))
    return dict(s=s, state=initial_state(s), step=jax.jit(counted), traces=traces, batch=batch, evaluate=evaluate)


def test_elbo_terms_match_a_hand_computation(run):
    s, state, batch = run["s"], run["state"], run["batch"]
    batch = {**batch, "mask": jnp.asarray([1.0] * 15 + [0.0])}  # a padded evaluation batch
    _, (stats, _) = run["evaluate"](state, batch, s.hparams)
    from jaxdl.tasks.vae import EVAL_SEED

    (logits, mu, logvar), _ = s.task.model.apply({"params": state.params, **state.model_state}, batch["image"],
                                                 rngs={"latent": jax.random.PRNGKey(EVAL_SEED)})
    logits, mu, logvar = (np.asarray(a, np.float64) for a in (logits, mu, logvar))
    x = np.asarray(batch["image"], np.float64).reshape(16, -1)
    assert x.min() >= 0.0 and x.max() <= 1.0
    p = 1.0 / (1.0 + np.exp(-logits))
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(1)  # (B,)
    kl = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar).sum(1)  # (B,)
    m = np.asarray(batch["mask"])
    np.testing.assert_allclose(float(stats["recon"][0]), (bce * m).sum(), rtol=1e-4)
    np.testing.assert_allclose(float(stats["kl"][0]), (kl * m).sum(), rtol=1e-4)
    np.testing.assert_allclose(float(stats["nelbo"][0]), ((bce + kl) * m).sum(), rtol=1e-4)
    assert float(stats["nelbo"][1]) == 15.0


def test_gaussian_likelihood_is_the_normal_density():
    rng = np.random.default_rng(0)
    x, m, sigma = rng.random((2, 6)), rng.random((2, 6)), 0.3
    expected = (-(x - m) ** 2 / (2 * sigma**2) - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(1)
    np.testing.assert_allclose(log_likelihood(jnp.asarray(m), jnp.asarray(x), "gaussian", sigma), expected,
                               rtol=1e-5)


def test_importance_weighted_bound(run, digits):
    s, state = run["s"], run["state"]
    task, p, ms = s.task, state.params, state.model_state
    images = np.asarray(digits.test.x[:4], np.float32)
    # k = 1: log w = log p(x|z) + log p(z) - log q(z|x) is a one-sample estimate of the ELBO; compare its mean
    # with the closed-form-KL ELBO averaged over the same number of draws, within four standard errors
    reps = jnp.asarray(np.repeat(images, 256, axis=0))  # (1024, 8, 8, 1)
    logw = np.asarray(jax.jit(lambda x, k: task.iw_log_weights(p, ms, x, k, 1))(reps, jax.random.key(3)))[:, 0]
    recon, kl = jax.jit(lambda x, k: task.terms(p, ms, x, k))(reps, jax.random.key(4))
    elbo = -np.asarray(recon + kl)  # (1024,)
    se = math.sqrt(logw.var() / len(logw) + elbo.var() / len(elbo))
    assert abs(logw.mean() - elbo.mean()) < 4 * se + 1e-3, (logw.mean(), elbo.mean(), se)
    iw64 = task.iw_nll(p, ms, images, k=64, batch_size=4)
    assert iw64 < -logw.mean()  # a tighter bound on -log p(x) than the ELBO (k = 1)


def test_kl_weight_is_traced_and_a_fused_member_gets_its_standalone_step(run):
    s, state, step, batch = run["s"], run["state"], run["step"], run["batch"]
    hp_half = {**s.hparams, "kl_weight": jnp.asarray(0.5, jnp.float32)}
    assert float(s.hparams["kl_weight"]) == 1.0
    _, one = step(state, batch, s.hparams)
    alone, half = step(state, batch, hp_half)
    assert len(run["traces"]) == 1  # β is an array: no retrace
    st1, sth = one["stats"], half["stats"]
    np.testing.assert_allclose(float(st1["nelbo"][0]), float(sth["nelbo"][0]), rtol=1e-6)  # same noise, same bound
    np.testing.assert_allclose(float(sth["loss"][0]), float(sth["recon"][0]) + 0.5 * float(sth["kl"][0]), rtol=1e-5)
    pair = jax.tree.map(lambda x, y: jnp.stack([x, y]), state, state)
    hps = jax.tree.map(lambda a, b: jnp.stack([a, b]), s.hparams, hp_half)
    fused, m = jax.jit(jax.vmap(s.train_step, in_axes=(0, None, 0)))(pair, batch, hps)
    for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x: x[1], fused.params)), jax.tree.leaves(alone.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["loss"][0], one["loss"], rtol=1e-5)


def test_loss_goes_down_on_a_tiny_batch(run):
    s, state, step, batch = run["s"], run["state"], run["step"], run["batch"]
    first = None
    for _ in range(30):
        state, m = step(state, batch, s.hparams)
        first = float(m["loss"]) if first is None else first
    _, (stats, _) = run["evaluate"](state, batch, s.hparams)
    assert float(stats["nelbo"][0]) / 16 < 0.8 * first


def test_errors_a_user_can_reach(digits):
    std = data_lib.load(DataConfig(name="digits", train_limit=64, eval_limit=32))
    with pytest.raises(ConfigError, match=r"task=vae models pixels in \[0, 1\], but data set 'digits' is "
                                          r"standardised; set data.standardize=False"):
        setup(vae_cfg(), dataset=std)
    with pytest.raises(ConfigError, match=r"loss.name=mse is not used by task=vae"):
        setup(vae_cfg(loss=LossConfig(name="mse")), dataset=digits)
    with pytest.raises(ConfigError, match=r"loss.kl_weight: expected a KL weight in \[0, 1e\+06\], got -1.0"):
        setup(vae_cfg(loss=LossConfig(kl_weight=-1.0)), dataset=digits)
    with pytest.raises(ConfigError, match=r"loss.iw_samples: expected a number of importance samples in "
                                          r"\[1, 1.04858e\+06\], got 0"):
        setup(vae_cfg(loss=LossConfig(iw_samples=0)), dataset=digits)


def test_sample_grids_at_every_evaluation_and_unscored_data_says_why(digits, tmp_path):
    from jaxdl.train import fit
    from jaxdl.train.rundir import sample_grids

    cfg = vae_cfg(loss=LossConfig(iw_samples=2, score_samples=20))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=4, eval_every=2, plots=True))
    result = fit(cfg, workdir=tmp_path, dataset=digits)
    assert [step for step, _ in sample_grids(result.run_dir)] == [2, 4]
    assert "no shipped feature classifier for data set 'digits'" in result.summary["scores"]["skipped"]
    images, labels = result.setup.task.sample({"model": result.state.params}, {"model": result.state.model_state}, 7)
    assert images.shape == (7, 8, 8, 1) and labels is None and 0.0 <= images.min() <= images.max() <= 1.0


def test_score_samples_must_be_zero_or_enough(digits):
    with pytest.raises(ConfigError, match=r"loss.score_samples: expected 0 \(no scoring\) or a number of samples in "
                                          r"\[10, 1.04858e\+06\], got 3"):
        setup(vae_cfg(loss=LossConfig(score_samples=3)), dataset=digits)
