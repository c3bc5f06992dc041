"""Scaled dot-product attention with boolean masks, grouped-query heads and a decoding cache.

Layout: arrays are ``(B, T, H, Dh)`` (batch, time, heads, head features); masks and biases are broadcastable to
``(B, H, Tq, Tk)``; in masks ``True`` means "may attend". Masks combine with ``&`` (or :func:`combine_masks`)::

    mask = causal_mask(T) & padding_mask(lengths, T) & segment_mask(segment_ids)   # (B, 1, T, T)
    attn = MultiHeadAttention(num_heads=12)                                        # GPT-2 / BERT
    attn = MultiHeadAttention(num_heads=9, num_kv_heads=3, use_bias=False, rope_theta=1e5)  # SmolLM2-135M
    y = attn.apply(variables, x, mask=mask)                                        # (B, T, D)

Decoding cache (the ``"cache"`` collection, Flax's pattern)::

    cache = attn.init(key, jnp.zeros((B, max_len, D)), decode=True)["cache"]      # sizes the cache
    y, upd = attn.apply({"params": params, "cache": cache}, x_new, decode=True, mutable=["cache"])
    cache = upd["cache"]                                                           # x_new: (B, T_new, D), T_new >= 1
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxdl.errors import ConfigError, ModelInputError
from jaxdl.nn.layers import dropout as _dropout
from jaxdl.nn.positions import apply_rope

_NEG = float(jnp.finfo(jnp.float32).min)  # masked score: finite, so a fully masked row cannot make NaNs


def causal_mask(q_len: int, kv_len: int | None = None, *, offset: int | jax.Array = 0) -> jax.Array:
    """Query ``i`` may attend key ``j`` iff ``j <= i + offset``. Returns bool ``(1, 1, q_len, kv_len)``."""
    kv_len = q_len if kv_len is None else kv_len
    q = jnp.arange(q_len)[:, None] + offset  # (Tq, 1)
    k = jnp.arange(kv_len)[None, :]  # (1, Tk)
    return (k <= q)[None, None]  # (1, 1, Tq, Tk)


def padding_mask(valid: jax.Array, length: int | None = None) -> jax.Array:
    """Mask out padded keys.

    Args: valid: per-example lengths (B,) — real tokens first, then ``length - lengths[b]`` padding — or a token
      mask (B, Tk) with ``True``/1 at real tokens; length: the padded length Tk (needed with lengths).
    Returns: bool ``(B, 1, 1, Tk)``. (PyTorch's ``key_padding_mask`` is the negation of the token mask.)
    """
    valid = jnp.asarray(valid)
    if valid.ndim == 1:
        if length is None:
            raise ModelInputError("padding_mask: with lengths of shape (B,), pass length= (the padded length)")
        valid = jnp.arange(length)[None, :] < valid[:, None]  # (B, Tk)
    elif valid.ndim != 2:
        raise ModelInputError(f"padding_mask: expected lengths (B,) or a token mask (B, T), got shape "
                              f"{tuple(valid.shape)}")
    return valid.astype(bool)[:, None, None, :]  # (B, 1, 1, Tk)


def segment_mask(segment_ids: jax.Array, kv_segment_ids: jax.Array | None = None) -> jax.Array:
    """Packed sequences: a token attends only to tokens of its own segment.

    Args: segment_ids (B, Tq) ints, one id per packed sequence; kv_segment_ids (B, Tk), default the same.
    Returns: bool ``(B, 1, Tq, Tk)``. Padding with its own id (e.g. 0) attends only to padding; its outputs are
    meaningless but finite — weight them out of the loss.
    """
    kv = segment_ids if kv_segment_ids is None else kv_segment_ids
    return (segment_ids[:, :, None] == kv[:, None, :])[:, None]  # (B, 1, Tq, Tk)


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the masks that are not None (None if all are)."""
    out = None
    for m in masks:
        if m is not None:
            m = jnp.asarray(m).astype(bool)
            out = m if out is None else jnp.logical_and(out, m)
    return out


def _check_broadcast(name: str, arr: jax.Array, shape: tuple[int, ...]) -> None:
    try:
        ok = arr.ndim == 4 and jnp.broadcast_shapes(arr.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ModelInputError(f"dot_product_attention: {name} of shape {tuple(arr.shape)} does not broadcast to "
                              f"the scores' shape (B, H, Tq, Tk) = {shape}")


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
                          bias: jax.Array | None = None, *, scale: float | None = None,
                          dropout_rate: jax.Array | float = 0.0, dropout_rng: jax.Array | None = None,
                          return_weights: bool = False):
    """``softmax(scale · q kᵀ + bias, masked) v``, per head, with grouped-query heads.

    Scores, bias and softmax are float32 whatever the input dtype; the weighted sum accumulates in float32. With
    ``Hkv < H`` key/value heads (grouped-query; ``Hkv = 1`` is multi-query), query head ``h`` uses kv head
    ``h // (H / Hkv)`` — the order of HF's ``repeat_kv`` — computed by an einsum over groups, without copies.

    Args:
      q: (B, Tq, H, Dh); k: (B, Tk, Hkv, Dh); v: (B, Tk, Hkv, Dv), ``H % Hkv == 0``.
      mask: bool, broadcastable to (B, H, Tq, Tk); True = attend. A query whose keys are all masked outputs zeros.
      bias: float, broadcastable to (B, H, Tq, Tk), added to the scaled scores (T5's relative bias, ALiBi).
      scale: score multiplier; None means ``1/sqrt(Dh)``. T5 uses ``1.0``.
      dropout_rate: dropout on the attention weights (may be traced); applied only when ``dropout_rng`` is given.
      return_weights: also return the attention weights (B, H, Tq, Tk), float32, after dropout.
    Returns: (B, Tq, H, Dv) in q's dtype (and the weights if asked).
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ModelInputError(f"dot_product_attention: expected q, k, v of shape (B, T, H, Dh), got shapes "
                              f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, Tq, H, Dh = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    if k.shape[-1] != Dh or v.shape[:3] != k.shape[:3] or k.shape[0] != B:
        raise ModelInputError(f"dot_product_attention: q {tuple(q.shape)}, k {tuple(k.shape)} and v "
                              f"{tuple(v.shape)} disagree (q and k need the same head_dim; k and v the same "
                              f"batch, length and heads)")
    if H % Hkv:
        raise ConfigError(f"dot_product_attention: {H} query heads cannot be split into groups over {Hkv} "
                          "key/value heads (num_heads must be divisible by num_kv_heads)")
    G = H // Hkv
    scale = 1.0 / math.sqrt(Dh) if scale is None else scale
    qg = q.reshape(B, Tq, Hkv, G, Dh)  # (B, Tq, Hkv, G, Dh): head h = kv head h // G, member h % G
    s = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, preferred_element_type=jnp.float32)  # (B, Hkv, G, Tq, Tk)
    s = s.reshape(B, H, Tq, Tk) * scale  # (B, H, Tq, Tk)
    if bias is not None:
        bias = jnp.asarray(bias)
        _check_broadcast("bias", bias, s.shape)
        s = s + bias.astype(jnp.float32)
    if mask is not None:
        mask = jnp.asarray(mask).astype(bool)
        _check_broadcast("mask", mask, s.shape)
        s = jnp.where(mask, s, _NEG)
    w = jax.nn.softmax(s, axis=-1)  # (B, H, Tq, Tk), float32
    if mask is not None:  # an all-masked row would be uniform over masked keys: zero it instead
        w = jnp.where(jnp.any(mask, axis=-1, keepdims=True), w, 0.0)
    if dropout_rng is not None:
        w = _dropout(w, dropout_rate, dropout_rng)
    wg = w.astype(v.dtype).reshape(B, Hkv, G, Tq, Tk)  # (B, Hkv, G, Tq, Tk)
    out = jnp.einsum("bkgqs,bskd->bqkgd", wg, v, preferred_element_type=jnp.float32)  # (B, Tq, Hkv, G, Dv)
    out = out.reshape(B, Tq, H, v.shape[-1]).astype(q.dtype)  # (B, Tq, H, Dv)
    return (out, w) if return_weights else out


class MultiHeadAttention(nn.Module):
    """Multi-head (and grouped-/multi-query) attention with separate q/k/v/o projections.

    Parameters (``nn.Dense``, kernels ``(in, out)`` = a PyTorch ``nn.Linear.weight`` transposed; heads are
    contiguous blocks of ``head_dim`` output features, as PyTorch's ``view(B, T, H, Dh)``):

    - ``query``: kernel (D, H·Dh), bias (H·Dh,)
    - ``key``, ``value``: kernel (D_ctx, Hkv·Dh), bias (Hkv·Dh,)
    - ``out``: kernel (H·Dh, out_features or D), bias (out_features or D,) — absent if ``output_projection=False``

    HF mapping: Llama/BERT/T5 ``q/k/v/o`` Linear weights transposed; GPT-2's ``c_attn`` Conv1D weight (D, 3D) split
    in three along its last axis, ``c_proj`` as is; ``torch.nn.MultiheadAttention``'s ``in_proj_weight`` split in
    three along its first axis, each transposed. Biases are controlled by ``use_bias`` (q, k, v) and ``out_bias``
    (default: ``use_bias``).

    Dropout (``dropout``) is on the attention weights; a block applies its own residual dropout after ``out``.
    RoPE (``rope_theta``) rotates queries and keys of self-attention (positions from the call, else
    ``arange(T)``, offset by the cache index while decoding).

    Attention weights: with ``mutable=["intermediates"]`` each call records its probabilities ``(B, H, T, Tk)``
    (float32, after attention dropout, so take them in eval mode) as ``intermediates/<path>/attention_weights``;
    without that collection nothing is kept. :func:`jaxdl.interpret.attention_maps` collects them per layer.
    """

    num_heads: int
    num_kv_heads: int | None = None  # None: num_heads (multi-head); 1: multi-query
    head_dim: int | None = None  # None: d_model // num_heads
    out_features: int | None = None  # None: d_model
    use_bias: bool = True
    out_bias: bool | None = None  # None: use_bias
    output_projection: bool = True
    dropout: float = 0.0  # on the attention weights
    scale: float | None = None  # None: 1/sqrt(head_dim); T5: 1.0
    rope_theta: float | None = None  # None: no rotary embedding
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros

    def dims(self, d_model: int) -> tuple[int, int, int]:
        """``(H, Hkv, Dh)`` for inputs with ``d_model`` features, or a ConfigError naming the mismatch."""
        H = self.num_heads
        Hkv = H if self.num_kv_heads is None else self.num_kv_heads
        if H < 1 or Hkv < 1:
            raise ConfigError(f"MultiHeadAttention: num_heads and num_kv_heads must be positive, got {H} and {Hkv}")
        if H % Hkv:
            raise ConfigError(f"MultiHeadAttention: num_heads={H} is not divisible by num_kv_heads={Hkv} (each "
                              "key/value head serves an equal group of query heads)")
        if self.head_dim is None:
            if d_model % H:
                raise ConfigError(f"MultiHeadAttention: d_model={d_model} is not divisible by num_heads={H}; "
                                  "choose another num_heads or set head_dim explicitly")
            return H, Hkv, d_model // H
        return H, Hkv, self.head_dim

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None, *, mask: jax.Array | None = None,
                 bias: jax.Array | None = None, positions: jax.Array | None = None, decode: bool = False,
                 train: bool = False, dropout_rate: jax.Array | float | None = None) -> jax.Array:
        """Attend from ``x`` to itself (self-attention) or to ``context`` (cross-attention).

        Args:
          x: (B, T, D) queries (and keys/values for self-attention).
          context: None, or (B, S, D_ctx) keys/values for cross-attention (no RoPE, no cache: recomputed per call).
          mask: bool, broadcastable to (B, H, T, Tk), True = attend; Tk = S, T, or the cache length when decoding
            (then it is AND-ed with the cache's causal mask — e.g. to mask left padding of prompts).
          bias: float, broadcastable to (B, H, T, Tk), added to the scores (T5's relative bias).
          positions: RoPE positions (T,) or (B, T); default ``arange(T)`` (+ ``cache_index`` when decoding).
          decode: self-attention with the ``"cache"`` collection. On ``init`` it creates ``cached_key`` and
            ``cached_value`` (B, L, Hkv, Dh), L the init input's length, and ``cache_index`` (int32 scalar) and
            returns causal attention over x. On ``apply(..., mutable=["cache"])`` it writes x's T >= 1 keys/values at
            ``[cache_index, cache_index + T)``, attends causally over the filled part and advances ``cache_index``
            by T. Running past L cannot be checked under jit: the outputs of such a call are NaN.
          train: apply attention dropout (RNG stream ``"dropout"``); dropout_rate overrides ``dropout`` (traced ok).
        Returns: (B, T, out_features or D) — or (B, T, H·Dh) if ``output_projection=False``.
        """
        if x.ndim != 3:
            raise ModelInputError(f"MultiHeadAttention: expected x of shape (batch, time, features), got shape "
                                  f"{tuple(x.shape)}")
        if context is not None and context.ndim != 3:
            raise ModelInputError(f"MultiHeadAttention: expected context of shape (batch, time, features), got "
                                  f"shape {tuple(context.shape)}")
        B, T, D = x.shape
        H, Hkv, Dh = self.dims(D)
        dense = partial(nn.Dense, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=self.kernel_init, bias_init=self.bias_init)
        kv_in = x if context is None else context
        S = kv_in.shape[1]
        q = dense(H * Dh, name="query")(x).reshape(B, T, H, Dh)  # (B, T, H, Dh)
        k = dense(Hkv * Dh, name="key")(kv_in).reshape(B, S, Hkv, Dh)  # (B, S, Hkv, Dh)
        v = dense(Hkv * Dh, name="value")(kv_in).reshape(B, S, Hkv, Dh)  # (B, S, Hkv, Dh)

        if self.rope_theta is not None and context is not None:
            raise ModelInputError("MultiHeadAttention: rope_theta is set but a context was given; RoPE applies to "
                                  "self-attention only — use a second module without rope_theta for cross-attention")
        overflow = None
        if decode and context is not None:
            decode = False  # cross-attention recomputes its keys/values from the context at every step
        if decode:
            k, v, q, mask, overflow = self._decode(q, k, v, mask, positions)
        elif self.rope_theta is not None:
            pos = jnp.arange(T) if positions is None else positions
            q, k = apply_rope(q, pos, self.rope_theta), apply_rope(k, pos, self.rope_theta)

        rate = self.dropout if dropout_rate is None else dropout_rate
        rng = None
        if train and not (isinstance(rate, (int, float)) and rate == 0.0):
            if not self.has_rng("dropout"):
                raise ModelInputError(f"{'/'.join(map(str, self.path)) or 'MultiHeadAttention'}: training with "
                                      "attention dropout needs an RNG key: pass rngs={'dropout': key} to apply")
            rng = self.make_rng("dropout")
        out, weights = dot_product_attention(q, k, v, mask, bias, scale=self.scale, dropout_rate=rate,
                                             dropout_rng=rng, return_weights=True)
        # (B, H, T, Tk) probabilities, kept only when the caller makes "intermediates" mutable
        # (jaxdl.interpret.attention_maps); otherwise sow does nothing and XLA drops the unused output
        self.sow("intermediates", "attention_weights", weights)
        if overflow is not None:  # past the cache's end: make it loud rather than silently wrong
            out = jnp.where(overflow, jnp.nan, out)
        out = out.reshape(B, T, H * Dh)  # (B, T, H*Dh): heads concatenated
        if not self.output_projection:
            return out
        use_out_bias = self.use_bias if self.out_bias is None else self.out_bias
        return dense(self.out_features or D, use_bias=use_out_bias, name="out")(out)  # (B, T, D_out)

    def _decode(self, q, k, v, mask, positions):
        """Cache update for one decode call; returns the full-length keys/values, rotated q and the mask."""
        B, T, Hkv, Dh = k.shape
        initialised = self.has_variable("cache", "cached_key")
        if not initialised and not self.is_initializing():
            raise ModelInputError(f"{'/'.join(map(str, self.path)) or 'MultiHeadAttention'}: decode=True needs "
                                  "the 'cache' collection: create it with model.init(key, x_max_len, decode=True) "
                                  "and pass {'params': ..., 'cache': ...} with mutable=['cache']")
        if initialised and not self.is_mutable_collection("cache"):
            raise ModelInputError(f"{'/'.join(map(str, self.path)) or 'MultiHeadAttention'}: decode=True writes "
                                  "the cache: call apply(..., mutable=['cache'])")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialised:  # the init call only sizes the cache; it attends causally over its own input
            if self.rope_theta is not None:
                pos = jnp.arange(T) if positions is None else positions
                q, k = apply_rope(q, pos, self.rope_theta), apply_rope(k, pos, self.rope_theta)
            return k, v, q, combine_masks(mask, causal_mask(T)), None

        L = cached_key.value.shape[1]
        if cached_key.value.shape[0] != B or cached_key.value.shape[2:] != (Hkv, Dh):
            raise ModelInputError(f"MultiHeadAttention: the cache holds keys of shape "
                                  f"{tuple(cached_key.value.shape)} (B, L, Hkv, Dh) but this call has batch {B}")
        if T > L:
            raise ModelInputError(f"MultiHeadAttention: {T} new tokens do not fit in a cache of length {L} "
                                  "(init the cache with a longer input)")
        idx = cache_index.value
        if self.rope_theta is not None:
            pos = idx + jnp.arange(T) if positions is None else positions
            q, k = apply_rope(q, pos, self.rope_theta), apply_rope(k, pos, self.rope_theta)
        cached_key.value = lax.dynamic_update_slice(cached_key.value, k.astype(cached_key.value.dtype),
                                                    (0, idx, 0, 0))  # (B, L, Hkv, Dh)
        cached_value.value = lax.dynamic_update_slice(cached_value.value, v.astype(cached_value.value.dtype),
                                                      (0, idx, 0, 0))  # (B, L, Hkv, Dh)
        cache_index.value = idx + T
        # New query i sits at position idx + i: it sees cache slots [0, idx + i] (filled ones, causally).
        mask = combine_masks(mask, causal_mask(T, L, offset=idx))  # (B|1, 1, T, L)
        return cached_key.value, cached_value.value, q, mask, idx + T > L
