"""LeNet-5: parameter count, input fitting (pad / resize), output shapes, training on a tiny batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl.models as models
from jaxdl.losses import cross_entropy
from jaxdl.models.lenet import fit_to_size


@pytest.mark.parametrize("size", [28, 8, 32])
def test_lenet_param_count_and_output_shape(size):
    model = models.get("lenet5", num_classes=10, input_shape=(size, size, 1))
    assert model.param_count() == 61_706  # the classic count, whatever the input size
    out = jax.eval_shape(lambda v, x: model.apply(v, x)[0], model.abstract_variables(4),
                         jax.ShapeDtypeStruct((4, size, size, 1), jnp.float32))
    assert out.shape == (4, 10)


def test_lenet_forward_8x8_and_grayscale_without_channel_axis():
    model = models.get("lenet5", num_classes=10)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    shapes = jax.tree.map(jnp.shape, variables["params"])
    assert shapes["c1"]["kernel"] == (5, 5, 1, 6)
    assert shapes["c3"]["kernel"] == (5, 5, 6, 16)
    assert shapes["c5"]["kernel"] == (400, 120)
    assert shapes["f6"]["kernel"] == (120, 84)
    assert shapes["output"]["kernel"] == (84, 10)
    out, state = model.apply(variables, x)
    assert out.shape == (3, 10) and state == {}
    # (B, H, W) gets a channel axis
    np.testing.assert_allclose(model(variables, x[..., 0]), out, rtol=1e-5, atol=1e-6)


def test_fit_to_size_pads_28_with_zero_border():
    x = jnp.ones((2, 28, 28, 1)) + jnp.arange(28.0)[None, :, None, None]
    y = fit_to_size(x, 32)
    assert y.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(y[:, 2:30, 2:30], x)  # centred
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(np.asarray(y)[:, border] == 0)
    assert np.all(np.asarray(y)[:, ~border] > 0)


def test_fit_to_size_odd_padding():
    y = fit_to_size(jnp.ones((1, 29, 30, 3)), 32)
    assert y.shape == (1, 32, 32, 3)
    assert float(y.sum()) == 29 * 30 * 3


def test_fit_to_size_resizes_small_and_keeps_32():
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
    y = fit_to_size(x, 32)
    assert y.shape == (2, 32, 32, 1)
    np.testing.assert_allclose(y.mean(), x.mean(), rtol=0.05)
    assert float(y.min()) >= float(x.min()) - 1e-6 and float(y.max()) <= float(x.max()) + 1e-6
    # constant images stay constant under bilinear resizing (no zero padding)
    np.testing.assert_allclose(fit_to_size(jnp.full((1, 8, 8, 1), 0.7), 32), 0.7, rtol=1e-6)

    z = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    assert fit_to_size(z, 32) is z


def test_lenet_loss_goes_down():
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (16, 8, 8, 1))
    y = jax.random.randint(ky, (16,), 0, 10)
    model = models.get("lenet5", num_classes=10, input_shape=(8, 8, 1))
    params = model.init(jax.random.key(0), x)["params"]
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    def loss_fn(p):
        return cross_entropy(model.apply({"params": p}, x, train=True, rng=jax.random.key(1))[0], y)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    first = None
    for _ in range(40):
        params, opt_state, loss = step(params, opt_state)
        first = float(loss) if first is None else first
    final = float(jax.jit(loss_fn)(params))
    assert np.isfinite(final)
    assert final < 0.5 * first, (first, final)


def test_lenet_batch_norm_max_pool_relu_variant():
    model = models.get("lenet5", num_classes=4, batch_norm=True, pool="max", activation="relu", dropout=0.2,
                       input_shape=(28, 28, 1))
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    assert set(variables["batch_stats"]) == {"bn1", "bn3", "bn5", "bn6"}
    out, state = jax.jit(lambda v, x, r: model.apply(v, x, train=True, rng=r))(variables, x, jax.random.key(2))
    assert out.shape == (4, 4)
    assert not np.allclose(state["batch_stats"]["bn1"]["mean"], variables["batch_stats"]["bn1"]["mean"])
