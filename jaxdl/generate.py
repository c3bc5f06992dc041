r"""Autoregressive sampling, compiled once per model and shape.

The loop knows nothing about the model: it drives a *step function*

    step_fn(carry, tokens (B, T) int) -> (logits (B, T, V), carry)

that continues from ``carry`` (a recurrent state, a decoding cache, …). The prompt is fed in one call, then each new
token is drawn from the last position's logits

    p(v) ∝ exp(l_v / temperature) · 1[l_v >= l_(k)]        # l_(k): the k-th largest logit (ties kept)

and fed back, inside one ``lax.scan``. ``temperature`` and ``top_k`` are arrays, so changing them (or the key) never
recompiles: temperature 0 is greedy argmax; ``top_k <= 0`` or ``>= V`` keeps every token.

>>> tokens = sample(model, variables, prompt, jax.random.key(0), num_steps=100, temperature=0.8, top_k=20)
>>> text = sample_text(model, variables, vocab, "ROMEO:", jax.random.key(0), num_steps=200)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from jaxdl.errors import JaxdlError

StepFn = Callable[[Any, jax.Array], tuple[jax.Array, Any]]

# Below this temperature sampling is greedy (argmax): dividing by ~0 would overflow.
GREEDY_BELOW = 1e-6


def top_k_mask(logits: jax.Array, top_k: jax.Array | int) -> jax.Array:
    """``logits`` with every value below the k-th largest set to -inf (ties with it kept); ``k`` may be traced.

    Args:
      logits: (..., V).
      top_k: int scalar; ``<= 0`` or ``>= V`` keeps everything.
    """
    v = logits.shape[-1]
    k = jnp.asarray(top_k, jnp.int32)
    ordered = jnp.sort(logits, axis=-1)  # (..., V) ascending
    kth = jnp.take(ordered, jnp.clip(v - k, 0, v - 1), axis=-1)[..., None]  # (..., 1) the k-th largest
    keep = (logits >= kth) | (k <= 0) | (k >= v)
    return jnp.where(keep, logits, -jnp.inf)


def top_p_mask(logits: jax.Array, top_p: jax.Array | float) -> jax.Array:
    """Nucleus filtering: ``logits`` with every token outside the smallest most-likely set whose probability reaches
    ``top_p`` set to -inf (the most likely token is always kept; ``top_p >= 1`` keeps everything); ``top_p`` may be
    traced.

    Args:
      logits: (..., V), already divided by the temperature.
    """
    p = jnp.asarray(top_p, jnp.float32)
    ordered = jnp.sort(logits, axis=-1)[..., ::-1]  # (..., V) descending
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # (..., V) probability of the tokens ranked above each
    n_keep = jnp.maximum(jnp.sum(before < p, axis=-1, keepdims=True), 1)  # (..., 1)
    cutoff = jnp.take_along_axis(ordered, n_keep - 1, axis=-1)  # (..., 1) the smallest kept logit
    return jnp.where((logits >= cutoff) | (p >= 1.0), logits, -jnp.inf)


def sample_logits(logits: jax.Array, key: jax.Array, temperature: jax.Array | float = 1.0,
                  top_k: jax.Array | int = 0, top_p: jax.Array | float = 1.0) -> jax.Array:
    """One token per row of ``logits`` (B, V): ``(B,)`` int32 ids.

    Greedy (argmax) when ``temperature < GREEDY_BELOW``; otherwise a draw from
    ``softmax(top_p_mask(top_k_mask(l) / T))`` — top-k, then the temperature, then the nucleus (as Hugging Face
    orders them).
    """
    t = jnp.asarray(temperature, jnp.float32)
    logits = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits, axis=-1)
    masked = top_k_mask(logits, top_k)
    # subtract the max first: with a tiny T the kept logits stay finite (<= 0) and -inf stays -inf
    scaled = (masked - jnp.max(masked, axis=-1, keepdims=True)) / jnp.maximum(t, GREEDY_BELOW)
    drawn = jax.random.categorical(key, top_p_mask(scaled, top_p), axis=-1)
    return jnp.where(t < GREEDY_BELOW, greedy, drawn).astype(jnp.int32)


def _generate(step_fn: StepFn, carry: Any, prompt: jax.Array, key: jax.Array, num_steps: int,
              temperature: jax.Array, top_k: jax.Array, top_p: jax.Array) -> tuple[jax.Array, jax.Array, Any]:
    logits, carry = step_fn(carry, prompt)  # (B, P, V)

    def body(state, k):
        carry, last = state  # last: (B, V) logits of the newest position
        token = sample_logits(last, k, temperature, top_k, top_p)  # (B,)
        logits, carry = step_fn(carry, token[:, None])  # (B, 1, V)
        return (carry, logits[:, -1]), token

    keys = jax.random.split(key, num_steps)
    (carry, last), tokens = jax.lax.scan(body, (carry, logits[:, -1]), keys)  # tokens (num_steps, B)
    return tokens.T, last, carry


@functools.partial(jax.jit, static_argnames=("step_fn", "num_steps"))
def generate(step_fn: StepFn, carry: Any, prompt: jax.Array, key: jax.Array, *, num_steps: int,
             temperature: jax.Array | float = 1.0, top_k: jax.Array | int = 0, top_p: jax.Array | float = 1.0
             ) -> tuple[jax.Array, jax.Array, Any]:
    """Feed ``prompt`` then sample ``num_steps`` tokens, carrying the step function's state.

    Args:
      step_fn: ``(carry, tokens (B, T)) -> (logits (B, T, V), carry)``; static (jit caches on its identity: pass the
        same function object to reuse the compiled loop).
      carry: the state before the prompt.
      prompt: (B, P) int, P >= 1.
      key: PRNG key; step ``i`` draws with ``split(key, num_steps)[i]``.
      num_steps: tokens to sample (static).
      temperature, top_k, top_p: scalars, traced.

    Returns:
      ``(tokens (B, num_steps) int32, last_logits (B, V), carry)``: ``last_logits`` and ``carry`` are after feeding
      the last sampled token, i.e. what the model says about the token after the sample.
    """
    return _generate(step_fn, carry, prompt, key, num_steps, jnp.asarray(temperature, jnp.float32),
                     jnp.asarray(top_k, jnp.int32), jnp.asarray(top_p, jnp.float32))


@functools.lru_cache(maxsize=32)
def _sampler(model) -> Callable[..., tuple[jax.Array, jax.Array, Any]]:
    """The compiled sampling program of ``model`` (one per model object; jit caches per shape and num_steps)."""

    @functools.partial(jax.jit, static_argnames=("num_steps",))
    def run(variables, prompt, key, temperature, top_k, top_p, num_steps):
        def step_fn(carry, tokens):
            (logits, carry), _ = model.apply(variables, {"tokens": tokens, "state": carry}, method="step")
            return logits, carry

        size = prompt.shape[0]
        if _takes_max_length(model):  # a decoding cache is sized for the prompt and every fed-back token
            size = {"batch_size": size, "max_length": prompt.shape[1] + num_steps}
        carry, _ = model.apply(variables, size, method="initial_state")
        return _generate(step_fn, carry, prompt, key, num_steps, temperature, top_k, top_p)

    return run


def _takes_max_length(model) -> bool:
    import inspect

    fn = getattr(type(getattr(model, "module", None)), "initial_state", None)
    return fn is not None and "max_length" in inspect.signature(fn).parameters


def _check_prompt(model, prompt) -> jax.Array:
    prompt = jnp.asarray(prompt)
    if prompt.ndim == 1:
        prompt = prompt[None]  # (1, P)
    if prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise JaxdlError(f"model {model.name!r}: the prompt must be token ids (B, P) int, got "
                         f"{tuple(prompt.shape)} {prompt.dtype}")
    if prompt.shape[1] == 0:
        raise JaxdlError(f"model {model.name!r}: the prompt is empty; sampling needs at least one token to start "
                         "from")
    module = getattr(model, "module", None)
    if module is None or not (hasattr(module, "step") and hasattr(module, "initial_state")):
        raise JaxdlError(f"model {model.name!r} has no step/initial_state methods to sample with (e.g. rnn_lm); "
                         "use jaxdl.generate.generate with a step function")
    return prompt.astype(jnp.int32)


def sample(model, variables, prompt, key: jax.Array, *, num_steps: int, temperature: float | jax.Array = 1.0,
           top_k: int | jax.Array = 0, top_p: float | jax.Array = 1.0) -> jax.Array:
    """Continue ``prompt`` with ``num_steps`` sampled tokens from a model with ``initial_state``/``step`` methods.

    Args:
      model: a :class:`jaxdl.models.Model` such as ``rnn_lm`` or ``gpt`` (whose ``initial_state`` takes a
        ``max_length``: it is given the prompt's length plus ``num_steps``).
      variables: its variables (``{"params": ...}``).
      prompt: (B, P) or (P,) int token ids, P >= 1.
      key: PRNG key.
      num_steps: tokens to sample; a new value compiles once more, new keys/temperatures/top_k do not.
      temperature: 0 for greedy decoding.
      top_k: keep the k most likely tokens (ties kept); 0 keeps all.
      top_p: keep the smallest most-likely set of tokens whose probability reaches top_p; 1 keeps all.

    Returns:
      (B, num_steps) int32: the sampled tokens (without the prompt).
    """
    prompt = _check_prompt(model, prompt)
    if num_steps < 0:
        raise JaxdlError(f"num_steps must be >= 0, got {num_steps}")
    tokens, _, _ = _sampler(model)(variables, prompt, key, jnp.asarray(temperature, jnp.float32),
                                   jnp.asarray(top_k, jnp.int32), jnp.asarray(top_p, jnp.float32),
                                   num_steps=int(num_steps))
    return tokens


def sample_text(model, variables, vocab: list[str], prompt: str, key: jax.Array, *, num_steps: int,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> str:
    """The prompt followed by ``num_steps`` sampled characters of a character-level model.

    Args:
      vocab: the data set's ``info["vocab"]`` (id 0 is ``<unk>``; characters unseen in training encode to it and
        sampled ``<unk>`` ids decode to U+FFFD).
    """
    from jaxdl.data.text import decode, encode

    size = getattr(getattr(model, "config", None), "num_classes", None)
    if size is not None and size != len(vocab):
        raise JaxdlError(f"model {model.name!r} has a vocabulary of {size} tokens but the vocab list has "
                         f"{len(vocab)} entries; use the vocab of the data set the model was trained on")
    ids = encode(prompt, vocab)[None]  # (1, P)
    tokens = sample(model, variables, ids, key, num_steps=num_steps, temperature=temperature, top_k=top_k,
                    top_p=top_p)
    return prompt + decode(np.asarray(tokens[0]), vocab)


# ---------------------------------------------------------------------------------------------------------------------
# Beam search (encoder–decoder)
# ---------------------------------------------------------------------------------------------------------------------


def length_penalty_factor(length: jax.Array | int, alpha: jax.Array | float) -> jax.Array:
    r"""GNMT's length normaliser (Wu et al. 2016): :math:`lp(n) = ((5 + n) / 6)^\alpha`; ``alpha`` may be traced."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** jnp.asarray(alpha, jnp.float32)


