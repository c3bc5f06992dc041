"""The dynamic-rate ``dropout`` function and the ``Dropout`` layer."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.errors import JaxdlError
from jaxdl.nn import Dropout, dropout


def test_dropout_half_zeroes_about_half_and_rescales():
    x = jnp.ones((100, 100))
    y = dropout(x, 0.5, jax.random.key(0))
    zeros = float(jnp.mean(y == 0))
    assert 0.45 < zeros < 0.55
    kept = np.asarray(y)[np.asarray(y) != 0]
    np.testing.assert_array_equal(kept, 2.0)
    assert abs(float(y.mean()) - 1.0) < 0.1  # inverted dropout keeps the expectation


def test_dropout_traced_rate_no_retrace():
    traces = []

    @jax.jit
    def f(x, rate, key):
        traces.append(1)
        return dropout(x, rate, key)

    x = jnp.ones((50, 40))
    key = jax.random.key(1)
    for rate, scale in ((0.25, 4 / 3), (0.5, 2.0), (0.75, 4.0)):
        y = np.asarray(f(x, jnp.float32(rate), key))
        assert abs(float((y == 0).mean()) - rate) < 0.05
        np.testing.assert_allclose(y[y != 0], scale, rtol=1e-6)
    assert len(traces) == 1
    np.testing.assert_array_equal(f(x, jnp.float32(0.0), key), x)
    np.testing.assert_array_equal(f(x, jnp.float32(1.0), key), 0.0)  # no NaN at rate 1
    assert len(traces) == 1


def test_dropout_same_key_same_mask_and_grad():
    x = jax.random.normal(jax.random.key(0), (32,))
    k = jax.random.key(5)
    np.testing.assert_array_equal(dropout(x, 0.3, k), dropout(x, 0.3, k))
    assert not np.array_equal(dropout(x, 0.3, k), dropout(x, 0.3, jax.random.key(6)))
    g = jax.grad(lambda z: dropout(z, 0.5, k).sum())(x)
    y = dropout(jnp.ones_like(x), 0.5, k)
    np.testing.assert_array_equal(g, y)  # gradient is the scaled mask


def test_dropout_layer_modes():
    layer = Dropout(0.5)
    x = jnp.ones((4, 8))
    np.testing.assert_array_equal(layer.apply({}, x, train=False), x)
    np.testing.assert_array_equal(layer.apply({}, x, train=True, rate=0.0), x)  # static zero: no rng needed
    y = layer.apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
    assert set(np.unique(np.asarray(y)).tolist()) <= {0.0, 2.0}
    y2 = layer.apply({}, x, train=True, rate=jnp.float32(0.75), rngs={"dropout": jax.random.key(0)})
    assert set(np.unique(np.asarray(y2)).tolist()) <= {0.0, 4.0}
    with pytest.raises(JaxdlError, match=r"(?i)rng"):
        layer.apply({}, x, train=True)


def test_dropout_layer_inside_module_draws_distinct_masks():
    class Two(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            return Dropout(0.5, name="a")(x, train=train), Dropout(0.5, name="b")(x, train=train)

    a, b = Two().apply({}, jnp.ones((64,)), True, rngs={"dropout": jax.random.key(0)})
    assert not np.array_equal(a, b)
