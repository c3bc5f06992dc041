r"""Language modelling: predict every next token of a block.

A batch holds ``tokens`` ``(B, L + 1)`` (a text data set's blocks); the model reads ``tokens[:, :-1]`` and returns
logits ``(B, L, V)`` for ``tokens[:, 1:]``. The loss is the per-token cross-entropy in nats, masked per example
(evaluation pads the last batch) and per token when the batch carries a ``token_mask`` ``(B, L + 1)`` (1 for real
tokens; a target counts when it is real).

Packed documents: a batch with ``segment_ids`` ``(B, L + 1)`` (``data.documents``) gives the model
``segment_ids[:, :-1]`` as well when its ``__call__`` takes a ``segment_ids`` argument (GPT, Llama: attention stays
inside a document, positions restart), and a target whose document differs from its input token's (the first token
of the next document) is masked out of the loss.

Metrics, summed over tokens and divided once per split: ``loss`` (nats per token), ``accuracy`` (next-token),
``perplexity = exp(loss)``, and

* character tokens: ``bpc = loss / ln 2`` (bits per character; with documents, the end-of-document tokens count as
  characters);
* a subword tokenizer (``ds.info["tokenizer"]``): ``bits_per_token = loss / ln 2`` and
  ``bits_per_char = Σ nll / ln 2 / Σ c(target)``, where ``c`` is the characters each target token adds to the text
  (:func:`jaxdl.data.tokenize.token_characters`; special tokens add 0) — comparable with a character model's
  ``bpc``.

After training, ``summary.json`` gets the unigram and bigram baselines of the same token stream under
``baselines`` (character tokens: :func:`jaxdl.tasks.baselines.ngram_baselines`, in bits per character; subword
tokens: the same add-one models counted sparsely, in bits per token and bits per character of the test span) and
text sampled from the model under ``samples`` (also ``samples.txt``) when the model can generate (it has
``initial_state`` and ``step`` methods), decoded with the data set's vocabulary or tokenizer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import losses
from jaxdl.config import Config
from jaxdl.errors import ConfigError, DataError
from jaxdl.models import Model
from jaxdl.tasks import baselines
from jaxdl.tasks.base import Derived, Task, register

SAMPLES_FILE = "samples.txt"
# what a finished run samples: prompts, tokens per sample (characters for a character model), temperatures
SAMPLE_PROMPTS = ("ROMEO.\n", "The ")
SAMPLE_STEPS = 300
SAMPLE_TEMPERATURES = (0.8,)


def _bits(nats: float) -> float:
    return nats / math.log(2)


@register("language_model")
class LanguageModel(Task):
    """Next-token prediction over blocks of token ids (see the module docstring)."""

    derived = (Derived("perplexity", "loss", math.exp), Derived("bpc", "loss", _bits))
    monitor = "val/loss"

    def __init__(self, model: Model, inputs=("tokens",), targets=("tokens",), train_mode: bool = True,
                 dropout: bool = True, vocab: list[str] | None = None, tokenizer: dict | None = None,
                 segments: bool | None = None):
        """Args:
          vocab: a character data set's ``info["vocab"]`` (samples are decoded with it).
          tokenizer: a subword data set's ``info["tokenizer"]`` (samples, bits per character).
          segments: pass a batch's ``segment_ids`` to the model; None: when the model's ``__call__`` takes them.
        """
        super().__init__({"model": model}, inputs, targets)
        self.train_mode, self.dropout, self.vocab, self.tokenizer = train_mode, dropout, vocab, tokenizer
        if segments is None:
            module = model.module
            segments = module is not None and _accepts(type(module).__call__, "segment_ids")
        self.segments = segments
        self.token_chars = None
        if tokenizer is not None:
            from jaxdl.data import tokenize

            self.token_chars = tokenize.token_characters(tokenize.load_tokenizer(tokenizer["json"]))  # (V,)
            self.derived = (Derived("perplexity", "loss", math.exp), Derived("bits_per_token", "loss", _bits))

    @classmethod
    def model_input(cls, shape: tuple[int, ...], kind: str) -> tuple[tuple[int, ...], str]:
        """The model reads all but the last token of a block."""
        if kind != "int" or len(shape) != 1 or shape[0] < 2:
            raise DataError(f"task=language_model needs blocks of token ids (int, at least 2 per example); got "
                            f"per-example shape {shape} ({kind})")
        return (shape[0] - 1,), kind

    @classmethod
    def outputs_needed(cls, ds) -> int:
        if ds.num_classes is None:
            raise ConfigError(f"task=language_model needs a vocabulary; data set {ds.name!r} has none "
                              "(use a text data set)")
        return int(ds.num_classes)

    @classmethod
    def build(cls, cfg: Config, dataset, model: Model, *, dropout: bool = True) -> LanguageModel:
        if cfg.loss.name not in ("auto", "cross_entropy"):
            raise ConfigError(f"loss.name={cfg.loss.name} is not a language-model loss; expected cross_entropy "
                              "(or auto)")
        if len(dataset.inputs) != 1:
            raise DataError(f"task=language_model reads one token array; data set {dataset.name!r} has inputs "
                            f"{', '.join(dataset.inputs)}")
        return cls(model, dataset.inputs, dataset.inputs, train_mode=cfg.train.batch_stats == "update",
                   dropout=dropout, vocab=dataset.info.get("vocab"), tokenizer=dataset.info.get("tokenizer"))

    def model_inputs(self, batch):
        tokens = batch[self.inputs[0]][:, :-1]  # (B, L)
        if self.segments and batch.get("segment_ids") is not None:
            return {"tokens": tokens, "segment_ids": batch["segment_ids"][:, :-1]}  # keyword arguments
        return tokens

    def loss(self, player, params, model_state, batch, rngs, hp, train):
        model = self.models[player]
        training = train and self.train_mode
        kwargs = {"rng": rngs["dropout"], "dropout_rate": hp["dropout"] if self.dropout else 0.0} if training else {}
        logits, new_state = model.apply({"params": params[player], **model_state[player]}, self.model_inputs(batch),
                                        train=training, **kwargs)
        tokens = batch[self.inputs[0]]
        targets = tokens[:, 1:]
        if logits.shape[:2] != targets.shape:
            raise DataError(f"model {model.name!r} returns logits of shape {logits.shape[1:]} per example, but a "
                            f"language model needs ({targets.shape[1]}, vocabulary) for {targets.shape[1]} targets")
        logits = logits.astype(jnp.float32)
        nll = losses.cross_entropy(logits, targets, reduction="none")  # (B, L) per-token NLL
        m = jnp.ones(targets.shape, jnp.float32)
        if batch.get("mask") is not None:
            m = m * batch["mask"][:, None]
        if batch.get("token_mask") is not None:
            m = m * batch["token_mask"][:, 1:].astype(jnp.float32)
        if batch.get("segment_ids") is not None:
            seg = batch["segment_ids"]  # (B, L + 1)
            m = m * (seg[:, 1:] == seg[:, :-1]).astype(jnp.float32)  # no target from the next document
        count = jnp.sum(m)
        total = jnp.sum(nll * m)
        hits = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * m)
        stats = {"loss": (total, count), "accuracy": (hits, count)}
        if self.token_chars is not None:
            chars = jnp.asarray(self.token_chars)[targets]  # (B, L): characters each target adds
            stats["bits_per_char"] = (total / math.log(2), jnp.sum(chars * m))
        return total / jnp.maximum(count, 1.0), (stats, {**model_state, player: new_state})

    def metric_names(self) -> list[str]:
        if self.token_chars is not None:
            return ["loss", "accuracy", "bits_per_char", "perplexity", "bits_per_token"]
        return ["loss", "accuracy", "perplexity", "bpc"]

    def predict(self, params, model_state, inputs):
        """Next-token probabilities ``(B, T, V)`` for token ids ``(B, T)``."""
        return jax.nn.softmax(super().predict(params, model_state, inputs).astype(jnp.float32), axis=-1)

    # ---------------------------------------------------------------------------------------------------------------
    def artifacts(self, params: dict[str, Any], model_state: dict[str, Any], dataset, run_dir: Path,
                  plots: bool = True, seed: int = 0) -> dict[str, Any]:
        """n-gram baselines of the same text, and samples from the model."""
        out: dict[str, Any] = {}
        if hasattr(getattr(dataset.train, "view", None), "tokens") and "spans" in dataset.info:
            out["baselines"] = ngram_summary(dataset)
        module = self.model.module
        if (self.vocab or self.tokenizer) and module is not None and hasattr(module, "step") and hasattr(
                module, "initial_state"):
            from jaxdl import generate

            variables = {"params": params[self.players[0]], **model_state[self.players[0]]}
            samples = []
            key = jax.random.key(seed)
            for i, prompt in enumerate(SAMPLE_PROMPTS):
                for temperature in SAMPLE_TEMPERATURES:
                    if self.vocab:
                        text = generate.sample_text(self.model, variables, self.vocab, prompt,
                                                    jax.random.fold_in(key, i), num_steps=SAMPLE_STEPS,
                                                    temperature=temperature)
                    else:
                        text = self._sample_subwords(variables, prompt, jax.random.fold_in(key, i), temperature)
                    samples.append({"prompt": prompt, "temperature": temperature, "text": text})
            out["samples"] = samples
            Path(run_dir, SAMPLES_FILE).write_text("".join(
                f"--- prompt {s['prompt']!r}, temperature {s['temperature']:g}\n{s['text']}\n\n" for s in samples))
        return out


    def _sample_subwords(self, variables, prompt: str, key: jax.Array, temperature: float) -> str:
        """``prompt`` followed by the text of ``SAMPLE_STEPS`` tokens sampled with the data set's tokenizer."""
        from jaxdl import generate
        from jaxdl.data import tokenize

        tok = tokenize.load_tokenizer(self.tokenizer["json"])
        (ids,) = tokenize.encode_texts(tok, [prompt], cache_dir=False)
        if len(ids) == 0:  # a prompt the tokenizer drops entirely: start from the end-of-document token
            ids = np.array([self.tokenizer["special"].get("eos", 0)], np.int32)
        tokens = generate.sample(self.model, variables, ids[None], key, num_steps=SAMPLE_STEPS,
                                 temperature=temperature)  # (1, SAMPLE_STEPS)
        return tokenize.decode(tok, np.concatenate([ids, np.asarray(tokens[0])]))


