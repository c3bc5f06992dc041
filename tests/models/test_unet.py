"""U-Net: shapes (any image size), the parameter count of a small layout by hand, the zero-initialised output, the
time and class inputs (the null class), and the errors a user can reach."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import models
from jaxdl.errors import ConfigError, ModelInputError

TINY = dict(channels=(8,), attention_levels=(), groups=4, heads=2)
# RBG keys: the initialisers compile in about a quarter of threefry's time (the values do not matter here)
KEY = jax.random.key(0, impl="rbg")


def inputs(n, shape, label=None):
    out = {"x": jnp.zeros((n, *shape)), "t": jnp.zeros((n,), jnp.int32)}
    if label is not None:
        out["label"] = jnp.full((n,), label, jnp.int32)
    return out


@pytest.mark.parametrize("shape, channels, outputs", [((28, 28, 1), (8, 8, 16), 1), ((7, 7, 3), (4, 8), 3)])
def test_output_has_the_input_shape_at_any_size(shape, channels, outputs):
    model = models.get("unet", num_classes=outputs, channels=channels, attention_levels=(len(channels) - 1,),
                       groups=4, heads=2)
    x = inputs(2, shape)
    variables = jax.eval_shape(model.init, KEY, x)  # shapes only: nothing is compiled
    out = jax.eval_shape(lambda v: model.apply(v, x)[0], variables)
    assert out.shape == (2, *shape[:2], outputs)  # 7 -> 4 -> 7: upsampling crops to the skip's size


def test_parameter_count_of_a_one_level_unet_by_hand():
    c, e = 8, 32  # channels, time-embedding width 4c

    def res(cin):  # conv1, time dense, two GroupNorms, conv2, 1x1 skip when the channels change
        return 9 * cin * c + c + e * c + c + 2 * cin + 2 * c + 9 * c * c + c + (cin * c + c if cin != c else 0)

    attention = 2 * c + 4 * (c * c + c)  # GroupNorm, q/k/v/out projections
    expected = ((c * e + e) + (e * e + e)  # time MLP
                + (9 * 1 * c + c)  # conv_in
                + res(c)  # down
                + res(c) + attention + res(c)  # middle
                + 2 * res(2 * c)  # up: each reads a skip
                + 2 * c + (9 * c * 1 + 1))  # output norm and conv
    assert expected == 10_593
    assert models.get("unet", num_classes=1, input_shape=(8, 8, 1), **TINY).param_count() == expected
    conditional = models.get("unet", num_classes=1, input_shape=(8, 8, 1), label_classes=10, **TINY)
    assert conditional.param_count() == expected + 11 * e  # ten classes and the null class
    # `jaxdl models` counts a family from its example image alone
    assert models.get("unet", num_classes=10, input_shape=(28, 28, 1)).param_count() > 0


def test_zero_output_at_init_then_time_and_class_inputs_matter():
    model = models.get("unet", num_classes=1, label_classes=3, **TINY)
    x = inputs(2, (8, 8, 1), label=0)
    variables = jax.jit(model.init)(KEY, x)
    apply = jax.jit(lambda v, x: model.apply(v, x)[0])
    assert np.all(np.asarray(apply(variables, x)) == 0.0)  # the last convolutions start at zero
    noisy = jax.jit(lambda v: jax.tree.map(lambda p: p + 0.1 * jax.random.normal(KEY, p.shape), v))(variables)
    x = {**x, "x": jax.random.normal(jax.random.key(2), (2, 8, 8, 1))}
    base = np.asarray(apply(noisy, x))
    for changed in ({"t": jnp.asarray([500, 900])}, {"label": jnp.asarray([2, 1])}):
        assert np.abs(np.asarray(apply(noisy, {**x, **changed})) - base).max() > 1e-4, changed
    without = {k: v for k, v in x.items() if k != "label"}  # no label: the null class (id 3)
    null = np.asarray(apply(noisy, {**x, "label": jnp.full((2,), 3, jnp.int32)}))
    np.testing.assert_allclose(np.asarray(apply(noisy, without)), null, rtol=1e-5, atol=1e-6)


def test_errors_a_user_can_reach():
    model = models.get("unet", num_classes=1, **TINY)
    variables = jax.eval_shape(model.init, KEY, inputs(1, (8, 8, 1)))
    apply = lambda x: jax.eval_shape(lambda v: model.apply(v, x), variables)  # noqa: E731  (traced, not run)
    with pytest.raises(ModelInputError, match=r"model 'unet' reads named inputs \{'x': noisy images \(B, H, W, C\), "
                                              r"'t': timesteps \(B,\)"):
        apply(jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(ModelInputError, match=r"model 'unet' expects x \(B, H, W, C\) and t \(B,\), got x "
                                              r"\(2, 8, 8, 1\) and t \(3,\)"):
        apply({"x": jnp.zeros((2, 8, 8, 1)), "t": jnp.zeros((3,), jnp.int32)})
    cases = [
        (dict(channels=(12,), groups=8), r"model.groups=8 must divide every level's channels \(12,\)"),
        (dict(channels=(8, 16), attention_levels=(2,)), r"model.attention_levels: levels \[2\] do not exist; the "
                                                         r"model has levels 0 … 1"),
        (dict(channels=(8, 12), groups=4, heads=8, attention_levels=(1,)),
         r"model.heads=8 must divide the channels of every level with attention"),
        (dict(channels=()), r"model.channels: expected one or more positive channel counts, got \(\)"),
        (dict(blocks=0), r"model.blocks: expected a positive number of residual blocks per level, got 0"),
        (dict(label_classes=-1), r"model.label_classes: expected 0 \(unconditional\) or a number of classes, got -1"),
    ]
    for fields, message in cases:
        with pytest.raises(ConfigError, match=message):
            models.get("unet", num_classes=1, **fields)
