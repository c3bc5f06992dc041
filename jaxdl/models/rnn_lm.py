r"""Recurrent language model (characters or words): embedding → LSTM/GRU stack → dropout → Dense over the vocabulary.

    logits[b, t] = head(dropout(rnn(embedding(tokens))[b, t]))       # next-token scores, (B, T, V)

Submodules are named as a PyTorch ``nn.Embedding`` / ``nn.LSTM`` / ``nn.Linear`` model's attributes (``embedding``,
``rnn``, ``head``), so its ``state_dict`` maps onto them by name.

Generation continues from a carried recurrent state instead of re-reading the whole prefix (see
:mod:`jaxdl.generate`)::

    state, _ = model.apply(variables, batch_size, method="initial_state")
    (logits, state), _ = model.apply(variables, {"tokens": tokens, "state": state}, method="step")

(a dict of several named arrays reaches a method as keyword arguments: ``step(tokens=..., state=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax

from jaxdl.config import ModelConfig
from jaxdl.nn import Dropout, Recurrent
from jaxdl.nn import initial_state as zeros_state

# LSTM: (h, c), each (num_layers * directions, B, H); GRU: h, (num_layers * directions, B, H) — PyTorch's layout.
State = Any


@dataclass(frozen=True)
class RNNLMConfig(ModelConfig):
    """``num_classes`` is the vocabulary size: the embedding's rows and the logits' width."""

    name: str = "rnn_lm"
    # lstm | gru
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    # Between recurrent layers and before the head; the step may override it with a traced array.
    dropout: float = 0.0
    embed_dim: int = 64


class RNNLanguageModel(nn.Module):
    """Next-token logits of a unidirectional LSTM/GRU stack over token embeddings."""

    vocab_size: int
    embed_dim: int = 64
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.0

    def setup(self):
        self.embedding = nn.Embed(self.vocab_size, self.embed_dim)
        self.rnn = Recurrent(cell=self.cell, hidden_size=self.hidden_size, num_layers=self.num_layers,
                             dropout=self.dropout)
        self.head_dropout = Dropout(self.dropout)
        self.head = nn.Dense(self.vocab_size)

    def __call__(self, tokens: jax.Array, *, train: bool = False,
                 dropout_rate: jax.Array | float | None = None) -> jax.Array:
        """Args: tokens (B, T) int. Returns: logits (B, T, V) (position t scores token t + 1)."""
        return self.step(tokens, None, train=train, dropout_rate=dropout_rate)[0]

    def step(self, tokens: jax.Array, state: State = None, *, train: bool = False,
             dropout_rate: jax.Array | float | None = None) -> tuple[jax.Array, State]:
        """Continue from ``state`` (None: zeros) over ``tokens`` (B, T) int.

        Returns:
          ``(logits (B, T, V), new_state)``; ``new_state`` has :meth:`initial_state`'s layout. Running ``step`` over
          a sequence in pieces, carrying the state, gives the logits of one call on the whole sequence.
        """
        x = self.embedding(tokens)  # (B, T, E)
        y, new_state = self.rnn(x, initial_state=state, train=train, dropout_rate=dropout_rate)  # (B, T, H)
        y = self.head_dropout(y, train=train, rate=dropout_rate)
        return self.head(y), new_state  # (B, T, V)

    def initial_state(self, batch_size: int) -> State:
        """Zeros: LSTM ``(h, c)`` each (num_layers, B, H); GRU ``h`` (num_layers, B, H)."""
        return zeros_state(self.cell, self.num_layers, False, int(batch_size), self.hidden_size)


def build_rnn_lm(cfg: RNNLMConfig, num_classes: int) -> nn.Module:
    return RNNLanguageModel(vocab_size=num_classes, embed_dim=cfg.embed_dim, cell=cfg.cell,
                            hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, dropout=cfg.dropout)


__all__ = ["RNNLMConfig", "RNNLanguageModel", "build_rnn_lm"]