def _accepts(fn, name: str) -> bool:
    """Whether ``fn`` has a parameter ``name`` (``**kwargs`` does not count: a module that swallows everything
    is not assumed to understand segments)."""
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def sparse_ngram_baselines(tokens: np.ndarray, vocab_size: int, train: tuple[int, int], test: tuple[int, int]
                           ) -> dict[str, dict[str, float]]:
    """:func:`jaxdl.tasks.baselines.ngram_baselines` counted over the pairs that occur (a dense ``V × V`` table of
    an 8000-token vocabulary would take 512 MB): the same plug-in entropies and add-one smoothed held-out
    cross-entropies, in bits per token::

        p(b) = (n(b) + 1) / (N + V)        p(b | a) = (n(a, b) + 1) / (n(a, ·) + V)

    with counts ``n`` from ``tokens[train]`` and ``n(a, ·)`` the pairs starting with ``a``.
    """
    tokens = np.asarray(tokens, np.int64)
    v = int(vocab_size)
    _, uni = np.unique(tokens, return_counts=True)
    _, pairs = np.unique(tokens[:-1] * v + tokens[1:], return_counts=True)
    _, prev = np.unique(tokens[:-1], return_counts=True)
    h_uni, h_bi = _entropy_bits(uni), _entropy_bits(pairs) - _entropy_bits(prev)
    tr, te = tokens[train[0]:train[1]], tokens[test[0]:test[1]]
    if len(tr) < 2 or len(te) < 2:
        raise DataError("n-gram baselines need at least two tokens in the training and test spans")
    n_uni = np.bincount(tr, minlength=v)
    p_uni = (n_uni[te] + 1.0) / (len(tr) + v)
    codes, n_pair = np.unique(tr[:-1] * v + tr[1:], return_counts=True)
    row = np.bincount(tr[:-1], minlength=v)
    q = te[:-1] * v + te[1:]
    at = np.minimum(np.searchsorted(codes, q), len(codes) - 1)
    seen = np.where(codes[at] == q, n_pair[at], 0)
    p_bi = (seen + 1.0) / (row[te[:-1]] + v)
    return {"unigram": {"entropy": h_uni, "heldout_bpc": float(-np.log2(p_uni).mean())},
            "bigram": {"entropy": h_bi, "heldout_bpc": float(-np.log2(p_bi).mean())}}


