"""Diffusion task: schedules against their closed forms, the ε/v parameterisations, the DDPM posterior and the DDIM
step against hand computations, the EMA arithmetic and the samplers reading the EMA weights, a traced guidance scale
(no recompilation), the dynamic numbers (a fused member off the default gets its standalone step), training
progress, the run's artifacts and the errors a user can reach. Tiny shapes: 8×8 digits, T = 100."""

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
from jaxdl.tasks import diffusion as D
from jaxdl.train.setup import example_batch, setup
from jaxdl.train.step import init_state

UNET = dict(channels=(8,), attention_levels=(), groups=4, heads=2)  # one level (and the middle attention)


@pytest.fixture(scope="module")
def digits():
    return data_lib.load(DataConfig(name="digits", standardize=False, train_limit=64, eval_limit=32))


def diff_cfg(loss=None, **model) -> Config:
    return Config(name="diffusion", task="diffusion", model=model_config("unet", **{**UNET, **model}),
                  data=DataConfig(name="digits", standardize=False),
                  loss=loss or LossConfig(timesteps=100, sample_steps=4, score_samples=0),
                  optim=OptimConfig(name="adam", lr=3e-3),
                  train=TrainConfig(batch_size=16, steps=4, driver="host", progress=False, checkpoints=False,
                                    plots=False))


@pytest.fixture(scope="module")
def run(digits):
    """A class-conditional setup, its initial state, a trace-counting jitted step and a batch."""
    s = setup(diff_cfg(label_classes=10), dataset=digits)
    traces = []

    def counted(state, batch, hp):
        traces.append(1)
        return s.train_step(state, batch, hp)

    batch = {k: jnp.asarray(v) for k, v in digits.train.batch(np.arange(16)).items()}
    task = s.task
    # compiled once for the whole module: the sampler (always 4 images), the network, the evaluation statistics
    net = jax.jit(lambda w, x, t, y: task.apply(w, {}, task.net_inputs(x, t, y)))
    evaluate = jax.jit(lambda p, m, b: task.eval_stats(p, m, b, s.hparams))
    # initialised from an RBG key (its initialisers compile in a quarter of threefry's time; the values do not
    # matter here), stepped with threefry keys (RBG bits differ under vmap: a fused member would not match)
    state = jax.jit(lambda: init_state(task, s.optimizers, example_batch(s), jax.random.key(0, impl="rbg"),
                                       s.hparams))().replace(rng=jax.random.PRNGKey(1))
    return dict(s=s, state=state, step=jax.jit(counted), traces=traces, batch=batch,
                generate=task._jit_generate, net=net, evaluate=evaluate)


@pytest.fixture(scope="module")
def trained(run):
    """30 steps on one batch, with the online weights' loss (fixed evaluation noise) before and after."""
    s, state, batch = run["s"], run["state"], run["batch"]

    def online(st):  # the evaluation statistics read the EMA slot: put the online weights there
        ms = {"model": {**st.model_state, "ema": st.params}}
        stats = run["evaluate"]({"model": st.params}, ms, batch)
        return float(stats["loss"][0] / stats["loss"][1])

    before = online(state)
    for _ in range(30):
        state, _ = run["step"](state, batch, s.hparams)
    return dict(state=state, before=before, after=online(state))


def variables(state):
    return {"model": state.params}, {"model": state.model_state}


# --------------------------------------------------------------------------------------------------------------------
def test_schedules_match_their_closed_forms():
    T = 1000
    ab = D.alpha_bar("linear", T)
    assert ab[0] == pytest.approx(1 - 1e-4, abs=1e-15)
    assert ab[-1] == pytest.approx(math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / 999) for i in range(T)), rel=1e-9)
    assert ab[-1] == pytest.approx(4.0358e-5, rel=1e-4)  # sqrt(ᾱ_T) ≈ 0.0064: almost pure noise
    short = D.betas("linear", 100)  # rescaled by 1000/T
    assert (short[0], short[-1]) == pytest.approx((1e-3, 0.2))
    cos = D.alpha_bar("cosine", T)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 1, 250, 500, 900, T - 2):
        assert cos[t] == pytest.approx(f(t + 1) / f(0), rel=1e-9), t
    assert cos[-1] == pytest.approx(cos[-2] * (1 - 0.999), rel=1e-9)  # β clipped at 0.999: ᾱ_T stays above 0
    assert np.all(np.diff(cos) < 0) and np.all(np.diff(ab) < 0)


