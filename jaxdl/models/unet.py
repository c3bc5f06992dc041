r"""A small U-Net for denoising diffusion (Ho et al. 2020; Nichol & Dhariwal 2021): residual blocks with GroupNorm
and SiLU, a sinusoidal time embedding through an MLP added in every block, strided-convolution downsampling and
nearest-neighbour upsampling joined by skip connections, self-attention at the low resolutions, and optional class
conditioning.

Inputs are the named arrays ``{"x": noisy images (B, H, W, C), "t": timesteps (B,) int, "label": classes (B,) int}``
(``label`` only for a class-conditional model). The output has the shape of ``x`` with ``num_outputs`` channels
(the task's prediction target: the noise ``eps`` or the velocity ``v``).

Layout for ``channels = (c0, c1, c2)`` and 28×28 inputs (levels 0, 1, 2 at 28, 14, 7 pixels)::

    temb  = MLP(sinusoid(t, c0)) [+ Embed(label)]                       (B, 4·c0)
    h     = Conv3x3(x)                                                  (B, 28, 28, c0)   skip
    level i: blocks × ResBlock(c_i) [+ Attention if i in attention_levels]                skip each
             then (i < last) Conv3x3 stride 2                           28 -> 14 -> 7     skip
    middle: ResBlock, Attention, ResBlock                               (B, 7, 7, c2)
    level i (reversed): (blocks + 1) × [concat skip; ResBlock(c_i); Attention?]
             then (i > 0) nearest ×2 upsample + Conv3x3 to c_{i-1}       7 -> 14 -> 28
    out   = Conv3x3(SiLU(GroupNorm(h)))                                 (B, 28, 28, num_outputs)

    ResBlock(h, temb) = skip(h) + Conv3x3(Dropout(SiLU(GN(Conv3x3(SiLU(GN(h))) + Dense(SiLU(temb))))))

The last convolution of every residual block and of the output is zero-initialised, so each block starts as the
identity and the network's first prediction is 0 (the mean of the noise). Strided downsampling with ``SAME``
padding halves odd sides upwards (7 -> 4), and upsampling crops back to the skip's size, so any image size works.

Class conditioning (``label_classes = K > 0``): a learned embedding of ``K + 1`` rows is added to the time
embedding; row ``K`` is the "null" class the task feeds when it drops a label (classifier-free guidance, Ho &
Salimans 2022). A missing ``label`` means the null class.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.config import ModelConfig
from jaxdl.errors import ConfigError, ModelInputError
from jaxdl.nn.attention import MultiHeadAttention
from jaxdl.nn.layers import Dropout
from jaxdl.nn import remat as _remat
from jaxdl.nn.positions import sinusoidal_positions

_ZERO = nn.initializers.zeros


@dataclass(frozen=True)
class UNetConfig(ModelConfig):
    name: str = "unet"
    # Channels per resolution level (level i works at 1/2^i of the input size).
    channels: tuple[int, ...] = (32, 64, 64)
    # Residual blocks per level on the way down (the way up has one more, which reads the downsampling's skip).
    blocks: int = 1
    # Levels whose residual blocks are followed by self-attention (the middle block always attends). With the
    # default channels and 28x28 images, level 2 is 7x7.
    attention_levels: tuple[int, ...] = (2,)
    heads: int = 4
    # GroupNorm groups; must divide every level's channels.
    groups: int = 8
    # Classes of a class-conditional model (its embedding has one more row: the null class); 0: unconditional.
    label_classes: int = 0
    # Dropout inside the residual blocks (a dynamic number: hp["dropout"]).
    dropout: float = 0.0


class ResBlock(nn.Module):
    """``skip(h) + Conv(Dropout(SiLU(GN(Conv(SiLU(GN(h))) + Dense(SiLU(temb))))))`` with ``out`` channels."""

    out: int
    groups: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, h: jax.Array, temb: jax.Array, *, train: bool, dropout_rate=None) -> jax.Array:
        y = nn.Conv(self.out, (3, 3), name="conv1")(nn.silu(nn.GroupNorm(self.groups, name="norm1")(h)))
        y = y + nn.Dense(self.out, name="time")(nn.silu(temb))[:, None, None, :]  # (B, 1, 1, out) over pixels
        y = nn.silu(nn.GroupNorm(self.groups, name="norm2")(y))
        y = Dropout(self.dropout, name="dropout")(y, train=train, rate=dropout_rate)
        y = nn.Conv(self.out, (3, 3), kernel_init=_ZERO, name="conv2")(y)
        skip = h if h.shape[-1] == self.out else nn.Conv(self.out, (1, 1), name="skip")(h)
        return skip + y


class AttentionBlock(nn.Module):
    """``h + MHA(GN(h))`` over the ``H·W`` positions of a feature map."""

    heads: int
    groups: int

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        B, H, W, C = h.shape
        y = nn.GroupNorm(self.groups, name="norm")(h).reshape(B, H * W, C)  # (B, HW, C)
        y = MultiHeadAttention(num_heads=self.heads, name="attention")(y)  # (B, HW, C)
        return h + y.reshape(B, H, W, C)


class UNet(nn.Module):
    """The U-Net of the module docstring; ``__call__(x, t, label)`` -> ``(B, H, W, num_outputs)``."""

    num_outputs: int
    channels: tuple[int, ...] = (32, 64, 64)
    blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    heads: int = 4
    groups: int = 8
    label_classes: int = 0
    dropout: float = 0.0
    # recompute each residual and attention block's activations in the backward pass (model.remat=blocks);
    # parameter names are unchanged
    remat: bool = False

    def embed(self, t: jax.Array, label: jax.Array | None) -> jax.Array:
        """The time (and class) embedding ``(B, 4·c0)`` of timesteps ``t`` ``(B,)``."""
        width = 4 * self.channels[0]
        temb = sinusoidal_positions(t.astype(jnp.float32), self.channels[0])  # (B, c0)
        temb = nn.Dense(width, name="time_mlp2")(nn.silu(nn.Dense(width, name="time_mlp1")(temb)))
        if self.label_classes:
            if label is None:  # the null class
                label = jnp.full(t.shape, self.label_classes, jnp.int32)
            temb = temb + nn.Embed(self.label_classes + 1, width, name="label_embed")(label)  # (B, 4·c0)
        return temb

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array | None = None, label: jax.Array | None = None, *,
                 train: bool = False, dropout_rate: jax.Array | float | None = None) -> jax.Array:
        if t is None:
            if not self.is_initializing():
                raise ModelInputError("model 'unet' reads named inputs {'x': noisy images (B, H, W, C), 't': "
                                      "timesteps (B,)[, 'label': classes (B,)]}; got images alone")
            t = jnp.zeros(x.shape[:1], jnp.int32)  # only the parameters' shapes are wanted
        if x.ndim != 4 or t.shape != x.shape[:1]:
            raise ModelInputError(f"model 'unet' expects x (B, H, W, C) and t (B,), got x {tuple(x.shape)} and t "
                                  f"{tuple(t.shape)}")
        temb = self.embed(t, label)
        block = dict(groups=self.groups, dropout=self.dropout)
        kw = dict(train=train, dropout_rate=dropout_rate)

        def res(ch, name, h):
            return _remat.call(self.remat, ResBlock(ch, **block, name=name), h, temb, **kw)

        def attn(name, h):
            return _remat.call(self.remat, AttentionBlock(self.heads, self.groups, name=name), h)

        h = nn.Conv(self.channels[0], (3, 3), name="conv_in")(x)
        skips = [h]
        last = len(self.channels) - 1
        for i, ch in enumerate(self.channels):  # down
            for b in range(self.blocks):
                h = res(ch, f"down{i}_res{b}", h)
                if i in self.attention_levels:
                    h = attn(f"down{i}_attn{b}", h)
                skips.append(h)
            if i < last:
                h = nn.Conv(ch, (3, 3), strides=(2, 2), name=f"down{i}_sample")(h)  # sides halved (rounded up)
                skips.append(h)
        h = res(self.channels[-1], "mid_res0", h)
        h = attn("mid_attn", h)
        h = res(self.channels[-1], "mid_res1", h)
        for i in reversed(range(len(self.channels))):  # up
            ch = self.channels[i]
            for b in range(self.blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)  # (B, h, w, C + C_skip)
                h = res(ch, f"up{i}_res{b}", h)
                if i in self.attention_levels:
                    h = attn(f"up{i}_attn{b}", h)
            if i > 0:
                target = skips[-1].shape[1:3]
                B, hh, ww, C = h.shape
                h = jax.image.resize(h, (B, 2 * hh, 2 * ww, C), "nearest")[:, :target[0], :target[1]]
                h = nn.Conv(self.channels[i - 1], (3, 3), name=f"up{i}_sample")(h)  # the finer level's channels
        h = nn.silu(nn.GroupNorm(self.groups, name="norm_out")(h))
        return nn.Conv(self.num_outputs, (3, 3), kernel_init=_ZERO, name="conv_out")(h)


def build_unet(cfg: UNetConfig, num_outputs: int) -> nn.Module:
    """The module of ``cfg`` predicting ``num_outputs`` channels (the images' channels)."""
    channels = tuple(cfg.channels)
    if not channels or any(c <= 0 for c in channels):
        raise ConfigError(f"model.channels: expected one or more positive channel counts, got {cfg.channels!r}")
    if cfg.groups <= 0 or any(c % cfg.groups for c in channels):
        raise ConfigError(f"model.groups={cfg.groups} must divide every level's channels {channels} (GroupNorm)")
    if cfg.blocks <= 0:
        raise ConfigError(f"model.blocks: expected a positive number of residual blocks per level, got {cfg.blocks}")
    bad = [lv for lv in cfg.attention_levels if not 0 <= lv < len(channels)]
    if bad:
        raise ConfigError(f"model.attention_levels: levels {bad} do not exist; the model has levels 0 … "
                          f"{len(channels) - 1} (one per entry of model.channels)")
    if cfg.heads <= 0 or any(channels[lv] % cfg.heads for lv in (*cfg.attention_levels, len(channels) - 1)):
        raise ConfigError(f"model.heads={cfg.heads} must divide the channels of every level with attention "
                          f"(levels {sorted({*cfg.attention_levels, len(channels) - 1})} of {channels})")
    if cfg.label_classes < 0:
        raise ConfigError(f"model.label_classes: expected 0 (unconditional) or a number of classes, got "
                          f"{cfg.label_classes}")
    return UNet(num_outputs=num_outputs, channels=channels, blocks=cfg.blocks,
                attention_levels=tuple(cfg.attention_levels), heads=cfg.heads, groups=cfg.groups,
                label_classes=cfg.label_classes, dropout=cfg.dropout, remat=cfg.remat == "blocks")


__all__ = ["UNet", "UNetConfig", "build_unet"]
