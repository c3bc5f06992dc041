"""Autoregressive sampling: greedy decoding, top-k, temperature, the carried state, no recompilation, text helpers;
padded batches of prompts of different lengths (buckets, one prefill, per-row positions: GPT and Llama-style logits
equal the uncached forward), stop tokens, text completion with a tokenizer.

A tiny random rnn_lm, tiny random GPT/Llama decoders and a fake step function with fixed logits; every test reuses
the same few compiled programs."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl.models as models
from jaxdl import generate
from jaxdl.errors import JaxdlError

V, P, N = 7, 3, 5  # vocabulary, prompt length, sampled tokens
VOCAB = ["<unk>", "a", "b", "c", "d", "e", "f"]


@functools.lru_cache(maxsize=None)
def _lm():
    """A random GRU language model and its variables (random normal weights: peaked, varied next-token scores)."""
    model = models.get("rnn_lm", num_classes=V, cell="gru", hidden_size=8, embed_dim=4)  # any sequence length
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, P), jnp.int32))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)
    logits = jax.jit(lambda v, x: model.apply(v, x)[0])  # (B, T, V), one program per length
    return model, variables, logits


def _prompt(b=2):
    return jax.random.randint(jax.random.key(3), (b, P), 0, V)


def test_greedy_equals_a_python_argmax_loop_and_no_recompiles():
    model, variables, logits = _lm()
    prompt = _prompt()
    greedy = generate.sample(model, variables, prompt, jax.random.key(0), num_steps=N, temperature=0.0)
    assert greedy.shape == (2, N) and greedy.dtype == jnp.int32
    # reference: the model on the whole sequence, argmax of the newest position; the LM is causal, so the zeros
    # after the newest token never change its logits and one program (length P + N) serves every step
    seq = np.zeros((2, P + N), np.int32)
    seq[:, :P] = prompt
    for i in range(N):
        seq[:, P + i] = np.argmax(np.asarray(logits(variables, seq))[:, P + i - 1], axis=-1)
    np.testing.assert_array_equal(greedy, seq[:, P:])
    # top_k = 1 is greedy at any temperature; new keys, temperatures and k values reuse the compiled program
    for temperature, key in [(0.7, 1), (3.0, 2)]:
        out = generate.sample(model, variables, prompt, jax.random.key(key), num_steps=N, temperature=temperature,
                              top_k=1)
        np.testing.assert_array_equal(out, greedy)
    generate.sample(model, variables, prompt, jax.random.key(4), num_steps=N, temperature=jnp.float32(1.5), top_k=3)
    generate.sample(model, variables, prompt, jax.random.key(4), num_steps=N, temperature=0.9, top_p=0.8)
    assert generate._sampler(model)._cache_size() == 1


def test_carried_state_equals_running_the_whole_sequence():
    model, variables, logits = _lm()
    prompt = _prompt()
    tokens, last, _ = generate._sampler(model)(variables, prompt, jax.random.key(5), jnp.float32(1.0),
                                               jnp.int32(0), jnp.float32(1.0), num_steps=N)
    full = logits(variables, jnp.concatenate([prompt, tokens], axis=1))  # (2, P + N, V)
    np.testing.assert_allclose(last, full[:, -1], atol=1e-5)
    assert generate._sampler(model)._cache_size() == 1

    # the generic loop with a user's step function gives the same
    def step_fn(state, t):
        (out, state), _ = model.apply(variables, {"tokens": t, "state": state}, method="step")
        return out, state

    state, _ = model.apply(variables, 2, method="initial_state")
    tokens2, last2, _ = generate.generate(step_fn, state, prompt, jax.random.key(5), num_steps=N)
    np.testing.assert_array_equal(tokens2, tokens)
    np.testing.assert_allclose(last2, last, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Top-k and temperature on fixed logits
# ---------------------------------------------------------------------------------------------------------------------

FIXED = jnp.array([0.5, 2.0, -1.0, 1.5, 0.0, 1.0, -0.5, 0.2])  # 8 tokens; top 3: ids 1, 3, 5


def _fixed_step(carry, tokens):
    """Scores that ignore the input: every draw is from the same distribution."""
    return jnp.broadcast_to(FIXED, (*tokens.shape, FIXED.size)), carry


def _draws(key, temperature, top_k, batch=400, steps=10):
    prompt = jnp.zeros((batch, 1), jnp.int32)
    tokens, _, _ = generate.generate(_fixed_step, jnp.zeros(()), prompt, jax.random.key(key), num_steps=steps,
                                     temperature=temperature, top_k=top_k)
    return np.asarray(tokens).ravel()  # 4000 draws


def test_top_k_never_samples_outside_the_k_most_likely():
    draws = _draws(0, 1.0, 3)
    assert set(np.unique(draws)) == {1, 3, 5}
    for k in (0, 8, 100):  # no truncation
        assert len(np.unique(_draws(1, 1.0, k))) == 8
    masked = generate.top_k_mask(jnp.array([[1.0, 3.0, 3.0, 2.0]]), 1)  # ties with the k-th largest are kept
    np.testing.assert_array_equal(np.isfinite(masked), [[False, True, True, False]])


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.asarray(jax.nn.softmax(FIXED))  # sorted: ids 1 (.31), 3 (.19), 5 (.11), 0 (.07) ...
    order = np.argsort(-probs)
    for p in (0.3, 0.5, 0.65, 0.9):
        need = int(np.searchsorted(np.cumsum(probs[order]), p) + 1)  # smallest top set with mass >= p
        prompt = jnp.zeros((400, 1), jnp.int32)
        tokens, _, _ = generate.generate(_fixed_step, jnp.zeros(()), prompt, jax.random.key(7), num_steps=10,
                                         temperature=1.0, top_p=p)
        assert set(np.unique(np.asarray(tokens))) == set(order[:need].tolist()), p
    masked = generate.top_p_mask(FIXED[None], 1.0)  # p = 1 keeps everything
    assert np.isfinite(np.asarray(masked)).all()
    assert np.isfinite(np.asarray(generate.top_p_mask(FIXED[None], 1e-6))).sum() == 1  # tiny p: the argmax only
    # top_p is traced: the four values above and the calls in this file share one compiled program per shape
    assert generate.generate._cache_size() <= 3


def test_temperature_sharpens_the_distribution():
    freqs = {}
    for t in (0.5, 1.0, 2.0):
        counts = np.bincount(_draws(2, t, 0), minlength=8)
        freqs[t] = counts / counts.sum()
        np.testing.assert_allclose(freqs[t], jax.nn.softmax(FIXED / t), atol=0.035)
    assert freqs[0.5][1] > freqs[1.0][1] > freqs[2.0][1]  # the most likely token gains as T falls
    assert set(np.unique(_draws(3, 0.0, 0))) == {1}  # T = 0: greedy
    assert generate.generate._cache_size() <= 3  # this file's programs: fixed step (and the lm step)


# ---------------------------------------------------------------------------------------------------------------------
# Text and errors
# ---------------------------------------------------------------------------------------------------------------------


def test_sample_text_and_errors():
    model, variables, _ = _lm()
    text = generate.sample_text(model, variables, VOCAB, "abz", jax.random.key(0), num_steps=N, temperature=0.0)
    assert text.startswith("abz") and len(text) == 3 + N  # "z" is unknown: it is read as <unk> but kept as typed
    assert set(text[3:]) <= set(VOCAB[1:]) | {"\ufffd"}
    drawn = generate.sample_text(model, variables, VOCAB, "abz", jax.random.key(1), num_steps=N)
    stop = next(c for c in drawn[4:] if c in VOCAB)  # stop at a character the sample emits (not first)
    assert generate.sample_text(model, variables, VOCAB, "abz", jax.random.key(1), num_steps=N,
                                stop=stop) == drawn[:drawn.index(stop, 3) + 1]
    with pytest.raises(JaxdlError, match="vocab"):
        generate.sample_text(model, variables, VOCAB[:-1], "ab", jax.random.key(0), num_steps=2)
    with pytest.raises(JaxdlError, match="prompt is empty"):
        generate.sample(model, variables, jnp.zeros((1, 0), jnp.int32), jax.random.key(0), num_steps=2)
    with pytest.raises(JaxdlError, match="token ids"):
        generate.sample(model, variables, jnp.zeros((1, 2)), jax.random.key(0), num_steps=2)
    classifier = models.get("rnn_classifier", num_classes=3, hidden_size=4)
    with pytest.raises(JaxdlError, match="step/initial_state"):
        generate.sample(classifier, {}, jnp.zeros((1, 2), jnp.int32), jax.random.key(0), num_steps=2)


# ---------------------------------------------------------------------------------------------------------------------
# A padded batch of prompts of different lengths: buckets, one prefill, per-row positions, stop tokens
# ---------------------------------------------------------------------------------------------------------------------

GV, GN = 13, 4  # vocabulary and sampled tokens of the decoder-only checks
LENGTHS = [3, 7, 1]  # three prompts, right-padded to 7 (bucket 16)


@functools.lru_cache(maxsize=None)
def _decoder(name):
    """A tiny random GPT or Llama-style model, its variables and a jitted uncached forward."""
    kw = dict(num_classes=GV, context_length=32, d_model=16, num_layers=1, num_heads=2)
    if name == "llama":
        kw.update(num_kv_heads=1, mlp_dim=24)
    model = models.get(name, **kw)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)
    return model, variables, jax.jit(lambda v, x: model(v, x))


def _padded(lengths, seed=0):
    """Prompts of ``lengths`` random tokens, right-padded with random tokens too: padding must never be read."""
    return np.random.default_rng(seed).integers(0, GV, (len(lengths), max(lengths))).astype(np.int32)


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_a_padded_batch_decodes_as_each_prompt_alone_in_one_program(name):
    model, variables, forward = _decoder(name)
    prompt = _padded(LENGTHS)
    run = generate._bucket_sampler(model)
    tokens, n, last = run(variables, jnp.asarray(np.pad(prompt, ((0, 0), (0, 16 - 7)), constant_values=GV - 1)),
                          jnp.asarray(LENGTHS),
                          jax.random.key(0), jnp.float32(0.0), jnp.int32(0), jnp.float32(1.0),
                          generate._stop_array(()), jnp.int32(0), num_steps=GN, max_length=16 + GN)
    np.testing.assert_array_equal(n, [GN] * 3)
    # reference: every row alone and unpadded through the uncached forward (right zeros are unseen: causal)
    seq = np.zeros((3, 16), np.int32)
    for b, k in enumerate(LENGTHS):
        seq[b, :k], seq[b, k:k + GN] = prompt[b, :k], tokens[b]
    full = np.asarray(forward(variables, jnp.asarray(seq)))  # (3, 16, V)
    for b, k in enumerate(LENGTHS):
        np.testing.assert_array_equal(np.argmax(full[b, k - 1:k + GN - 1], -1), tokens[b])  # greedy, row by row
        np.testing.assert_allclose(last[b], full[b, k + GN - 1], atol=1e-5)  # the cache's logits = the full ones
    out = generate.sample(model, variables, prompt, jax.random.key(0), num_steps=GN, temperature=0.0,
                          prompt_lengths=LENGTHS)
    np.testing.assert_array_equal(out, tokens)
    # other lengths of the same bucket, keys, temperatures, top-k, top-p and stop tokens: no new program
    for lengths, t, k, p in [([5, 2, 9], 0.8, 3, 1.0), ([16, 1, 1], 1.3, 0, 0.7), ([4, 4, 4], 0.0, 5, 0.5)]:
        generate.sample(model, variables, _padded(lengths, seed=2), jax.random.key(len(lengths)), num_steps=GN,
                        temperature=t, top_k=k, top_p=p, prompt_lengths=lengths, stop_tokens=(k, 2))
    assert run._cache_size() == 1


def test_stop_tokens_pad_the_rest_and_report_lengths():
    model, variables, _ = _decoder("gpt")
    prompt = _padded(LENGTHS)
    kw = dict(num_steps=GN, temperature=0.0, prompt_lengths=LENGTHS)
    free = np.asarray(generate.sample(model, variables, prompt, jax.random.key(0), **kw))
    stop = int(free[0, 1])  # row 0 emits it second (or first)
    assert 1 <= int(np.flatnonzero(free[0] == stop)[0]) + 1 <= 2
    tokens, n = generate.sample(model, variables, prompt, jax.random.key(0), stop_tokens=(stop,), pad_id=GV,
                                return_lengths=True, **kw)
    for b in range(3):  # each row: unchanged up to and including its first stop token, then padding
        hits = np.flatnonzero(free[b] == stop)
        k = int(hits[0]) + 1 if hits.size else GN
        assert int(n[b]) == k
        np.testing.assert_array_equal(tokens[b], np.concatenate([free[b, :k], np.full(GN - k, GV)]))
    # a recurrent model (one prompt length, no cache) stops the same way, after the loop
    lm, lm_vars, _ = _lm()
    free = np.asarray(generate.sample(lm, lm_vars, _prompt(), jax.random.key(0), num_steps=N, temperature=0.0))
    tokens, n = generate.sample(lm, lm_vars, _prompt(), jax.random.key(0), num_steps=N, temperature=0.0,
                                stop_tokens=(int(free[1, 0]),), return_lengths=True)
    assert int(n[1]) == 1 and np.all(np.asarray(tokens[1, 1:]) == 0)


def test_buckets_and_padded_batch_errors():
    assert [generate.bucket_length(n) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
    assert generate.bucket_length(5, (8, 24)) == 8 and generate.bucket_length(20, (8, 24)) == 24
    assert generate.bucket_length(30, (8, 24)) == 32 and generate.bucket_length(5, ()) == 5
    model, variables, _ = _decoder("gpt")
    with pytest.raises(JaxdlError, match=r"prompt_lengths must be 3 lengths in \[1, 7\]"):
        generate.sample(model, variables, _padded(LENGTHS), jax.random.key(0), num_steps=2, prompt_lengths=[3, 8, 1])
    lm, lm_vars, _ = _lm()
    with pytest.raises(JaxdlError, match=r"longest prompt \(7 tokens\) plus num_steps=26 exceed its context of 32"):
        generate.sample(model, variables, _padded(LENGTHS), jax.random.key(0), num_steps=26, prompt_lengths=LENGTHS)
    with pytest.raises(JaxdlError, match=r"prompts of different lengths \[1, 3\] need a model with a key/value"):
        generate.sample(lm, lm_vars, _prompt(), jax.random.key(0), num_steps=2, prompt_lengths=[3, 1])
    with pytest.raises(JaxdlError, match="no counters named cache_index or position"):
        state, _ = lm.apply(lm_vars, 1, method="initial_state")
        states = jax.tree.map(lambda x: jnp.stack([x, x]), state)
        generate.generate_padded(_rnn_step, states, _prompt(), jnp.asarray([3, 1]), jax.random.key(0), num_steps=2)


def _rnn_step(state, tokens):
    lm, lm_vars, _ = _lm()
    (logits, state), _ = lm.apply(lm_vars, {"tokens": tokens, "state": state}, method="step")
    return logits, state


def test_complete_texts_batches_prompts_and_stops_at_eos_or_a_stop_token():
    from types import SimpleNamespace

    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers

    model, variables, _ = _decoder("gpt")
    words = [f"w{i}" for i in range(GV)]
    tok = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    eos = 5
    lm = SimpleNamespace(model=model, variables=variables, tokenizer=tok,
                         metadata={"tokenizer.ggml.eos_token_id": eos},
                         encode=lambda text, add_bos=None: tok.encode(text).ids)
    prompts = [" ".join(words[i] for i in row[:k]) for row, k in zip(_padded(LENGTHS).tolist(), LENGTHS)]
    free = np.asarray(generate.sample(model, variables, _padded(LENGTHS), jax.random.key(0), num_steps=GN,
                                      temperature=0.0, prompt_lengths=LENGTHS))
    stop = int(free[2, 0])  # row 2 stops at once
    texts = generate.complete_texts(lm, prompts, jax.random.key(0), max_tokens=GN, stop=(words[stop],))
    for row, text in zip(free.tolist(), texts):
        cut = [i for i, t in enumerate(row) if t in (stop, eos)]
        assert text == tok.decode(row[:cut[0]] if cut else row, skip_special_tokens=False)
    assert texts[2] == ""
    with pytest.raises(JaxdlError, match="stop token 'nope' is not in the vocabulary of model 'gpt'"):
        generate.complete_texts(lm, prompts, jax.random.key(0), max_tokens=GN, stop=("nope",))
