"""RMSNorm and FeedForward against hand formulas and PyTorch's GELUs; dropout with a traced rate; errors."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.errors import ConfigError
from jaxdl.nn import FeedForward, RMSNorm

ATOL = 1e-5


def key(seed):  # initialisation only: compiles faster on CPU than the default threefry
    return jax.random.key(seed, impl="unsafe_rbg")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_rms_norm_is_the_hand_formula_in_float32():
    x = rand(2, 3, 8)
    scale = rand(8, seed=1)
    y = jax.jit(RMSNorm(epsilon=1e-5).apply)({"params": {"scale": scale}}, x)
    np.testing.assert_allclose(y, x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * scale, atol=ATOL)
    y16 = jax.jit(RMSNorm().apply)({"params": {"scale": scale}}, jnp.asarray(x * 1e3, jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), y, rtol=2e-2, atol=2e-2)


def test_feed_forward_gated_and_plain_activations():
    x = rand(2, 3, 4)
    ffn = FeedForward(6, "swiglu", use_bias=False)
    variables = jax.jit(ffn.init)(key(0), x)
    p = {n: np.asarray(v["kernel"]) for n, v in variables["params"].items()}
    assert {n: a.shape for n, a in p.items()} == {"gate": (4, 6), "up": (4, 6), "down": (6, 4)}
    g = x @ p["gate"]
    np.testing.assert_allclose(jax.jit(ffn.apply)(variables, x), (g / (1 + np.exp(-g)) * (x @ p["up"])) @ p["down"],
                               atol=ATOL)

    torch = pytest.importorskip("torch")
    for name, approximate in [("gelu", "none"), ("gelu_new", "tanh")]:
        ffn = FeedForward(6, name, out_features=5)
        variables = jax.jit(ffn.init)(key(1), x)
        prm = variables["params"]
        assert prm["fc_out"]["kernel"].shape == (6, 5)
        h = torch.tensor(x) @ torch.tensor(np.asarray(prm["fc_in"]["kernel"])) + torch.tensor(
            np.asarray(prm["fc_in"]["bias"]))
        ref = torch.nn.functional.gelu(h, approximate=approximate).numpy() @ np.asarray(prm["fc_out"]["kernel"])
        np.testing.assert_allclose(jax.jit(ffn.apply)(variables, x), ref + np.asarray(prm["fc_out"]["bias"]), atol=ATOL)


def test_feed_forward_dropout_traced_rate_zero_is_eval_and_errors():
    x = rand(2, 3, 4)
    ffn = FeedForward(6, "relu", dropout=0.5, inner_dropout=0.5)
    variables = jax.jit(ffn.init)(key(0), x)
    run = jax.jit(partial(ffn.apply, train=True))
    zero = jnp.zeros(())
    out = run(variables, x, dropout_rate=zero, inner_dropout_rate=zero, rngs={"dropout": key(1)})
    np.testing.assert_allclose(out, jax.jit(ffn.apply)(variables, x), atol=ATOL)
    with pytest.raises(ConfigError, match="unknown activation 'swiglue'; did you mean 'swiglu'"):
        jax.eval_shape(FeedForward(6, "swiglue").init, key(0), x)
