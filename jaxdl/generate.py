r"""Autoregressive sampling and beam search, compiled once per model and shape.

The sampling loops know nothing about the model: they drive a *step function*

    step_fn(carry, tokens (B, T) int) -> (logits (B, T, V), carry)

that continues from ``carry`` (a recurrent state, a decoding cache, …). Each new token is drawn from the last
position's logits

    p(v) ∝ exp(l_v / temperature) · 1[l_v >= l_(k)]        # l_(k): the k-th largest logit (ties kept)

(then the nucleus ``top_p``) and fed back. ``temperature``, ``top_k``, ``top_p``, the key, the stop tokens and the
prompt lengths are arrays, so changing them never recompiles: temperature 0 is greedy argmax; ``top_k <= 0`` or
``>= V`` keeps every token.

- :func:`generate`: prompts of one length, the prompt fed in one call, then a ``lax.scan``.
- :func:`generate_padded` (what :func:`sample` uses for models with a key/value cache): a right-padded batch of
  prompts of different lengths, padded further to a length *bucket* (:func:`bucket_length`: powers of two from
  16), so every length of a bucket shares one program. One prefill writes every row's whole padded prompt into a
  fixed cache of bucket + ``num_steps`` positions; each row is a batch of one under ``jax.vmap`` with its own cache
  counters, which are then set back to the row's real length, so the row reads its first token from its own last
  prompt position and writes (and attends) from there on — its padding is overwritten before it is read, and the
  logits are those of the row alone, unpadded. ``stop_tokens`` end a row (later positions hold ``pad_id``; the
  lengths are returned); the loop is a ``lax.while_loop`` that ends when every row has stopped.
- :func:`beam_search`: encoder–decoder models (T5), beams as an extra batch axis, GNMT's length penalty
  ``score = log p(y) / ((5 + |y|) / 6) ** alpha`` with a traced ``alpha``.

>>> tokens = sample(model, variables, prompt, jax.random.key(0), num_steps=100, temperature=0.8, top_k=20)
>>> tokens, n = sample(model, variables, padded, key, num_steps=50, prompt_lengths=[3, 9], stop_tokens=(eos,),
...                    return_lengths=True)
>>> text = sample_text(model, variables, vocab, "ROMEO:", jax.random.key(0), num_steps=200)
>>> best, score = beam_search(t5, variables, source, source_mask, beam_size=4, max_len=64, length_penalty=0.6,
...                           eos_id=1)
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


# ---------------------------------------------------------------------------------------------------------------------
# A padded batch: one prefill into a fixed cache, each row at its own position
# ---------------------------------------------------------------------------------------------------------------------

# The names of the token counters in a decoding state (MultiHeadAttention's ``cache_index``, the models' ``position``):
# after the prefill of a padded prompt they are set back to each row's real length.
COUNTERS = ("cache_index", "position")


def _stop_array(stop_tokens) -> jax.Array:
    """Stop ids as an int32 array padded with -1 (no token) to a multiple of 8, so that new stop tokens (up to 8 of
    them) never recompile."""
    ids = np.asarray(stop_tokens, np.int64).reshape(-1)
    out = np.full((max(8, -(-ids.size // 8) * 8),), -1, np.int32)
    out[:ids.size] = ids
    return jnp.asarray(out)


def split_rows(state: Any, batch_size: int) -> Any:
    """A batched decoding state (non-scalar leaves batch first, scalar counters shared) as the row-stacked states
    :func:`generate_padded` takes: leaves (B, ...) -> (B, 1, ...), scalars -> (B,). Nothing is recomputed (e.g. a
    T5 state encodes the whole batch of sources once)."""
    return jax.tree.map(lambda x: x[:, None] if jnp.ndim(x) else jnp.broadcast_to(x, (batch_size,)), state)


def _rewind(states: Any, lengths: jax.Array) -> Any:
    """Row-stacked decoding states with every counter set to that row's ``lengths`` (B,): the next token is written
    (and attends) from there, and the cache slots of the padding behind it are overwritten before anyone reads them."""
    found = []

    def reset(path, leaf):
        if path and getattr(path[-1], "key", None) in COUNTERS:
            found.append(path)
            return lengths.astype(leaf.dtype).reshape(leaf.shape)  # (B,)
        return leaf

    states = jax.tree_util.tree_map_with_path(reset, states)
    if not found:
        raise JaxdlError(f"the decoding state has no counters named {' or '.join(COUNTERS)}: prompts of different "
                         "lengths need a model with a key/value cache (GPT, Llama, T5)")
    return states


def _decode_rows(step_row: StepFn, states: Any, prompt: jax.Array, lengths: jax.Array, key: jax.Array,
                 num_steps: int, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, stop: jax.Array,
                 pad_id: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`generate_padded`'s program. Rows run under ``vmap`` rather than as one batch because each needs its own
    cache index, position and mask offset, and the models keep those as scalars: a row of one makes them per row
    without changing the models (the cache writes become scatters)."""
    step = jax.vmap(step_row)  # each row is a batch of one with its own counters: its own cache position
    B = prompt.shape[0]
    logits, states = step(states, prompt[:, None, :])  # (B, 1, P, V): the prefill, every row over the whole bucket
    states = _rewind(states, lengths)
    first = logits[jnp.arange(B), 0, lengths - 1]  # (B, V): each row's last real prompt position
    keys = jax.random.split(key, num_steps)

    def cond(c):
        i, done = c[0], c[4]
        return (i < num_steps) & ~jnp.all(done)

    def body(c):
        i, states, last, tokens, done, n = c
        token = sample_logits(last, keys[i], temperature, top_k, top_p)  # (B,)
        token = jnp.where(done, pad_id, token)
        tokens = lax.dynamic_update_slice_in_dim(tokens, token[:, None], i, axis=1)  # (B, num_steps)
        n = n + (~done).astype(jnp.int32)
        done = done | jnp.isin(token, stop)
        logits, states = step(states, token[:, None, None])  # (B, 1, 1, V)
        return i + 1, states, logits[:, 0, -1], tokens, done, n

    tokens = jnp.full((B, num_steps), pad_id, jnp.int32)
    start = (jnp.int32(0), states, first, tokens, jnp.zeros((B,), bool), jnp.zeros((B,), jnp.int32))
    _, _, last, tokens, _, n = lax.while_loop(cond, body, start)
    return tokens, n, last


