"""AlexNet: parameter count and names, small and grayscale inputs, the minimum input size, exact adaptive pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl.models as models
from jaxdl.errors import ModelInputError
from jaxdl.nn import adaptive_avg_pool


def cheap_variables(model, x):
    """Variables with the model's shapes, filled without random-number generation (initialising the 4096-wide
    classifier draws ~10⁸ normals: seconds on a small CPU). Kernels: a deterministic ±1/√fan_in pattern; biases 0;
    batch norm scale 1 / bias 0 / mean 0 / var 1."""
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        n = int(np.prod(leaf.shape))
        if "kernel" in name:
            fan_in = n // leaf.shape[-1]
            return (jnp.cos(jnp.arange(n, dtype=jnp.float32) * 1.7) * np.sqrt(3.0 / fan_in)).reshape(leaf.shape)
        return jnp.full(leaf.shape, 1.0 if ("scale" in name or "var" in name) else 0.0, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _abstract_out(model, batch, shape):
    return jax.eval_shape(lambda v, x: model.apply(v, x)[0], model.abstract_variables(batch),
                          jax.ShapeDtypeStruct((batch, *shape), jnp.float32))


def test_alexnet_param_count_and_torchvision_names():
    model = models.get("alexnet", num_classes=1000, input_shape=(224, 224, 3))
    assert model.param_count() == 61_100_840
    params = jax.tree.map(jnp.shape, model.abstract_variables()["params"])
    assert set(params) == {"features_0", "features_3", "features_6", "features_8", "features_10", "classifier_1",
                           "classifier_4", "classifier_6"}
    assert params["features_0"] == {"kernel": (11, 11, 3, 64), "bias": (64,)}
    assert params["features_10"]["kernel"] == (3, 3, 256, 256)
    assert params["classifier_1"]["kernel"] == (256 * 6 * 6, 4096)
    assert params["classifier_6"]["kernel"] == (4096, 1000)
    assert _abstract_out(model, 2, (224, 224, 3)).shape == (2, 1000)


@pytest.mark.parametrize("shape", [(63, 63, 3), (100, 80, 3), (227, 227, 3)])
def test_alexnet_output_shapes_any_size_above_minimum(shape):
    model = models.get("alexnet", num_classes=7, input_shape=shape)
    assert model.param_count() == 61_100_840 - 993 * 4097  # independent of the input size
    assert _abstract_out(model, 3, shape).shape == (3, 7)


def test_alexnet_forward_grayscale_dropout_and_rate_override():
    model = models.get("alexnet", num_classes=5)
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 1))
    variables = cheap_variables(model, x)
    assert variables["params"]["features_0"]["kernel"].shape == (11, 11, 1, 64)  # first conv adapts to C=1
    out, state = model.apply(variables, x)
    assert out.shape == (2, 5) and state == {} and np.all(np.isfinite(out))
    np.testing.assert_allclose(model(variables, x[..., 0]), out, rtol=1e-5, atol=1e-6)  # (B, H, W) gets a C axis
    train_out, _ = model.apply(variables, x, train=True, rng=jax.random.key(2))
    assert not np.allclose(train_out, out)
    no_drop, _ = model.apply(variables, x, train=True, rng=jax.random.key(2), dropout_rate=0.0)
    np.testing.assert_allclose(no_drop, out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [28, 32, 62])
def test_alexnet_too_small_inputs_name_the_model_and_the_minimum(size):
    model = models.get("alexnet", num_classes=10)  # no declared input shape: fails inside the network
    with pytest.raises(ModelInputError, match=r"'alexnet'.*at least 63×63"):
        model.init(jax.random.key(0), jnp.zeros((2, size, size, 3)))


def test_alexnet_wrong_declared_input_shape_names_the_model():
    model = models.get("alexnet", num_classes=10, input_shape=(224, 224, 3))
    with pytest.raises(ModelInputError, match=r"'alexnet' expects inputs of shape \(batch, 224, 224, 3\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 224, 224, 1)))


@pytest.mark.parametrize("hw,out", [((5, 7), (3, 2)), ((13, 13), (6, 6)), ((1, 1), (7, 7)), ((10, 3), (4, 5)),
                                    ((9, 11), 7), ((12, 12), (6, 4)), ((6, 6), 6)])
def test_adaptive_avg_pool_matches_torch(hw, out):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, *hw, 3)).astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), out)
    got = adaptive_avg_pool(jnp.asarray(x), out)
    np.testing.assert_allclose(np.asarray(got), expected.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6)


def test_adaptive_avg_pool_gradient_is_the_averaging_transpose():
    # d(sum(pool(x)))/dx counts, per input cell, the sum of 1/bin_size over the bins it belongs to
    g = jax.grad(lambda x: adaptive_avg_pool(x, 2).sum())(jnp.ones((1, 3, 1, 1)))
    # rows: bins [0, 2) and [1, 3) → cell 0: 1/2, cell 1: 1/2 + 1/2, cell 2: 1/2 (columns replicated ×2)
    np.testing.assert_allclose(np.asarray(g).ravel(), [1.0, 2.0, 1.0])
