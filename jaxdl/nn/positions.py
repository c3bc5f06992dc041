"""Positional schemes for Transformers: learned absolute, sinusoidal, rotary (RoPE) and T5's relative-position bias.

Positions are always arrays of integer indices, never implied by a length alone, so decoding with a cache (where a
new token sits at ``cache_index``) and packed sequences (positions restart in each segment) need nothing special::

    pe = LearnedPositions(1024, 768)(jnp.arange(T))      # GPT-2 / BERT: (T, 768), params position_embedding/embedding
    q = apply_rope(q, positions, theta=10000.0)            # Llama: q (B, T, H, Dh), positions (T,) or (B, T)
    bias = T5RelativeBias(num_heads=8)(Tq, Tk)             # T5: (1, 8, Tq, Tk), add to the attention scores
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.errors import ConfigError, ModelInputError


def _positions(positions: int | jax.Array) -> jax.Array:
    """``int T`` -> ``arange(T)``; an array passes through."""
    if isinstance(positions, int):
        return jnp.arange(positions)
    return jnp.asarray(positions)


class LearnedPositions(nn.Module):
    """Learned absolute position embeddings (GPT-2 ``wpe``, BERT ``position_embeddings``).

    Parameter: ``position_embedding/embedding`` of shape ``(num_positions, features)`` — the PyTorch
    ``nn.Embedding.weight`` as is.
    """

    num_positions: int
    features: int
    embedding_init: Any = nn.initializers.normal(stddev=0.02)
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, positions: int | jax.Array) -> jax.Array:
        """Args: positions: an int ``T`` (meaning ``arange(T)``) or an int array of any shape.
        Returns: the embeddings, ``positions.shape + (features,)``."""
        if isinstance(positions, int) and positions > self.num_positions:
            raise ModelInputError(f"LearnedPositions: a sequence of {positions} tokens is longer than the "
                                  f"{self.num_positions} positions the model has embeddings for")
        pos = _positions(positions)
        if jnp.issubdtype(pos.dtype, jnp.floating):
            raise ModelInputError(f"LearnedPositions: positions must be integers, got {pos.dtype}")
        return nn.Embed(self.num_positions, self.features, embedding_init=self.embedding_init, dtype=self.dtype,
                        param_dtype=self.param_dtype, name="position_embedding")(pos)


def sinusoidal_positions(positions: int | jax.Array, dim: int, *, max_timescale: float = 10000.0,
                         dtype: Any = jnp.float32) -> jax.Array:
    """The fixed sinusoidal table of "Attention Is All You Need" (Vaswani et al. 2017, §3.5)::

        PE[p, 2i] = sin(p / max_timescale^(2i/dim)),   PE[p, 2i+1] = cos(p / max_timescale^(2i/dim))

    Args: positions: an int ``T`` (``arange(T)``) or an int/float array of any shape; dim: even feature size.
    Returns: ``positions.shape + (dim,)`` (sine at even features, cosine at odd ones, interleaved as in the paper).
    """
    if dim % 2:
        raise ConfigError(f"sinusoidal_positions: dim must be even, got {dim}")
    pos = _positions(positions).astype(jnp.float32)
    inv = 1.0 / max_timescale ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)  # (dim/2,)
    angles = pos[..., None] * inv  # (..., dim/2)
    table = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # (..., dim/2, 2)
    return table.reshape(*angles.shape[:-1], dim).astype(dtype)  # (..., dim)


def rope_inverse_frequencies(head_dim: int, theta: float = 10000.0) -> jax.Array:
    """``1 / theta^(2i / head_dim)`` for ``i < head_dim/2`` (HF's ``inv_freq``), float32, shape (head_dim/2,)."""
    return 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)