def _tile_beams(tree: Any, k: int) -> Any:
    """Every non-scalar leaf (batch first) repeated ``k`` times along the batch: (B, ...) -> (B·k, ...), beams of
    one source adjacent; scalars (position counters, shared by every row) stay."""
    return jax.tree.map(lambda x: jnp.repeat(x, k, axis=0) if jnp.ndim(x) else x, tree)


def _gather_rows(tree: Any, rows: jax.Array) -> Any:
    """Every non-scalar leaf's rows ``rows`` (B·k,) along the batch axis (reorders the cache after a beam step)."""
    return jax.tree.map(lambda x: jnp.take(x, rows, axis=0) if jnp.ndim(x) else x, tree)


@functools.partial(jax.jit, static_argnames=("module", "beam_size", "max_len", "eos_id"))
def _beam_search(module, variables, source, source_mask, alpha, beam_size: int, max_len: int, eos_id: int | None):
    B, K = source.shape[0], beam_size
    state = module.apply(variables, source, source_mask, max_length=max_len, method="initial_state")
    state = _tile_beams(state, K)  # the encoder ran once; its output and the empty cache are copied per beam
    lp_max = length_penalty_factor(max_len, alpha)
    neg = jnp.float32(-jnp.inf)

    def cond(c):
        i, _, _, logp, _, fin_scores, _ = c
        # no live beam can beat the best finished one: its log-probability only falls, and the penalty it can
        # still get is at most max(lp(i + 1), lp(max_len)) (lp is monotone in the length)
        bound = jnp.max(logp, axis=1) / jnp.maximum(length_penalty_factor(i + 1, alpha), lp_max)  # (B,)
        return (i < max_len) & ~jnp.all(bound < fin_scores[:, 0])

    def body(c):
        i, state, seqs, logp, fin_seqs, fin_scores, last = c
        logits, state = module.apply(variables, last.reshape(B * K, 1), state, method="step")  # (B·K, 1, V)
        V = logits.shape[-1]
        cand = logp[:, :, None] + jax.nn.log_softmax(logits[:, 0].astype(jnp.float32)).reshape(B, K, V)
        # 2K candidates: at most K of them end (one per beam), so K live ones always remain
        top_lp, top_idx = lax.top_k(cand.reshape(B, K * V), 2 * K)  # (B, 2K), best first
        parent, token = top_idx // V, (top_idx % V).astype(jnp.int32)  # (B, 2K)
        cand_seqs = jnp.take_along_axis(seqs, parent[:, :, None], axis=1)  # (B, 2K, max_len)
        cand_seqs = lax.dynamic_update_slice_in_dim(cand_seqs, token[:, :, None], i, axis=2)
        eos = (token == eos_id) if eos_id is not None else jnp.zeros(token.shape, bool)  # (B, 2K)
        # live: the best K that did not end, by log-probability
        logp, pick = lax.top_k(jnp.where(eos, neg, top_lp), K)  # (B, K)
        seqs = jnp.take_along_axis(cand_seqs, pick[:, :, None], axis=1)  # (B, K, max_len)
        last = jnp.take_along_axis(token, pick, axis=1)  # (B, K)
        # finished: an end-of-sequence candidate counts only among the best K (so that beam_size 1 is greedy); on
        # the last step the live ones complete too. Keep the best K of the old and new ones by normalised score.
        lp = length_penalty_factor(i + 1, alpha)
        ended = jnp.where(eos & (jnp.arange(2 * K) < K), top_lp / lp, neg)  # (B, 2K)
        at_end = jnp.where(i == max_len - 1, logp / lp, neg)  # (B, K)
        fin_scores, best = lax.top_k(jnp.concatenate([fin_scores, ended, at_end], axis=1), K)  # (B, K)
        fin_seqs = jnp.take_along_axis(jnp.concatenate([fin_seqs, cand_seqs, seqs], axis=1), best[:, :, None],
                                       axis=1)  # (B, K, max_len)
        rows = (jnp.arange(B)[:, None] * K + jnp.take_along_axis(parent, pick, axis=1)).reshape(B * K)
        return i + 1, _gather_rows(state, rows), seqs, logp, fin_seqs, fin_scores, last

    seqs = jnp.zeros((B, K, max_len), jnp.int32)
    logp = jnp.where(jnp.arange(K) == 0, 0.0, neg)[None].repeat(B, axis=0)  # (B, K): one live beam at the start
    start = (jnp.int32(0), state, seqs, logp, seqs, jnp.full((B, K), neg), jnp.zeros((B, K), jnp.int32))
    _, _, _, _, fin_seqs, fin_scores, _ = lax.while_loop(cond, body, start)
    return fin_seqs[:, 0], fin_scores[:, 0]