def test_x0_and_eps_are_recovered_exactly_from_either_parameterisation():
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = jax.random.uniform(k1, (5, 4, 4, 1), minval=-1, maxval=1)
    eps = jax.random.normal(k2, x0.shape)
    ab = jnp.asarray(D.alpha_bar("cosine", 100)[np.array([0, 10, 50, 90, 98])], jnp.float32)
    xt = D.q_sample(x0, eps, ab)
    for prediction, pred in (("eps", eps), ("v", D.velocity(x0, eps, ab))):
        x0_hat, eps_hat = D.to_x0_eps(pred, xt, ab, prediction)
        np.testing.assert_allclose(x0_hat, x0, atol=2e-4 if prediction == "eps" else 1e-5)
        np.testing.assert_allclose(eps_hat, eps, atol=1e-5)
    # v = sqrt(ᾱ) ε − sqrt(1−ᾱ) x0 by hand, for one pixel
    a = float(ab[2])
    assert float(D.velocity(x0, eps, ab)[2, 1, 1, 0]) == pytest.approx(
        math.sqrt(a) * float(eps[2, 1, 1, 0]) - math.sqrt(1 - a) * float(x0[2, 1, 1, 0]), abs=1e-6)


def test_ddpm_posterior_and_the_ddim_step_against_hand_computations():
    beta = D.betas("linear", 100)
    ab = D.alpha_bar("linear", 100)
    t = 60
    rng = np.random.default_rng(0)
    x0, xt, z = (rng.normal(size=(1, 2, 2, 1)) for _ in range(3))
    # Ho et al. eq. 7 with the schedule's own β_t, α_t = 1 − β_t
    mean = (math.sqrt(ab[t - 1]) * beta[t] / (1 - ab[t]) * x0
            + math.sqrt(1 - beta[t]) * (1 - ab[t - 1]) / (1 - ab[t]) * xt)
    var = (1 - ab[t - 1]) / (1 - ab[t]) * beta[t]
    # and by Bayes' rule: N(x_s; sqrt(ᾱ_s) x0, 1−ᾱ_s) · N(x_t; sqrt(α) x_s, β)
    precision = 1 / (1 - ab[t - 1]) + (1 - beta[t]) / beta[t]
    bayes = (math.sqrt(ab[t - 1]) * x0 / (1 - ab[t - 1]) + math.sqrt(1 - beta[t]) * xt / beta[t]) / precision
    np.testing.assert_allclose(mean, bayes, rtol=1e-10)
    assert var == pytest.approx(1 / precision, rel=1e-10)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    m, v = D.posterior(f32(x0), f32(xt), f32([ab[t]]), f32([ab[t - 1]]))
    np.testing.assert_allclose(m, mean, rtol=1e-4, atol=1e-5)
    assert float(v[0]) == pytest.approx(var, rel=1e-4)
    # DDIM with η = 1 is that ancestral step; with η = 0 the noise z is ignored
    eps = (xt - math.sqrt(ab[t]) * x0) / math.sqrt(1 - ab[t])
    ddim1 = D.ddim_step(f32(x0), f32(eps), f32([ab[t]]), f32([ab[t - 1]]), 1.0, f32(z))
    np.testing.assert_allclose(ddim1, mean + math.sqrt(var) * z, rtol=1e-4, atol=1e-5)
    ddim0 = D.ddim_step(f32(x0), f32(eps), f32([ab[t]]), f32([ab[t - 1]]), 0.0, f32(z))
    np.testing.assert_allclose(ddim0, D.ddim_step(f32(x0), f32(eps), f32([ab[t]]), f32([ab[t - 1]]), 0.0, f32(-z)))
    np.testing.assert_allclose(ddim0, math.sqrt(ab[t - 1]) * x0 + math.sqrt(1 - ab[t - 1]) * eps, rtol=1e-4,
                               atol=1e-5)
    assert list(D.sampling_timesteps(100, 4)) == [99, 66, 33, 0]


