"""VGG: parameter counts and torchvision names of every variant, CIFAR-sized and grayscale inputs, batch norm state,
variant selection through the config layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl.models as models
from jaxdl import config as config_lib
from jaxdl.errors import ConfigError, ModelInputError


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

COUNTS = {"vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
          "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_vgg_param_counts(name):
    assert models.get(name, num_classes=1000, input_shape=(224, 224, 3)).param_count() == COUNTS[name]


def test_vgg_torchvision_names():
    params = jax.tree.map(jnp.shape, models.get("vgg16", num_classes=1000, input_shape=(224, 224, 3))
                          .abstract_variables()["params"])
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's vgg16 `features` indices
    assert set(params) == {f"features_{i}" for i in convs} | {"classifier_0", "classifier_3", "classifier_6"}
    assert params["features_0"] == {"kernel": (3, 3, 3, 64), "bias": (64,)}
    assert params["features_28"]["kernel"] == (3, 3, 512, 512)
    assert params["classifier_0"]["kernel"] == (512 * 7 * 7, 4096)

    variables = models.get("vgg11_bn", num_classes=10, input_shape=(32, 32, 3)).abstract_variables()
    convs = [0, 4, 8, 11, 15, 18, 22, 25]  # torchvision's vgg11_bn: conv i, its BatchNorm i + 1
    assert set(variables["batch_stats"]) == {f"features_{i + 1}" for i in convs}
    assert set(variables["params"]) == ({f"features_{i}" for i in convs} | {f"features_{i + 1}" for i in convs}
                                        | {"classifier_0", "classifier_3", "classifier_6"})
    assert set(variables["params"]["features_1"]) == {"scale", "bias"}
    assert set(variables["params"]["features_0"]) == {"kernel", "bias"}  # torchvision keeps the conv bias


@pytest.mark.parametrize("name,shape", [("vgg16", (224, 224, 3)), ("vgg19_bn", (48, 40, 3)), ("vgg13", (32, 32, 1))])
def test_vgg_output_shapes(name, shape):
    model = models.get(name, num_classes=10, input_shape=shape)
    out = jax.eval_shape(lambda v, x: model.apply(v, x)[0], model.abstract_variables(2),
                         jax.ShapeDtypeStruct((2, *shape), jnp.float32))
    assert out.shape == (2, 10)


def test_vgg11_bn_on_cifar_sized_grayscale_images_batch_norm_state():
    # 32×32 pools to 1×1×512, which the adaptive pool replicates to 7×7 (PyTorch does the same)
    model = models.get("vgg11_bn", num_classes=10, input_shape=(32, 32, 1))
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 1))
    variables = cheap_variables(model, x)
    assert variables["params"]["features_0"]["kernel"].shape == (3, 3, 1, 64)

    out, state = model.apply(variables, x)
    assert out.shape == (2, 10) and np.all(np.isfinite(out))
    assert state == {"batch_stats": variables["batch_stats"]}  # eval mode leaves the statistics alone

    train_out, new_state = model.apply(variables, x, train=True, rng=jax.random.key(2), dropout_rate=0.0)
    assert train_out.shape == (2, 10)
    conv = variables["params"]["features_0"]
    y = jax.lax.conv_general_dilated(x, conv["kernel"], (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv["bias"]  # (2, 32, 32, 64)
    new = new_state["batch_stats"]["features_1"]
    # PyTorch's momentum 0.1: running = 0.9 · running + 0.1 · batch statistic (running mean 0, var 1 at init)
    np.testing.assert_allclose(new["mean"], 0.1 * y.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * y.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_vgg_too_small_inputs_name_the_model():
    model = models.get("vgg16_bn", num_classes=10)
    with pytest.raises(ModelInputError, match=r"'vgg16_bn'.*at least 32×32"):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))


def test_vgg_variants_through_the_config_layer():
    cfg = config_lib.apply_overrides(config_lib.Config(), ["model.name=vgg19_bn", "model.dropout=0.3"])
    assert (cfg.model.name, cfg.model.depth, cfg.model.batch_norm, cfg.model.dropout) == ("vgg19_bn", 19, True, 0.3)
    assert isinstance(cfg.model, models.VGGConfig)
    assert config_lib.model_config("vgg11").depth == 11
    # depth / batch_norm contradicting the name are refused, pointing at the right name
    with pytest.raises(ConfigError, match="model.name=vgg13_bn"):
        models.get("vgg11", depth=13, batch_norm=True, num_classes=10)
    with pytest.raises(ConfigError, match="model.dropout"):
        models.get("vgg11", dropout=1.5, num_classes=10)
