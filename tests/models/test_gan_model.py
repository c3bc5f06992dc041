"""DCGAN model family: shapes of both players, the class-conditional variant, spectral normalisation's power
iteration (state in batch_stats, advanced in training mode only, converging to the largest singular value), the
registry's module and config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import models
from jaxdl.config import model_config
from jaxdl.errors import ConfigError
from jaxdl.models.gan import build_players


def players(**fields):
    cfg = model_config("dcgan", latent=6, g_channels=(8, 4), d_channels=(4, 8), **fields)
    return build_players(cfg, (8, 8, 1), 10)


def test_unconditional_shapes_and_pixel_range():
    p = players()
    g, d = p["generator"], p["discriminator"]
    z = jax.random.normal(jax.random.key(0), (5, 6))
    x = jnp.asarray(np.random.default_rng(0).random((5, 8, 8, 1)), jnp.float32)
    gv, dv = g.init(jax.random.key(1), z[:1]), d.init(jax.random.key(2), x[:1])
    # two doublings: a 2x2 projection, one hidden transposed conv, the output transposed conv
    assert gv["params"]["project"]["kernel"].shape == (6, 2 * 2 * 8)
    assert gv["params"]["deconv1"]["kernel"].shape == (4, 4, 8, 4)
    assert gv["params"]["deconv2"]["kernel"].shape == (4, 4, 4, 1)
    assert set(gv["batch_stats"]) == {"bn0", "bn1"} and "batch_stats" not in dv  # no spectral norm: no D state

    @jax.jit
    def run(gv, dv):
        images, g_state = g.apply(gv, z, train=True)
        scores, _ = d.apply(dv, images)
        return images, g_state, scores

    images, g_state, scores = run(gv, dv)
    assert images.shape == (5, 8, 8, 1) and scores.shape == (5,)
    assert 0.0 <= float(images.min()) <= float(images.max()) <= 1.0
    # training mode moves the running statistics (momentum 0.9 towards the batch's)
    assert not np.allclose(g_state["batch_stats"]["bn0"]["var"], gv["batch_stats"]["bn0"]["var"])


def test_conditional_players_read_labels():
    p = players(conditional=True)
    g, d = p["generator"], p["discriminator"]
    z = jnp.ones((2, 6))
    x = jnp.asarray(np.random.default_rng(2).random((1, 8, 8, 1)).repeat(2, axis=0), jnp.float32)
    y0, y1 = jnp.asarray([0, 0]), jnp.asarray([3, 7])
    gv = g.init(jax.random.key(1), {"z": z[:1], "label": y0[:1]})
    dv = d.init(jax.random.key(2), {"x": x[:1], "label": y0[:1]})
    assert gv["params"]["project"]["kernel"].shape == (6 + 10, 2 * 2 * 8)  # [z, onehot(y)]
    assert dv["params"]["projection"]["embedding"].shape == (10, 2 * 2 * 8)  # one vector per class, size of h

    @jax.jit
    def run(gv, dv):
        return [(g.apply(gv, {"z": z, "label": y})[0], d.apply(dv, {"x": x, "label": y})[0]) for y in (y0, y1)]

    (img0, s0), (img1, s1) = run(gv, dv)
    assert not np.allclose(img0[1], img1[1]) and not np.allclose(s0[1], s1[1])
    np.testing.assert_allclose(img0[0], img0[1], rtol=1e-6)  # same z, same label, same image
    np.testing.assert_allclose(s0[0], s0[1], rtol=1e-6)


def test_spectral_norm_power_iteration_lives_in_batch_stats():
    d = players(spectral_norm=True)["discriminator"]
    x = jnp.asarray(np.random.default_rng(1).random((4, 8, 8, 1)), jnp.float32)
    v = d.init(jax.random.key(3), x[:1])
    assert set(v["batch_stats"]) == {"SpectralNorm_0", "SpectralNorm_1", "SpectralNorm_2"}
    step = jax.jit(lambda v: d.apply(v, x, train=True))
    _, evaluated = jax.jit(lambda v: d.apply(v, x, train=False))(v)
    assert jax.tree.all(jax.tree.map(np.array_equal, evaluated["batch_stats"], v["batch_stats"]))  # eval: fixed
    state = v["batch_stats"]
    for _ in range(60):  # one power iteration per training-mode call
        _, new = step({**v, "batch_stats": state})
        state = new["batch_stats"]
    kernel = np.asarray(v["params"]["conv1"]["kernel"], np.float64).reshape(-1, 8)  # (4*4*4, 8)
    top = np.linalg.svd(kernel, compute_uv=False)[0]
    np.testing.assert_allclose(float(state["SpectralNorm_1"]["conv1/kernel/sigma"]), top, rtol=1e-3)
    # the normalised kernel has spectral norm 1, so the first layer's output scales with W / sigma only
    head = np.asarray(v["params"]["head"]["kernel"], np.float64)
    np.testing.assert_allclose(float(state["SpectralNorm_2"]["head/kernel/sigma"]), np.linalg.norm(head),
                               rtol=1e-5)


def test_registry_module_counts_both_players():
    model = models.get("dcgan", latent=6, g_channels=(8, 4), d_channels=(4, 8), num_classes=10,
                       input_shape=(8, 8, 1))
    p = players()
    both = sum(models.count_params(jax.eval_shape(m.init, jax.random.key(0),
                                                  jax.ShapeDtypeStruct(s, jnp.float32))["params"])
               for m, s in ((p["generator"], (1, 6)), (p["discriminator"], (1, 8, 8, 1))))
    assert model.param_count() == both
    # the shipped size on 28x28: the generator doubles 7 -> 14 -> 28
    v = models.get("dcgan", num_classes=10, input_shape=(28, 28, 1)).abstract_variables()
    assert v["params"]["generator"]["project"]["kernel"].shape == (64, 7 * 7 * 128)


def test_config_errors():
    cfg = model_config("dcgan", g_channels=(8, 8, 8))
    with pytest.raises(ConfigError, match=r"model.g_channels: 3 entries double the generator's feature map 3 times, "
                                          r"so image sides must be divisible by 8; the data's images are 28x28"):
        build_players(cfg, (28, 28, 1), 10)
    with pytest.raises(ConfigError, match=r"model dcgan reads images \(height, width, channels\), but the data's "
                                          r"examples have shape \(30,\)"):
        build_players(model_config("dcgan"), (30,), 10)
    with pytest.raises(ConfigError, match=r"model.latent: expected a positive noise size, got 0"):
        models.get("dcgan", latent=0, num_classes=10)
    with pytest.raises(ConfigError, match=r"model.d_channels: expected one or more positive channel counts, got \(\)"):
        models.get("dcgan", d_channels=(), num_classes=10)
    with pytest.raises(ConfigError, match=r"model.leaky_slope: expected a slope >= 0, got -0.1"):
        models.get("dcgan", leaky_slope=-0.1, num_classes=10)