def test_ddim_with_eta_0_is_the_deterministic_map_of_its_starting_noise(run, trained):
    task, net = run["s"].task, run["net"]
    params, ms = variables(trained["state"])
    ema = ms["model"]["ema"]
    labels = jnp.arange(4, dtype=jnp.int32)
    key = jax.random.PRNGKey(5)
    out = np.asarray(run["generate"](params, ms, key, labels))
    assert task.sampler == "ddim" and task.eta == 0.0
    # the same chain by hand: x_T from the first half of the key, then DDIM steps whose noise plays no part
    x = jax.random.normal(jax.random.split(key)[0], (4, 8, 8, 1))
    taus = D.sampling_timesteps(100, 4)
    ab = task.alpha_bar
    for i, t in enumerate(taus):
        a_t = jnp.full((4,), ab[t], jnp.float32)
        a_s = jnp.full((4,), ab[taus[i + 1]] if i + 1 < len(taus) else 1.0, jnp.float32)
        x0 = jnp.clip(D.to_x0_eps(net(ema, x, jnp.full((4,), t), labels), x, a_t, "eps")[0], -1, 1)
        eps = (x - jnp.sqrt(a_t)[:, None, None, None] * x0) / jnp.sqrt(1 - a_t)[:, None, None, None]
        x = D.ddim_step(x0, eps, a_t, a_s, 0.0, jnp.full(x.shape, 1e30))  # σ = 0: z plays no part
    np.testing.assert_allclose(out, np.clip((np.asarray(x) + 1) / 2, 0, 1), atol=2e-5)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_ema_update_arithmetic(run):
    task = run["s"].task
    hp = {"ema_decay": jnp.float32(0.9), "guidance_scale": jnp.float32(2.5)}
    params = {"model": {"w": jnp.asarray([1.0, 2.0])}}
    state = {"model": {"ema": {"w": jnp.asarray([3.0, -1.0])}, "guidance_scale": jnp.float32(1.0)}}
    late = task.after_update("model", params, state, hp, jnp.int32(10_000))["model"]
    np.testing.assert_allclose(late["ema"]["w"], [0.9 * 3 + 0.1 * 1, 0.9 * -1 + 0.1 * 2], rtol=1e-6)
    assert float(late["guidance_scale"]) == 2.5  # the member's scale, for its sampler
    first = task.after_update("model", params, state, hp, jnp.int32(0))["model"]  # warm-up: d = min(0.9, 1/10)
    np.testing.assert_allclose(first["ema"]["w"], [0.1 * 3 + 0.9 * 1, 0.1 * -1 + 0.9 * 2], rtol=1e-6)


def test_sampling_and_evaluation_read_the_ema_weights(run, trained):
    generate, evaluate, batch = run["generate"], run["evaluate"], run["batch"]
    params, ms = variables(trained["state"])
    labels = jnp.arange(4, dtype=jnp.int32)
    key = jax.random.PRNGKey(1)
    base = np.asarray(generate(params, ms, key, labels))
    scrambled = jax.tree.map(lambda p: p + 1.0, params)  # other online weights: same samples
    np.testing.assert_array_equal(np.asarray(generate(scrambled, ms, key, labels)), base)
    swapped = {"model": {**ms["model"], "ema": params["model"]}}  # the online weights as the EMA: other samples
    assert np.abs(np.asarray(generate(params, swapped, key, labels)) - base).max() > 1e-3
    ev = lambda p, m, b=batch: float(evaluate(p, m, b)["loss"][0])  # noqa: E731
    assert ev(scrambled, ms) == ev(params, ms) != ev(params, swapped)
    # evaluation noise comes from each image: the same images in another order give the same sum
    order = jnp.asarray(np.random.default_rng(0).permutation(16))
    assert ev(params, ms, jax.tree.map(lambda a: a[order], batch)) == pytest.approx(ev(params, ms), rel=1e-5)


