"""VAE model family: shapes of both architectures, encode/decode halves, reparameterised noise, config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import models
from jaxdl.errors import ConfigError


def test_mlp_shapes_halves_and_noise():
    model = models.get("vae", widths=(8,), latent=5, num_classes=64, input_shape=(8, 8, 1))
    x = jnp.asarray(np.random.default_rng(0).random((3, 8, 8, 1)), jnp.float32)
    v = model.init(jax.random.key(0), x[:1])

    @jax.jit
    def everything(v, x):
        (out, mu, logvar), _ = model.apply(v, x, rngs={"latent": jax.random.key(1)})
        (mu2, logvar2), _ = model.apply(v, x, method="encode")
        (det, _, _), _ = model.apply(v, x)
        dec, _ = model.apply(v, mu, method="decode")
        return out, mu, logvar, mu2, logvar2, det, dec

    out, mu, logvar, mu2, logvar2, det, dec = everything(v, x)
    assert out.shape == (3, 64) and mu.shape == logvar.shape == (3, 5)
    np.testing.assert_allclose(mu2, mu, rtol=1e-6)
    np.testing.assert_allclose(logvar2, logvar, rtol=1e-6)
    # without the latent stream z = mu, so the outputs are decode(mu); with it they differ
    np.testing.assert_allclose(det, dec, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out, det)


def test_conv_shapes():
    model = models.get("vae", arch="conv", widths=(8,), channels=(2, 3), latent=4, num_classes=784,
                       input_shape=(28, 28, 1))
    x = jnp.zeros((2, 28, 28, 1))
    # shapes only (abstract evaluation: nothing compiles)
    v = jax.eval_shape(model.init, jax.random.key(0), x[:1])
    assert v["params"]["enc_conv1"]["kernel"].shape == (3, 3, 2, 3)  # two stride-2 convs: 28 -> 14 -> 7
    assert v["params"]["dec_dense"]["kernel"].shape == (4, 7 * 7 * 3)
    (out, mu, logvar), _ = jax.eval_shape(lambda v, x: model.apply(v, x, rngs={"latent": jax.random.key(1)}), v, x)
    assert out.shape == (2, 784) and mu.shape == logvar.shape == (2, 4)


def test_config_errors():
    with pytest.raises(ConfigError, match=r"model.arch: unknown VAE architecture 'gan'; expected one of mlp, conv"):
        models.get("vae", arch="gan", num_classes=64)
    with pytest.raises(ConfigError, match=r"model vae \(arch=conv\) reads 28x28x1 images \(784 pixels\), but the "
                                          r"data has 64 pixels"):
        models.get("vae", arch="conv", num_classes=64)
    with pytest.raises(ConfigError, match=r"model.likelihood: unknown likelihood 'poisson'"):
        models.get("vae", likelihood="poisson", num_classes=64)
    with pytest.raises(ConfigError, match=r"model.latent: expected a positive latent size, got 0"):
        models.get("vae", latent=0, num_classes=64)
    with pytest.raises(ConfigError, match=r"model.sigma: expected a positive Gaussian scale, got -1.0"):
        models.get("vae", likelihood="gaussian", sigma=-1.0, num_classes=64)
