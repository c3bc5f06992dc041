"""AlexNet (Krizhevsky et al., 2012) in torchvision's single-tower layout, plus exact adaptive average pooling.

Layers (NHWC inputs of any size ≥ 63×63 and any number of channels; the first conv adapts to the input channels)::

    features_0   Conv 64 @ 11×11, stride 4, padding 2  → ReLU → MaxPool 3×3 / 2
    features_3   Conv 192 @ 5×5, padding 2              → ReLU → MaxPool 3×3 / 2
    features_6   Conv 384 @ 3×3, padding 1              → ReLU
    features_8   Conv 256 @ 3×3, padding 1              → ReLU
    features_10  Conv 256 @ 3×3, padding 1              → ReLU → MaxPool 3×3 / 2
                 adaptive average pool to 6×6, flatten in PyTorch's (C, H, W) order
    classifier_1 Dropout → Dense 4096 → ReLU
    classifier_4 Dropout → Dense 4096 → ReLU
    classifier_6 Dense num_classes

Parameter names are torchvision's state-dict keys with ``.`` → ``_`` (``features.0.weight`` →
``features_0/kernel``): conv kernels are ``weight.transpose(2, 3, 1, 0)``, dense kernels ``weight.T``. Because the
pooled features are flattened channel-major (as PyTorch does on NCHW), ``classifier_1``'s kernel is exactly
``classifier.1.weight.T``. Initialisation is PyTorch's default (uniform ±1/√fan_in for weights and biases), as in
torchvision's AlexNet. 61,100,840 parameters at 1000 classes (the count does not depend on the input size).

Small inputs: the three 3×3/2 max-pools need the 11×11/4 conv's output to be at least 15×15, i.e. inputs of at least
63×63. Smaller images (MNIST's 28×28, CIFAR's 32×32) would pool to nothing — PyTorch's AlexNet raises "Output size
is too small" there — so this module raises :class:`~jaxdl.errors.ModelInputError` naming the minimum; resize first
(e.g. ``jax.image.resize(x, (b, 64, 64, c), "bilinear")``). Between 63 and 222 pixels the last feature map is
smaller than 6×6 and the adaptive pool replicates its cells (a 1×1 map becomes 36 copies), exactly like PyTorch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.config import ModelConfig
from jaxdl.errors import ModelInputError
from jaxdl.nn import Dropout, adaptive_avg_pool

# Smallest input side AlexNet accepts: (63 + 2·2 − 11) // 4 + 1 = 15 → 7 → 3 → 1 after the three max-pools.
ALEXNET_MIN_SIZE = 63


@dataclass(frozen=True)
class AlexNetConfig(ModelConfig):
    name: str = "alexnet"
    # Dropout before each of the two hidden classifier layers; the step may override it with a traced rate.
    dropout: float = 0.5


# --------------------------------------------------------------------------------------------------------------------
# Shared helpers (used by VGG and ResNet too)
# --------------------------------------------------------------------------------------------------------------------


def torch_default_kernel_init():
    """PyTorch's default ``nn.Linear``/``nn.Conv2d`` weight init: U(±1/√fan_in) (kaiming_uniform with a=√5)."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int):
    """PyTorch's default bias init: U(±1/√fan_in) (the bias init cannot see fan_in, so it is passed in)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def channels_last(x: jax.Array) -> jax.Array:
    """NHWC images; a (B, H, W) batch of grayscale images gets a channel axis."""
    return x[..., None] if x.ndim == 3 else x


def flatten_chw(x: jax.Array) -> jax.Array:
    """Flatten NHWC features in PyTorch's NCHW order, so the next dense kernel is ``torch_weight.T`` unpermuted."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # (B, C·H·W)


def check_min_size(x: jax.Array, min_size: int, model_name: str, why: str) -> None:
    h, w = x.shape[1], x.shape[2]
    if h < min_size or w < min_size:
        raise ModelInputError(
            f"model {model_name!r} needs images of at least {min_size}×{min_size} pixels, got {tuple(x.shape)} "
            f"({why}; PyTorch fails the same way). Resize them first, e.g. "
            f"jax.image.resize(x, (batch, {min_size + 1}, {min_size + 1}, channels), 'bilinear')")


# --------------------------------------------------------------------------------------------------------------------
# AlexNet
# --------------------------------------------------------------------------------------------------------------------


class AlexNet(nn.Module):
    num_outputs: int
    dropout: float = 0.5
    # registry name, used in error messages
    model_name: str = "alexnet"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, dropout_rate: jax.Array | float | None = None):
        x = channels_last(x)  # (B, H, W, C)
        check_min_size(x, ALEXNET_MIN_SIZE, self.model_name, "its three 3×3/2 max-pools would pool smaller images "
                       "to nothing")

        def conv(y, features, kernel, stride, pad, index):
            fan_in = kernel * kernel * y.shape[-1]
            layer = nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                            kernel_init=torch_default_kernel_init(), bias_init=torch_default_bias_init(fan_in),
                            name=f"features_{index}")
            return nn.relu(layer(y))

        def pool(y):
            return nn.max_pool(y, (3, 3), strides=(2, 2), padding="VALID")

        x = pool(conv(x, 64, 11, 4, 2, 0))  # 224: (B, 55, 55, 64) → (B, 27, 27, 64)
        x = pool(conv(x, 192, 5, 1, 2, 3))  # (B, 27, 27, 192) → (B, 13, 13, 192)
        x = conv(x, 384, 3, 1, 1, 6)  # (B, 13, 13, 384)
        x = conv(x, 256, 3, 1, 1, 8)  # (B, 13, 13, 256)
        x = pool(conv(x, 256, 3, 1, 1, 10))  # (B, 13, 13, 256) → (B, 6, 6, 256)
        x = adaptive_avg_pool(x, 6)  # (B, 6, 6, 256)
        x = flatten_chw(x)  # (B, 9216), PyTorch's (C, H, W) order

        def dense(y, features, index):
            return nn.Dense(features, kernel_init=torch_default_kernel_init(),
                            bias_init=torch_default_bias_init(y.shape[-1]), name=f"classifier_{index}")(y)

        x = Dropout(self.dropout, name="classifier_0")(x, train=train, rate=dropout_rate)
        x = nn.relu(dense(x, 4096, 1))  # (B, 4096)
        x = Dropout(self.dropout, name="classifier_3")(x, train=train, rate=dropout_rate)
        x = nn.relu(dense(x, 4096, 4))  # (B, 4096)
        return dense(x, self.num_outputs, 6)  # (B, num_outputs)


def build_alexnet(cfg: AlexNetConfig, num_classes: int) -> nn.Module:
    return AlexNet(num_outputs=num_classes, dropout=cfg.dropout, model_name=cfg.name)


__all__ = ["ALEXNET_MIN_SIZE", "AlexNet", "AlexNetConfig", "build_alexnet"]