_generate_padded = jax.jit(_decode_rows, static_argnames=("step_row", "num_steps"))


def generate_padded(step_fn: StepFn, states: Any, prompt: jax.Array, lengths: jax.Array, key: jax.Array, *,
                    num_steps: int, temperature: jax.Array | float = 1.0, top_k: jax.Array | int = 0,
                    top_p: jax.Array | float = 1.0, stop_tokens: jax.Array | tuple[int, ...] = (),
                    pad_id: jax.Array | int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Continue a right-padded batch of prompts of different lengths; each row decodes at its own position.

    ``step_fn(state, tokens (1, T)) -> (logits (1, T, V), state)`` runs on one row; ``states`` are the rows'
    states stacked on a leading axis (``jax.vmap`` runs the rows together). One call feeds every row's whole padded
    prompt (the prefill fills the fixed-size cache), the counters named in ``COUNTERS`` are set back to each row's
    length, and row ``b``'s first token is drawn from its logits at ``lengths[b] - 1``; from then on row ``b``
    writes its cache at ``lengths[b] + i`` and attends to slots ``<= lengths[b] + i`` only, so the padding behind
    its prompt is overwritten before it is ever read: the result is that of each row alone, unpadded.

    A row stops after it emits one of ``stop_tokens``; later positions hold ``pad_id``. The loop is a
    ``lax.while_loop`` of at most ``num_steps`` steps that ends when every row has stopped.

    Args:
      step_fn: static (jit caches on its identity: pass the same function object to reuse the program).
      states: row-stacked states whose caches hold at least ``P + num_steps`` positions.
      prompt: (B, P) int, right-padded; lengths: (B,) int in [1, P], traced (a new length does not recompile).
      key: PRNG key; step ``i`` draws with ``split(key, num_steps)[i]`` (as :func:`generate`).
      temperature, top_k, top_p, pad_id: traced scalars; stop_tokens: ids (up to 8 share one program).

    Returns:
      ``(tokens (B, num_steps) int32, lengths (B,) int32, last_logits (B, V))``: the new tokens, how many each
      row emitted (its stop token included), and the logits after feeding each row's last token.
    """
    if int(num_steps) < 1:
        raise JaxdlError(f"generate_padded: num_steps must be >= 1, got {num_steps}")
    return _generate_padded(step_fn, states, jnp.asarray(prompt, jnp.int32), jnp.asarray(lengths, jnp.int32), key,
                            int(num_steps), jnp.asarray(temperature, jnp.float32), jnp.asarray(top_k, jnp.int32),
                            jnp.asarray(top_p, jnp.float32), _stop_array(stop_tokens), jnp.asarray(pad_id, jnp.int32))


def _model_step(model, variables) -> StepFn:
    def step_fn(carry, tokens):
        (logits, carry), _ = model.apply(variables, {"tokens": tokens, "state": carry}, method="step")
        return logits, carry

    return step_fn


@functools.lru_cache(maxsize=32)
def _sampler(model) -> Callable[..., tuple[jax.Array, jax.Array, Any]]:
    """The compiled sampling program of ``model`` for prompts of one length (one per model object; jit caches per
    shape and num_steps): the whole batch shares the cache position (and the sliding window past the context)."""

    @functools.partial(jax.jit, static_argnames=("num_steps",))
    def run(variables, prompt, key, temperature, top_k, top_p, num_steps):
        size = prompt.shape[0]
        if _takes_max_length(model):  # a decoding cache is sized for the prompt and every fed-back token
            size = {"batch_size": size, "max_length": prompt.shape[1] + num_steps}
        carry, _ = model.apply(variables, size, method="initial_state")
        return _generate(_model_step(model, variables), carry, prompt, key, num_steps, temperature, top_k, top_p)

    return run


@functools.lru_cache(maxsize=32)
def _bucket_sampler(model) -> Callable[..., tuple[jax.Array, jax.Array, jax.Array]]:
    """The compiled program of ``model`` for a right-padded batch (one per model object; jit caches per bucket
    length, cache length and num_steps)."""

    @functools.partial(jax.jit, static_argnames=("num_steps", "max_length"))
    def run(variables, prompt, lengths, key, temperature, top_k, top_p, stop, pad_id, num_steps, max_length):
        state, _ = model.apply(variables, {"batch_size": 1, "max_length": max_length}, method="initial_state")
        states = jax.tree.map(lambda x: jnp.broadcast_to(x, (prompt.shape[0], *x.shape)), state)  # per row
        return _decode_rows(_model_step(model, variables), states, prompt, lengths, key, num_steps, temperature,
                            top_k, top_p, stop, pad_id)

    return run


def _takes_max_length(model) -> bool:
    import inspect

    fn = getattr(type(getattr(model, "module", None)), "initial_state", None)
    return fn is not None and "max_length" in inspect.signature(fn).parameters


def bucket_length(length: int, buckets: tuple[int, ...] | None = None) -> int:
    """The padded length of a prompt of ``length`` tokens: the smallest of ``buckets`` that holds it (default: the
    powers of two from 16), else ``length`` rounded up to a power of two; ``buckets=()`` pads nothing."""
    if buckets is not None and not buckets:
        return int(length)
    fits = [b for b in (buckets or ()) if b >= length]
    if fits:
        return int(min(fits))
    return max(16 if buckets is None else 1, 1 << max(int(length) - 1, 0).bit_length())


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


def _stop_after(tokens: jax.Array, stop: jax.Array, pad_id: int) -> tuple[jax.Array, jax.Array]:
    """``tokens`` (B, N) with ``pad_id`` after each row's first stop token, and the rows' lengths (B,)."""
    hit = jnp.isin(tokens, stop)  # (B, N)
    before = jnp.cumsum(hit, axis=1) - hit  # (B, N) stop tokens strictly before each position
    keep = before == 0
    return jnp.where(keep, tokens, pad_id), jnp.sum(keep, axis=1).astype(jnp.int32)


def sample(model, variables, prompt, key: jax.Array, *, num_steps: int, temperature: float | jax.Array = 1.0,
           top_k: int | jax.Array = 0, top_p: float | jax.Array = 1.0, prompt_lengths=None,
           buckets: tuple[int, ...] | None = None, stop_tokens: tuple[int, ...] = (), pad_id: int = 0,
           return_lengths: bool = False):
    """Continue ``prompt`` with ``num_steps`` sampled tokens from a model with ``initial_state``/``step`` methods.

    Models with a key/value cache (``gpt``, ``llama``: ``initial_state`` takes a ``max_length``) take a batch of
    prompts of different lengths: ``prompt`` right-padded, ``prompt_lengths`` the real lengths. The prompt is padded
    further to a bucket (:func:`bucket_length`) and decoded by :func:`generate_padded` with a cache of bucket +
    ``num_steps`` positions, so every prompt length of a bucket shares one compiled program. When that cache would
    exceed the model's ``context_length``, prompts of one length go through the shared-position loop instead
    (:func:`generate` with the model's sliding window). Recurrent models (``rnn_lm``) take prompts of one length.

    Args:
      model: a :class:`jaxdl.models.Model`; variables: its variables (``{"params": ...}``).
      prompt: (B, P) or (P,) int token ids, P >= 1.
      key: PRNG key.
      num_steps: tokens to sample; a new value compiles once more, new keys/temperatures/top_k/top_p do not.
      temperature: 0 for greedy decoding.
      top_k: keep the k most likely tokens (ties kept); 0 keeps all.
      top_p: keep the smallest most-likely set of tokens whose probability reaches top_p; 1 keeps all.
      prompt_lengths: (B,) real lengths in [1, P]; None: every row is P tokens.
      buckets: padded prompt lengths to choose from; None: powers of two from 16; ``()``: no padding.
      stop_tokens: ids (e.g. end of sequence) after which a row stops; later positions hold ``pad_id``.
      return_lengths: also return how many tokens each row emitted (its stop token included).

    Returns:
      (B, num_steps) int32: the sampled tokens (without the prompt); with ``return_lengths`` also (B,) int32.
    """
    prompt = _check_prompt(model, prompt)
    if num_steps < 0:
        raise JaxdlError(f"num_steps must be >= 0, got {num_steps}")
    B, P = prompt.shape
    lengths = np.full((B,), P) if prompt_lengths is None else np.asarray(prompt_lengths).reshape(-1)
    if lengths.shape != (B,) or lengths.min(initial=1) < 1 or lengths.max(initial=1) > P:
        raise JaxdlError(f"model {model.name!r}: prompt_lengths must be {B} lengths in [1, {P}] (the padded prompt's "
                         f"width), got {lengths.tolist()}")
    temperature, top_k = jnp.asarray(temperature, jnp.float32), jnp.asarray(top_k, jnp.int32)
    top_p, stop = jnp.asarray(top_p, jnp.float32), _stop_array(tuple(stop_tokens))
    limit = getattr(getattr(model, "module", None), "context_length", None) or float("inf")
    longest = int(lengths.max())
    width = bucket_length(longest, buckets)
    if width + num_steps > limit:  # a bucket past the context shrinks to what fits
        width = max(longest, int(limit) - int(num_steps))
    if _takes_max_length(model) and width + num_steps <= limit and num_steps > 0:
        padded = jnp.zeros((B, width), jnp.int32).at[:, :min(P, width)].set(prompt[:, :width])  # (B, width)
        tokens, n, _ = _bucket_sampler(model)(variables, padded, jnp.asarray(lengths, jnp.int32), key, temperature,
                                              top_k, top_p, stop, jnp.int32(pad_id), num_steps=int(num_steps),
                                              max_length=width + int(num_steps))
    elif np.all(lengths == lengths[0]) or num_steps == 0:
        prompt = prompt[:, :longest]
        tokens, _, _ = _sampler(model)(variables, prompt, key, temperature, top_k, top_p, num_steps=int(num_steps))
        tokens, n = _stop_after(tokens, stop, pad_id)
    elif _takes_max_length(model):
        raise JaxdlError(f"model {model.name!r}: the longest prompt ({longest} tokens) plus num_steps={num_steps} "
                         f"exceed its context of {limit} positions; prompts of different lengths must fit in it "
                         "(prompts of one length may run past it, with a sliding window)")
    else:
        raise JaxdlError(f"model {model.name!r}: prompts of different lengths {sorted(set(lengths.tolist()))} need a "
                         "model with a key/value cache (gpt, llama); pass prompts of one length")
    return (tokens, n) if return_lengths else tokens


def sample_text(model, variables, vocab: list[str], prompt: str, key: jax.Array, *, num_steps: int,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, stop: str = "") -> str:
    """The prompt followed by ``num_steps`` sampled characters of a character-level model.

    Args:
      vocab: the data set's ``info["vocab"]`` (id 0 is ``<unk>``; characters unseen in training encode to it and
        sampled ``<unk>`` ids decode to U+FFFD).
      stop: characters that end the sample (e.g. a newline); the one emitted is kept.
    """
    from jaxdl.data.text import decode, encode

    size = getattr(getattr(model, "config", None), "num_classes", None)
    if size is not None and size != len(vocab):
        raise JaxdlError(f"model {model.name!r} has a vocabulary of {size} tokens but the vocab list has "
                         f"{len(vocab)} entries; use the vocab of the data set the model was trained on")
    ids = encode(prompt, vocab)[None]  # (1, P)
    stop_ids = tuple(vocab.index(c) for c in dict.fromkeys(stop) if c in vocab)
    tokens, n = sample(model, variables, ids, key, num_steps=num_steps, temperature=temperature, top_k=top_k,
                       top_p=top_p, stop_tokens=stop_ids, return_lengths=True)
    return prompt + decode(np.asarray(tokens[0, :int(n[0])]), vocab)


def complete_texts(lm, prompts: list[str], key: jax.Array, *, max_tokens: int = 32, temperature: float = 0.0,
                   top_k: int = 0, top_p: float = 1.0, stop: tuple[int | str, ...] = (),
                   add_bos: bool | None = None) -> list[str]:
    """The continuations (without the prompts) of a batch of text prompts of any lengths, in one padded batch.

    Args:
      lm: a tokenizer model such as :class:`jaxdl.gguf_import.GGUFModel` (``model``, ``variables``, ``tokenizer``,
        ``metadata``, ``encode(text, add_bos)``).
      stop: stop tokens (ids or token strings of the vocabulary) besides the end-of-sequence token
        (``tokenizer.ggml.eos_token_id``), which always stops; the stop token is not part of the text.
    """
    stop_ids = []
    for item in stop:
        tid = int(item) if isinstance(item, int) or str(item).isdigit() else lm.tokenizer.token_to_id(str(item))
        if tid is None:
            raise JaxdlError(f"stop token {item!r} is not in the vocabulary of model {lm.model.name!r}; give a token "
                             "of its vocabulary or an id")
        stop_ids.append(tid)
    eos = lm.metadata.get("tokenizer.ggml.eos_token_id")
    stop_ids += [] if eos is None else [int(eos)]
    ids = [lm.encode(p, add_bos) for p in prompts]
    if not all(ids):
        raise JaxdlError(f"prompt {prompts[[bool(i) for i in ids].index(False)]!r} encodes to no tokens; give some "
                         "text (or add_bos=True)")
    padded = np.zeros((len(ids), max(map(len, ids))), np.int32)  # (B, P) right-padded
    for b, row in enumerate(ids):
        padded[b, :len(row)] = row
    tokens, n = sample(lm.model, lm.variables, padded, key, num_steps=int(max_tokens), temperature=temperature,
                       top_k=top_k, top_p=top_p, prompt_lengths=[len(r) for r in ids], stop_tokens=tuple(stop_ids),
                       return_lengths=True)
    out = []
    for row, k in zip(np.asarray(tokens).tolist(), np.asarray(n).tolist()):
        row = row[:k]
        out.append(lm.tokenizer.decode(row[:-1] if row and row[-1] in stop_ids else row, skip_special_tokens=False))
    return out


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


__all__ = ["COUNTERS", "GREEDY_BELOW", "beam_search", "bucket_length", "complete_texts", "generate", "generate_padded",
           "length_penalty_factor", "sample", "sample_logits", "sample_text", "split_rows", "top_k_mask", "top_p_mask"]