def ngram_summary(ds) -> dict[str, dict[str, Any]]:
    """The n-gram baselines of a text data set in a run summary's layout: ``{"test": {"unigram": {"bpc": …},
    "bigram": {"bpc": …}}, "entropy_bits": {"unigram": H(X), "bigram": H(X_t | X_{t-1})}}`` (see
    :func:`jaxdl.tasks.baselines.ngram_baselines`). Subword tokens: ``{"unit": "token", "test": {"unigram":
    {"bits_per_token": …, "bits_per_char": …}, …}, "entropy_bits": …}`` where ``bits_per_char`` spreads the test
    span's total bits over its characters (``ds.info["span_characters"]``)."""
    spans = ds.info["spans"]
    if "tokenizer" in ds.info:
        (a, b) = spans["test"]
        chars = ds.info["span_characters"]["test"]
        out = sparse_ngram_baselines(np.asarray(ds.train.view.tokens), ds.num_classes, tuple(spans["train"]),
                                     (a, b))
        scored = {"unigram": b - a, "bigram": b - a - 1}  # targets each model scores
        return {"unit": "token",
                "test": {name: {"bits_per_token": v["heldout_bpc"],
                                "bits_per_char": v["heldout_bpc"] * scored[name] / max(chars, 1)}
                         for name, v in out.items()},
                "entropy_bits": {name: v["entropy"] for name, v in out.items()}}
    b = baselines.ngram_baselines(np.asarray(ds.train.view.tokens), ds.num_classes, tuple(spans["train"]),
                                  tuple(spans["test"]))
    return {"test": {name: {"bpc": v["heldout_bpc"]} for name, v in b.items()},
            "entropy_bits": {name: v["entropy"] for name, v in b.items()}}
