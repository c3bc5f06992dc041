r"""T5 (Raffel et al. 2020): an encoder–decoder Transformer with relative-position biases, as Hugging Face's
``T5ForConditionalGeneration`` (v1.0; v1.1's gated-GELU and untied head are switches).

::

    enc:  x = drop(shared[source])
          per layer:  x = x + drop(SelfAttn(rms(x), mask=source_mask, bias=rel_bidirectional))
                      x = x + drop(wo(drop(relu(wi(rms(x))))))
          encoded = drop(rms_f(x))
    dec:  y = drop(shared[target_in])                                  # target shifted right, start token 0 (= pad)
          per layer:  y = y + drop(SelfAttn(rms(y), causal, bias=rel_causal))
                      y = y + drop(CrossAttn(rms(y), encoded, mask=source_mask))
                      y = y + drop(FFN(rms(y)))
          logits = (d_model^-0.5 · drop(rms_f(y))) @ shared.T        # tied head (v1.0); a separate lm_head when untied

Attention has no biases and **no 1/sqrt(d) scaling**; RMS norm (``T5LayerNorm``, eps 1e-6) has no bias and no mean
subtraction. The relative bias of each stack (32 buckets up to distance 128, bidirectional in the encoder, causal in
the decoder) is one table, computed once per forward and added in every layer — HF keeps it in block 0.
(HF also initialises q with an extra ``(d_kv)^-1/2`` factor; here q/k/v/o share LeCun-normal init.)

Inputs: ``source`` (B, S) int, optional ``source_mask`` (B, S) (1 real, 0 padding), ``target_in`` (B, T) int —
as keyword arrays, a dict, or a lone ``source`` (then ``target_in`` is the start token: the first target's logits).
Methods: :meth:`T5.encode`, :meth:`T5.decode`, and cached decoding in the ``initial_state``/``step`` form::

    state, _ = model.apply(variables, {"source": src, "max_length": L}, method="initial_state")
    (logits, state), _ = model.apply(variables, {"tokens": tok, "state": state}, method="step")
    tokens = greedy_decode(model, variables, src, max_len=20)
    tokens, score = jaxdl.generate.beam_search(model, variables, src, None, beam_size=4, max_len=20, eos_id=1)

The state holds the decoder's self-attention cache (keys/values of ``L`` positions and the position counter), the
encoder output and the source mask; each step's relative bias is that of its positions against the cache's.

Variants: ``t5`` (tiny, trainable on a CPU) and ``t5_small`` (t5-small's shape: 60,506,624 parameters, tied).
Hugging Face state dicts convert with :func:`convert_t5_state_dict` (registered for model names starting ``t5``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from jaxdl.config import ModelConfig, config_variant
from jaxdl.errors import ConfigError, ModelInputError
from jaxdl.nn import Dropout, FeedForward, MultiHeadAttention, RMSNorm, T5RelativeBias, causal_mask, padding_mask
from jaxdl.nn import remat as _remat
from jaxdl.nn.transformer import RMS_NORM_EPS

# HF feed_forward_proj -> FeedForward activation
FEED_FORWARD = {"relu": "relu", "gated-gelu": "geglu_tanh"}

# {"cache": the decoder's self-attention caches + position, "encoded": (B, S, D), "source_mask": (B, S) int}
State = dict[str, Any]


class T5Block(nn.Module):
    """One pre-norm T5 block: self-attention, cross-attention (decoder only), feed-forward, each residual."""

    num_heads: int
    d_kv: int
    d_ff: int
    activation: str  # FeedForward's: "relu" | "geglu_tanh"
    dropout: float
    eps: float
    cross: bool

    @nn.compact
    def __call__(self, x, mask, bias, encoded=None, encoded_mask=None, *, decode=False, train=False,
                 dropout_rate=None):
        attn = partial(MultiHeadAttention, self.num_heads, head_dim=self.d_kv, use_bias=False, scale=1.0,
                       dropout=self.dropout)
        drop = lambda name, h: Dropout(self.dropout, name=name)(h, train=train, rate=dropout_rate)  # noqa: E731
        h = RMSNorm(self.eps, name="self_attention_norm")(x)
        h = attn(name="self_attention")(h, mask=mask, bias=bias, decode=decode, train=train,
                                        dropout_rate=dropout_rate)  # (B, T, D)
        x = x + drop("self_attention_dropout", h)
        if self.cross:
            h = RMSNorm(self.eps, name="cross_attention_norm")(x)
            h = attn(name="cross_attention")(h, encoded, mask=encoded_mask, train=train,
                                             dropout_rate=dropout_rate)  # (B, T, D)
            x = x + drop("cross_attention_dropout", h)
        h = RMSNorm(self.eps, name="ffn_norm")(x)
        h = FeedForward(self.d_ff, self.activation, use_bias=False, inner_dropout=self.dropout, name="ffn")(
            h, train=train, inner_dropout_rate=dropout_rate)  # (B, T, D)
        return x + drop("ffn_dropout", h)


class T5Stack(nn.Module):
    """The encoder (``decoder=False``) or the decoder stack: embedded inputs (B, T, D) -> hidden states (B, T, D)."""

    num_layers: int
    num_heads: int
    d_kv: int
    d_ff: int
    activation: str
    dropout: float
    eps: float
    num_buckets: int
    max_distance: int
    decoder: bool
    # recompute each block's activations in the backward pass (not while decoding); parameter names are unchanged
    remat: bool = False

    @nn.compact
    def __call__(self, x, mask=None, encoded=None, encoded_mask=None, *, decode=False, train=False,
                 dropout_rate=None):
        T, D = x.shape[1], x.shape[2]
        rel = T5RelativeBias(self.num_heads, self.num_buckets, self.max_distance, bidirectional=not self.decoder,
                             embedding_init=nn.initializers.normal(D ** -0.5), name="relative_bias")
        if decode and not self.decoder:
            raise ModelInputError("T5 encoder: decode=True is for the decoder stack")
        if decode and not self.is_initializing():
            if not self.has_variable("cache", "position"):
                raise ModelInputError("T5: cached decoding needs the 'cache' collection: create it with "
                                      "method='initial_state' and apply with mutable=['cache'] (or use step)")
            position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
            L = self.variables["cache"]["block_0"]["self_attention"]["cached_key"].shape[1]
            idx = position.value
            position.value = idx + T
            bias = rel(idx + jnp.arange(T), L)  # (1, H, T, L): new queries against every cache slot
            self_mask = mask  # the cache adds its own causal mask over the filled slots
        else:
            if decode:  # init: size the position counter with the cache
                self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
            bias = rel(T, T)  # (1, H, T, T)
            self_mask = mask if not self.decoder else (
                causal_mask(T) if mask is None else mask & causal_mask(T))  # (B|1, 1, T, T)
        x = Dropout(self.dropout, name="embed_dropout")(x, train=train, rate=dropout_rate)
        for i in range(self.num_layers):
            block = T5Block(self.num_heads, self.d_kv, self.d_ff, self.activation, self.dropout, self.eps,
                            cross=self.decoder, name=f"block_{i}")
            x = _remat.call(self.remat and not decode, block, x, self_mask, bias, encoded, encoded_mask,
                            decode=decode, train=train, dropout_rate=dropout_rate)  # (B, T, D)
        x = RMSNorm(self.eps, name="final_norm")(x)  # (B, T, D)
        return Dropout(self.dropout, name="final_dropout")(x, train=train, rate=dropout_rate)


class T5(nn.Module):
    """T5 encoder–decoder (see the module docstring). Parameter names (HF → here): ``shared`` → ``shared/embedding``;
    ``{encoder,decoder}.block.{i}`` → ``{encoder,decoder}/block_{i}`` with ``layer.0.SelfAttention.{q,k,v,o}`` →
    ``self_attention/{query,key,value,out}``, ``layer.0.layer_norm`` → ``self_attention_norm``, decoder
    ``layer.1.EncDecAttention`` / ``layer.1.layer_norm`` → ``cross_attention`` / ``cross_attention_norm``, the FFN
    layer's ``DenseReluDense.{wi,wo}`` (``wi_0``/``wi_1``/``wo``) → ``ffn/{fc_in,fc_out}`` (``ffn/{gate,up,down}``)
    and its ``layer_norm`` → ``ffn_norm``; block 0's ``relative_attention_bias`` → ``relative_bias/
    relative_attention_bias``; ``final_layer_norm`` → ``final_norm``; ``lm_head`` (untied only) → ``lm_head``.
    """

    vocab_size: int = 64
    d_model: int = 64
    d_kv: int = 16
    d_ff: int = 128
    num_layers: int = 2
    num_decoder_layers: int | None = None  # None: num_layers
    num_heads: int = 4
    num_buckets: int = 32
    max_distance: int = 128
    feed_forward: str = "relu"  # HF feed_forward_proj: "relu" (v1.0) | "gated-gelu" (v1.1)
    tie_embeddings: bool = True
    dropout: float = 0.0
    eps: float = RMS_NORM_EPS["t5"]
    model_name: str = "t5"  # registry name, for error messages
    # recompute each block's activations in the backward pass (model.remat=blocks); parameter names are unchanged
    remat: bool = False

    def setup(self):
        if self.feed_forward not in FEED_FORWARD:
            raise ConfigError(f"model.feed_forward: unknown {self.feed_forward!r}; expected one of "
                              f"{', '.join(FEED_FORWARD)}")
        self.shared = nn.Embed(self.vocab_size, self.d_model, embedding_init=nn.initializers.normal(1.0))
        stack = partial(T5Stack, num_heads=self.num_heads, d_kv=self.d_kv, d_ff=self.d_ff,
                        activation=FEED_FORWARD[self.feed_forward], dropout=self.dropout, eps=self.eps,
                        num_buckets=self.num_buckets, max_distance=self.max_distance, remat=self.remat)
        self.encoder = stack(self.num_layers, decoder=False)
        self.decoder = stack(self.num_decoder_layers or self.num_layers, decoder=True)
        if not self.tie_embeddings:
            self.lm_head = nn.Dense(self.vocab_size, use_bias=False, kernel_init=nn.initializers.normal(1.0))

    def _tokens(self, name: str, x) -> None:
        if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
            raise ModelInputError(f"model {self.model_name!r} reads {name} token ids (B, T) int, got shape "
                                  f"{tuple(x.shape)} {x.dtype}")

    def _mask(self, source, source_mask):
        if source_mask is None:
            return None
        if tuple(source_mask.shape) != tuple(source.shape):
            raise ModelInputError(f"model {self.model_name!r}: source_mask of shape {tuple(source_mask.shape)} does "
                                  f"not match source of shape {tuple(source.shape)}")
        return padding_mask(source_mask)  # (B, 1, 1, S)

    def __call__(self, source, target_in=None, source_mask=None, *, train: bool = False,
                 dropout_rate: jax.Array | float | None = None) -> jax.Array:
        """Teacher-forced logits. Args: source (B, S) int, or a dict with ``source``, ``target_in`` and optionally
        ``source_mask``; target_in (B, T) int (targets shifted right, start token 0) or None (only the start
        token); source_mask (B, S) 1/0 or None; train/dropout_rate: dropout (``"dropout"`` stream, rate may be
        traced). Returns logits (B, T, vocab_size): position t scores target token t."""
        if isinstance(source, dict):
            unknown = set(source) - {"source", "target_in", "source_mask"}
            if unknown or "source" not in source:
                raise ModelInputError(f"model {self.model_name!r} reads a dict with 'source', 'target_in' and "
                                      f"optionally 'source_mask', got keys {sorted(source)}")
            source, target_in, source_mask = source["source"], source.get("target_in"), source.get("source_mask")
        self._tokens("source", source)
        if target_in is None:
            target_in = jnp.zeros((source.shape[0], 1), jnp.int32)
        self._tokens("target_in", target_in)
        if target_in.shape[0] != source.shape[0]:
            raise ModelInputError(f"model {self.model_name!r}: target_in has batch {target_in.shape[0]} but "
                                  f"source has {source.shape[0]}")
        encoded = self.encode(source, source_mask, train=train, dropout_rate=dropout_rate)
        return self.decode(target_in, encoded, source_mask, train=train, dropout_rate=dropout_rate)

    def encode(self, source, source_mask=None, *, train: bool = False, dropout_rate=None) -> jax.Array:
        """Encoder hidden states (B, S, d_model); padded positions' outputs are meaningless but finite."""
        self._tokens("source", source)
        return self.encoder(self.shared(source), self._mask(source, source_mask), train=train,
                            dropout_rate=dropout_rate)

    def decode(self, target_in, encoded, source_mask=None, *, decode: bool = False, train: bool = False,
               dropout_rate=None) -> jax.Array:
        """Decoder logits (B, T, V) for ``target_in`` (B, T) attending to ``encoded`` (B, S, D). ``decode=True``
        continues from the ``"cache"`` collection (``mutable=["cache"]``) — usually through :meth:`step`."""
        self._tokens("target_in", target_in)
        if encoded.ndim != 3 or encoded.shape[0] != target_in.shape[0]:
            raise ModelInputError(f"model {self.model_name!r}: encoded must be (B, S, d_model) with the batch of "
                                  f"target_in {tuple(target_in.shape)}, got {tuple(encoded.shape)}")
        enc_mask = None if source_mask is None else self._mask(encoded[..., 0], source_mask)
        y = self.decoder(self.shared(target_in), None, encoded, enc_mask, decode=decode, train=train,
                         dropout_rate=dropout_rate)  # (B, T, D)
        if self.tie_embeddings:
            return self.shared.attend(y * self.d_model ** -0.5)  # (B, T, V): T5 v1.0 rescales before the tied head
        return self.lm_head(y)  # (B, T, V)

    # -- decoding ------------------------------------------------------------------------------------------------------
    def initial_state(self, source, source_mask=None, max_length: int = 64) -> State:
        """Encode ``source`` (B, S) and make an empty decoder cache for ``max_length`` target positions."""
        self._tokens("source", source)
        if int(max_length) < 1:
            raise ModelInputError(f"T5.initial_state: max_length must be positive, got {max_length}")
        B = source.shape[0]
        free = self.clone(parent=None)
        shapes = jax.eval_shape(lambda: free.init(
            jax.random.key(0), jnp.zeros((B, int(max_length)), jnp.int32), jnp.zeros((B, 1, self.d_model)),
            decode=True, method="decode")["cache"])
        mask = jnp.ones(source.shape, jnp.int32) if source_mask is None else jnp.asarray(source_mask, jnp.int32)
        return {"cache": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                "encoded": self.encode(source, source_mask), "source_mask": mask}

    def step(self, tokens, state: State) -> tuple[jax.Array, State]:
        """Feed ``tokens`` (B, T) to the decoder after the ones already in ``state``. Returns (logits (B, T, V),
        new state); running past the cache's ``max_length`` gives NaN logits."""
        free = self.clone(parent=None)
        logits, updated = free.apply({"params": self.variables["params"], "cache": state["cache"]}, tokens,
                                     state["encoded"], state["source_mask"], decode=True, mutable=["cache"],
                                     method="decode")
        return logits, {**state, "cache": updated["cache"]}


