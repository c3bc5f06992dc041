r"""Recurrent sequence classifier: (embedding →) LSTM/GRU stack → pooling over time → dropout → Dense.

Inputs, all with a leading batch axis:

- float sequences ``(B, T, F)`` (or ``(B, T)``: one feature per step);
- images ``(B, H, W)`` or ``(B, H, W, C)``, read row by row: ``T = H`` steps of ``W * C`` features — the classic
  "an RNN reads a digit one row at a time" demo (``jaxdl train model.name=rnn_classifier data.name=digits``);
- token ids ``(B, T)`` int, embedded first when ``embed_dim > 0``;
- a dict ``{"inputs": x, "lengths": l}`` with per-example lengths ``l`` (B,) int: steps ``t >= l[b]`` are padding
  and never reach the pooled features;
- a dict ``{"tokens": ids, "token_mask": m}`` (text classification data sets): right-padded token ids (B, T) int and
  their mask (B, T), 1 at real tokens; the lengths are ``m.sum(1)``.

``embeddings=`` (B, T, embed_dim) replaces the embedding lookup of the token ids: a pure path from input embeddings
to logits, e.g. for integrated gradients (:func:`jaxdl.interpret.token_integrated_gradients`).

Pooling: ``last`` is the top layer's final hidden state (forward and backward concatenated when bidirectional — with
lengths, each example's state at its own last step); ``mean`` / ``max`` pool the top layer's outputs over real steps.
Submodules are named ``embedding``, ``rnn`` and ``head`` as in the usual PyTorch model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.config import ModelConfig
from jaxdl.errors import ModelInputError
from jaxdl.nn import Dropout, Recurrent

POOLINGS = ("last", "mean", "max")


@dataclass(frozen=True)
class RNNClassifierConfig(ModelConfig):
    name: str = "rnn_classifier"
    # lstm | gru
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    # Between recurrent layers and before the head; the step may override it with a traced array.
    dropout: float = 0.0
    bidirectional: bool = False
    # last | mean | max
    pooling: str = "last"
    # > 0: inputs are token ids (B, T), embedded to this width first; 0: inputs are float features.
    embed_dim: int = 0
    # Rows of the embedding (token ids are < vocab_size); needed when embed_dim > 0.
    vocab_size: int = 0


def as_sequence(x: jax.Array, model: str) -> jax.Array:
    """A float batch as ``(B, T, F)``: images ``(B, H, W[, C])`` become ``H`` steps of ``W * C`` features."""
    if x.ndim == 2:
        return x[..., None]  # (B, T, 1)
    if x.ndim == 3:
        return x  # (B, T, F)
    if x.ndim == 4:
        return x.reshape(x.shape[0], x.shape[1], -1)  # (B, H, W * C)
    raise ModelInputError(f"model {model!r} reads sequences (B, T, F) or images (B, H, W[, C]), got shape "
                          f"{tuple(x.shape)}")


def top_state(state, num_layers: int, bidirectional: bool) -> jax.Array:
    """The top layer's final hidden state ``(B, D * H)`` from a PyTorch-layout state (forward first)."""
    h = state[0] if isinstance(state, tuple) else state  # (L * D, B, H)
    d = 2 if bidirectional else 1
    top = h[(num_layers - 1) * d:]  # (D, B, H)
    return jnp.concatenate(list(top), axis=-1)  # (B, D * H)


def pool(outputs: jax.Array, lengths: jax.Array | None, how: str) -> jax.Array:
    """``mean`` or ``max`` of ``outputs`` (B, T, F) over each example's real steps (all when ``lengths`` is None)."""
    t = outputs.shape[1]
    if lengths is None:
        mask = jnp.ones(outputs.shape[:2], bool)
    else:
        mask = jnp.arange(t)[None, :] < jnp.clip(lengths, 0, t)[:, None]  # (B, T)
    if how == "mean":
        n = jnp.maximum(mask.sum(1, keepdims=True), 1).astype(outputs.dtype)  # (B, 1)
        return jnp.sum(jnp.where(mask[..., None], outputs, 0.0), axis=1) / n
    pooled = jnp.max(jnp.where(mask[..., None], outputs, -jnp.inf), axis=1)  # (B, F)
    return jnp.where(jnp.isfinite(pooled), pooled, 0.0)  # an empty sequence pools to 0