def test_guidance_scale_is_traced_and_mixes_the_two_predictions(run, trained):
    task, generate, net = run["s"].task, run["generate"], run["net"]
    params, ms = variables(trained["state"])
    labels, key = jnp.arange(4, dtype=jnp.int32), jax.random.PRNGKey(3)
    one = generate(params, task.with_guidance(ms, 1.0), key, labels)
    three = generate(params, task.with_guidance(ms, 3.0), key, labels)
    assert generate._cache_size() == 1  # every scale (and every test here) shares one compiled sampler
    assert np.abs(np.asarray(one) - np.asarray(three)).max() > 1e-3
    images, got = task.sample(params, ms, 4, seed=9, guidance=3.0)  # Diffusion.sample's override: same program
    np.testing.assert_allclose(images, generate(params, task.with_guidance(ms, 3.0),
                                                jax.random.fold_in(jax.random.PRNGKey(9), 0), labels))
    assert list(got) == [0, 1, 2, 3] and generate._cache_size() == 1
    assert len(task.sample_times) == 1 and task.seconds_per_image() > 0
    ema, m = ms["model"]["ema"], ms["model"]
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 8, 8, 1))
    t, y = jnp.asarray([10, 70, 30, 99]), jnp.asarray([3, 7, 0, 9])
    cond, uncond = net(ema, x, t, y), net(ema, x, t, jnp.full((4,), 10))
    guided = jax.jit(lambda w: task.guided(ema, m, x, t, y, w))
    np.testing.assert_allclose(guided(jnp.float32(1.0)), cond, atol=1e-5)
    np.testing.assert_allclose(guided(jnp.float32(0.0)), uncond, atol=1e-5)
    np.testing.assert_allclose(guided(jnp.float32(2.5)), uncond + 2.5 * (cond - uncond), atol=1e-4)