@partial(jax.jit, static_argnames=("module", "max_len", "eos_id"))
def _greedy(module, variables, source, source_mask, max_len, eos_id):
    B = source.shape[0]
    state = module.apply(variables, source, source_mask, max_length=max_len, method="initial_state")

    def body(carry, _):
        state, token, done = carry
        logits, state = module.apply(variables, token[:, None], state, method="step")  # (B, 1, V)
        nxt = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)  # (B,)
        nxt = jnp.where(done, 0, nxt)  # after end of sequence: padding
        return (state, nxt, done | (nxt == eos_id) if eos_id is not None else done), nxt

    start = (state, jnp.zeros((B,), jnp.int32), jnp.zeros((B,), bool))
    _, tokens = lax.scan(body, start, None, length=max_len)  # (max_len, B)
    return tokens.T


def greedy_decode(model, variables, source, max_len: int, source_mask=None, eos_id: int | None = None) -> jax.Array:
    """Greedy decoding with the cache: ``max_len`` target tokens (B, max_len) int32 after the start token 0; with
    ``eos_id`` (T5: 1), tokens after the first end of sequence are padding (0). ``model``: a jaxdl Model or a T5.
    Beam search with a length penalty: :func:`jaxdl.generate.beam_search` (``beam_size=1``, alpha 0: this)."""
    module = getattr(model, "module", model)
    if not isinstance(module, T5):
        raise ModelInputError(f"greedy_decode needs a T5 model, got {type(module).__name__}")
    source = jnp.asarray(source)
    if source.ndim == 1:
        source = source[None]
    return _greedy(module, variables, source.astype(jnp.int32), source_mask, int(max_len), eos_id)


