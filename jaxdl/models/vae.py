r"""Variational autoencoder (Kingma & Welling 2014): an encoder ``q(z|x) = N(mu(x), diag(exp(logvar(x))))`` and a
decoder ``p(x|z)`` over the flattened pixels.

Two architectures (``model.arch``):

- ``mlp``: flatten → Dense(widths…) → (mu, logvar); the decoder mirrors the widths in reverse → ``D`` outputs;
- ``conv`` (28×28×1 images): two stride-2 3×3 convolutions (28 → 14 → 7) → Dense → (mu, logvar); the decoder
  maps ``z`` to a 7×7 feature map and two stride-2 transposed convolutions (7 → 14 → 28) to one channel.

The decoder's ``D`` outputs are Bernoulli logits (``model.likelihood=bernoulli``) or Gaussian means
(``gaussian``, with the fixed scale ``model.sigma``); the task (:mod:`jaxdl.tasks.vae`) scores them.

Sampling uses the reparameterisation ``z = mu + exp(logvar / 2) ⊙ eps``, ``eps ~ N(0, I)`` drawn from the
``"latent"`` RNG stream; without that stream (``init``, or a caller that wants the mean code) ``z = mu``.
``__call__`` returns ``(outputs (B, D), mu (B, latent), logvar (B, latent))``; :meth:`VAE.encode` and
:meth:`VAE.decode` are the two halves (call them with ``Model.apply(..., method="encode")``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.config import ModelConfig
from jaxdl.errors import ConfigError
from jaxdl.nn import activation

ARCHS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
CONV_SHAPE = (28, 28, 1)  # the conv architecture's image shape (two halvings: 28 -> 14 -> 7)


@dataclass(frozen=True)
class VAEConfig(ModelConfig):
    name: str = "vae"
    # mlp | conv (28x28x1 images)
    arch: str = "mlp"
    # Hidden widths of the MLP encoder (the decoder uses them reversed); the conv encoder's final Dense width.
    widths: tuple[int, ...] = (512, 256)
    # Channels of the conv encoder's two convolutions (the decoder's transposed convolutions use them reversed).
    channels: tuple[int, int] = (32, 64)
    latent: int = 16
    activation: str = "relu"
    # bernoulli (decoder outputs logits) | gaussian (decoder outputs means; fixed scale sigma)
    likelihood: str = "bernoulli"
    sigma: float = 0.1


class VAE(nn.Module):
    """Encoder, reparameterised sample and decoder; outputs are flattened to ``num_outputs`` pixels."""

    num_outputs: int
    latent: int = 16
    arch: str = "mlp"
    widths: tuple[int, ...] = (512, 256)
    channels: tuple[int, int] = (32, 64)
    activation: str = "relu"

    def setup(self):
        if self.arch == "mlp":
            self.enc_layers = [nn.Dense(w, name=f"enc{i}") for i, w in enumerate(self.widths)]
            self.dec_layers = [nn.Dense(w, name=f"dec{i}") for i, w in enumerate(reversed(self.widths))]
        else:
            c1, c2 = self.channels
            self.enc_layers = [nn.Conv(c1, (3, 3), strides=(2, 2), name="enc_conv0"),
                               nn.Conv(c2, (3, 3), strides=(2, 2), name="enc_conv1")]
            self.enc_dense = nn.Dense(self.widths[-1] if self.widths else 256, name="enc_dense")
            self.dec_dense = nn.Dense(7 * 7 * c2, name="dec_dense")
            self.dec_layers = [nn.ConvTranspose(c1, (3, 3), strides=(2, 2), name="dec_deconv0"),
                               nn.ConvTranspose(1, (3, 3), strides=(2, 2), name="dec_deconv1")]
        self.mu = nn.Dense(self.latent, name="mu")
        self.logvar = nn.Dense(self.latent, name="logvar")
        self.head = nn.Dense(self.num_outputs, name="head") if self.arch == "mlp" else None

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(mu, logvar)``, each ``(B, latent)``, of images ``x`` ``(B, H, W, C)`` (or ``(B, D)`` for mlp)."""
        act = activation(self.activation)
        if self.arch == "mlp":
            h = x.reshape(x.shape[0], -1)  # (B, D)
            for layer in self.enc_layers:
                h = act(layer(h))
        else:
            h = x.reshape(x.shape[0], *CONV_SHAPE)  # (B, 28, 28, 1)
            for layer in self.enc_layers:
                h = act(layer(h))  # (B, 14, 14, c1), then (B, 7, 7, c2)
            h = act(self.enc_dense(h.reshape(h.shape[0], -1)))  # (B, 7*7*c2) -> (B, width)
        return self.mu(h), self.logvar(h)

    def decode(self, z: jax.Array) -> jax.Array:
        """Decoder outputs ``(B, D)`` (Bernoulli logits or Gaussian means) of codes ``z`` ``(B, latent)``."""
        act = activation(self.activation)
        if self.arch == "mlp":
            h = z
            for layer in self.dec_layers:
                h = act(layer(h))
            return self.head(h)  # (B, D)
        h = act(self.dec_dense(z)).reshape(z.shape[0], 7, 7, self.channels[1])  # (B, 7, 7, c2)
        h = act(self.dec_layers[0](h))  # (B, 14, 14, c1)
        h = self.dec_layers[1](h)  # (B, 28, 28, 1)
        return h.reshape(z.shape[0], -1)  # (B, 784)

    def __call__(self, x: jax.Array, *, train: bool = False):
        """``(outputs (B, D), mu, logvar)``; ``z = mu + exp(logvar/2) eps`` with ``eps`` from the ``latent`` stream
        (``z = mu`` when the stream is absent)."""
        del train  # no dropout or batch norm: training and evaluation differ only in the noise the task passes
        mu, logvar = self.encode(x)
        if self.has_rng("latent"):
            eps = jax.random.normal(self.make_rng("latent"), mu.shape, mu.dtype)  # (B, latent)
            z = mu + jnp.exp(0.5 * logvar) * eps
        else:
            z = mu
        return self.decode(z), mu, logvar


def build_vae(cfg: VAEConfig, num_outputs: int) -> nn.Module:
    """The module of ``cfg`` with ``num_outputs`` decoder outputs (the pixels of one image)."""
    if cfg.arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown VAE architecture {cfg.arch!r}; expected one of {', '.join(ARCHS)}")
    if cfg.likelihood not in LIKELIHOODS:
        raise ConfigError(f"model.likelihood: unknown likelihood {cfg.likelihood!r}; expected one of "
                          f"{', '.join(LIKELIHOODS)}")
    if cfg.latent <= 0:
        raise ConfigError(f"model.latent: expected a positive latent size, got {cfg.latent}")
    if cfg.sigma <= 0:
        raise ConfigError(f"model.sigma: expected a positive Gaussian scale, got {cfg.sigma}")
    if cfg.arch == "conv" and num_outputs != math.prod(CONV_SHAPE):
        raise ConfigError(f"model vae (arch=conv) reads 28x28x1 images (784 pixels), but the data has "
                          f"{num_outputs} pixels per image; use model.arch=mlp")
    return VAE(num_outputs=num_outputs, latent=cfg.latent, arch=cfg.arch, widths=tuple(cfg.widths),
               channels=tuple(cfg.channels), activation=cfg.activation)


__all__ = ["ARCHS", "LIKELIHOODS", "VAE", "VAEConfig", "build_vae"]
