"""Perceptron and multi-layer perceptron."""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax

from jaxdl.config import ModelConfig
from jaxdl.nn import Dropout, activation, output_activation


@dataclass(frozen=True)
class PerceptronConfig(ModelConfig):
    """A single layer of linear threshold units (one per class): ``out = f(W·x + b)``.

    ``output``: ``logits`` (train with cross-entropy: multinomial logistic regression), ``sigmoid``, or ``step``
    (Rosenblatt's Heaviside output; trained through a straight-through gradient, so MSE on one-hot targets gives the
    classic perceptron learning rule).
    """

    name: str = "perceptron"
    output: str = "step"


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    name: str = "mlp"
    widths: tuple[int, ...] = (128, 64)
    # relu | sigmoid | tanh | gelu | silu | elu | leaky_relu
    activation: str = "relu"
    # Dropout after every hidden activation; the step may override the rate with a traced array.
    dropout: float = 0.0
    batch_norm: bool = False
    # logits | softmax | sigmoid
    output: str = "logits"


class Perceptron(nn.Module):
    num_outputs: int
    output: str = "step"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)  # (B, F)
        return output_activation(self.output, nn.Dense(self.num_outputs, name="linear")(x))


class MLP(nn.Module):
    """Flatten → [Dense → (BatchNorm) → activation → Dropout] × len(widths) → Dense → output head."""

    widths: tuple[int, ...]
    num_outputs: int
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    output: str = "logits"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, dropout_rate: jax.Array | float | None = None):
        act = activation(self.activation)
        x = x.reshape(x.shape[0], -1)  # (B, F)
        for i, width in enumerate(self.widths):
            x = nn.Dense(width, use_bias=not self.batch_norm, name=f"dense{i}")(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"bn{i}")(x)
            x = act(x)
            x = Dropout(self.dropout, name=f"dropout{i}")(x, train=train, rate=dropout_rate)
        x = nn.Dense(self.num_outputs, name="head")(x)  # (B, num_outputs)
        return output_activation(self.output, x)


def build_perceptron(cfg: PerceptronConfig, num_classes: int) -> nn.Module:
    return Perceptron(num_outputs=num_classes, output=cfg.output)


def build_mlp(cfg: MLPConfig, num_classes: int) -> nn.Module:
    return MLP(widths=tuple(cfg.widths), num_outputs=num_classes, activation=cfg.activation, dropout=cfg.dropout,
               batch_norm=cfg.batch_norm, output=cfg.output)


__all__ = ["MLP", "MLPConfig", "Perceptron", "PerceptronConfig", "build_mlp", "build_perceptron"]
