r"""Recurrent direct multi-step forecaster: LSTM/GRU stack over a context window → last state → Dense.

    y_hat = head(dropout(h_T))       # (B, num_classes), num_classes = horizon × target columns

``h_T`` is the top layer's final hidden state (forward and backward concatenated when bidirectional). The outputs
are unbounded (no output activation): the regression task reshapes them to the target's shape. Inputs are
``(B, context, F)`` float (or ``(B, context)``: one column); a dict ``{"inputs": x, "lengths": l}`` gives
per-example context lengths. Submodules are named ``rnn`` and ``head`` as in the usual PyTorch model.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.config import ModelConfig
from jaxdl.errors import ModelInputError
from jaxdl.models.rnn_classifier import top_state
from jaxdl.nn import Dropout, Recurrent


@dataclass(frozen=True)
class RNNForecasterConfig(ModelConfig):
    """``num_classes`` is the number of outputs: the task sets it to horizon × target columns."""

    name: str = "rnn_forecaster"
    # lstm | gru
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    # Between recurrent layers and before the head; the step may override it with a traced array.
    dropout: float = 0.0
    bidirectional: bool = False


class RNNForecaster(nn.Module):
    num_outputs: int
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.0
    bidirectional: bool = False

    @nn.compact
    def __call__(self, inputs: jax.Array, lengths: jax.Array | None = None, *, train: bool = False,
                 dropout_rate: jax.Array | float | None = None) -> jax.Array:
        """Args: inputs (B, context, F) float; lengths (B,) int or None. Returns: (B, num_outputs)."""
        if inputs.ndim == 2:
            inputs = inputs[..., None]  # (B, context, 1)
        if inputs.ndim != 3 or not jnp.issubdtype(inputs.dtype, jnp.floating):
            raise ModelInputError(f"model 'rnn_forecaster' reads float windows (B, context, F), got "
                                  f"{tuple(inputs.shape)} {inputs.dtype}")
        if lengths is not None:
            lengths = lengths.astype(jnp.int32).reshape(-1)  # (B,)
        _, state = Recurrent(cell=self.cell, hidden_size=self.hidden_size, num_layers=self.num_layers,
                             bidirectional=self.bidirectional, dropout=self.dropout, name="rnn")(
            inputs, lengths, train=train, dropout_rate=dropout_rate)
        h = top_state(state, self.num_layers, self.bidirectional)  # (B, D * H)
        h = Dropout(self.dropout, name="head_dropout")(h, train=train, rate=dropout_rate)
        return nn.Dense(self.num_outputs, name="head")(h)  # (B, num_outputs)


def build_rnn_forecaster(cfg: RNNForecasterConfig, num_classes: int) -> nn.Module:
    return RNNForecaster(num_outputs=num_classes, cell=cfg.cell, hidden_size=cfg.hidden_size,
                         num_layers=cfg.num_layers, dropout=cfg.dropout, bidirectional=cfg.bidirectional)


__all__ = ["RNNForecaster", "RNNForecasterConfig", "build_rnn_forecaster"]