def test_dynamic_numbers_are_traced_and_a_fused_member_gets_its_standalone_step(run, trained):
    s, step, batch = run["s"], run["step"], run["batch"]
    # trained (at initialisation the zero output layer ignores labels), and past the EMA warm-up
    state = trained["state"].replace(step=jnp.int32(100_000))
    off = {"ema_decay": 0.9, "label_dropout": 0.8, "guidance_scale": 4.0}
    assert [float(s.hparams[k]) for k in off] == pytest.approx([0.999, 0.1, 1.0])  # the defaults
    hp_off = {**s.hparams, **{k: jnp.float32(v) for k, v in off.items()}}
    n = len(run["traces"])
    default, m0 = step(state, batch, s.hparams)
    alone, m1 = step(state, batch, hp_off)
    assert len(run["traces"]) - n <= 1  # the numbers are arrays: no retrace (at most the fixture's first trace)
    assert float(alone.model_state["guidance_scale"]) == 4.0
    assert float(m0["loss"]) != float(m1["loss"])  # other labels dropped
    pair = jax.tree.map(lambda x, y: jnp.stack([x, y]), state, state)
    hps = jax.tree.map(lambda a, b: jnp.stack([a, b]), s.hparams, hp_off)
    fused, m = jax.jit(jax.vmap(s.train_step, in_axes=(0, None, 0)))(pair, batch, hps)
    # Adam's normalised update turns the last-bit differences of vmapped convolutions into visible ones where a
    # gradient is ~0, so the weights get a tolerance of 3% of one step (lr 3e-3); the EMA moves them by 1 − d
    pick = lambda tree, i: jax.tree.leaves(jax.tree.map(lambda x: x[i], tree))  # noqa: E731
    for i, ref in ((0, default), (1, alone)):
        for a, b in zip(pick(fused.params, i), jax.tree.leaves(ref.params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
        for a, b in zip(pick(fused.model_state["ema"], i), jax.tree.leaves(ref.model_state["ema"])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        assert float(fused.model_state["guidance_scale"][i]) == float(ref.model_state["guidance_scale"])
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(pick(fused.model_state["ema"], 0), pick(fused.model_state["ema"], 1)))
    assert moved > 1e-3  # decays 0.999 and 0.9 move the average differently
    np.testing.assert_allclose(m["loss"], [m0["loss"], m1["loss"]], rtol=1e-5)


def test_loss_goes_down_on_a_tiny_batch(trained):
    assert trained["after"] < 0.7 * trained["before"], trained


def test_artifacts_sampler_settings_and_final_grid(run, trained, digits, tmp_path, monkeypatch):
    task = run["s"].task
    params, ms = variables(trained["state"])
    monkeypatch.setattr(D, "GRID_SIZE", 2)  # a 2 × 2 grid: the module's compiled 4-image sampler
    monkeypatch.setattr(task, "score_samples", 20)
    out = task.artifacts(params, ms, digits, tmp_path, plots=True)
    assert "no shipped feature classifier for data set 'digits'" in out["scores"]["skipped"]
    assert out["sampling"] == {"sampler": "ddim", "steps": 4, "timesteps": 100, "guidance_scale": 1.0, "eta": 0.0}
    assert out["figures"] == ["diffusion_samples.png"] and (tmp_path / "diffusion_samples.png").is_file()
    assert run["generate"]._cache_size() == 1


def test_v_prediction_on_the_cosine_schedule_and_the_ddpm_sampler(run, trained):
    """The same network read as a v-predictor: the loss is the v error, eps_mse = ᾱ_t · (v error)², and the
    ancestral sampler draws new noise at every step."""
    task, net = run["s"].task, run["net"]
    vtask = D.Diffusion(task.model, image_shape=(8, 8, 1), label_classes=10, noise_schedule="cosine",
                        timesteps=100, prediction="v", sampler="ddpm", sample_steps=3)
    params, ms = variables(trained["state"])
    batch = jax.tree.map(lambda a: a[:4], run["batch"])
    both = jax.jit(lambda k: (vtask.generate(params, ms, k, batch["label"]),
                              vtask.eval_stats(params, ms, batch, run["s"].hparams)))
    (a, stats), (b, _) = both(jax.random.PRNGKey(0)), both(jax.random.PRNGKey(1))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3 and 0 <= float(a.min()) <= float(a.max()) <= 1
    # by hand: each image's own t and ε, the cosine ᾱ_t, the v target
    keys = D.image_keys(batch["image"])
    t = jnp.stack([jax.random.randint(k, (), 0, 100) for k in keys])
    eps = jnp.stack([jax.random.normal(jax.random.fold_in(k, 1), (8, 8, 1)) for k in keys])
    ab = jnp.asarray(D.alpha_bar("cosine", 100), jnp.float32)[t]
    x0 = 2 * batch["image"] - 1
    pred = net(ms["model"]["ema"], D.q_sample(x0, eps, ab), t, batch["label"])
    v_err = np.mean(np.square(np.asarray(pred - D.velocity(x0, eps, ab))), axis=(1, 2, 3))
    np.testing.assert_allclose(float(stats["loss"][0]), v_err.sum(), rtol=1e-4)
    np.testing.assert_allclose(float(stats["eps_mse"][0]), (np.asarray(ab) * v_err).sum(), rtol=1e-4)


def test_errors_a_user_can_reach(digits):
    std = data_lib.load(DataConfig(name="digits", train_limit=64, eval_limit=32))
    with pytest.raises(ConfigError, match=r"task=diffusion models pixels in \[0, 1\] \(as \[-1, 1\]\), but data "
                                          r"set 'digits' is standardised; set data.standardize=False"):
        setup(diff_cfg(), dataset=std)
    base = LossConfig(timesteps=100, sample_steps=4, score_samples=0)
    cases = [
        ({"name": "mse"}, {}, r"loss.name=mse is not used by task=diffusion"),
        ({"noise_schedule": "quadratic"}, {}, r"loss.noise_schedule: unknown noise schedule 'quadratic'; expected "
                                               r"one of linear, cosine"),
        ({"prediction": "x0"}, {}, r"loss.prediction: unknown prediction 'x0'; expected one of eps, v"),
        ({"sampler": "euler"}, {}, r"loss.sampler: unknown sampler 'euler'; expected one of ddim, ddpm"),
        ({}, {"label_classes": 5}, r"model.label_classes=5 but data set 'digits' has 10 classes"),
        ({"guidance_scale": 3.0}, {}, r"loss.guidance_scale=3.0 needs a class-conditional model "
                                      r"\(model.label_classes > 0\)"),
        ({"guidance_scale": 3.0, "label_dropout": 0.0}, {"label_classes": 10},
         r"loss.guidance_scale=3.0 mixes in the unconditional prediction, but loss.label_dropout=0 never trains it"),
        ({"sample_steps": 200}, {}, r"loss.sample_steps=200 exceeds loss.timesteps=100"),
        ({"ema_decay": 1.0}, {}, r"loss.ema_decay: expected a decay in \[0, 1\), got 1.0"),
        ({"ddim_eta": 2.0}, {}, r"loss.ddim_eta: expected a DDIM eta in \[0, 1\], got 2.0"),
        ({"label_dropout": 1.0}, {}, r"loss.label_dropout: expected a probability in \[0, 1\), got 1.0"),
        ({"timesteps": 1}, {}, r"loss.timesteps: expected a number of diffusion steps in \[2, 100000\], got 1"),
    ]
    for loss, model, message in cases:
        with pytest.raises(ConfigError, match=message):
            setup(diff_cfg(dataclasses.replace(base, **loss), **model), dataset=digits)