def beam_search(model, variables, source, source_mask=None, *, beam_size: int = 4, max_len: int,
                length_penalty: float | jax.Array = 0.6, eos_id: int | None = 1) -> tuple[jax.Array, jax.Array]:
    r"""The best-scoring target per source of an encoder–decoder model (T5) by beam search.

    A hypothesis :math:`y_1..y_n` (after the start token 0) is complete when it emits ``eos_id`` (counted in
    :math:`n`) or reaches ``max_len`` tokens; it scores

    .. math:: s(y) = \frac{\sum_{t=1}^{n} \log p(y_t \mid y_{<t}, x)}{lp(n)}, \qquad
              lp(n) = \left(\frac{5 + n}{6}\right)^{\alpha}

    (GNMT's length penalty; ``alpha = 0`` is the plain log-probability, larger values favour longer outputs). Each
    step extends the ``beam_size`` live hypotheses by every token and ranks the extensions by log-probability;
    those among the best ``beam_size`` that end go to the finished set (which keeps the best ``beam_size`` by
    score), and the best ``beam_size`` that do not end live on (so ``beam_size = 1`` is greedy decoding when
    ``alpha = 0``). Beams are an extra batch axis: the encoder runs once, its output and
    the decoder cache are tiled per beam, and the cache is reordered by gathering along the batch axis after each
    step. The loop is a ``lax.while_loop`` that ends early once no live beam can beat the best finished one (which
    does not change the result).

    Compiled once per (model, shapes, beam_size, max_len, eos_id); ``length_penalty`` is traced.

    Args:
      model: a :class:`jaxdl.models.Model` or Linen module with ``initial_state(source, source_mask, max_length)``
        and ``step(tokens, state)`` (:class:`jaxdl.models.t5.T5`).
      variables: its variables.
      source: (B, S) or (S,) int token ids.
      source_mask: (B, S) 1 at real tokens, 0 at padding; None: no padding.
      beam_size: live hypotheses per source (1: greedy decoding, up to ties, when ``alpha = 0``).
      max_len: the most target tokens (static).
      length_penalty: alpha above (may be a traced array).
      eos_id: the end-of-sequence id (T5: 1), or None: every hypothesis runs to ``max_len``.

    Returns:
      ``(tokens (B, max_len) int32, scores (B,) float32)``: the best hypothesis per source, padded with 0 after its
      end-of-sequence token, and its score ``s(y)``.
    """
    module = getattr(model, "module", model)
    name = getattr(model, "name", type(module).__name__)
    if not all(hasattr(module, m) for m in ("encode", "initial_state", "step")):
        raise JaxdlError(f"beam_search needs an encoder–decoder model with encode/initial_state/step methods "
                         f"(T5), got model {name!r}")
    source = jnp.asarray(source)
    if source.ndim == 1:
        source = source[None]
    if source.ndim != 2 or not jnp.issubdtype(source.dtype, jnp.integer):
        raise JaxdlError(f"beam_search: model {name!r} reads source token ids (B, S) int, got "
                         f"{tuple(source.shape)} {source.dtype}")
    if int(beam_size) < 1 or int(max_len) < 1:
        raise JaxdlError(f"beam_search: beam_size and max_len must be positive, got {beam_size} and {max_len}")
    mask = jnp.ones(source.shape, jnp.int32) if source_mask is None else jnp.asarray(source_mask, jnp.int32)
    if mask.shape != source.shape:
        raise JaxdlError(f"beam_search: source_mask of shape {tuple(mask.shape)} does not match source of shape "
                         f"{tuple(source.shape)}")
    return _beam_search(module, variables, source.astype(jnp.int32), mask, jnp.asarray(length_penalty, jnp.float32),
                        beam_size=int(beam_size), max_len=int(max_len), eos_id=None if eos_id is None else int(eos_id))


__all__ = ["GREEDY_BELOW", "beam_search", "generate", "length_penalty_factor", "sample", "sample_logits", "sample_text",
           "top_k_mask", "top_p_mask"]
