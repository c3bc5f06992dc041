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
Hugging Face GPT-2 state dicts convert with :func:`convert_gpt2_state_dict` (registered with ``jaxdl.convert`` for
model names starting with ``gpt``: ``jaxdl convert model.safetensors gpt2.npz --model gpt2``).

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

import re
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from jaxdl.config import ModelConfig, config_variant
from jaxdl.errors import CheckpointError, ConfigError, ModelInputError
from jaxdl.nn import Dropout
from jaxdl.nn import remat as _remat
from jaxdl.nn.attention import MultiHeadAttention, causal_mask, combine_masks, segment_mask
from jaxdl.nn.positions import LearnedPositions
from jaxdl.nn.transformer import LAYER_NORM_EPS, FeedForward, RMSNorm

# The cache pytree of every attention layer plus the model's position; with the sliding window also
# {"window": (B, C) int32, "length": int32 scalar}.
State = Any


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """Positions that restart at each segment of packed sequences: ``t - first(t)``, where ``first(t)`` is the index
    of the first token of t's segment (segments are contiguous runs along the last axis).

    Args: segment_ids (B, T) ints. Returns: (B, T) int32.
    """
    T = segment_ids.shape[-1]
    idx = jnp.arange(T, dtype=jnp.int32)  # (T,)
    new = jnp.concatenate([jnp.ones_like(segment_ids[..., :1], bool),
                           segment_ids[..., 1:] != segment_ids[..., :-1]], axis=-1)  # (B, T): a segment starts here
    first = lax.cummax(jnp.where(new, idx, 0), axis=segment_ids.ndim - 1)  # (B, T): start of t's segment
    return idx - first


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
    def __call__(self, x, mask, *, decode: bool, train: bool, dropout_rate, positions=None):
        norm = (lambda name: nn.LayerNorm(epsilon=self.norm_eps, name=name)) if self.norm == "layer" else (
            lambda name: RMSNorm(epsilon=self.norm_eps, name=name))
        attn = MultiHeadAttention(num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, use_bias=self.use_bias,
                                  dropout=self.dropout, rope_theta=self.rope_theta,
                                  kernel_init=nn.initializers.normal(self.init_std), name="attn")
        h = attn(norm("norm_1")(x), mask=mask, positions=positions, decode=decode, train=train,
                 dropout_rate=dropout_rate)  # (B, T, D)
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
    # recompute each block's activations in the backward pass (model.remat=blocks; not while decoding, which is never
    # differentiated); parameter names are unchanged
    remat: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array, *, segment_ids: jax.Array | None = None, train: bool = False,
                 dropout_rate: jax.Array | float | None = None, decode: bool = False) -> jax.Array:
        """Args:
          tokens: (B, T) int token ids.
          segment_ids: optional (B, T) int document index of each token of packed documents (each document a
            contiguous run). A token then attends only to earlier tokens of its own document, and positions
            (learned or RoPE) restart at each document: ``position[t] = t - first(t)``, ``first(t)`` the index of
            the first token of t's document. Ignored when decoding (the cache holds one sequence).
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
        if decode:
            segment_ids = None
        if segment_ids is not None and tuple(segment_ids.shape) != (B, T):
            raise ModelInputError(f"DecoderLM: segment_ids must have the tokens' shape {(B, T)}, got shape "
                                  f"{tuple(segment_ids.shape)}")
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
        pos = offset + jnp.arange(T)  # (T,)
        if segment_ids is not None:
            pos = segment_positions(segment_ids)  # (B, T): restart at each document
        if self.positions == "learned":
            x = x + LearnedPositions(self.context_length, self.d_model, name="positions")(pos)
        x = Dropout(self.dropout, name="embed_dropout")(x, train=train, rate=dropout_rate)
        # (1, 1, T, T), or (B, 1, T, T) with documents; the cache applies its own causal mask
        mask = None if decode else combine_masks(causal_mask(T),
                                                 None if segment_ids is None else segment_mask(segment_ids))
        rope = self.rope_theta if self.positions == "rope" else None
        for i in range(self.num_layers):
            block = Block(self.num_heads, self.num_kv_heads, self.mlp_dim, self.activation, self.use_bias,
                          self.norm, self.norm_eps, rope, self.dropout, self.init_std, name=f"block_{i}")
            x = _remat.call(self.remat and not decode, block, x, mask, decode=decode, train=train,
                            dropout_rate=dropout_rate, positions=None if segment_ids is None else pos)  # (B, T, D)
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
                     use_bias=True, tie_embeddings=True, dropout=cfg.dropout, remat=cfg.remat == "blocks")



# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face GPT-2 state dicts
# ---------------------------------------------------------------------------------------------------------------------

# model-name prefixes whose state dicts convert_gpt2_state_dict reads; registered by the package root (jaxdl.convert
# imports jaxdl.models, so a model module importing convert would be an import cycle).
CONVERTER_PREFIXES = ("gpt",)
_HF_SEP = "/"  # jaxdl.convert's path separator
_HF_BLOCK = re.compile(r"^h\.(\d+)\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)$")
# GPT2Attention's causal-mask buffers (``bias`` (1, 1, C, C) bool, ``masked_bias`` a scalar): not parameters
_HF_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
_HF_MODULES = {"ln_1": "norm_1", "ln_2": "norm_2", "attn.c_proj": "attn/out", "mlp.c_fc": "mlp/fc_in",
               "mlp.c_proj": "mlp/fc_out"}
_HF_TOP = {"wte.weight": "token_embedding/embedding", "wpe.weight": "positions/position_embedding/embedding",
           "ln_f.weight": "norm_f/scale", "ln_f.bias": "norm_f/bias"}


def _gpt2_entries(key: str, name: str, value: np.ndarray) -> list[tuple[str, np.ndarray]] | None:
    """``[(params path, value), …]`` for one HF GPT-2 entry ``name`` (without ``transformer.``), or None if it has
    no place in :class:`DecoderLM`. Conv1D weights are already ``(in, out)``: kept as they are."""
    if name in _HF_TOP:
        return [(_HF_TOP[name], value)]
    m = _HF_BLOCK.match(name)
    if m is None:
        return None
    block, module, leaf = f"block_{m.group(1)}", m.group(2), m.group(3)
    if module == "attn.c_attn":  # fused projection: [q | k | v] along the output axis
        if value.ndim not in (1, 2) or value.shape[-1] % 3:
            raise CheckpointError(f"GPT-2 state dict entry {key!r} has shape {tuple(value.shape)}; expected a "
                                  "fused q|k|v projection, (d_model, 3·d_model) weight or (3·d_model,) bias")
        parts = np.split(value, 3, axis=-1)  # 3 × (D, D) or 3 × (D,)
        suffix = "kernel" if leaf == "weight" else "bias"
        return [(f"{block}/attn/{proj}/{suffix}", part) for proj, part in zip(("query", "key", "value"), parts)]
    if module in ("ln_1", "ln_2"):
        return [(f"{block}/{_HF_MODULES[module]}/{'scale' if leaf == 'weight' else 'bias'}", value)]
    return [(f"{block}/{_HF_MODULES[module]}/{'kernel' if leaf == 'weight' else 'bias'}", value)]


def convert_gpt2_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Variables ``{"params": …}`` for the GPT-2 :class:`DecoderLM` (``gpt``, ``gpt2``) from a Hugging Face
    ``GPT2LMHeadModel`` (keys ``transformer.…`` plus ``lm_head.weight``) or ``GPT2Model`` (bare ``wte.weight``,
    ``h.0.…``) state dict of numpy arrays or torch tensors.

    Mapping (HF → here): ``wte`` → ``token_embedding``, ``wpe`` → ``positions/position_embedding``,
    ``h.{i}.ln_1``/``ln_2`` → ``block_{i}/norm_1``/``norm_2`` (weight → scale), ``h.{i}.attn.c_attn`` (Conv1D,
    weight ``(D, 3D)``) split along its output axis into ``attn/query``, ``attn/key``, ``attn/value``,
    ``attn.c_proj`` → ``attn/out``, ``mlp.c_fc``/``mlp.c_proj`` → ``mlp/fc_in``/``mlp/fc_out``, ``ln_f`` →
    ``norm_f``. Conv1D weights are stored ``(in, out)`` like Flax kernels, so nothing is transposed. The attention
    mask buffers (``attn.bias``, ``attn.masked_bias``) are dropped; ``lm_head.weight`` is dropped when it equals
    ``wte`` (GPT-2 ties them) and listed as unmapped otherwise. Entries with no place go under
    ``unmapped/<key>`` so :func:`jaxdl.convert.check_against` lists them by name.

    Raises CheckpointError naming the entry when a fused ``c_attn`` tensor cannot be split in three."""
    sd = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in state_dict.items()}
    wte = next((v for k, v in sd.items() if k.removeprefix("transformer.") == "wte.weight"), None)
    flat: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        name = key.removeprefix("transformer.")
        if _HF_BUFFER.match(name):
            continue
        if name == "lm_head.weight":
            if wte is None or value.shape != wte.shape or not np.array_equal(value, wte):
                flat[f"unmapped{_HF_SEP}{key}"] = value  # an untied head: this model ties it to wte
            continue
        mapped = _gpt2_entries(key, name, value)
        if mapped is None:
            flat[f"unmapped{_HF_SEP}{key}"] = value
            continue
        for path, array in mapped:
            flat[f"params{_HF_SEP}{path}"] = array
    return traverse_util.unflatten_dict(flat, sep=_HF_SEP)


