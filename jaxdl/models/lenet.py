"""LeNet-5 (LeCun et al., 1998): two 5×5 convolution + subsampling stages, then 120 → 84 → classes.

Inputs smaller than 32×32 are brought to 32×32 first, as in the paper (MNIST's 28×28 digits were padded): inputs
within 4 pixels of 32 are zero-padded, smaller ones (e.g. 8×8 digits) resized bilinearly. The C3 layer is fully
connected to S2 (the paper's sparse connection table is a historical hardware economy). With 10 classes: 61,706
parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.config import ModelConfig
from jaxdl.nn import Dropout, activation, output_activation


@dataclass(frozen=True)
class LeNetConfig(ModelConfig):
    name: str = "lenet5"
    # tanh as in the paper; relu trains faster
    activation: str = "tanh"
    # avg (the paper's subsampling) | max
    pool: str = "avg"
    batch_norm: bool = False
    dropout: float = 0.0
    # logits | softmax | sigmoid
    output: str = "logits"
    input_size: int = 32


def fit_to_size(x: jax.Array, size: int) -> jax.Array:
    """Pad (when within 4 pixels) or bilinearly resize NHWC images to ``size``×``size``. Larger inputs pass through."""
    _, h, w, c = x.shape
    if h >= size and w >= size:
        return x
    if size - h <= 4 and size - w <= 4:
        ph, pw = size - h, size - w
        return jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    return jax.image.resize(x, (x.shape[0], size, size, c), method="bilinear")


def pool_2x2(x: jax.Array, kind: str) -> jax.Array:
    """2×2/2 max or average pooling of NHWC ``x`` as a reshape and a reduction: (B, H, W, C) -> (B, H/2, W/2, C).

    The same values as ``nn.max_pool``/``nn.avg_pool`` with window = stride = 2 (an odd last row or column is dropped,
    as there), but the gradient is elementwise instead of XLA's ``select_and_scatter`` / padded ``reduce_window``,
    which on XLA:CPU made LeNet-5's training step ~1.4× slower (``scripts/results/cnn_profile.md``). A max tied
    within a window shares its gradient among the tied inputs (ReLU's zeros have zero gradient anyway)."""
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2].reshape(b, h // 2, 2, w // 2, 2, c)  # (B, H/2, 2, W/2, 2, C)
    return x.max(axis=(2, 4)) if kind == "max" else x.mean(axis=(2, 4))


class LeNet5(nn.Module):
    num_outputs: int
    activation: str = "tanh"
    pool: str = "avg"
    batch_norm: bool = False
    dropout: float = 0.0
    output: str = "logits"
    input_size: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, dropout_rate: jax.Array | float | None = None):
        act = activation(self.activation)
        kind = "avg" if self.pool == "avg" else "max"
        if x.ndim == 3:
            x = x[..., None]  # (B, H, W) -> (B, H, W, 1)
        x = fit_to_size(x, self.input_size)  # (B, 32, 32, C)

        def norm(y, name):
            if not self.batch_norm:
                return y
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)(y)

        x = act(norm(nn.Conv(6, (5, 5), padding="VALID", name="c1")(x), "bn1"))  # (B, 28, 28, 6)
        x = pool_2x2(x, kind)  # (B, 14, 14, 6)
        x = act(norm(nn.Conv(16, (5, 5), padding="VALID", name="c3")(x), "bn3"))  # (B, 10, 10, 16)
        x = pool_2x2(x, kind)  # (B, 5, 5, 16)
        x = x.reshape(x.shape[0], -1)  # (B, 400)
        x = act(norm(nn.Dense(120, name="c5")(x), "bn5"))  # (B, 120)
        x = Dropout(self.dropout, name="drop5")(x, train=train, rate=dropout_rate)
        x = act(norm(nn.Dense(84, name="f6")(x), "bn6"))  # (B, 84)
        x = Dropout(self.dropout, name="drop6")(x, train=train, rate=dropout_rate)
        x = nn.Dense(self.num_outputs, name="output")(x)  # (B, num_outputs)
        return output_activation(self.output, x)


def build_lenet(cfg: LeNetConfig, num_classes: int) -> nn.Module:
    return LeNet5(num_outputs=num_classes, activation=cfg.activation, pool=cfg.pool, batch_norm=cfg.batch_norm,
                  dropout=cfg.dropout, output=cfg.output, input_size=cfg.input_size)
