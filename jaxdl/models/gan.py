r"""DCGAN (Radford et al. 2016): a generator of images from Gaussian noise and a convolutional discriminator, with an
optional class-conditional variant and spectral normalisation (Miyato et al. 2018).

The generator writes images of shape ``(H, W, C)`` whose sides must be divisible by ``2**n`` for ``n =
len(model.g_channels)`` (28×28 Fashion-MNIST and ``g_channels`` of length 2: 7 → 14 → 28; 8×8 digits: 2 → 4 → 8);
the discriminator reads them (its stride-2 convolutions pad, so any size works).

Generator ``G(z, y)``, ``z ~ N(0, I)`` of size ``model.latent``::

    [z, onehot(y)] → Dense → (H/2ⁿ, W/2ⁿ, g_channels[0]) → [BN] → ReLU
                   → n − 1 × (4×4 stride-2 transposed conv to g_channels[i] → [BN] → ReLU)
                   → 4×4 stride-2 transposed conv to C → (tanh(·) + 1) / 2      pixels in [0, 1]

Discriminator ``D(x, y)`` (pixels in [0, 1], mapped to [−1, 1] first; no batch norm, so each example's score
depends on that example only — the WGAN-GP penalty takes per-example input gradients)::

    2x − 1 → len(d_channels) × (4×4 stride-2 conv [spectral norm] → leaky ReLU(model.leaky_slope)) → flatten h
    D(x, y) = w·h + b [+ ⟨embed(y), h⟩]                                           one raw score (logit) per image

The class-conditional variant (``model.conditional=True``; the number of classes comes from the data) feeds the
generator a one-hot label beside the noise and gives the discriminator the projection term ``⟨embed(y), h⟩``
(Miyato & Koyama 2018). With ``model.spectral_norm=True`` every discriminator kernel (convolutions and the head) is
divided by a power-iteration estimate of its largest singular value; the iteration's vectors ``u`` and estimates
``sigma`` live in the ``batch_stats`` collection, advance one iteration per training-mode call and stay fixed in
evaluation mode. The generator's batch norm (``model.batch_norm``, momentum 0.9) keeps its running statistics in
``batch_stats`` too, so both players' states are ordinary model state.

The task (:mod:`jaxdl.tasks.gan`) trains the two networks as two players built by :func:`build_players`; the
registered module :class:`DCGAN` holds both (what ``jaxdl models`` counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.config import ModelConfig
from jaxdl.errors import ConfigError
from jaxdl.models.core import Model, from_linen


@dataclass(frozen=True)
class DCGANConfig(ModelConfig):
    name: str = "dcgan"
    # Size of the generator's Gaussian noise z.
    latent: int = 64
    # Generator: channels of the projected feature map and of each transposed convolution but the last (which
    # outputs the image's channels); each entry doubles the image side, so images need sides divisible by 2**len.
    g_channels: tuple[int, ...] = (128, 64)
    # Discriminator: channels of its stride-2 convolutions.
    d_channels: tuple[int, ...] = (64, 128)
    # Batch norm in the generator (after the projection and each hidden transposed convolution).
    batch_norm: bool = True
    # Spectral normalisation of every discriminator kernel.
    spectral_norm: bool = False
    # Class-conditional generator and projection discriminator (the number of classes comes from the data).
    conditional: bool = False
    # Negative slope of the discriminator's leaky ReLUs.
    leaky_slope: float = 0.2


class Generator(nn.Module):
    """``G(z, label) -> images (B, H, W, C)`` in [0, 1] (see the module docstring)."""

    image_shape: tuple[int, int, int]
    channels: tuple[int, ...] = (128, 64)
    batch_norm: bool = True
    num_classes: int = 0  # 0: unconditional (labels ignored)

    @nn.compact
    def __call__(self, z: jax.Array, label: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        height, width, out_channels = self.image_shape
        scale = 2 ** len(self.channels)
        h0, w0 = height // scale, width // scale

        def norm_relu(h, name):
            if self.batch_norm:
                h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)(h)
            return nn.relu(h)

        if self.num_classes:
            z = jnp.concatenate([z, jax.nn.one_hot(label, self.num_classes, dtype=z.dtype)], axis=-1)  # (B, L + K)
        h = nn.Dense(h0 * w0 * self.channels[0], use_bias=not self.batch_norm, name="project")(z)
        h = norm_relu(h.reshape(z.shape[0], h0, w0, self.channels[0]), "bn0")  # (B, H/2ⁿ, W/2ⁿ, c0)
        for i, c in enumerate(self.channels[1:], start=1):
            h = nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME", use_bias=not self.batch_norm,
                                 name=f"deconv{i}")(h)  # sides doubled
            h = norm_relu(h, f"bn{i}")
        h = nn.ConvTranspose(out_channels, (4, 4), strides=(2, 2), padding="SAME",
                             name=f"deconv{len(self.channels)}")(h)  # (B, H, W, C)
        return (jnp.tanh(h) + 1.0) / 2.0


class Discriminator(nn.Module):
    """``D(x, label) -> scores (B,)``: one raw score (logit) per image (see the module docstring)."""

    channels: tuple[int, ...] = (64, 128)
    spectral_norm: bool = False
    num_classes: int = 0
    leaky_slope: float = 0.2

    @nn.compact
    def __call__(self, x: jax.Array, label: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        def layer(module, h):
            return nn.SpectralNorm(module)(h, update_stats=train) if self.spectral_norm else module(h)

        h = 2.0 * x - 1.0
        for i, c in enumerate(self.channels):
            h = layer(nn.Conv(c, (4, 4), strides=(2, 2), padding="SAME", name=f"conv{i}"), h)  # sides halved
            h = nn.leaky_relu(h, self.leaky_slope)
        h = h.reshape(h.shape[0], -1)  # (B, F)
        score = layer(nn.Dense(1, name="head"), h)[:, 0]  # (B,)
        if self.num_classes:
            embed = nn.Embed(self.num_classes, h.shape[-1], name="projection")(label)  # (B, F)
            score = score + jnp.sum(embed * h, axis=-1)
        return score


class DCGAN(nn.Module):
    """Both players in one module, for the registry (``jaxdl models`` counts its parameters): ``__call__(x)``
    returns the discriminator's scores of images ``x`` and a generated batch of the same shape (from ``z = 0``)."""

    latent: int = 64
    g_channels: tuple[int, ...] = (128, 64)
    d_channels: tuple[int, ...] = (64, 128)
    batch_norm: bool = True
    spectral_norm: bool = False
    num_classes: int = 0
    leaky_slope: float = 0.2

    @nn.compact
    def __call__(self, x: jax.Array, label: jax.Array | None = None, *, train: bool = False):
        if self.num_classes and label is None:
            label = jnp.zeros(x.shape[:1], jnp.int32)
        generator = Generator(tuple(x.shape[1:]), self.g_channels, self.batch_norm, self.num_classes,
                              name="generator")
        discriminator = Discriminator(self.d_channels, self.spectral_norm, self.num_classes, self.leaky_slope,
                                      name="discriminator")
        fake = generator(jnp.zeros((x.shape[0], self.latent), x.dtype), label, train=train)
        return discriminator(x, label, train=train), fake


