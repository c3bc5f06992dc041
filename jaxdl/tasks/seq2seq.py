r"""Sequence to sequence: translate ``source`` token ids into ``target`` token ids with an encoder–decoder (T5).

A batch holds ``source``/``source_mask`` ``(B, Ls)`` and ``target``/``target_mask`` ``(B, Lt)`` (a parallel data
set, :mod:`jaxdl.data.parallel`: right-padded, targets end with EOS). Training is teacher-forced: the decoder reads
``target_in = shift_right(target)`` (:func:`jaxdl.models.t5.shift_right`: start token 0 = padding, then
``target[:, :-1]``) and position ``t`` scores ``target[:, t]``. The loss is the per-token cross-entropy over the
real target tokens (``target_mask``, times the evaluation padding ``mask`` per example)::

    nll_t = logsumexp(z_t) - z_t[y_t]                 loss = Σ_t m_t · nll_t / Σ_t m_t

With ``loss.label_smoothing`` = ε the *minimised* loss is ``(1 - ε) nll_t + ε · mean_v(-log p_t(v))``; the reported
``loss`` statistic is always the plain ``nll`` (so ``perplexity = exp(loss)`` is the model's). Metrics, summed over
tokens and divided once per split: ``loss`` (nats per target token), ``accuracy`` (teacher-forced next-token) and
``perplexity``.

After training (:meth:`Seq2Seq.artifacts`), the validation and test sources are translated greedily and by beam
search (:data:`BEAM_SIZE` beams, length penalty :data:`LENGTH_PENALTY`) in batches of :data:`DECODE_BATCH` (one
compiled decode each, at most the target width of tokens), detokenised and scored against the raw reference texts
with ``sacrebleu``'s corpus BLEU and chrF; the same scores of the **copy baseline** (the hypothesis is the
untranslated source) stand beside them. ``summary.json`` gets ``translation`` (per split and decoder — ``greedy``,
``beam``, ``copy_baseline`` — ``bleu``, ``chrf``, ``n``) and ``samples`` (source / reference / hypothesis of
:data:`NUM_SAMPLES` evenly spaced validation pairs); every held-out translation goes to ``translations.txt``.
Runs are ranked by the validation metrics only; test is reported beside them.
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
from jaxdl.models.t5 import shift_right
from jaxdl.tasks.base import Derived, Task, register

TRANSLATIONS_FILE = "translations.txt"
DECODE_BATCH = 64  # sources decoded per compiled call (the last batch is padded to it)
BEAM_SIZE = 4  # beam search after training (besides greedy); 1 turns it off
LENGTH_PENALTY = 0.6  # GNMT's alpha for beam search (jaxdl.generate.beam_search)
NUM_SAMPLES = 8  # sample translations in summary.json (evenly spaced over the validation split)


@register("seq2seq")
class Seq2Seq(Task):
    """Teacher-forced encoder–decoder training and BLEU/chrF after training (see the module docstring)."""

    derived = (Derived("perplexity", "loss", math.exp),)
    monitor = "val/loss"

    def __init__(self, model: Model, inputs=("source", "source_mask"), targets=("target", "target_mask"),
                 dropout: bool = True, special: dict[str, int] | None = None, tokenizer: str | None = None,
                 decode_batch: int = DECODE_BATCH, beam_size: int = BEAM_SIZE):
        super().__init__({"model": model}, inputs, targets)
        self.dropout = dropout
        self.special = dict(special or {})
        self.tokenizer = tokenizer
        self.decode_batch = int(decode_batch)
        self.beam_size = int(beam_size)

    @classmethod
    def model_input(cls, shape: tuple[int, ...], kind: str) -> tuple[tuple[int, ...], str]:
        if kind != "int" or len(shape) != 1:
            raise DataError(f"task=seq2seq needs source token ids (int, one sequence per example); got per-example "
                            f"shape {shape} ({kind})")
        return shape, kind

    @classmethod
    def outputs_needed(cls, ds) -> int:
        if ds.num_classes is None:
            raise ConfigError(f"task=seq2seq needs a vocabulary; data set {ds.name!r} has none (use a parallel data "
                              "set such as bible_en_es)")
        return int(ds.num_classes)

    @classmethod
    def build(cls, cfg: Config, dataset, model: Model, *, dropout: bool = True) -> Seq2Seq:
        if cfg.loss.name not in ("auto", "cross_entropy"):
            raise ConfigError(f"loss.name={cfg.loss.name} is not a sequence-to-sequence loss; expected "
                              "cross_entropy (or auto)")
        names = set(dataset.train.names)
        needed = {"source", "source_mask", "target", "target_mask"}
        if not needed <= names:
            raise DataError(f"task=seq2seq reads source, source_mask, target and target_mask; data set "
                            f"{dataset.name!r} has {', '.join(sorted(names))} (use a parallel data set such as "
                            "bible_en_es)")
        tok = dataset.info.get("tokenizer") or {}
        return cls(model, dropout=dropout, special=tok.get("special"), tokenizer=tok.get("json"),
                   decode_batch=min(cfg.train.eval_batch_size, DECODE_BATCH))

    def model_inputs(self, batch):
        return {"source": batch["source"], "source_mask": batch["source_mask"],
                "target_in": shift_right(batch["target"])}

    def loss(self, player, params, model_state, batch, rngs, hp, train):
        model = self.models[player]
        kwargs = {"rng": rngs["dropout"], "dropout_rate": hp["dropout"] if self.dropout else 0.0} if train else {}
        logits, new_state = model.apply({"params": params[player], **model_state[player]}, self.model_inputs(batch),
                                        train=train, **kwargs)
        targets = batch["target"]
        if logits.shape[:2] != targets.shape:
            raise DataError(f"model {model.name!r} returns logits of shape {logits.shape[1:]} per example, but "
                            f"seq2seq needs ({targets.shape[1]}, vocabulary) for {targets.shape[1]} target tokens")
        logits = logits.astype(jnp.float32)  # (B, Lt, V)
        logz = jax.nn.logsumexp(logits, axis=-1)  # (B, Lt)
        nll = logz - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # (B, Lt)
        m = batch["target_mask"].astype(jnp.float32)  # (B, Lt)
        if batch.get("mask") is not None:
            m = m * batch["mask"][:, None]
        count = jnp.sum(m)
        total = jnp.sum(nll * m)
        hits = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * m)
        eps = hp["label_smoothing"]
        uniform = logz - jnp.mean(logits, axis=-1)  # (B, Lt): -mean_v log p(v)
        objective = jnp.sum(((1.0 - eps) * nll + eps * uniform) * m) / jnp.maximum(count, 1.0)
        stats = {"loss": (total, count), "accuracy": (hits, count)}
        return objective, (stats, {**model_state, player: new_state})

    def metric_names(self) -> list[str]:
        return ["loss", "accuracy", "perplexity"]

    def predict(self, params, model_state, inputs):
        """Teacher-forced next-token probabilities ``(B, Lt, V)`` for a batch dict with source and target."""
        return jax.nn.softmax(super().predict(params, model_state, self.model_inputs(inputs)).astype(jnp.float32),
                              axis=-1)

    # ---------------------------------------------------------------------------------------------------------------
    def translate(self, params: dict[str, Any], model_state: dict[str, Any], source: np.ndarray,
                  source_mask: np.ndarray, max_len: int, beam_size: int = 1) -> np.ndarray:
        """Translations ``(N, max_len)`` of ``source`` ``(N, Ls)``, greedy (``beam_size`` 1) or by beam search
        (:func:`jaxdl.generate.beam_search`, length penalty :data:`LENGTH_PENALTY`), in batches of ``decode_batch``
        rows (the last padded with copies of the first row, so one compiled program serves every batch); ids after
        EOS are 0."""
        from jaxdl import generate
        from jaxdl.models.t5 import greedy_decode

        player = self.players[0]
        variables = {"params": params[player], **model_state[player]}
        eos = self.special.get("eos")
        out = []
        for i in range(0, len(source), self.decode_batch):
            src, msk = source[i:i + self.decode_batch], source_mask[i:i + self.decode_batch]
            n = len(src)
            if n < self.decode_batch:
                fill = self.decode_batch - n
                src = np.concatenate([src, np.repeat(src[:1], fill, axis=0)])
                msk = np.concatenate([msk, np.repeat(msk[:1], fill, axis=0)])
            if beam_size > 1:
                tokens, _ = generate.beam_search(self.model, variables, jnp.asarray(src), jnp.asarray(msk),
                                                 beam_size=beam_size, max_len=max_len, length_penalty=LENGTH_PENALTY,
                                                 eos_id=eos)  # (decode_batch, max_len)
            else:
                tokens = greedy_decode(self.model, variables, jnp.asarray(src), max_len,
                                       source_mask=jnp.asarray(msk), eos_id=eos)  # (decode_batch, max_len)
            out.append(np.asarray(tokens)[:n])
        return np.concatenate(out) if out else np.zeros((0, max_len), np.int32)

    def detokenize(self, tok, ids: np.ndarray) -> list[str]:
        """Texts of decoded rows: ids up to the first EOS, special tokens dropped."""
        eos = self.special.get("eos")
        texts = []
        for row in np.asarray(ids):
            row = [int(t) for t in row]
            if eos is not None and eos in row:
                row = row[:row.index(eos)]
            texts.append(tok.decode(row, skip_special_tokens=True).strip())
        return texts

    def artifacts(self, params: dict[str, Any], model_state: dict[str, Any], dataset, run_dir: Path,
                  plots: bool = True) -> dict[str, Any]:
        """BLEU and chrF of greedy (and beam-search) translations of the held-out sources, the copy baseline, and
        samples (of the beam search when it ran)."""
        module = self.model.module
        texts = dataset.info.get("text") or {}
        if self.tokenizer is None or not texts or module is None or not (
                hasattr(module, "initial_state") and hasattr(module, "step")):
            return {}
        from jaxdl.data import tokenize

        tok = tokenize.load_tokenizer(self.tokenizer)
        translation: dict[str, Any] = {}
        hyps: dict[str, list[str]] = {}
        for part in ("val", "test"):
            split = getattr(dataset, part)
            if part not in texts or not len(split):
                continue
            arrays = split.view.arrays
            refs = texts[part]["target"]
            translation[part] = {}
            for decoder, beam in (("greedy", 1), ("beam", self.beam_size)):
                if decoder == "beam" and beam <= 1:
                    continue
                ids = self.translate(params, model_state, arrays["source"], arrays["source_mask"],
                                     arrays["target"].shape[1], beam)
                hyps[part] = self.detokenize(tok, ids)  # the beam's when it runs
                translation[part][decoder] = corpus_scores(hyps[part], refs)
            translation[part]["copy_baseline"] = corpus_scores(texts[part]["source"], refs)
        samples = []
        if "val" in hyps:
            val = texts["val"]
            for i in np.unique(np.linspace(0, len(hyps["val"]) - 1, NUM_SAMPLES).round().astype(int)):
                samples.append({"ref": val["refs"][i], "source": val["source"][i], "reference": val["target"][i],
                                "hypothesis": hyps["val"][i]})
        lines = []
        for part, hs in hyps.items():
            t = texts[part]
            scores = ", ".join(f"{d} BLEU {v['bleu']:.2f} chrF {v['chrf']:.2f}" for d, v in translation[part].items())
            shown = "beam" if "beam" in translation[part] else "greedy"
            lines.append(f"=== {part}: {scores}; hypotheses below: {shown}\n")
            for r, s, ref, h in zip(t["refs"], t["source"], t["target"], hs):
                lines.append(f"{r}\n  source:     {s}\n  reference:  {ref}\n  hypothesis: {h}\n")
        Path(run_dir, TRANSLATIONS_FILE).write_text("\n".join(lines))
        return {"translation": translation, "samples": samples}


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus-level ``sacrebleu`` BLEU (13a tokenisation, exp smoothing) and chrF (character 6-grams, β = 2) of
    ``hypotheses`` against one reference each, on a 0–100 scale, and the number of segments."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise DataError(f"BLEU: {len(hypotheses)} hypotheses but {len(references)} references")
    return {"bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
            "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score), "n": len(hypotheses)}
