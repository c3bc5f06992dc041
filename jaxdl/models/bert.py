r"""BERT (Devlin et al. 2019): a post-LN Transformer encoder with learned positions and token types.

::

    x = LayerNorm(word[tokens] + position[arange(T)] + token_type[token_types]);  x = dropout(x)
    per layer:  x = LayerNorm(x + dropout(SelfAttention(x, mask)))
                x = LayerNorm(x + dropout(fc_out(gelu(fc_in(x)))))          # exact erf GELU, LayerNorm eps 1e-12

Inputs: ``tokens`` (B, T) int — alone, or in a dict with optional ``token_types`` (B, T) int (segment A/B, default
0) and ``token_mask`` (B, T) (1 at real tokens, 0 at padding; default all real). Padded keys are masked out of
every attention, so real tokens' hidden states do not depend on the padding.

Heads (``head``): ``none`` — hidden states (B, T, d) (sentence embeddings: :func:`mean_pool`); ``mlm`` — masked-LM
logits (B, T, V) from a transform (dense + GELU + LayerNorm) and a decoder tied to the word embeddings plus a bias;
``classify`` — logits (B, num_classes) from the pooler (dense + tanh on ``[CLS]``), dropout and a linear layer;
``token_classify`` — per-token logits (B, T, num_classes). ``pooling`` chooses what ``classify`` reads: ``cls``
(BERT's pooler, dense + tanh on ``[CLS]``) or ``mean`` (:func:`mean_pool` over real tokens, no pooler: how
all-MiniLM-L6-v2 was trained to summarise a sentence, so its frozen features are meaningful).

``embeddings=`` (B, T, d) replaces the word-embedding lookup of ``tokens`` (positions and token types are still
added): a pure path from input embeddings to outputs, e.g. for integrated gradients
(:func:`jaxdl.interpret.token_integrated_gradients`).

Variants: ``bert`` (tiny, trainable on a CPU), ``bert_base`` (bert-base-uncased's shape: 109,482,240 parameters
with the pooler) and ``minilm_l6`` (all-MiniLM-L6-v2's shape). Hugging Face ``BertModel`` / ``BertFor…`` state
dicts convert with :func:`convert_bert_state_dict` (registered with ``jaxdl.convert`` for model names starting with
``bert`` and ``minilm``)::

    variables = convert_bert_state_dict(read_state_dict(packaged_weights("all_minilm_l6_v2")))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.config import ModelConfig, config_variant
from jaxdl.errors import ConfigError, ModelInputError
from jaxdl.nn import Dropout, FeedForward, LearnedPositions, MultiHeadAttention, padding_mask
from jaxdl.nn import remat as _remat
from jaxdl.nn.transformer import LAYER_NORM_EPS, gelu_exact

HEADS = ("none", "mlm", "classify", "token_classify")
POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class BertConfig(ModelConfig):
    name: str = "bert"
    vocab_size: int = 1000
    max_positions: int = 128
    # Token types (segments A/B); BERT has 2.
    type_vocab_size: int = 2
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_dim: int = 256
    # Hidden dropout (embeddings, residual branches, classifier); the step may override it with a traced array.
    dropout: float = 0.1
    # Dropout on the attention weights (BERT: 0.1); a traced dropout override applies to it too.
    attention_dropout: float = 0.1
    # none | mlm | classify | token_classify
    head: str = "classify"
    # Keep the pooler (dense + tanh on [CLS]) with head=none, so a full BertModel checkpoint loads without leftovers.
    pooler: bool = True
    layer_norm_eps: float = LAYER_NORM_EPS["bert"]
    # What head=classify reads: cls (the pooler on [CLS]) | mean (the mean hidden state over real tokens).
    pooling: str = "cls"


# registry name -> config class (one preset per name)
VARIANTS: dict[str, type[BertConfig]] = {
    "bert": BertConfig,
    "bert_base": config_variant(BertConfig, "bert_base", vocab_size=30522, max_positions=512, d_model=768,
                                num_layers=12, num_heads=12, ffn_dim=3072),
    # sentence-transformers/all-MiniLM-L6-v2 (config.json of its package): uncased WordPiece, mean pooling
    "minilm_l6": config_variant(BertConfig, "minilm_l6", vocab_size=30522, max_positions=512, d_model=384,
                                num_layers=6, num_heads=12, ffn_dim=1536, head="none"),
}

_init = nn.initializers.normal(stddev=0.02)  # BERT's initializer_range


class BertLayer(nn.Module):
    """One post-LN encoder layer: attention → add & norm → feed-forward → add & norm."""

    num_heads: int
    ffn_dim: int
    dropout: float = 0.1
    attention_dropout: float = 0.1
    eps: float = LAYER_NORM_EPS["bert"]

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None, *, train: bool = False,
                 dropout_rate: jax.Array | float | None = None) -> jax.Array:
        norm = partial(nn.LayerNorm, epsilon=self.eps, use_fast_variance=False)
        att_rate = self.attention_dropout if dropout_rate is None else dropout_rate
        a = MultiHeadAttention(self.num_heads, dropout=self.attention_dropout, kernel_init=_init,
                               name="attention")(x, mask=mask, train=train, dropout_rate=att_rate)  # (B, T, D)
        a = Dropout(self.dropout, name="attention_dropout")(a, train=train, rate=dropout_rate)
        x = norm(name="attention_norm")(x + a)  # (B, T, D)
        h = FeedForward(self.ffn_dim, "gelu", kernel_init=_init, name="ffn")(x)  # (B, T, D)
        h = Dropout(self.dropout, name="output_dropout")(h, train=train, rate=dropout_rate)
        return norm(name="output_norm")(x + h)  # (B, T, D)


class Bert(nn.Module):
    """BERT encoder with one head (see the module docstring). Parameter names (HF ``BertModel`` → here):

    ``embeddings.word_embeddings`` → ``word_embeddings/embedding``; ``embeddings.position_embeddings`` →
    ``position_embeddings/position_embedding/embedding``; ``embeddings.token_type_embeddings`` →
    ``token_type_embeddings/embedding``; ``embeddings.LayerNorm`` → ``embeddings_norm``;
    ``encoder.layer.{i}`` → ``layer_{i}`` with ``attention.self.{query,key,value}`` / ``attention.output.dense`` →
    ``attention/{query,key,value,out}``, ``attention.output.LayerNorm`` → ``attention_norm``,
    ``intermediate.dense`` / ``output.dense`` → ``ffn/fc_in`` / ``ffn/fc_out``, ``output.LayerNorm`` →
    ``output_norm``; ``pooler.dense`` → ``pooler``; ``cls.predictions.transform.{dense,LayerNorm}`` →
    ``mlm_transform`` / ``mlm_norm``, ``cls.predictions.bias`` → ``mlm_bias``; ``classifier`` → ``classifier``.
    """

    num_classes: int = 2
    vocab_size: int = 1000
    max_positions: int = 128
    type_vocab_size: int = 2
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_dim: int = 256
    dropout: float = 0.1
    attention_dropout: float = 0.1
    head: str = "classify"
    pooler: bool = True
    layer_norm_eps: float = LAYER_NORM_EPS["bert"]
    pooling: str = "cls"
    model_name: str = "bert"  # registry name, for error messages
    # recompute each block's activations in the backward pass (model.remat=blocks); parameter names are unchanged
    remat: bool = False
    # where the word-embedding table lives in params (for embedding-space attribution)
    token_embedding: ClassVar[str] = "word_embeddings/embedding"

    def _check(self, tokens: jax.Array, token_types, token_mask) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"model.head: unknown head {self.head!r}; expected one of {', '.join(HEADS)}")
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ModelInputError(f"model {self.model_name!r} reads token ids (B, T) int, got tokens of shape "
                                  f"{tuple(tokens.shape)} {tokens.dtype}")
        for name, arr in (("token_types", token_types), ("token_mask", token_mask)):
            if arr is not None and tuple(arr.shape) != tuple(tokens.shape):
                raise ModelInputError(f"model {self.model_name!r}: {name} of shape {tuple(arr.shape)} does not "
                                      f"match tokens of shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.max_positions:
            raise ModelInputError(f"model {self.model_name!r}: a sequence of {tokens.shape[1]} tokens is longer "
                                  f"than its {self.max_positions} positions (model.max_positions)")

    @nn.compact
    def __call__(self, tokens: jax.Array, token_types: jax.Array | None = None, token_mask: jax.Array | None = None,
                 *, embeddings: jax.Array | None = None, train: bool = False,
                 dropout_rate: jax.Array | float | None = None) -> jax.Array:
        """Args: tokens (B, T) int; token_types (B, T) int or None (all 0); token_mask (B, T), 1 real / 0 padding,
        or None (all real); embeddings (B, T, d_model) or None: used instead of the word embeddings of ``tokens``;
        train: dropout on (RNG stream ``"dropout"``); dropout_rate: overrides ``dropout`` and
        ``attention_dropout`` (may be traced). Returns what ``head`` gives (see the module docstring)."""
        self._check(tokens, token_types, token_mask)
        if embeddings is not None and tuple(embeddings.shape) != (*tokens.shape, self.d_model):
            raise ModelInputError(f"model {self.model_name!r}: embeddings of shape {tuple(embeddings.shape)}, "
                                  f"expected {(*tokens.shape, self.d_model)} (tokens (B, T) by d_model)")
        B, T = tokens.shape
        norm = partial(nn.LayerNorm, epsilon=self.layer_norm_eps, use_fast_variance=False)
        dense = partial(nn.Dense, kernel_init=_init)
        word = nn.Embed(self.vocab_size, self.d_model, embedding_init=_init, name="word_embeddings")
        types = jnp.zeros_like(tokens) if token_types is None else token_types
        x = ((word(tokens) if embeddings is None else embeddings)  # (B, T, D)
             + LearnedPositions(self.max_positions, self.d_model, name="position_embeddings")(T)[None]  # (1, T, D)
             + nn.Embed(self.type_vocab_size, self.d_model, embedding_init=_init,
                        name="token_type_embeddings")(types))  # (B, T, D)
        x = norm(name="embeddings_norm")(x)
        x = Dropout(self.dropout, name="embeddings_dropout")(x, train=train, rate=dropout_rate)
        mask = None if token_mask is None else padding_mask(token_mask)  # (B, 1, 1, T)
        for i in range(self.num_layers):
            layer = BertLayer(self.num_heads, self.ffn_dim, self.dropout, self.attention_dropout,
                              self.layer_norm_eps, name=f"layer_{i}")
            x = _remat.call(self.remat, layer, x, mask, train=train, dropout_rate=dropout_rate)  # (B, T, D)

        if self.head == "mlm":
            h = norm(name="mlm_norm")(gelu_exact(dense(self.d_model, name="mlm_transform")(x)))  # (B, T, D)
            bias = self.param("mlm_bias", nn.initializers.zeros, (self.vocab_size,))
            return word.attend(h) + bias  # (B, T, V): decoder tied to the word embeddings
        if self.head == "token_classify":
            h = Dropout(self.dropout, name="classifier_dropout")(x, train=train, rate=dropout_rate)
            return dense(self.num_classes, name="classifier")(h)  # (B, T, C)
        if self.head == "classify" and self.pooling == "mean":
            pooled = mean_pool(x, token_mask)  # (B, D): no pooler (sentence-transformers' summary)
        elif self.head == "classify" or self.pooler:
            pooled = jnp.tanh(dense(self.d_model, name="pooler")(x[:, 0]))  # (B, D): [CLS]
        if self.head == "classify":
            pooled = Dropout(self.dropout, name="classifier_dropout")(pooled, train=train, rate=dropout_rate)
            return dense(self.num_classes, name="classifier")(pooled)  # (B, C)
        return x  # head none: (B, T, D); an unused pooler is dropped by XLA under jit


def mean_pool(hidden: jax.Array, token_mask: jax.Array | None = None) -> jax.Array:
    """Mean of ``hidden`` (B, T, D) over each example's real tokens (sentence-transformers' mean pooling)::

        e_b = Σ_t m_bt h_bt / max(Σ_t m_bt, 1e-9)

    Returns (B, D); a token_mask of None averages over all T."""
    if token_mask is None:
        return jnp.mean(hidden, axis=1)
    m = token_mask.astype(hidden.dtype)[..., None]  # (B, T, 1)
    return jnp.sum(hidden * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)  # (B, D)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` over the last axis (PyTorch's ``F.normalize``)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def build_bert(cfg: BertConfig, num_classes: int) -> nn.Module:
    if cfg.head not in HEADS:
        raise ConfigError(f"model.head: unknown head {cfg.head!r}; expected one of {', '.join(HEADS)}")
    for key in ("vocab_size", "max_positions", "type_vocab_size", "d_model", "num_layers", "num_heads", "ffn_dim"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"model.{key}: expected a positive number, got {getattr(cfg, key)}")
    if cfg.pooling not in POOLINGS:
        raise ConfigError(f"model.pooling: unknown pooling {cfg.pooling!r}; expected one of {', '.join(POOLINGS)}")
    if cfg.d_model % cfg.num_heads:
        raise ConfigError(f"model.d_model={cfg.d_model} is not divisible by model.num_heads={cfg.num_heads}")
    for key in ("dropout", "attention_dropout"):
        if not 0.0 <= getattr(cfg, key) < 1.0:
            raise ConfigError(f"model.{key}: expected a rate in [0, 1), got {getattr(cfg, key)}")
    return Bert(num_classes=num_classes, vocab_size=cfg.vocab_size, max_positions=cfg.max_positions,
                type_vocab_size=cfg.type_vocab_size, d_model=cfg.d_model, num_layers=cfg.num_layers,
                num_heads=cfg.num_heads, ffn_dim=cfg.ffn_dim, dropout=cfg.dropout,
                attention_dropout=cfg.attention_dropout, head=cfg.head, pooler=cfg.pooler,
                layer_norm_eps=cfg.layer_norm_eps, pooling=cfg.pooling, model_name=cfg.name,
                remat=cfg.remat == "blocks")


def config_from_hf(hf: dict[str, Any], name: str = "bert", **fields: Any) -> BertConfig:
    """A :class:`BertConfig` from a Hugging Face ``config.json`` dict (``BertModel``); ``fields`` override.

    Raises ConfigError for what this model does not implement (another activation or position scheme)."""
    act, pos = hf.get("hidden_act", "gelu"), hf.get("position_embedding_type", "absolute")
    if act != "gelu" or pos != "absolute":
        raise ConfigError(f"config.json: hidden_act={act!r}, position_embedding_type={pos!r}; this BERT implements "
                          "hidden_act='gelu' (exact) with absolute learned positions")
    values = {"vocab_size": hf["vocab_size"], "max_positions": hf.get("max_position_embeddings", 512),
              "type_vocab_size": hf.get("type_vocab_size", 2), "d_model": hf["hidden_size"],
              "num_layers": hf["num_hidden_layers"], "num_heads": hf["num_attention_heads"],
              "ffn_dim": hf["intermediate_size"], "dropout": hf.get("hidden_dropout_prob", 0.1),
              "attention_dropout": hf.get("attention_probs_dropout_prob", 0.1),
              "layer_norm_eps": hf.get("layer_norm_eps", LAYER_NORM_EPS["bert"])}
    cls = VARIANTS.get(name, BertConfig)
    return cls(name=name, **{**values, **fields})


# --------------------------------------------------------------------------------------------------------------------
# Hugging Face state dicts
# --------------------------------------------------------------------------------------------------------------------

# HF module path (without "bert.") -> our module path; linear layers are transposed, LayerNorms renamed.
_MODULES = {
    "embeddings.word_embeddings": "word_embeddings",
    "embeddings.position_embeddings": "position_embeddings/position_embedding",
    "embeddings.token_type_embeddings": "token_type_embeddings",
    "embeddings.LayerNorm": "embeddings_norm",
    "pooler.dense": "pooler",
    "cls.predictions.transform.dense": "mlm_transform",
    "cls.predictions.transform.LayerNorm": "mlm_norm",
    "classifier": "classifier",
}
_LAYER = {
    "attention.self.query": "attention/query", "attention.self.key": "attention/key",
    "attention.self.value": "attention/value", "attention.output.dense": "attention/out",
    "attention.output.LayerNorm": "attention_norm", "intermediate.dense": "ffn/fc_in",
    "output.dense": "ffn/fc_out", "output.LayerNorm": "output_norm",
}
SEP = "/"  # jaxdl.convert's path separator
# model-name prefixes whose state dicts convert_bert_state_dict reads. The package root registers it with
# jaxdl.convert.register_converter: convert imports jaxdl.models, so a model module importing convert would be a cycle.
CONVERTER_PREFIXES = ("bert", "minilm")
_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_EMBEDDINGS = ("word_embeddings", "position_embeddings/position_embedding", "token_type_embeddings")
# buffers, not parameters (older HF files save them)
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def _bert_path(module: str, leaf: str, value: np.ndarray) -> tuple[str, np.ndarray] | None:
    """``(params path, value)`` for an HF ``module.leaf`` entry, or None if it has no place here."""
    layer = _LAYER_KEY.match(module)
    if layer is not None:
        sub = _LAYER.get(layer.group(2))
        path = None if sub is None else f"layer_{layer.group(1)}/{sub}"
    else:
        path = _MODULES.get(module)
    if path is None:
        return None
    if path in _EMBEDDINGS:
        return (f"{path}/embedding", value) if leaf == "weight" else None
    if path.endswith("norm"):  # LayerNorm: weight/bias, or gamma/beta in TF-era files
        name = {"weight": "scale", "gamma": "scale", "bias": "bias", "beta": "bias"}.get(leaf)
        return None if name is None else (f"{path}/{name}", value)
    if leaf == "weight" and value.ndim == 2:
        return f"{path}/kernel", value.T  # (out, in) -> (in, out)
    if leaf == "bias":
        return f"{path}/bias", value
    return None


def convert_bert_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Variables ``{"params": …}`` for :class:`Bert` from a Hugging Face BERT state dict (``BertModel``, or a
    ``BertFor…`` model whose encoder keys start with ``bert.``). Entries with no place in the model go under
    ``unmapped/<key>`` (so :func:`jaxdl.convert.check_against` lists them); buffers (``position_ids``) are dropped.

    The MLM decoder is tied to the word embeddings: ``cls.predictions.decoder.weight`` is dropped when it equals
    them (else listed as unmapped); ``cls.predictions.decoder.bias`` is the same tensor as ``cls.predictions.bias``.
    """
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    flat: dict[str, np.ndarray] = {}
    word = next((v for k, v in sd.items() if k.removeprefix("bert.") == "embeddings.word_embeddings.weight"), None)
    for key, value in sd.items():
        name = key.removeprefix("bert.")
        if name in _BUFFERS:
            continue
        if name in ("cls.predictions.bias", "cls.predictions.decoder.bias"):
            if name == "cls.predictions.bias" or "cls.predictions.bias" not in sd:
                flat["params/mlm_bias"] = value
            elif not np.array_equal(value, sd["cls.predictions.bias"]):
                flat[f"unmapped{SEP}{key}"] = value
            continue
        if name == "cls.predictions.decoder.weight":
            if word is None or value.shape != word.shape or not np.array_equal(value, word):
                flat[f"unmapped{SEP}{key}"] = value  # an untied decoder has no place in this model
            continue
        module, _, leaf = name.rpartition(".")
        mapped = _bert_path(module, leaf, value)
        if mapped is None:
            flat[f"unmapped{SEP}{key}"] = value
        else:
            flat[f"params{SEP}{mapped[0]}"] = mapped[1]
    return traverse_util.unflatten_dict(flat, sep=SEP)


__all__ = ["CONVERTER_PREFIXES", "HEADS", "POOLINGS", "VARIANTS", "Bert", "BertConfig", "BertLayer", "build_bert",
           "config_from_hf", "convert_bert_state_dict", "l2_normalize", "mean_pool"]