def shift_right(targets: jax.Array, start: int = 0) -> jax.Array:
    """Teacher-forcing decoder inputs: ``[start, targets[:, :-1]]`` (T5's ``_shift_right``; start = pad = 0)."""
    return jnp.concatenate([jnp.full((targets.shape[0], 1), start, targets.dtype), targets[:, :-1]], axis=1)


# ---------------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class T5Config(ModelConfig):
    """T5 encoder–decoder; ``num_classes`` is the (shared source/target) vocabulary size."""

    name: str = "t5"
    d_model: int = 64
    # Per-head width (HF d_kv); heads * d_kv need not equal d_model.
    d_kv: int = 16
    d_ff: int = 128
    # Encoder layers; the decoder has num_decoder_layers (0: as many as the encoder).
    num_layers: int = 2
    num_decoder_layers: int = 0
    num_heads: int = 4
    relative_buckets: int = 32
    relative_max_distance: int = 128
    # relu (T5 v1.0) | gated-gelu (v1.1)
    feed_forward: str = "relu"
    # Tied input/output embeddings with the d_model^-0.5 rescale (v1.0); False adds an lm_head (v1.1).
    tie_embeddings: bool = True
    # Embedding, attention-weight, residual and FFN dropout (T5: 0.1); the step may override it with a traced array.
    dropout: float = 0.0