def _check(cfg: DCGANConfig) -> None:
    if cfg.latent <= 0:
        raise ConfigError(f"model.latent: expected a positive noise size, got {cfg.latent}")
    for key in ("g_channels", "d_channels"):
        value = getattr(cfg, key)
        if not value or any(c <= 0 for c in value):
            raise ConfigError(f"model.{key}: expected one or more positive channel counts, got {value!r}")
    if cfg.leaky_slope < 0:
        raise ConfigError(f"model.leaky_slope: expected a slope >= 0, got {cfg.leaky_slope}")


def build_dcgan(cfg: DCGANConfig, num_classes: int) -> nn.Module:
    """The registry's module: both players (``num_classes`` is used by the conditional variant only)."""
    _check(cfg)
    return DCGAN(cfg.latent, tuple(cfg.g_channels), tuple(cfg.d_channels), cfg.batch_norm, cfg.spectral_norm,
                 num_classes if cfg.conditional else 0, cfg.leaky_slope)


def build_players(cfg: DCGANConfig, image_shape: tuple[int, ...], num_classes: int) -> dict[str, Model]:
    """The ``generator`` and ``discriminator`` Models of ``cfg`` for images of ``image_shape`` ``(H, W, C)``.

    The generator reads ``z`` ``(B, latent)`` — or ``{"z", "label"}`` when conditional — and returns images; the
    discriminator reads images ``(B, H, W, C)`` — or ``{"x", "label"}`` — and returns scores ``(B,)``.
    """
    _check(cfg)
    if len(image_shape) != 3:
        raise ConfigError(f"model dcgan reads images (height, width, channels), but the data's examples have shape "
                          f"{tuple(image_shape)}")
    height, width, _ = image_shape
    scale = 2 ** len(cfg.g_channels)
    if height % scale or width % scale:
        raise ConfigError(f"model.g_channels: {len(cfg.g_channels)} entries double the generator's feature map "
                          f"{len(cfg.g_channels)} times, so image sides must be divisible by {scale}; the data's "
                          f"images are {height}x{width}")
    classes = int(num_classes) if cfg.conditional else 0
    g = Generator(tuple(int(s) for s in image_shape), tuple(cfg.g_channels), cfg.batch_norm, classes)
    d = Discriminator(tuple(cfg.d_channels), cfg.spectral_norm, classes, cfg.leaky_slope)
    return {"generator": from_linen(g, "dcgan_generator", output="linear",
                                    input_shape=None if classes else (cfg.latent,), config=cfg),
            "discriminator": from_linen(d, "dcgan_discriminator", output="logits",
                                        input_shape=None if classes else tuple(image_shape), config=cfg)}


__all__ = ["DCGAN", "DCGANConfig", "Discriminator", "Generator", "build_dcgan", "build_players"]
