r"""Language modelling: predict every next token of a block.

A batch holds ``tokens`` ``(B, L + 1)`` (a text data set's blocks); the model reads ``tokens[:, :-1]`` and returns
logits ``(B, L, V)`` for ``tokens[:, 1:]``. The loss is the per-token cross-entropy in nats, masked per example
(evaluation pads the last batch) and per token when the batch carries a ``token_mask`` ``(B, L + 1)`` (1 for real
tokens; a target counts when it is real). Metrics, summed over tokens and divided once per split: ``loss`` (nats per
token), ``accuracy`` (next-token), ``perplexity = exp(loss)`` and ``bpc = loss / ln 2`` (bits per token: per
character for a character-level model).

After training, ``summary.json`` gets the unigram and bigram baselines of the same text
(:func:`jaxdl.tasks.baselines.ngram_baselines`) under ``baselines`` and text sampled from the model under
``samples`` (also ``samples.txt``) when the model can generate (it has ``initial_state`` and ``step`` methods).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.config import Config
from jaxdl.errors import ConfigError, DataError
from jaxdl.models import Model
from jaxdl.tasks import baselines
from jaxdl.tasks.base import Derived, Task, register

SAMPLES_FILE = "samples.txt"
# what a finished run samples: prompts, characters per sample, temperatures
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
                 dropout: bool = True, vocab: list[str] | None = None):
        super().__init__({"model": model}, inputs, targets)
        self.train_mode, self.dropout, self.vocab = train_mode, dropout, vocab

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
                   dropout=dropout, vocab=dataset.info.get("vocab"))

    def model_inputs(self, batch):
        return batch[self.inputs[0]][:, :-1]

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
        nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        m = jnp.ones(targets.shape, jnp.float32)
        if batch.get("mask") is not None:
            m = m * batch["mask"][:, None]
        if batch.get("token_mask") is not None:
            m = m * batch["token_mask"][:, 1:].astype(jnp.float32)
        count = jnp.sum(m)
        total = jnp.sum(nll * m)
        hits = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * m)
        stats = {"loss": (total, count), "accuracy": (hits, count)}
        return total / jnp.maximum(count, 1.0), (stats, {**model_state, player: new_state})

    def metric_names(self) -> list[str]:
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
        if self.vocab and module is not None and hasattr(module, "step") and hasattr(module, "initial_state"):
            from jaxdl import generate

            variables = {"params": params[self.players[0]], **model_state[self.players[0]]}
            samples = []
            key = jax.random.key(seed)
            for i, prompt in enumerate(SAMPLE_PROMPTS):
                for temperature in SAMPLE_TEMPERATURES:
                    text = generate.sample_text(self.model, variables, self.vocab, prompt, jax.random.fold_in(key, i),
                                                num_steps=SAMPLE_STEPS, temperature=temperature)
                    samples.append({"prompt": prompt, "temperature": temperature, "text": text})
            out["samples"] = samples
            Path(run_dir, SAMPLES_FILE).write_text("".join(
                f"--- prompt {s['prompt']!r}, temperature {s['temperature']:g}\n{s['text']}\n\n" for s in samples))
        return out


def ngram_summary(ds) -> dict[str, dict[str, Any]]:
    """The n-gram baselines of a text data set in a run summary's layout: ``{"test": {"unigram": {"bpc": …},
    "bigram": {"bpc": …}}, "entropy_bits": {"unigram": H(X), "bigram": H(X_t | X_{t-1})}}`` (see
    :func:`jaxdl.tasks.baselines.ngram_baselines`)."""
    spans = ds.info["spans"]
    b = baselines.ngram_baselines(np.asarray(ds.train.view.tokens), ds.num_classes, tuple(spans["train"]),
                                  tuple(spans["test"]))
    return {"test": {name: {"bpc": v["heldout_bpc"]} for name, v in b.items()},
            "entropy_bits": {name: v["entropy"] for name, v in b.items()}}