VARIANTS: dict[str, type[T5Config]] = {
    "t5_small": config_variant(T5Config, "t5_small", num_classes=32128, d_model=512, d_kv=64, d_ff=2048,
                               num_layers=6, num_heads=8, dropout=0.1),
}


def build_t5(cfg: T5Config, num_classes: int) -> T5:
    for key in ("d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_buckets", "relative_max_distance"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"model.{key}: expected a positive number, got {getattr(cfg, key)}")
    if cfg.num_decoder_layers < 0:
        raise ConfigError(f"model.num_decoder_layers: expected >= 0 (0: as the encoder), got {cfg.num_decoder_layers}")
    if cfg.feed_forward not in FEED_FORWARD:
        raise ConfigError(f"model.feed_forward: unknown {cfg.feed_forward!r}; expected one of "
                          f"{', '.join(FEED_FORWARD)}")
    return T5(vocab_size=num_classes, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff, num_layers=cfg.num_layers,
              num_decoder_layers=cfg.num_decoder_layers or None, num_heads=cfg.num_heads,
              num_buckets=cfg.relative_buckets, max_distance=cfg.relative_max_distance,
              feed_forward=cfg.feed_forward, tie_embeddings=cfg.tie_embeddings, dropout=cfg.dropout,
              model_name=cfg.name, remat=cfg.remat == "blocks")


# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face state dicts
# ---------------------------------------------------------------------------------------------------------------------

SEP = "/"  # jaxdl.convert's path separator
# model-name prefixes whose state dicts convert_t5_state_dict reads; registered by the package root (a model module
# importing jaxdl.convert would be an import cycle).
CONVERTER_PREFIXES = ("t5",)
_BLOCK_KEY = re.compile(r"^(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)\.weight$")
_ATTN = {"q": "query", "k": "key", "v": "value", "o": "out"}
_FFN = {"wi": "fc_in", "wo": "fc_out", "wi_0": "gate", "wi_1": "up"}
_TIED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")


def _t5_path(key: str, value: np.ndarray, gated: bool) -> tuple[str, np.ndarray] | None:
    """``(params path, value)`` for an HF T5 key, or None if it has no place here."""
    if key in ("encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight"):
        return f"{key.split('.')[0]}/final_norm/scale", value
    m = _BLOCK_KEY.match(key)
    if m is None:
        return None
    stack, block, layer, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    ffn_layer = 2 if stack == "decoder" else 1
    kind = {0: "self_attention", 1: "cross_attention" if stack == "decoder" else "ffn", 2: "ffn"}.get(layer)
    if kind is None or (layer == 2 and stack == "encoder"):
        return None
    prefix = f"{stack}/block_{block}"
    if rest == "layer_norm":
        return f"{prefix}/{kind}_norm/scale", value
    module = {"self_attention": "SelfAttention", "cross_attention": "EncDecAttention"}.get(kind)
    if module is not None and rest.startswith(module + "."):
        leaf = rest[len(module) + 1:]
        if leaf == "relative_attention_bias" and kind == "self_attention" and block == 0:
            return f"{stack}/relative_bias/relative_attention_bias/embedding", value  # (buckets, H) as is
        return (f"{prefix}/{kind}/{_ATTN[leaf]}/kernel", value.T) if leaf in _ATTN else None
    if layer == ffn_layer and rest.startswith("DenseReluDense."):
        leaf = rest[len("DenseReluDense."):]
        name = "down" if leaf == "wo" and gated else _FFN.get(leaf)
        return None if name is None else (f"{prefix}/ffn/{name}/kernel", value.T)  # (out, in) -> (in, out)
    return None


