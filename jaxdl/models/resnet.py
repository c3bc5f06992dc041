"""ResNet-18/34/50/101/152 (He et al., 2015) in torchvision's v1.5 layout, with an ImageNet or a CIFAR stem.

    stem      imagenet: conv1 7×7/2 (padding 3, no bias) → bn1 → ReLU → max-pool 3×3/2 (padding 1)
              cifar:    conv1 3×3/1 (padding 1, no bias) → bn1 → ReLU (no max-pool)
    layer1-4  BasicBlocks (18, 34) or Bottlenecks (50, 101, 152) with 64, 128, 256, 512 base channels (× ``width``);
              the first block of layers 2-4 has stride 2, on the 3×3 conv (v1.5, as torchvision)
    head      global average pool → fc

Blocks: BasicBlock = conv1 3×3 → bn1 → ReLU → conv2 3×3 → bn2, Bottleneck = conv1 1×1 → bn1 → ReLU → conv2 3×3 →
bn2 → ReLU → conv3 1×1 (4× channels) → bn3; then ``+ shortcut`` and ReLU. The shortcut is the identity, or
downsample_conv 1×1 (stride s, no bias) → downsample_bn when the stride or channel count changes.

Parameter names are torchvision's state-dict keys with ``.`` → ``_``: ``conv1``, ``bn1``, ``layer<k>_<j>`` for block
``j`` of stage ``k`` (``layer1.0`` → ``layer1_0``) holding ``conv1``/``bn1``/``conv2``/``bn2`` (``conv3``/``bn3``) and
``downsample_conv``/``downsample_bn`` (torchvision's ``downsample.0``/``downsample.1``), and ``fc``. Conv kernels are
``weight.transpose(2, 3, 1, 0)``, ``fc/kernel`` is ``fc.weight.T``; BatchNorm ``weight``/``bias`` are ``scale``/
``bias`` and ``running_mean``/``running_var`` are ``batch_stats``' ``mean``/``var``. Initialisation follows
torchvision: convs Kaiming-normal (fan_out, ReLU), batch norm scale 1 / bias 0 (scale 0 for each block's last batch
norm with ``zero_init_residual``, so every residual branch starts as the identity), fc PyTorch's default uniform.

Parameters at 1000 classes (any input size): ResNet-18 11,689,512; -34 21,797,672; -50 25,557,032; -101 44,549,160;
-152 60,192,808. ``width`` scales every channel count (``max(1, round(64·2^k·width))`` for stage k; the stem has the
stage-1 width), so parameters shrink roughly as ``width²``. Any input size ≥ 1×1 and any channel count work (the
strided convs and the padded max-pool never reach zero size; the global average pool takes what is left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.config import ModelConfig, config_variant
from jaxdl.errors import ConfigError
from jaxdl.models.alexnet import channels_last, torch_default_bias_init, torch_default_kernel_init
from jaxdl.nn import remat as _remat

# depth → (block kind, blocks per stage)
LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STEMS = ("imagenet", "cifar")


@dataclass(frozen=True)
class ResNetConfig(ModelConfig):
    """ResNet; registered as ``resnet18`` … ``resnet152`` (ImageNet stem) and ``resnet18_cifar`` …
    ``resnet152_cifar`` (subclasses below set the defaults). ``depth`` and ``stem`` must agree with the registered
    name (``model.name=resnet50_cifar`` selects both); ``width`` and ``zero_init_residual`` are free."""

    name: str = "resnet18"
    # 18 | 34 | 50 | 101 | 152
    depth: int = 18
    # imagenet (7×7/2 conv + max-pool) | cifar (3×3/1 conv, no max-pool)
    stem: str = "imagenet"
    # channel multiplier: stage widths are max(1, round(64·2^k·width))
    width: float = 1.0
    # start each block's last batch-norm scale at 0 (the residual branches start as the identity)
    zero_init_residual: bool = False


# registry name → config class (one preset per name; depth and stem follow from the name)
VARIANTS: dict[str, type[ResNetConfig]] = {
    f"resnet{depth}{suffix}": config_variant(ResNetConfig, f"resnet{depth}{suffix}", depth=depth, stem=stem)
    for suffix, stem in (("", "imagenet"), ("_cifar", "cifar")) for depth in (18, 34, 50, 101, 152)}

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal_(fan_out, relu)


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=_CONV_INIT, name=name)


def _bn(train: bool, name: str, zero: bool = False) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        scale_init=nn.initializers.zeros if zero else nn.initializers.ones, name=name)


class BasicBlock(nn.Module):
    """3×3 → 3×3 with an identity or 1×1 projection shortcut. Output channels: ``planes``."""

    planes: int
    stride: int = 1
    zero_init_residual: bool = False
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        out = nn.relu(_bn(train, "bn1")(_conv(self.planes, 3, self.stride, "conv1")(x)))  # (B, H/s, W/s, planes)
        out = _bn(train, "bn2", self.zero_init_residual)(_conv(self.planes, 3, 1, "conv2")(out))
        return nn.relu(out + _shortcut(x, self.planes, self.stride, train))


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride here: v1.5) → 1×1 (4× channels) with an identity or projection shortcut."""

    planes: int
    stride: int = 1
    zero_init_residual: bool = False
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        out = nn.relu(_bn(train, "bn1")(_conv(self.planes, 1, 1, "conv1")(x)))  # (B, H, W, planes)
        out = nn.relu(_bn(train, "bn2")(_conv(self.planes, 3, self.stride, "conv2")(out)))  # (B, H/s, W/s, planes)
        out = _bn(train, "bn3", self.zero_init_residual)(_conv(4 * self.planes, 1, 1, "conv3")(out))
        return nn.relu(out + _shortcut(x, 4 * self.planes, self.stride, train))  # (B, H/s, W/s, 4·planes)