class RNNClassifier(nn.Module):
    num_classes: int
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.0
    bidirectional: bool = False
    pooling: str = "last"
    embed_dim: int = 0
    vocab_size: int = 0  # rows of the embedding when embed_dim > 0 (token ids must be < vocab_size)
    # where the embedding table lives in params (for embedding-space attribution)
    token_embedding: ClassVar[str] = "embedding/embedding"

    @nn.compact
    def __call__(self, inputs: jax.Array | None = None, lengths: jax.Array | None = None, *,
                 tokens: jax.Array | None = None, token_mask: jax.Array | None = None,
                 embeddings: jax.Array | None = None, train: bool = False,
                 dropout_rate: jax.Array | float | None = None) -> jax.Array:
        """Args: inputs (see the module docstring) or tokens (B, T) int with token_mask (B, T) (lengths
        ``token_mask.sum(1)``); lengths (B,) int or None; embeddings (B, T, embed_dim) or None: used instead of the
        embedding lookup. Returns: logits (B, num_classes)."""
        if inputs is None and tokens is None:
            raise ModelInputError("rnn_classifier: no input (expected inputs, or tokens with token_mask)")
        if inputs is None:
            inputs = tokens
        if token_mask is not None:
            if tuple(token_mask.shape) != tuple(inputs.shape[:2]):
                raise ModelInputError(f"rnn_classifier: token_mask of shape {tuple(token_mask.shape)} does not "
                                      f"match tokens of shape {tuple(inputs.shape)}")
            if lengths is None:
                lengths = jnp.sum(token_mask.astype(jnp.int32), axis=1)  # (B,): right-padded sequences
        if self.embed_dim > 0:
            if not jnp.issubdtype(inputs.dtype, jnp.integer) or inputs.ndim != 2:
                raise ModelInputError(f"rnn_classifier with model.embed_dim={self.embed_dim} reads token ids "
                                      f"(B, T) int, got {tuple(inputs.shape)} {inputs.dtype}")
            embed = nn.Embed(self.vocab_size, self.embed_dim, name="embedding")
            if embeddings is None:
                x = embed(inputs)  # (B, T, E)
            elif tuple(embeddings.shape) != (*inputs.shape, self.embed_dim):
                raise ModelInputError(f"rnn_classifier: embeddings of shape {tuple(embeddings.shape)}, expected "
                                      f"{(*inputs.shape, self.embed_dim)} (tokens (B, T) by embed_dim)")
            else:
                x = embeddings  # (B, T, E)
        else:
            if jnp.issubdtype(inputs.dtype, jnp.integer):
                raise ModelInputError(f"rnn_classifier got integer inputs {tuple(inputs.shape)} {inputs.dtype}; "
                                      "set model.embed_dim > 0 to embed token ids, or pass float features")
            x = as_sequence(inputs, "rnn_classifier")  # (B, T, F)
        if lengths is not None:
            lengths = lengths.astype(jnp.int32).reshape(-1)  # (B,)
        outputs, state = Recurrent(cell=self.cell, hidden_size=self.hidden_size, num_layers=self.num_layers,
                                   bidirectional=self.bidirectional, dropout=self.dropout, name="rnn")(
            x, lengths, train=train, dropout_rate=dropout_rate)  # (B, T, D * H)
        if self.pooling == "last":
            features = top_state(state, self.num_layers, self.bidirectional)  # (B, D * H)
        else:
            features = pool(outputs, lengths, self.pooling)  # (B, D * H)
        features = Dropout(self.dropout, name="head_dropout")(features, train=train, rate=dropout_rate)
        return nn.Dense(self.num_classes, name="head")(features)  # (B, num_classes)


def build_rnn_classifier(cfg: RNNClassifierConfig, num_classes: int) -> nn.Module:
    return RNNClassifier(num_classes=num_classes, cell=cfg.cell, hidden_size=cfg.hidden_size,
                         num_layers=cfg.num_layers, dropout=cfg.dropout, bidirectional=cfg.bidirectional,
                         pooling=cfg.pooling, embed_dim=cfg.embed_dim, vocab_size=cfg.vocab_size)


__all__ = ["POOLINGS", "RNNClassifier", "RNNClassifierConfig", "as_sequence", "build_rnn_classifier", "pool",
           "top_state"]
