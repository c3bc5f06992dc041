"""jaxdl.optim: step-for-step parity with torch.optim ("torch" mode) and optax ("optax" mode), schedules,
regularisation (L1, masks), no recompilation when hyper-parameters change, and config errors."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

from jaxdl import optim
from jaxdl.config import OptimConfig
from jaxdl.errors import ConfigError

RTOL, ATOL = 1e-5, 1e-6
STEPS = 20
D_IN, D_HID, D_OUT, BATCH = 6, 8, 3, 16


def as_hp(cfg: OptimConfig) -> dict:
    """Hyper-parameters exactly as the train step passes them: float32 scalars."""
    return {k: jnp.asarray(v, jnp.float32) for k, v in optim.hparams(cfg).items()}


# --------------------------------------------------------------------------------------------------------------------
# A small MLP defined identically in jax and torch
# --------------------------------------------------------------------------------------------------------------------


def mlp_setup(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.normal(0, 0.5, (D_IN, D_HID)).astype(np.float32),
        "b1": rng.normal(0, 0.1, (D_HID,)).astype(np.float32),
        "w2": rng.normal(0, 0.5, (D_HID, D_OUT)).astype(np.float32),
        "b2": rng.normal(0, 0.1, (D_OUT,)).astype(np.float32),
    }
    x = rng.normal(0, 1, (BATCH, D_IN)).astype(np.float32)
    y = rng.integers(0, D_OUT, (BATCH,)).astype(np.int32)
    return params, x, y


def jax_loss(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def torch_model(params):
    model = torch.nn.Sequential(torch.nn.Linear(D_IN, D_HID), torch.nn.Tanh(), torch.nn.Linear(D_HID, D_OUT))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(params["w1"].T.copy()))
        model[0].bias.copy_(torch.from_numpy(params["b1"]))
        model[2].weight.copy_(torch.from_numpy(params["w2"].T.copy()))
        model[2].bias.copy_(torch.from_numpy(params["b2"]))
    return model


def torch_params(model):
    return {
        "w1": model[0].weight.detach().numpy().T,
        "b1": model[0].bias.detach().numpy(),
        "w2": model[2].weight.detach().numpy().T,
        "b2": model[2].bias.detach().numpy(),
    }


def assert_params_close(ours, ref, step):
    for k in ("w1", "b1", "w2", "b2"):
        np.testing.assert_allclose(np.asarray(ours[k]), ref[k], rtol=RTOL, atol=ATOL,
                                   err_msg=f"parameter {k} differs after step {step}")


def run_parity(cfg: OptimConfig, make_torch_opt, clip=None, torch_factor=None, total=STEPS):
    """Train the MLP for STEPS steps with jaxdl.optim and with the torch optimizer; compare after every step."""
    torch.manual_seed(0)
    params0, x, y = mlp_setup()
    opt = optim.build(cfg, total)
    hp = as_hp(cfg)

    @jax.jit
    def step_fn(params, state, step):
        grads = jax.grad(jax_loss)(params, jnp.asarray(x), jnp.asarray(y))
        updates, state = opt.update(grads, state, params, hp, step)
        return optax.apply_updates(params, updates), state

    params = jax.tree.map(jnp.asarray, params0)
    state = opt.init(params, hp)

    model = torch_model(params0)
    topt = make_torch_opt(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(topt, torch_factor) if torch_factor is not None else None
    tx, ty = torch.from_numpy(x), torch.from_numpy(y).long()

    for t in range(STEPS):
        params, state = step_fn(params, state, jnp.asarray(t, jnp.int32))

        topt.zero_grad()
        F.cross_entropy(model(tx), ty).backward()
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if t == 0:
                assert float(norm) > clip, "clip norm too large to exercise clipping"
        topt.step()
        if sched is not None:
            sched.step()

        assert_params_close(params, torch_params(model), t)
    # the run really moved the parameters
    assert not np.allclose(np.asarray(params["w1"]), params0["w1"], atol=1e-4)


TO = torch.optim

PARITY_CASES = {
    # SGD
    "sgd": (OptimConfig(name="sgd", lr=0.1), lambda p: TO.SGD(p, lr=0.1)),
    "sgd_momentum": (OptimConfig(name="sgd", lr=0.1, momentum=0.9), lambda p: TO.SGD(p, lr=0.1, momentum=0.9)),
    "sgd_nesterov": (OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True),
                     lambda p: TO.SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
    "sgd_l2": (OptimConfig(name="sgd", lr=0.1, momentum=0.5, l2=0.01),
               lambda p: TO.SGD(p, lr=0.1, momentum=0.5, weight_decay=0.01)),
    # Adam / AdamW
    "adam": (OptimConfig(name="adam", lr=1e-2), lambda p: TO.Adam(p, lr=1e-2)),
    "adam_l2": (OptimConfig(name="adam", lr=1e-2, l2=0.05), lambda p: TO.Adam(p, lr=1e-2, weight_decay=0.05)),
    "adam_betas": (OptimConfig(name="adam", lr=1e-2, b1=0.8, b2=0.99, eps=1e-6),
                   lambda p: TO.Adam(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6)),
    "adamw": (OptimConfig(name="adamw", lr=1e-2, weight_decay=0.05),
              lambda p: TO.AdamW(p, lr=1e-2, weight_decay=0.05)),
    "adamw_default_wd": (OptimConfig(name="adamw", lr=1e-2), lambda p: TO.AdamW(p, lr=1e-2)),
    # RMSprop
    "rmsprop": (OptimConfig(name="rmsprop", lr=1e-2), lambda p: TO.RMSprop(p, lr=1e-2)),
    "rmsprop_momentum": (OptimConfig(name="rmsprop", lr=1e-2, momentum=0.9),
                         lambda p: TO.RMSprop(p, lr=1e-2, momentum=0.9)),
    "rmsprop_centered": (OptimConfig(name="rmsprop", lr=1e-2, centered=True),
                         lambda p: TO.RMSprop(p, lr=1e-2, centered=True)),
    "rmsprop_centered_momentum": (OptimConfig(name="rmsprop", lr=1e-2, centered=True, momentum=0.5),
                                  lambda p: TO.RMSprop(p, lr=1e-2, centered=True, momentum=0.5)),
    "rmsprop_l2": (OptimConfig(name="rmsprop", lr=1e-2, l2=0.05),
                   lambda p: TO.RMSprop(p, lr=1e-2, weight_decay=0.05)),
    # AdaGrad
    "adagrad": (OptimConfig(name="adagrad", lr=0.1), lambda p: TO.Adagrad(p, lr=0.1)),
    "adagrad_l2": (OptimConfig(name="adagrad", lr=0.1, l2=0.05), lambda p: TO.Adagrad(p, lr=0.1, weight_decay=0.05)),
    "adagrad_init_acc": (OptimConfig(name="adagrad", lr=0.1, initial_accumulator=0.1),
                         lambda p: TO.Adagrad(p, lr=0.1, initial_accumulator_value=0.1)),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_torch_parity(case):
    cfg, make = PARITY_CASES[case]
    assert cfg.mode == "torch"
    run_parity(cfg, make)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_torch_parity_clip_norm(name):
    clip = 0.05
    if name == "sgd":
        cfg, make = OptimConfig(name="sgd", lr=0.2, momentum=0.9, clip_norm=clip), \
            lambda p: TO.SGD(p, lr=0.2, momentum=0.9)
    else:
        cfg, make = OptimConfig(name="adam", lr=1e-2, clip_norm=clip), lambda p: TO.Adam(p, lr=1e-2)
    run_parity(cfg, make, clip=clip)


@pytest.mark.parametrize("kind", ["cosine", "warmup_cosine", "one_cycle"])
def test_torch_parity_schedule_lambdalr(kind):
    total = STEPS
    cfg = OptimConfig(name="sgd", lr=0.2, momentum=0.9, schedule=kind, final_lr_ratio=0.1,
                      warmup_steps=4 if kind == "warmup_cosine" else 0)
    factor = optim.schedule(cfg, total)
    run_parity(cfg, lambda p: TO.SGD(p, lr=0.2, momentum=0.9), torch_factor=lambda t: float(factor(t)), total=total)


def test_lr_reports_scheduled_rate():
    cfg = OptimConfig(name="adam", lr=0.3, schedule="cosine")
    opt = optim.build(cfg, 10)
    hp = as_hp(cfg)
    factor = optim.schedule(cfg, 10)
    for t in (0, 3, 10):
        np.testing.assert_allclose(float(opt.lr(hp, jnp.asarray(t))), 0.3 * float(factor(t)), rtol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# mode="optax"
# --------------------------------------------------------------------------------------------------------------------


def _compare_with_optax(cfg, reference, steps=5):
    rng = np.random.default_rng(1)
    params = {"a": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=(3,)),
                                                                                       jnp.float32)}
    grads_seq = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
                 for _ in range(steps)]
    opt, hp = optim.build(cfg, steps), as_hp(cfg)
    ours_p, ours_s = params, opt.init(params, hp)
    ref_p, ref_s = params, reference.init(params)
    for t, g in enumerate(grads_seq):
        u, ours_s = opt.update(g, ours_s, ours_p, hp, jnp.asarray(t))
        ours_p = optax.apply_updates(ours_p, u)
        r, ref_s = reference.update(g, ref_s, ref_p)
        ref_p = optax.apply_updates(ref_p, r)
        for k in params:
            np.testing.assert_allclose(np.asarray(ours_p[k]), np.asarray(ref_p[k]), rtol=RTOL, atol=ATOL,
                                       err_msg=f"{k} after step {t}")


def test_optax_mode_rmsprop():
    _compare_with_optax(OptimConfig(name="rmsprop", mode="optax", lr=0.01), optax.rmsprop(0.01))


def test_optax_mode_rmsprop_centered_momentum():
    _compare_with_optax(OptimConfig(name="rmsprop", mode="optax", lr=0.01, centered=True, momentum=0.9),
                        optax.rmsprop(0.01, centered=True, momentum=0.9))


def test_optax_mode_adagrad():
    _compare_with_optax(OptimConfig(name="adagrad", mode="optax", lr=0.1), optax.adagrad(0.1))


def test_mode_defaults_differ():
    torch_rms, optax_rms = (optim.hparams(OptimConfig(name="rmsprop", mode=m)) for m in ("torch", "optax"))
    assert torch_rms["rms_decay"] == 0.99 and optax_rms["rms_decay"] == 0.9
    torch_ada, optax_ada = (optim.hparams(OptimConfig(name="adagrad", mode=m)) for m in ("torch", "optax"))
    assert (torch_ada["initial_accumulator"], torch_ada["eps"]) == (0.0, 1e-10)
    assert (optax_ada["initial_accumulator"], optax_ada["eps"]) == (0.1, 1e-7)
    assert optim.hparams(OptimConfig(name="adamw"))["weight_decay"] == 0.01
    assert optim.hparams(OptimConfig(name="adamw", mode="optax"))["weight_decay"] == 1e-4
    assert optim.hparams(OptimConfig(name="adam"))["weight_decay"] == 0.0
    # explicit values win over mode defaults
    assert optim.hparams(OptimConfig(name="rmsprop", mode="optax", rms_decay=0.5))["rms_decay"] == 0.5
    assert all(isinstance(v, float) for v in torch_rms.values())
    assert set(torch_rms) == set(optim.DYNAMIC_FIELDS)


# --------------------------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------------------------


def factors(cfg, total, steps):
    f = optim.schedule(cfg, total)
    return np.array([float(f(t)) for t in steps])


def test_schedule_constant():
    np.testing.assert_allclose(factors(OptimConfig(schedule="constant"), 50, range(0, 60, 7)), 1.0)
    # with a linear warmup
    got = factors(OptimConfig(schedule="constant", warmup_steps=4), 50, range(8))
    np.testing.assert_allclose(got, [0.25, 0.5, 0.75, 1, 1, 1, 1, 1], rtol=1e-6)


def test_schedule_step():
    cfg = OptimConfig(schedule="step", step_size=10, gamma=0.5)
    got = factors(cfg, 100, [0, 9, 10, 19, 20, 35, 99])
    np.testing.assert_allclose(got, [1, 1, 0.5, 0.5, 0.25, 0.125, 0.5 ** 9], rtol=1e-6)


def test_schedule_cosine_matches_torch_cosine_annealing():
    total, lr, ratio = 40, 0.1, 0.05
    cfg = OptimConfig(schedule="cosine", lr=lr, final_lr_ratio=ratio)
    f = optim.schedule(cfg, total)
    assert float(f(0)) == pytest.approx(1.0)
    assert float(f(total // 2)) == pytest.approx(ratio + (1 - ratio) / 2, rel=1e-6)
    assert float(f(total)) == pytest.approx(ratio, rel=1e-5)
    assert float(f(total + 10)) == pytest.approx(ratio, rel=1e-5)  # clipped after the end
    # the same curve as torch's CosineAnnealingLR(T_max=total, eta_min=lr*ratio)
    p = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=total, eta_min=lr * ratio)
    for t in range(total + 1):
        assert lr * float(f(t)) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-5, abs=1e-8), t
        topt.step()
        sched.step()


def test_schedule_warmup_cosine():
    total, warm, ratio = 100, 10, 0.0
    cfg = OptimConfig(schedule="warmup_cosine", warmup_steps=warm, final_lr_ratio=ratio)
    got = factors(cfg, total, range(total + 1))
    np.testing.assert_allclose(got[:warm], (np.arange(warm) + 1) / warm, rtol=1e-6)  # linear warmup
    assert np.all(np.diff(got[:warm]) > 0)
    assert got[warm] == pytest.approx(1.0)
    span = total - warm
    expect = ratio + (1 - ratio) * 0.5 * (1 + np.cos(np.pi * np.arange(span + 1) / span))
    np.testing.assert_allclose(got[warm:], expect, rtol=1e-5, atol=1e-6)
    assert got[-1] == pytest.approx(ratio, abs=1e-6)
    assert np.all(np.diff(got[warm:]) <= 1e-7)  # non-increasing after the warmup


def test_schedule_one_cycle():
    """PyTorch OneCycleLR timing: peak at step warmup-1, floor lr/25/1e4 at the last step (total-1)."""
    total, lr = 100, 0.5
    cfg = OptimConfig(schedule="one_cycle", lr=lr)
    got = factors(cfg, total, range(total))
    up = int(0.3 * total) - 1  # default warmup: 30 % of the run
    assert got[0] == pytest.approx(1 / 25, rel=1e-5)
    assert got[up] == pytest.approx(1.0, rel=1e-6)
    assert got.argmax() == up
    assert np.all(np.diff(got[:up + 1]) > 0) and np.all(np.diff(got[up:]) < 0)
    assert got[total - 1] == pytest.approx(1 / 25 / 1e4, rel=1e-3)
    # the same curve as torch's OneCycleLR (cos annealing, default div factors)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, cycle_momentum=False)
    ref = []
    for _ in range(total):
        ref.append(opt.param_groups[0]["lr"] / lr)
        opt.step()
        sched.step()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-8)
    # explicit warmup_steps move the peak
    got2 = factors(dataclasses.replace(cfg, warmup_steps=11), total, range(total))
    assert got2.argmax() == 10 and got2[10] == pytest.approx(1.0)
    assert got2[0] == pytest.approx(1 / 25, rel=1e-5)
    # mid-rise is the cosine average of the two ends
    assert got2[5] == pytest.approx((1 / 25 + 1) / 2, rel=1e-5)


@pytest.mark.parametrize("kind", optim.SCHEDULES)
def test_schedule_traceable(kind):
    f = optim.schedule(OptimConfig(schedule=kind, warmup_steps=3), 30)
    steps = jnp.arange(30)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(f))(steps)), factors(
        OptimConfig(schedule=kind, warmup_steps=3), 30, range(30)), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------------------------------
# Hyper-parameters are data: no retracing when they change
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [
    OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, clip_norm=1.0),
    OptimConfig(name="adamw", lr=1e-3, schedule="warmup_cosine", warmup_steps=2),
    OptimConfig(name="rmsprop", lr=1e-3, centered=True, decay_mask="kernels"),
    OptimConfig(name="adagrad", lr=1e-2, schedule="one_cycle"),
], ids=["sgd", "adamw", "rmsprop", "adagrad"])
def test_no_recompile_when_hparams_change(cfg):
    traces = []
    opt = optim.build(cfg, 10)

    @jax.jit
    def f(params, state, grads, hp, step):
        traces.append(1)
        return opt.update(grads, state, params, hp, step)

    params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))}}
    grads = jax.tree.map(lambda p: 0.1 * p, params)
    state = opt.init(params, as_hp(cfg))
    variants = [cfg,
                dataclasses.replace(cfg, lr=0.5),
                dataclasses.replace(cfg, momentum=0.3, l2=0.01),
                dataclasses.replace(cfg, l1=0.02, weight_decay=0.2),
                dataclasses.replace(cfg, b1=0.5, b2=0.9, eps=1e-3, rms_decay=0.7),
                dataclasses.replace(cfg, clip_norm=None if cfg.clip_norm is None else 0.01)]
    outs = []
    for i, v in enumerate(variants):
        u, state = f(params, state, grads, as_hp(v), jnp.asarray(i, jnp.int32))
        outs.append(np.asarray(u["dense"]["kernel"]))
    assert len(traces) == 1
    # the numbers really took effect
    assert not np.allclose(outs[0], outs[1])


# --------------------------------------------------------------------------------------------------------------------
# Regularisation: L1, L2, decoupled decay and the decay mask
# --------------------------------------------------------------------------------------------------------------------


def _one_update(cfg, params, grads):
    opt, hp = optim.build(cfg, 10), as_hp(cfg)
    updates, _ = opt.update(grads, opt.init(params, hp), params, hp, jnp.asarray(0))
    return updates


def test_l1_adds_sign_times_l1():
    params = {"w": jnp.asarray([[1.5, -2.0, 0.0], [0.3, -0.1, 4.0]], jnp.float32)}
    grads = {"w": jnp.asarray([[0.1, 0.2, -0.3], [0.0, 0.5, -1.0]], jnp.float32)}
    l1 = 0.25
    u = _one_update(OptimConfig(name="sgd", lr=1.0, l1=l1), params, grads)
    expect = -(grads["w"] + l1 * jnp.sign(params["w"]))
    np.testing.assert_allclose(np.asarray(u["w"]), np.asarray(expect), rtol=1e-6, atol=1e-7)
    # l1 and l2 together
    u = _one_update(OptimConfig(name="sgd", lr=1.0, l1=l1, l2=0.1), params, grads)
    expect = -(grads["w"] + l1 * jnp.sign(params["w"]) + 0.1 * params["w"])
    np.testing.assert_allclose(np.asarray(u["w"]), np.asarray(expect), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("field,value", [("l2", 0.3), ("l1", 0.3), ("weight_decay", 0.3)])
def test_decay_mask_kernels_leaves_biases(field, value):
    params = {"dense": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.full((2,), 2.0)},
              "embed": {"embedding": jnp.full((4, 2), -1.0)}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    base = OptimConfig(name="sgd", lr=1.0, **{field: value})
    masked = _one_update(dataclasses.replace(base, decay_mask="kernels"), params, zeros)
    np.testing.assert_array_equal(np.asarray(masked["dense"]["bias"]), 0.0)
    reg = (lambda w: value * np.sign(w)) if field == "l1" else (lambda w: value * w)
    for leaf in (("dense", "kernel"), ("embed", "embedding")):
        w = np.asarray(params[leaf[0]][leaf[1]])
        np.testing.assert_allclose(np.asarray(masked[leaf[0]][leaf[1]]), -reg(w), rtol=1e-6)
    everything = _one_update(base, params, zeros)
    np.testing.assert_allclose(np.asarray(everything["dense"]["bias"]), -reg(np.full((2,), 2.0)), rtol=1e-6)


def test_decay_mask_kernels_adamw_bias_is_plain_adam():
    params = {"kernel": jnp.full((2, 2), 1.0), "bias": jnp.full((2,), 1.0)}
    grads = {"kernel": jnp.full((2, 2), 0.5), "bias": jnp.full((2,), 0.5)}
    masked = _one_update(OptimConfig(name="adamw", lr=0.1, weight_decay=0.5, decay_mask="kernels"), params, grads)
    plain = _one_update(OptimConfig(name="adam", lr=0.1), params, grads)
    np.testing.assert_allclose(np.asarray(masked["bias"]), np.asarray(plain["bias"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(masked["kernel"]), np.asarray(plain["kernel"]) - 0.1 * 0.5 * 1.0,
                               rtol=1e-6)


def test_kernel_mask():
    tree = {"a": {"kernel": 1, "bias": 2}, "e": {"embedding": 3}, "bn": {"scale": 4}}
    assert optim.kernel_mask(tree) == {"a": {"kernel": True, "bias": False}, "e": {"embedding": True},
                                       "bn": {"scale": False}}


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [optim.validate, lambda c: optim.build(c, 10), optim.hparams,
                                lambda c: optim.schedule(c, 10)], ids=["validate", "build", "hparams", "schedule"])
@pytest.mark.parametrize("overrides,key,extra", [
    ({"name": "adamm"}, "optim.name", "'adam'"),
    ({"name": "rmsprp"}, "optim.name", "'rmsprop'"),
    ({"schedule": "cosin"}, "optim.schedule", "'cosine'"),
    ({"mode": "pytorch"}, "optim.mode", "torch"),
    ({"decay_mask": "kernel"}, "optim.decay_mask", "'kernels'"),
    ({"lr": 0.0}, "optim.lr", "0"),
    ({"lr": -1e-3}, "optim.lr", "-0.001"),
    ({"nesterov": True, "momentum": 0.9}, "optim.nesterov", "adam"),
    ({"l2": -0.1}, "optim.l2", "-0.1"),
    ({"l1": -0.1}, "optim.l1", "-0.1"),
    ({"momentum": -0.5, "name": "sgd"}, "optim.momentum", "-0.5"),
    ({"clip_norm": 0.0}, "optim.clip_norm", "0"),
])
def test_config_errors_name_the_key(fn, overrides, key, extra):
    cfg = OptimConfig(**overrides)
    with pytest.raises(ConfigError) as info:
        fn(cfg)
    msg = str(info.value)
    assert key in msg and extra in msg, msg


def test_unknown_name_suggests_closest():
    with pytest.raises(ConfigError, match=r"did you mean 'adam'") as info:
        optim.build(OptimConfig(name="adamm"), 10)
    assert "optim.name" in str(info.value)


def test_valid_configs_pass():
    for name in optim.OPTIMIZERS:
        for kind in optim.SCHEDULES:
            for mode in optim.MODES:
                optim.validate(OptimConfig(name=name, schedule=kind, mode=mode, nesterov=name == "sgd"))
    assert math.isclose(optim.hparams(OptimConfig(lr=0.5))["lr"], 0.5)
