r"""Masked language modelling (BERT's pre-training objective): predict corrupted tokens from both sides.

A batch holds ``tokens`` ``(B, L + 1)`` (a text data set's blocks) and optionally ``token_mask`` ``(B, L + 1)``
(1 at real tokens, 0 at padding). The task reads the first ``L`` ids of each block: consecutive blocks of a text
data set overlap by one id, so dropping the last makes the blocks of a split cover each position exactly once.

Corruption (Devlin et al. 2019), per example: every *candidate* position — a real token (``token_mask``) that is
not a special token (padding, ``<unk>``, ``[CLS]``, ``[SEP]``, ``[MASK]`` …) — is chosen independently with
probability ``mask_rate`` (``loss.mask_rate``, default 0.15; a dynamic number ``hp["mask_rate"]``, so sweeping it
never recompiles). Of the chosen positions 80% read the mask id, 10% a token drawn uniformly from the non-special
vocabulary and 10% their own token::

    c_t ~ Bernoulli(mask_rate) · candidate_t,    u_t ~ U(0, 1)
    x̃_t = [MASK] if c_t and u_t < 0.8;  random token if c_t and 0.8 <= u_t < 0.9;  x_t otherwise

The loss is the cross-entropy of the model's logits at the chosen positions only, in nats per chosen token::

    loss = Σ_{b,t} m_b c_bt (logsumexp(z_bt) - z_bt[x_bt]) / Σ_{b,t} m_b c_bt

(``m_b``: the example mask of a padded evaluation batch). Metrics, summed over chosen positions and divided once
per split: ``loss``, ``accuracy`` (argmax equals the original token) and ``perplexity = exp(loss)``; ``val/loss``
is monitored.

Randomness: training masks come from the step's own RNG stream ``masking`` (``fold_in(step key, crc32("masking"))``),
so a resumed run draws the same masks, and each member of a fused population
(its own key) draws its own. Evaluation is deterministic: example ``b``'s key is
``fold_in(PRNGKey(EVAL_SEED), h_b)`` with ``h_b = Σ_t x_bt · P^t mod 2^32`` a hash of its ``L`` ids, so a block
gets the same mask in every run, at every batch size and position in the batch — validation and test numbers are
comparable across runs (at the same ``mask_rate``).

Mask and special ids: a data set with a tokenizer (``info["tokenizer"] = {"kind", "vocab_size", "special": {role:
id}}``) gives ``special["mask"]``, and every id in ``special`` is never chosen nor drawn as a random token. A
character-level data set (``info["vocab"]``, ``<unk>`` = id 0) has no mask token: the task reserves the id
``V`` (its vocabulary size) as ``[MASK]`` and the model needs ``V + 1`` outputs (:meth:`MaskedLM.outputs_needed`);
``<unk>`` is never a target. The model returns logits ``(B, L, outputs)`` for tokens ``(B, L)`` — e.g.
``bert`` with ``model.head=mlm`` and ``model.vocab_size`` = the outputs needed.

After training, ``summary.json`` gets ``baselines`` on the test split's evaluation masks: ``unigram`` (the training
split's token frequencies) and ``unigram_input`` (the best guess from the corrupted token at the position alone: it
is right at the 10% kept positions) — what models that ignore the context score (:func:`context_free_baselines`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import losses
from jaxdl.config import Config
from jaxdl.errors import ConfigError, DataError
from jaxdl.models import Model
from jaxdl.tasks.base import Derived, Task, register

# BERT's split of the chosen positions: [MASK], a random token, unchanged (the rest).
MASK_SHARE = 0.8
RANDOM_SHARE = 0.1
# Evaluation masks: fold_in(PRNGKey(EVAL_SEED), hash of the block's ids) per example.
EVAL_SEED = 0x4D4C4D
# Multiplier of the block hash (odd, so every power is a unit mod 2^32).
HASH_MULTIPLIER = 0x9E3779B1


def special_tokens(ds) -> tuple[int, int, tuple[int, ...]]:
    """``(outputs, mask_id, special_ids)`` of a token data set (see the module docstring).

    ``outputs`` is the number of logits the model needs: the vocabulary, plus one reserved ``[MASK]`` id when the
    data set has no mask token; ``special_ids`` (which include ``mask_id``) are never chosen nor drawn."""
    tok = (getattr(ds, "info", None) or {}).get("tokenizer")
    if tok:
        special = {k: int(v) for k, v in dict(tok.get("special") or {}).items() if v is not None}
        vocab = int(tok.get("vocab_size") or ds.num_classes)
    else:
        if ds.num_classes is None:
            raise ConfigError(f"task=masked_lm needs a vocabulary; data set {ds.name!r} has none (use a text data "
                              "set)")
        vocab = int(ds.num_classes)
        # <unk> (id 0) and, with data.documents, the end-of-document id are never targets
        special = {role: int(ds.info[key]) for role, key in (("unk", "unk_id"), ("eod", "eod_id"))
                   if ds.info.get(key) is not None}
    mask = special.get("mask")
    outputs = vocab if mask is not None else vocab + 1
    if mask is None:
        mask = vocab  # reserved: one id past the data set's vocabulary
    return outputs, int(mask), tuple(sorted(set(special.values()) | {int(mask)}))


def block_hash(tokens: jax.Array) -> jax.Array:
    """``h_b = Σ_t x_bt · P^t mod 2^32`` of token ids ``(B, L)`` -> ``(B,)`` uint32 (uint32 arithmetic wraps)."""
    L = tokens.shape[1]
    powers = np.ones(L, np.uint64)
    for t in range(1, L):
        powers[t] = (int(powers[t - 1]) * HASH_MULTIPLIER) % (1 << 32)
    weights = jnp.asarray(powers.astype(np.uint32))  # (L,)
    return jnp.sum(tokens.astype(jnp.uint32) * weights[None, :], axis=1, dtype=jnp.uint32)  # (B,)


def eval_keys(tokens: jax.Array) -> jax.Array:
    """One key per example for evaluation masks: ``fold_in(PRNGKey(EVAL_SEED), block_hash(tokens))``."""
    base = jax.random.PRNGKey(EVAL_SEED)
    return jax.vmap(lambda h: jax.random.fold_in(base, h))(block_hash(tokens))  # (B, 2)


def _unit(bits: jax.Array) -> jax.Array:
    """Uniform floats in [0, 1) from uint32 bits: the top 24 bits times 2^-24 (exact in float32)."""
    return (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def mask_tokens(bits: jax.Array, tokens: jax.Array, candidates: jax.Array, rate: jax.Array | float, mask_id: int,
                replacement_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """BERT's corruption of token ids (the module docstring's equations), a pure function of random bits.

    One draw of bits serves the three choices, so the step holds one random-number computation (threefry's
    compilation on XLA:CPU grows with every call): ``bits[:, 0]`` decides which positions are chosen,
    ``bits[:, 1]`` what a chosen position reads, ``bits[:, 2] mod R`` which replacement a random one gets (the
    modulo's bias is below ``R / 2^32``).

    Args:
      bits: uint32 random bits ``(B, 3, L)``.
      tokens: ids ``(B, L)``.
      candidates: ``(B, L)`` bool, the positions that may be chosen.
      rate: the probability of choosing a candidate (may be traced).
      mask_id: the id a chosen position reads 80% of the time.
      replacement_ids: ``(R,)`` ids a random replacement is drawn from uniformly.

    Returns:
      ``(inputs, chosen)``: the corrupted ids ``(B, L)`` and the chosen positions ``(B, L)`` bool.
    """
    chosen = candidates & (_unit(bits[:, 0]) < rate)  # (B, L)
    kind = _unit(bits[:, 1])  # (B, L)
    rand = replacement_ids[bits[:, 2] % jnp.uint32(replacement_ids.shape[0])]  # (B, L)
    out = jnp.where(chosen & (kind < MASK_SHARE), jnp.asarray(mask_id, tokens.dtype),
                    jnp.where(chosen & (kind < MASK_SHARE + RANDOM_SHARE), rand.astype(tokens.dtype), tokens))
    return out, chosen


def mask_bits(key: jax.Array | None, tokens: jax.Array) -> jax.Array:
    """Random bits ``(B, 3, L)`` for :func:`mask_tokens`: from ``key`` (training), or per example from the block
    hashes (``key=None``: evaluation, see :func:`eval_keys`)."""
    B, T = tokens.shape
    if key is not None:
        return jax.random.bits(key, (B, 3, T), jnp.uint32)
    return jax.vmap(lambda k: jax.random.bits(k, (3, T), jnp.uint32))(eval_keys(tokens))  # (B, 3, L)


@register("masked_lm")
class MaskedLM(Task):
    """BERT's masked-language-model objective over blocks of token ids (see the module docstring)."""

    rng_streams = ("dropout", "masking")
    derived = (Derived("perplexity", "loss", math.exp),)
    monitor = "val/loss"

    def __init__(self, model: Model, *, outputs: int, mask_id: int, special_ids: tuple[int, ...], vocab_size: int,
                 inputs=("tokens",), token_mask: bool = False, train_mode: bool = True, dropout: bool = True,
                 dataset_name: str = "data", mask_rate: float = 0.15):
        super().__init__({"model": model}, inputs, inputs)
        self.mask_rate = float(mask_rate)  # the run's rate, for the baseline on the same masks
        self.outputs, self.mask_id, self.special_ids = int(outputs), int(mask_id), tuple(special_ids)
        self.token_mask, self.train_mode, self.dropout, self.dataset_name = token_mask, train_mode, dropout, dataset_name
        self.replacement_ids = np.setdiff1d(np.arange(vocab_size), np.asarray(self.special_ids)).astype(np.int32)
        if len(self.replacement_ids) == 0:
            raise DataError(f"task=masked_lm: data set {dataset_name!r} has no non-special token to predict "
                            f"(vocabulary {vocab_size}, special ids {list(self.special_ids)})")

    @classmethod
    def model_input(cls, shape: tuple[int, ...], kind: str) -> tuple[tuple[int, ...], str]:
        """The model reads the first ``L`` ids of a block of ``L + 1``."""
        if kind != "int" or len(shape) != 1 or shape[0] < 2:
            raise DataError(f"task=masked_lm needs blocks of token ids (int, at least 2 per example); got "
                            f"per-example shape {shape} ({kind})")
        return (shape[0] - 1,), kind

    @classmethod
    def outputs_needed(cls, ds) -> int:
        """The vocabulary, plus the reserved ``[MASK]`` id when the data set has no mask token."""
        return special_tokens(ds)[0]

    @classmethod
    def build(cls, cfg: Config, dataset, model: Model, *, dropout: bool = True) -> MaskedLM:
        if cfg.loss.name not in ("auto", "cross_entropy"):
            raise ConfigError(f"loss.name={cfg.loss.name} is not a masked-language-model loss; expected "
                              "cross_entropy (or auto)")
        spec = dataset.train.example_spec()
        name = dataset.inputs[0]
        if len(dataset.inputs) != 1 and set(dataset.inputs) != {name, "token_mask"}:
            raise DataError(f"task=masked_lm reads one token array (and an optional token_mask); data set "
                            f"{dataset.name!r} has inputs {', '.join(dataset.inputs)}")
        outputs, mask_id, special = special_tokens(dataset)
        tok = dataset.info.get("tokenizer") or {}
        vocab = int(tok.get("vocab_size") or dataset.num_classes)
        return cls(model, outputs=outputs, mask_id=mask_id, special_ids=special, vocab_size=vocab, inputs=(name,),
                   token_mask="token_mask" in spec, train_mode=cfg.train.batch_stats == "update", dropout=dropout,
                   dataset_name=dataset.name, mask_rate=cfg.loss.mask_rate)

    # ---------------------------------------------------------------------------------------------------------------
    def blocks(self, batch) -> tuple[jax.Array, jax.Array | None]:
        """The first ``L`` ids ``(B, L)`` and the token mask ``(B, L)`` (None without padding)."""
        tokens = batch[self.inputs[0]][:, :-1]  # (B, L)
        tm = batch.get("token_mask") if self.token_mask else None
        return tokens, (None if tm is None else tm[:, :-1])

    def candidates(self, tokens: jax.Array, token_mask: jax.Array | None) -> jax.Array:
        """``(B, L)`` bool: real, non-special positions."""
        special = jnp.asarray(self.special_ids, tokens.dtype)
        cand = jnp.all(tokens[..., None] != special, axis=-1)  # (B, L)
        return cand if token_mask is None else cand & (token_mask > 0)

    def corrupt(self, batch, key: jax.Array | None, rate: jax.Array | float) -> tuple[jax.Array, jax.Array]:
        """``(inputs, chosen)`` of a batch: training masks from ``key``, evaluation masks (``key=None``) from the
        block hashes."""
        tokens, tm = self.blocks(batch)
        return mask_tokens(mask_bits(key, tokens), tokens, self.candidates(tokens, tm), rate, self.mask_id,
                           jnp.asarray(self.replacement_ids))

    def _model_inputs(self, tokens: jax.Array, token_mask: jax.Array | None):
        return tokens if token_mask is None else {"tokens": tokens, "token_mask": token_mask}

    def model_inputs(self, batch):
        """The uncorrupted first ``L`` ids (and token mask): what ``init`` and ``predict`` see."""
        return self._model_inputs(*self.blocks(batch))

    def loss(self, player, params, model_state, batch, rngs, hp, train):
        model = self.models[player]
        training = train and self.train_mode
        inputs, chosen = self.corrupt(batch, None if rngs is None else rngs["masking"], hp["mask_rate"])
        tokens, tm = self.blocks(batch)
        kwargs = {"rng": rngs["dropout"], "dropout_rate": hp["dropout"] if self.dropout else 0.0} if training else {}
        logits, new_state = model.apply({"params": params[player], **model_state[player]},
                                        self._model_inputs(inputs, tm), train=training, **kwargs)
        if logits.ndim != 3 or logits.shape[:2] != tokens.shape:
            raise DataError(f"model {model.name!r} returns outputs of shape {tuple(logits.shape[1:])} per example, "
                            f"but task=masked_lm needs logits ({tokens.shape[1]}, vocabulary) for "
                            f"{tokens.shape[1]} tokens (bert: model.head=mlm)")
        if logits.shape[-1] != self.outputs:
            raise ConfigError(f"model {model.name!r} returns logits over {logits.shape[-1]} ids, but task=masked_lm "
                              f"on {self.dataset_name!r} needs {self.outputs} (the vocabulary and the mask id "
                              f"{self.mask_id}); set model.vocab_size={self.outputs}")
        logits = logits.astype(jnp.float32)  # (B, L, V)
        nll = losses.cross_entropy(logits, tokens, reduction="none")  # (B, L) per-token NLL
        m = chosen.astype(jnp.float32)  # (B, L)
        if batch.get("mask") is not None:
            m = m * batch["mask"][:, None]
        count = jnp.sum(m)
        total = jnp.sum(nll * m)
        hits = jnp.sum((jnp.argmax(logits, axis=-1) == tokens) * m)
        stats = {"loss": (total, count), "accuracy": (hits, count)}
        return total / jnp.maximum(count, 1.0), (stats, {**model_state, player: new_state})

    def metric_names(self) -> list[str]:
        return ["loss", "accuracy", "perplexity"]

    def predict(self, params, model_state, inputs):
        """Token probabilities ``(B, T, V)`` at every position of (already corrupted) ids ``(B, T)``."""
        return jax.nn.softmax(super().predict(params, model_state, inputs).astype(jnp.float32), axis=-1)

    # ---------------------------------------------------------------------------------------------------------------
    def artifacts(self, params: dict[str, Any], model_state: dict[str, Any], dataset, run_dir, plots: bool = True
                  ) -> dict[str, Any]:
        """The context-free baselines on the test split's evaluation masks (at the run's ``loss.mask_rate``)."""
        del params, model_state, run_dir, plots
        return {"baselines": context_free_baselines(self, dataset, rate=self.mask_rate)}


def _metrics(total: float, hits: float, n: float) -> dict[str, float]:
    loss = total / max(n, 1.0)
    return {"loss": loss, "perplexity": math.exp(loss), "accuracy": hits / max(n, 1.0), "positions": int(n)}


def context_free_baselines(task: MaskedLM, ds, split: str = "test", rate: float = 0.15, batch_size: int = 512
                           ) -> dict[str, dict[str, float]]:
    r"""What a model that ignores the context scores on ``split``'s evaluation masks: cross-entropy (nats per chosen
    token), perplexity and accuracy of

    - ``unigram``: the training split's token frequencies, add-one smoothed over the ``R`` non-special ids,
      :math:`u(v) = (n_v + 1) / (N + R)` (0 for the special ids);
    - ``unigram_input``: the best predictor from the corrupted token at the position alone. With shares
      :math:`a` (random token) and :math:`k = 1 - 0.8 - a` (kept), a position reading :math:`c \ne` ``[MASK]`` holds
      :math:`y` with probability :math:`(k\,u(c)[y = c] + a\,u(y)/R) / (k\,u(c) + a/R)`; one reading ``[MASK]``
      gets :math:`u`. A model below it uses the neighbours.
    """
    train = ds.train
    idx = np.arange(len(train))
    counts = np.zeros(task.outputs, np.float64)
    for start in range(0, len(idx), batch_size):
        batch = train.batch(idx[start:start + batch_size])
        tokens = np.asarray(batch[task.inputs[0]])[:, :-1]  # (b, L)
        keep = np.isin(tokens, task.special_ids, invert=True)
        if task.token_mask and batch.get("token_mask") is not None:
            keep &= np.asarray(batch["token_mask"])[:, :-1] > 0
        counts += np.bincount(tokens[keep].ravel(), minlength=task.outputs)[:task.outputs]
    u = np.zeros(task.outputs)
    u[task.replacement_ids] = counts[task.replacement_ids] + 1.0
    u /= u.sum()
    logu = np.log(np.where(u > 0, u, 1.0))
    best = int(np.argmax(u))
    R, a = len(task.replacement_ids), RANDOM_SHARE
    k = 1.0 - MASK_SHARE - RANDOM_SHARE
    corrupt = jax.jit(lambda b: task.corrupt(b, None, rate))
    part = getattr(ds, split)
    sums = np.zeros((2, 2))  # (unigram, unigram_input) x (nats, hits)
    n = 0
    idx = np.arange(len(part))
    for start in range(0, len(idx), batch_size):
        batch = part.batch(idx[start:start + batch_size])
        inputs, chosen = (np.asarray(x) for x in corrupt({name: jnp.asarray(v) for name, v in batch.items()}))
        y = np.asarray(batch[task.inputs[0]])[:, :-1][chosen]  # (n,) targets
        x = inputs[chosen]  # (n,) what the model read there
        sums[0] += (-logu[y].sum(), (y == best).sum())
        seen = x != task.mask_id
        c = np.where(seen, x, best)
        q = np.where(seen, (k * u[c] * (y == c) + a * u[y] / R) / (k * u[c] + a / R), u[y])  # q(y | x)
        # argmax_y q(y | c) is c itself unless a u(best) / R beats (k + a / R) u(c)
        guess = np.where(seen & ((k + a / R) * u[c] >= a * u[best] / R), c, best)
        sums[1] += (-np.log(q).sum(), (y == guess).sum())
        n += len(y)
    return {"unigram": _metrics(*sums[0], n), "unigram_input": _metrics(*sums[1], n)}


__all__ = ["EVAL_SEED", "MASK_SHARE", "MaskedLM", "RANDOM_SHARE", "block_hash", "eval_keys",
           "context_free_baselines", "mask_bits", "mask_tokens", "special_tokens"]