def convert_t5_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Variables ``{"params": …}`` for :class:`T5` from a Hugging Face ``T5ForConditionalGeneration`` (or
    ``T5Model``) state dict. Linear weights are transposed; ``shared.weight`` and the relative-bias tables are kept
    as they are. ``encoder.embed_tokens``/``decoder.embed_tokens`` and ``lm_head`` are dropped when they equal
    ``shared`` (tied); an ``lm_head`` that differs becomes ``lm_head/kernel`` (an untied v1.1 head). Entries with
    no place in the model go under ``unmapped/<key>`` so :func:`jaxdl.convert.check_against` lists them."""
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    shared = sd.get("shared.weight")
    gated = any(".DenseReluDense.wi_0." in k for k in sd)
    flat: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        if key == "shared.weight":
            flat[f"params{SEP}shared/embedding"] = value
            continue
        if key in _TIED:
            tied = shared is not None and value.shape == shared.shape and np.array_equal(value, shared)
            if not tied and key == "lm_head.weight":
                flat[f"params{SEP}lm_head/kernel"] = value.T
            elif not tied:
                flat[f"unmapped{SEP}{key}"] = value
            continue
        mapped = _t5_path(key, value, gated)
        if mapped is None:
            flat[f"unmapped{SEP}{key}"] = value
        else:
            flat[f"params{SEP}{mapped[0]}"] = mapped[1]
    return traverse_util.unflatten_dict(flat, sep=SEP)


__all__ = ["CONVERTER_PREFIXES", "FEED_FORWARD", "T5", "T5Block", "T5Config", "T5Stack", "VARIANTS", "build_t5",
           "convert_t5_state_dict", "greedy_decode", "shift_right"]