def rotate_half(x: jax.Array) -> jax.Array:
    """``[x1, x2] -> [-x2, x1]`` over the last axis split in halves (HF's ``rotate_half``)."""
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float = 10000.0) -> jax.Array:
    """Rotary position embedding in the Llama / Hugging Face "rotate_half" convention (GPT-NeoX layout)::

        f = positions ⊗ inv_freq;  emb = [f, f];  x' = x * cos(emb) + rotate_half(x) * sin(emb)

    Feature ``i`` is paired with feature ``i + Dh/2`` (not ``2i`` with ``2i+1`` as in the original RoFormer / Meta
    checkpoints, whose q/k projections HF's converter permutes into this layout). Computed in float32.

    Args:
      x: queries or keys, (B, T, H, Dh) (any leading axes before T also work if positions broadcast).
      positions: int positions, (T,) or (B, T) — e.g. ``cache_index + arange(T)`` while decoding, or positions that
        restart in each segment of a packed sequence.
      theta: the RoPE base (Llama 2: 10000, SmolLM2: 100000, Llama 3: 500000).
    Returns: an array like ``x``.
    """
    if x.ndim < 3:
        raise ModelInputError(f"apply_rope: expected x of shape (B, T, H, Dh), got shape {tuple(x.shape)}")
    T, Dh = x.shape[-3], x.shape[-1]
    if Dh % 2:
        raise ConfigError(f"apply_rope: head_dim must be even, got {Dh}")
    pos = jnp.asarray(positions)
    if pos.shape[-1] != T:
        raise ModelInputError(f"apply_rope: positions of shape {tuple(pos.shape)} do not match the {T} time steps "
                              f"of x (shape {tuple(x.shape)}); expected (T,) or (B, T)")
    freqs = pos.astype(jnp.float32)[..., None] * rope_inverse_frequencies(Dh, theta)  # (..., T, Dh/2)
    emb = jnp.concatenate([freqs, freqs], axis=-1)[..., None, :]  # (..., T, 1, Dh): broadcast over heads
    x32 = x.astype(jnp.float32)
    return (x32 * jnp.cos(emb) + rotate_half(x32) * jnp.sin(emb)).astype(x.dtype)


def relative_position_bucket(relative_position: jax.Array, *, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> jax.Array:
    """T5's bucketing of ``relative_position = key_position - query_position`` (Raffel et al. 2020; HF
    ``T5Attention._relative_position_bucket``).

    Bidirectional: half the buckets for keys after the query (``rp > 0``), half for the rest. In each half, the
    first ``n/2`` distances get a bucket each; larger distances share logarithmically wider buckets up to
    ``max_distance``, beyond which everything is the last bucket. Causal (``bidirectional=False``): keys after the
    query all map to bucket 0 (they are masked anyway).

    Returns: int32 buckets in ``[0, num_buckets)``, same shape as ``relative_position``.
    """
    rp = jnp.asarray(relative_position).astype(jnp.int32)
    buckets = jnp.zeros_like(rp)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rp > 0).astype(jnp.int32) * num_buckets
        rp = jnp.abs(rp)
    else:
        rp = -jnp.minimum(rp, 0)
    max_exact = num_buckets // 2
    is_small = rp < max_exact
    # log(rp / max_exact) is only used where rp >= max_exact; the maximum keeps log(0) out of the graph.
    scaled = jnp.log(jnp.maximum(rp, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (scaled * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(is_small, rp, large)


class T5RelativeBias(nn.Module):
    """T5's learned relative-position bias, added to the attention scores (which T5 does not scale).

    Parameter: ``relative_attention_bias/embedding`` of shape ``(num_buckets, num_heads)`` — HF's
    ``relative_attention_bias.weight`` as is (T5 keeps it in the first layer's attention and shares it).
    Encoder: ``bidirectional=True``; decoder self-attention: ``bidirectional=False``.
    """

    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True
    embedding_init: Any = nn.initializers.normal(stddev=1.0)
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, q_positions: int | jax.Array, k_positions: int | jax.Array) -> jax.Array:
        """Args:
          q_positions, k_positions: ints (meaning ``arange``) or int arrays (Tq,)/(Tk,) or (B, Tq)/(B, Tk). While
            decoding one token against a cache of length L: ``(cache_index + jnp.arange(1), L)``.
        Returns: the bias ``(1, H, Tq, Tk)`` (or ``(B, H, Tq, Tk)`` for batched positions).
        """
        q, k = _positions(q_positions), _positions(k_positions)
        rel = k[..., None, :] - q[..., :, None]  # (..., Tq, Tk): key minus query, as HF's memory - context
        buckets = relative_position_bucket(rel, bidirectional=self.bidirectional, num_buckets=self.num_buckets,
                                           max_distance=self.max_distance)
        table = nn.Embed(self.num_buckets, self.num_heads, embedding_init=self.embedding_init, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="relative_attention_bias")
        bias = jnp.moveaxis(table(buckets), -1, -3)  # (..., H, Tq, Tk)
        return bias if bias.ndim == 4 else bias[None]  # (B|1, H, Tq, Tk)