def config_from_hf(hf: dict[str, Any], name: str = "gpt", **fields: Any) -> GPTConfig:
    """A :class:`GPTConfig` from a Hugging Face GPT-2 ``config.json`` dict; ``fields`` override.

    Raises ConfigError for what this model does not implement (another activation, an MLP width that is not a
    multiple of ``n_embd``)."""
    act = hf.get("activation_function", "gelu_new")
    d = hf["n_embd"]
    inner = hf.get("n_inner") or 4 * d
    if act != "gelu_new" or inner % d:
        raise ConfigError(f"config.json: activation_function={act!r}, n_inner={inner}; this GPT-2 implements "
                          f"gelu_new with an MLP width that is a multiple of n_embd={d}")
    values = {"num_classes": hf["vocab_size"], "context_length": hf.get("n_positions", 1024), "d_model": d,
              "num_layers": hf["n_layer"], "num_heads": hf["n_head"], "mlp_ratio": inner // d,
              "dropout": hf.get("resid_pdrop", 0.1)}
    cls = VARIANTS.get(name, GPTConfig)
    return cls(name=name, **{**values, **fields})


__all__ = ["Block", "CONVERTER_PREFIXES", "DecoderLM", "GPTConfig", "VARIANTS", "build_gpt", "config_from_hf",
           "convert_gpt2_state_dict"]