def _shortcut(x: jax.Array, features: int, stride: int, train: bool) -> jax.Array:
    """Identity, or downsample_conv (1×1, stride) → downsample_bn when the shape changes. Called inside a block's
    compact ``__call__``, so the submodules are the block's."""
    if stride == 1 and x.shape[-1] == features:
        return x
    return _bn(train, "downsample_bn")(_conv(features, 1, stride, "downsample_conv")(x))


def stage_widths(width: float) -> tuple[int, int, int, int]:
    """Base channels of the four stages: max(1, round(64·2^k·width))."""
    return tuple(max(1, round(64 * 2**k * width)) for k in range(4))


class ResNet(nn.Module):
    num_outputs: int
    depth: int = 18
    stem: str = "imagenet"
    width: float = 1.0
    zero_init_residual: bool = False
    # recompute each block's activations in the backward pass (model.remat=blocks); parameter names are unchanged
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kind, blocks = LAYOUTS[self.depth]
        block_cls = BasicBlock if kind == "basic" else Bottleneck
        widths = stage_widths(self.width)
        x = channels_last(x)  # (B, H, W, C)
        if self.stem == "imagenet":
            x = nn.relu(_bn(train, "bn1")(_conv(widths[0], 7, 2, "conv1")(x)))  # 224: (B, 112, 112, 64)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # 224: (B, 56, 56, 64)
        else:
            x = nn.relu(_bn(train, "bn1")(_conv(widths[0], 3, 1, "conv1")(x)))  # 32: (B, 32, 32, 64)
        for k, (planes, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                stride = 2 if (k > 0 and j == 0) else 1
                block = block_cls(planes, stride, self.zero_init_residual, name=f"layer{k + 1}_{j}")
                x = _remat.call(self.remat, block, x, train=train)
            # 224: (B, 56/28/14/7, …, planes·expansion) after layer1/2/3/4
        x = jnp.mean(x, axis=(1, 2))  # (B, 512·expansion·width)
        fan_in = x.shape[-1]
        return nn.Dense(self.num_outputs, kernel_init=torch_default_kernel_init(),
                        bias_init=torch_default_bias_init(fan_in), name="fc")(x)  # (B, num_outputs)


def build_resnet(cfg: ResNetConfig, num_classes: int) -> nn.Module:
    if cfg.depth not in LAYOUTS:
        raise ConfigError(f"model.depth: ResNet depth must be one of {', '.join(map(str, LAYOUTS))}, got {cfg.depth}")
    if cfg.stem not in STEMS:
        raise ConfigError(f"model.stem: expected one of {', '.join(STEMS)}, got {cfg.stem!r}")
    if not (cfg.width > 0 and math.isfinite(cfg.width)):
        raise ConfigError(f"model.width: expected a positive channel multiplier, got {cfg.width}")
    preset = VARIANTS.get(cfg.name)
    if preset is not None and (cfg.depth, cfg.stem) != (preset.depth, preset.stem):
        want = f"resnet{cfg.depth}" + ("_cifar" if cfg.stem == "cifar" else "")
        raise ConfigError(f"model {cfg.name!r} has depth={preset.depth}, stem={preset.stem!r}; got depth={cfg.depth}, "
                          f"stem={cfg.stem!r}. Select the variant by name instead (model.name={want})")
    return ResNet(num_outputs=num_classes, depth=cfg.depth, stem=cfg.stem, width=cfg.width,
                  zero_init_residual=cfg.zero_init_residual, remat=cfg.remat == "blocks")


__all__ = ["BasicBlock", "Bottleneck", "LAYOUTS", "ResNet", "ResNetConfig", "VARIANTS", "build_resnet",
           "stage_widths"]
