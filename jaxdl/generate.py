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


__all__ = ["GREEDY_BELOW", "generate", "sample", "sample_logits", "sample_text", "top_k_mask", "top_p_mask"]
