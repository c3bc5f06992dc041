r"""Decoder-only Transformer language models: GPT-2 (Radford et al. 2019) and, with other switches, Llama
(:mod:`jaxdl.models.llama`).

One pre-norm block, ``num_layers`` times, between a token embedding and a final norm::

    x = embed(tokens) [+ positions(p)]                 # (B, T, D); GPT-2 adds learned positions, Llama rotates q/k
    x = x + drop(attn(norm_1(x), causal))               # multi-head (GPT-2) or grouped-query + RoPE (Llama)
    x = x + drop(mlp(norm_2(x)))                        # gelu_new (GPT-2) or SwiGLU (Llama)
    logits = norm_f(x) @ embedding.T                    # tied input/output embeddings (or a separate ``head``)

Parameters (Flax names; HF GPT-2 / Llama names in brackets): ``token_embedding/embedding`` (V, D) [``wte`` /
``embed_tokens``], ``positions/position_embedding/embedding`` (C, D) [``wpe``, GPT-2 only], ``block_<i>/norm_1``
[``ln_1`` / ``input_layernorm``], ``block_<i>/attn/{query,key,value,out}`` (:class:`~jaxdl.nn.MultiHeadAttention`;
GPT-2's fused ``c_attn`` split in three, ``c_proj`` = ``out``), ``block_<i>/norm_2`` [``ln_2`` /
``post_attention_layernorm``], ``block_<i>/mlp`` (:class:`~jaxdl.nn.FeedForward`: ``fc_in``/``fc_out`` [``c_fc``/
``c_proj``] or ``gate``/``up``/``down``), ``norm_f`` [``ln_f`` / ``norm``] and ``head`` when untied. Kernels are
``(in, out)``. GPT-2 small (``gpt2``) has 124,439,808 parameters; SmolLM2-135M (``smollm2_135m``) 134,515,008.

Decoding with a key/value cache (the ``"cache"`` collection of every attention layer plus this model's
``position``), in the ``initial_state``/``step`` form that :func:`jaxdl.generate.sample` drives::

    state, _ = model.apply(variables, {"batch_size": B, "max_length": L}, method="initial_state")
    (logits, state), _ = model.apply(variables, {"tokens": tokens, "state": state}, method="step")

``step`` over a sequence in pieces gives the logits of one causal forward over the whole sequence. When ``max_length``
exceeds ``context_length`` the state also carries the last ``context_length`` tokens: once the cache is full, each
step recomputes the window of the latest ``context_length`` tokens (nanoGPT's cropping), so sampling never runs past
the positions the model has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxdl.config import ModelConfig, config_variant
from jaxdl.errors import ConfigError, ModelInputError
from jaxdl.nn import Dropout
from jaxdl.nn.attention import MultiHeadAttention, causal_mask
from jaxdl.nn.positions import LearnedPositions
from jaxdl.nn.transformer import LAYER_NORM_EPS, FeedForward, RMSNorm

# The cache pytree of every attention layer plus the model's position; with the sliding window also
# {"window": (B, C) int32, "length": int32 scalar}.
State = Any


class Block(nn.Module):
    """One pre-norm Transformer block (see the module docstring)."""

    num_heads: int
    num_kv_heads: int | None
    mlp_dim: int
    activation: str
    use_bias: bool
    norm: str  # "layer" | "rms"
    norm_eps: float
    rope_theta: float | None
    dropout: float
    init_std: float

    @nn.compact
    def __call__(self, x, mask, *, decode: bool, train: bool, dropout_rate):
        norm = (lambda name: nn.LayerNorm(epsilon=self.norm_eps, name=name)) if self.norm == "layer" else (
            lambda name: RMSNorm(epsilon=self.norm_eps, name=name))
        attn = MultiHeadAttention(num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, use_bias=self.use_bias,
                                  dropout=self.dropout, rope_theta=self.rope_theta,
                                  kernel_init=nn.initializers.normal(self.init_std), name="attn")
        h = attn(norm("norm_1")(x), mask=mask, decode=decode, train=train, dropout_rate=dropout_rate)  # (B, T, D)
        x = x + Dropout(self.dropout, name="attn_dropout")(h, train=train, rate=dropout_rate)
        mlp = FeedForward(self.mlp_dim, self.activation, use_bias=self.use_bias, dropout=self.dropout,
                          kernel_init=nn.initializers.normal(self.init_std), name="mlp")
        return x + mlp(norm("norm_2")(x), train=train, dropout_rate=dropout_rate)  # (B, T, D)


class DecoderLM(nn.Module):
    """A causal Transformer language model: tokens (B, T) int -> next-token logits (B, T, vocab_size)."""

    vocab_size: int
    context_length: int = 256
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None  # None: num_heads; fewer: grouped-query attention
    mlp_dim: int = 512
    activation: str = "gelu_new"  # FeedForward's: "gelu_new" (GPT-2) | "swiglu" (Llama) | …
    positions: str = "learned"  # "learned" (GPT-2) | "rope" (Llama)
    norm: str = "layer"  # "layer" (GPT-2) | "rms" (Llama)
    norm_eps: float = LAYER_NORM_EPS["gpt2"]
    use_bias: bool = True
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False, dropout_rate: jax.Array | float | None = None,
                 decode: bool = False) -> jax.Array:
        """Args:
          tokens: (B, T) int token ids.
          train: dropout on (RNG stream ``"dropout"``); ``dropout_rate`` overrides ``dropout`` (may be traced).
          decode: continue from the ``"cache"`` collection (``apply(..., mutable=["cache"])``; ``init`` with
            ``decode=True`` sizes it from the input's length) — usually through :meth:`step`.
        Returns: logits (B, T, vocab_size): position t scores token t + 1.
        """
        if tokens.ndim != 2:
            raise ModelInputError(f"DecoderLM: expected token ids of shape (batch, time), got shape "
                                  f"{tuple(tokens.shape)}")
        B, T = tokens.shape
        if T > self.context_length:
            raise ModelInputError(f"DecoderLM: {T} tokens are more than the model's context of "
                                  f"{self.context_length} positions")
        if self.positions not in ("learned", "rope"):
            raise ConfigError(f"DecoderLM: positions must be 'learned' or 'rope', got {self.positions!r}")
        if self.norm not in ("layer", "rms"):
            raise ConfigError(f"DecoderLM: norm must be 'layer' or 'rms', got {self.norm!r}")
        offset = 0
        if decode:
            if not self.is_initializing() and not self.has_variable("cache", "position"):
                raise ModelInputError("DecoderLM: decode=True needs the 'cache' collection: create it with "
                                      "method='initial_state' (or init with decode=True) and apply with "
                                      "mutable=['cache']")
            position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
            offset = position.value
            if not self.is_initializing():
                position.value = offset + T
        std = nn.initializers.normal(self.init_std)
        embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=std, name="token_embedding")
        x = embed(tokens)  # (B, T, D)
        if self.positions == "learned":
            x = x + LearnedPositions(self.context_length, self.d_model, name="positions")(offset + jnp.arange(T))
        x = Dropout(self.dropout, name="embed_dropout")(x, train=train, rate=dropout_rate)
        mask = None if decode else causal_mask(T)  # (1, 1, T, T); the cache applies its own causal mask
        rope = self.rope_theta if self.positions == "rope" else None
        for i in range(self.num_layers):
            x = Block(self.num_heads, self.num_kv_heads, self.mlp_dim, self.activation, self.use_bias, self.norm,
                      self.norm_eps, rope, self.dropout, self.init_std, name=f"block_{i}")(
                x, mask, decode=decode, train=train, dropout_rate=dropout_rate)  # (B, T, D)
        norm_f = nn.LayerNorm(epsilon=self.norm_eps, name="norm_f") if self.norm == "layer" else RMSNorm(
            epsilon=self.norm_eps, name="norm_f")
        x = norm_f(x)  # (B, T, D)
        if self.tie_embeddings:
            return embed.attend(x)  # (B, T, V): x @ embedding.T
        return nn.Dense(self.vocab_size, use_bias=False, kernel_init=std, name="head")(x)  # (B, T, V)

    # -- decoding ------------------------------------------------------------------------------------------------------
    def initial_state(self, batch_size: int, max_length: int | None = None) -> State:
        """An empty decoding state for ``batch_size`` sequences of up to ``max_length`` tokens (default: the
        context length). Beyond ``context_length`` the state also keeps a sliding window of tokens (see the module
        docstring). Zeros, built from shapes only (nothing is run)."""
        total = self.context_length if max_length is None else int(max_length)
        if total < 1:
            raise ModelInputError(f"DecoderLM.initial_state: max_length must be positive, got {max_length}")
        length = min(total, self.context_length)
        free = self.clone(parent=None)
        shapes = jax.eval_shape(lambda: free.init(jax.random.key(0), jnp.zeros((int(batch_size), length), jnp.int32),
                                                  decode=True)["cache"])
        state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        if total > self.context_length:
            state = {"cache": state, "window": jnp.zeros((int(batch_size), length), jnp.int32),
                     "length": jnp.zeros((), jnp.int32)}
        return state

    def step(self, tokens: jax.Array, state: State) -> tuple[jax.Array, State]:
        """Continue from ``state`` over ``tokens`` (B, T) int. Returns ``(logits (B, T, V), new_state)``."""
        params = {"params": self.variables["params"]}
        free = self.clone(parent=None)

        def cached(cache):
            logits, updated = free.apply({**params, "cache": cache}, tokens, decode=True, mutable=["cache"])
            return logits, updated["cache"]

        if "window" not in state:
            return cached(state)
        # Sliding window: the cache while it has room, then a full forward over the latest context_length tokens.
        T, C = tokens.shape[1], state["window"].shape[1]
        window = jnp.concatenate([state["window"], tokens.astype(jnp.int32)], axis=1)[:, -C:]  # (B, C)

        def recompute(cache):
            return free.apply(params, window)[:, -T:].astype(jnp.float32), cache  # (B, T, V)

        def cached32(cache):
            logits, cache = cached(cache)
            return logits.astype(jnp.float32), cache

        logits, cache = lax.cond(state["length"] + T <= C, cached32, recompute, state["cache"])
        return logits, {"cache": cache, "window": window, "length": state["length"] + T}


# ---------------------------------------------------------------------------------------------------------------------
# GPT-2 family
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPTConfig(ModelConfig):
    """GPT-2-style model; ``num_classes`` is the vocabulary size (the data set's by default)."""

    name: str = "gpt"
    # Positions with a learned embedding: the longest sequence the model reads.
    context_length: int = 256
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    # MLP hidden width = mlp_ratio * d_model.
    mlp_ratio: int = 4
    # Embedding, attention-weight and residual dropout (GPT-2: 0.1); the step may override it with a traced array.
    dropout: float = 0.0


VARIANTS: dict[str, type[GPTConfig]] = {
    "gpt2": config_variant(GPTConfig, "gpt2", num_classes=50257, context_length=1024, d_model=768, num_layers=12,
                           num_heads=12, dropout=0.1),
}


def _check_positive(cfg, *keys: str) -> None:
    for key in keys:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"model.{key}: expected a positive number, got {getattr(cfg, key)}")
    if cfg.d_model % cfg.num_heads:
        raise ConfigError(f"model.d_model={cfg.d_model} is not divisible by model.num_heads={cfg.num_heads}")


def build_gpt(cfg: GPTConfig, num_classes: int) -> DecoderLM:
    _check_positive(cfg, "context_length", "d_model", "num_layers", "num_heads", "mlp_ratio")
    return DecoderLM(vocab_size=num_classes, context_length=cfg.context_length, d_model=cfg.d_model,
                     num_layers=cfg.num_layers, num_heads=cfg.num_heads, mlp_dim=cfg.mlp_ratio * cfg.d_model,
                     activation="gelu_new", positions="learned", norm="layer", norm_eps=LAYER_NORM_EPS["gpt2"],
                     use_bias=True, tie_embeddings=True, dropout=cfg.dropout)


__all__ = ["Block", "DecoderLM", "GPTConfig", "VARIANTS", "build_gpt"]
