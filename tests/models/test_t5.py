"""T5: parameter count, shapes and input errors, cached greedy decoding = the teacher-forced forward, encoder padding
invariance, the Hugging Face converter checked against an independent PyTorch forward pass written here from the T5
equations, missing/unexpected keys, populations with traced dropout, a tiny T5 learning to reverse sequences, beam
search (exact against every hypothesis of a 4-token vocabulary; beam size 1 = greedy) and decoder prompts of different
lengths through the per-row cache = the uncached forward."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl import models
from jaxdl.convert import check_against, convert_state_dict, flatten
from jaxdl.errors import ConfigError, JaxdlError, ModelInputError
from jaxdl.models.t5 import T5, convert_t5_state_dict, greedy_decode, shift_right

# small bucket counts and distance so that the logarithmic buckets and the clamp at max_distance are exercised
V, D, DKV, H, F, L = 24, 16, 8, 2, 32, 2
TINY = dict(vocab_size=V, d_model=D, d_kv=DKV, d_ff=F, num_layers=L, num_heads=H, num_buckets=8, max_distance=6)


def tiny(**kw):
    return T5(**{**TINY, **kw})


def toks(B, T, seed, low=2):
    return jnp.asarray(np.random.default_rng(seed).integers(low, V, (B, T)), jnp.int32)


# One set of shapes — source (2, 9) with a padded row, decoder inputs (2, 7) — so tests share compiled functions.
S, T = 9, 7
forward = jax.jit(lambda v, src, tgt, mask: tiny().apply(v, src, tgt, mask))
encode = jax.jit(lambda v, src, mask: tiny().apply(v, src, mask, method="encode"))


def source_mask():
    return jnp.asarray([[1] * S, [1] * 6 + [0] * (S - 6)], jnp.int32)


def hf_state_dict(seed=0, gated=False, untied=False, buckets=8):
    """A random state dict with HF T5ForConditionalGeneration key names and shapes (Linear weights (out, in))."""
    g = np.random.default_rng(seed)
    r = lambda *s, std=0.3: (g.standard_normal(s) * std).astype(np.float32)  # noqa: E731
    shared = r(V, D, std=1.0)
    sd = {"shared.weight": shared, "encoder.embed_tokens.weight": shared.copy(),
          "decoder.embed_tokens.weight": shared.copy(), "lm_head.weight": r(V, D) if untied else shared.copy()}
    for stack in ("encoder", "decoder"):
        for i in range(L):
            p = f"{stack}.block.{i}.layer."
            attns = ["0.SelfAttention"] + (["1.EncDecAttention"] if stack == "decoder" else [])
            for a in attns:
                for n in "qkv":
                    sd[f"{p}{a}.{n}.weight"] = r(H * DKV, D)
                sd[f"{p}{a}.o.weight"] = r(D, H * DKV)
                sd[f"{p}{a[0]}.layer_norm.weight"] = 1 + r(D, std=0.1)
            f = "2" if stack == "decoder" else "1"
            ffn = ("wi_0", "wi_1") if gated else ("wi",)
            for n in ffn:
                sd[f"{p}{f}.DenseReluDense.{n}.weight"] = r(F, D)
            sd[f"{p}{f}.DenseReluDense.wo.weight"] = r(D, F)
            sd[f"{p}{f}.layer_norm.weight"] = 1 + r(D, std=0.1)
        sd[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = r(buckets, H, std=1.0)
        sd[f"{stack}.final_layer_norm.weight"] = 1 + r(D, std=0.1)
    return sd


def variables(seed=0, **kw):
    """Random variables of the tiny model without compiling an init: a random HF state dict, converted."""
    return jax.tree.map(jnp.asarray, convert_t5_state_dict(hf_state_dict(seed, **kw)))


# ------------------------------------------------------------------------------------------------------------------
# Shapes
# ------------------------------------------------------------------------------------------------------------------


def test_parameter_count_and_layout():
    # HF t5-small (T5ForConditionalGeneration, lm_head tied to shared): 60,506,624 parameters
    assert models.get("t5_small", input_shape=(16,)).param_count() == 60_506_624
    p = models.get("t5", num_classes=V, input_shape=(9,)).abstract_variables()["params"]
    assert set(p) == {"shared", "encoder", "decoder"}  # tied head: no lm_head
    assert set(p["encoder"]) == {"block_0", "block_1", "relative_bias", "final_norm"}  # one bias table per stack
    assert set(p["decoder"]["block_0"]) == {"self_attention", "self_attention_norm", "cross_attention",
                                            "cross_attention_norm", "ffn", "ffn_norm"}
    assert set(p["encoder"]["block_0"]["self_attention"]["query"]) == {"kernel"}  # no biases
    spec = jax.ShapeDtypeStruct((2, 9), jnp.int32)
    v11 = jax.eval_shape(tiny(feed_forward="gated-gelu", tie_embeddings=False).init, jax.random.key(0), spec)
    assert set(v11["params"]["decoder"]["block_1"]["ffn"]) == {"gate", "up", "down"}
    assert v11["params"]["lm_head"]["kernel"].shape == (D, V)


def test_shapes_and_input_errors():
    model = models.get("t5", num_classes=V, d_model=D, d_kv=DKV, d_ff=F, num_heads=H)
    src, tgt = jax.ShapeDtypeStruct((2, 9), jnp.int32), jax.ShapeDtypeStruct((2, 5), jnp.int32)
    batch = {"source": src, "source_mask": src, "target_in": tgt}
    v = jax.eval_shape(model.init, jax.random.key(0), batch)
    out = lambda v, x, **kw: model.apply(v, x, **kw)[0]  # noqa: E731
    assert jax.eval_shape(out, v, batch).shape == (2, 5, V)
    assert jax.eval_shape(out, v, src).shape == (2, 1, V)  # a lone source: the first target's logits
    assert jax.eval_shape(lambda v, b: model.module.apply(v, b), v, batch).shape == (2, 5, V)  # a dict to the module
    enc = jax.eval_shape(lambda v, s: model.apply(v, {"source": s, "source_mask": s}, method="encode")[0], v, src)
    assert enc.shape == (2, 9, D)
    with pytest.raises(ModelInputError, match="source_mask of shape"):
        jax.eval_shape(out, v, {**batch, "source_mask": jax.ShapeDtypeStruct((2, 4), jnp.int32)})
    with pytest.raises(ModelInputError, match="target_in token ids"):
        jax.eval_shape(out, v, {**batch, "target_in": jax.ShapeDtypeStruct((2, 5), jnp.float32)})
    with pytest.raises(ModelInputError, match="needs the 'cache' collection"):
        jax.eval_shape(lambda v: model.module.apply(v, jnp.zeros((2, 1), jnp.int32), jnp.zeros((2, 9, D)), decode=True,
                                              method="decode", mutable=["cache"]), v)
    with pytest.raises(ConfigError, match="model.feed_forward"):
        models.get("t5", num_classes=V, feed_forward="swiglu")


# ------------------------------------------------------------------------------------------------------------------
# Decoding and masks
# ------------------------------------------------------------------------------------------------------------------


def test_cached_greedy_decoding_equals_teacher_forced_forward():
    m, v = tiny(), variables()
    src, src_mask = toks(2, S, seed=1), source_mask()
    init = jax.jit(lambda v, s, mk: m.apply(v, s, mk, max_length=T, method="initial_state"))
    step = jax.jit(lambda v, tok, state: m.apply(v, tok, state, method="step"))
    state, token, stepped = init(v, src, src_mask), jnp.zeros((2, 1), jnp.int32), []
    for _ in range(T):  # greedy, one token per cached step
        logits, state = step(v, token, state)  # (B, 1, V)
        stepped.append(logits)
        token = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)[:, None]
    stepped = jnp.concatenate(stepped, axis=1)  # (B, T, V)
    tokens = jnp.argmax(stepped, -1).astype(jnp.int32)  # (B, T)
    diff = float(jnp.max(jnp.abs(stepped - forward(v, src, shift_right(tokens), src_mask))))
    assert diff < 1e-5, diff
    np.testing.assert_array_equal(greedy_decode(m, v, src, T, src_mask), tokens)

    # a varied target through the cache: a 3-token prefill, then single tokens
    target_in = shift_right(toks(2, T, seed=9, low=0))
    logits, state = step(v, target_in[:, :3], init(v, src, src_mask))
    chunks = [logits]
    for t in range(3, T):
        logits, state = step(v, target_in[:, t:t + 1], state)
        chunks.append(logits)
    diff = float(jnp.max(jnp.abs(jnp.concatenate(chunks, 1) - forward(v, src, target_in, src_mask))))
    assert diff < 1e-5, diff


def test_encoder_ignores_padding_and_decoder_ignores_padded_source():
    v = variables()
    src, tgt, mask = toks(2, 6, seed=2), toks(2, T, seed=3, low=0), jnp.asarray([[1] * 6 + [0] * 3] * 2, jnp.int32)
    pad_a, pad_b = (jnp.concatenate([src, toks(2, 3, seed)], axis=1) for seed in (4, 5))  # pads that are real words
    np.testing.assert_allclose(encode(v, pad_a, mask)[:, :6], encode(v, src, jnp.ones_like(src)), atol=1e-5)
    np.testing.assert_allclose(forward(v, pad_a, tgt, mask), forward(v, pad_b, tgt, mask), atol=1e-5)


def test_vmap_over_two_parameter_sets_and_traced_dropout():
    m = tiny(dropout=0.1)
    src, tgt, mask = toks(2, S, seed=5), toks(2, T, seed=6), source_mask()
    vs = [variables(seed) for seed in (0, 1)]
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), *vs)
    # an "rbg" key: XLA:CPU compiles its RngBitGenerator dropout masks ~3x faster than threefry's
    key, traces = jax.random.key(0, impl="rbg"), []

    @jax.jit
    @jax.vmap
    def train_logits(v, rate):  # a population: two parameter sets, two dropout rates, one program
        traces.append(1)
        return m.apply(v, src, tgt, mask, train=True, dropout_rate=rate, rngs={"dropout": key})

    both = train_logits(stacked, jnp.zeros(2))  # rate 0 is the eval forward
    for i in (0, 1):
        np.testing.assert_allclose(both[i], forward(vs[i], src, tgt, mask), atol=1e-5)
    assert not np.allclose(both[0], both[1])
    dropped = train_logits(stacked, jnp.asarray([0.0, 0.5]))
    assert np.allclose(dropped[0], both[0], atol=1e-5) and not np.allclose(dropped[1], both[1], atol=1e-3)
    assert len(traces) == 1


# ------------------------------------------------------------------------------------------------------------------
# Hugging Face state dicts and an independent PyTorch forward pass
# ------------------------------------------------------------------------------------------------------------------


def torch_t5(sd, source, source_mask, target_in, heads=H, buckets=8, max_distance=6, gated=False, tied=True):
    """T5's forward pass from the paper's equations in PyTorch: pre-RMS-norm blocks, unscaled attention plus the
    first layer's relative bias (shared by the stack), ReLU or gated-GELU FFN, tied head scaled by d_model^-0.5."""
    import torch
    import torch.nn.functional as Fn

    t = {k: torch.tensor(np.asarray(v)) for k, v in sd.items()}

    def rms(x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * t[name]

    def bucket(rel, bidirectional):
        nb, out = buckets, torch.zeros_like(rel)
        if bidirectional:
            nb //= 2
            out = out + (rel > 0).long() * nb
            n = rel.abs()
        else:
            n = -torch.clamp(rel, max=0)
        exact = nb // 2
        large = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                         * (nb - exact)).long()
        return out + torch.where(n < exact, n, large.clamp(max=nb - 1))

    def rel_bias(stack, tq, tk, bidirectional):
        rel = torch.arange(tk)[None, :] - torch.arange(tq)[:, None]  # key - query
        table = t[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        return table[bucket(rel, bidirectional)].permute(2, 0, 1)[None]  # (1, H, Tq, Tk)

    def attn(x, ctx, p, bias, add):
        B, Tq = x.shape[0], x.shape[1]
        q, k, v = (Fn.linear(a, t[f"{p}.{n}.weight"]).view(B, -1, heads, DKV).transpose(1, 2)
                   for a, n in ((x, "q"), (ctx, "k"), (ctx, "v")))  # (B, H, T, Dkv)
        s = q @ k.transpose(-1, -2) + add  # no 1/sqrt(d) scaling
        if bias is not None:
            s = s + bias
        return Fn.linear((s.softmax(-1) @ v).transpose(1, 2).reshape(B, Tq, heads * DKV), t[f"{p}.o.weight"])

    def ffn(x, p):
        if gated:
            h = Fn.gelu(Fn.linear(x, t[p + ".wi_0.weight"]), approximate="tanh") * Fn.linear(x, t[p + ".wi_1.weight"])
        else:
            h = torch.relu(Fn.linear(x, t[p + ".wi.weight"]))
        return Fn.linear(h, t[p + ".wo.weight"])

    src, tgt = (torch.tensor(np.asarray(a), dtype=torch.long) for a in (source, target_in))
    neg = torch.finfo(torch.float32).min
    pad = (1.0 - torch.tensor(np.asarray(source_mask), dtype=torch.float32))[:, None, None, :] * neg
    x, S = t["shared.weight"][src], src.shape[1]
    bias = rel_bias("encoder", S, S, True)
    for i in range(L):
        p = f"encoder.block.{i}.layer"
        x = x + attn(rms(x, f"{p}.0.layer_norm.weight"), rms(x, f"{p}.0.layer_norm.weight"), f"{p}.0.SelfAttention",
                     bias, pad)
        x = x + ffn(rms(x, f"{p}.1.layer_norm.weight"), f"{p}.1.DenseReluDense")
    enc = rms(x, "encoder.final_layer_norm.weight")
    y, T = t["shared.weight"][tgt], tgt.shape[1]
    bias = rel_bias("decoder", T, T, False)
    causal = torch.triu(torch.full((T, T), neg), 1)[None, None]
    for i in range(L):
        p = f"decoder.block.{i}.layer"
        h = rms(y, f"{p}.0.layer_norm.weight")
        y = y + attn(h, h, f"{p}.0.SelfAttention", bias, causal)
        y = y + attn(rms(y, f"{p}.1.layer_norm.weight"), enc, f"{p}.1.EncDecAttention", None, pad)
        y = y + ffn(rms(y, f"{p}.2.layer_norm.weight"), f"{p}.2.DenseReluDense")
    y = rms(y, "decoder.final_layer_norm.weight")
    if tied:
        return enc.numpy(), (y * D ** -0.5 @ t["shared.weight"].T).numpy()
    return enc.numpy(), Fn.linear(y, t["lm_head.weight"]).numpy()


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_converter_matches_pytorch_forward(version):
    v11 = version == "v1.1"
    sd = hf_state_dict(seed=3, gated=v11, untied=v11)
    params = convert_state_dict(sd, "t5_small")  # found by model-name prefix
    src, tgt, mask = toks(2, S, seed=7), toks(2, T, seed=8, low=0), source_mask()  # past max_distance 6
    if v11:
        m = tiny(feed_forward="gated-gelu", tie_embeddings=False)
        logits, enc = jax.jit(lambda v: (m.apply(v, src, tgt, mask), m.apply(v, src, mask, method="encode")))(params)
    else:
        m = tiny()
        logits, enc = forward(params, src, tgt, mask), encode(params, src, mask)
    report = check_against(params, jax.eval_shape(m.init, jax.random.key(0), src, tgt))
    assert report.ok, report.describe()
    enc_ref, logits_ref = torch_t5(sd, src, mask, tgt, gated=v11, tied=not v11)
    real = np.asarray(mask) == 1
    np.testing.assert_allclose(np.asarray(enc)[real], enc_ref[real], atol=1e-4)
    np.testing.assert_allclose(logits, logits_ref, atol=1e-4)


def test_converter_lists_missing_and_unexpected_by_name():
    sd = hf_state_dict()
    del sd["decoder.block.1.layer.2.DenseReluDense.wo.weight"]
    sd["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = np.zeros((8, H), np.float32)
    sd["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] = np.zeros((8, H), np.float32)
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0  # untied: a head this tied model does not have
    converted = convert_state_dict(sd, "t5")
    assert not any("embed_tokens" in k for k in flatten(converted))  # tied copies of shared are dropped
    report = check_against(converted, jax.eval_shape(tiny().init, jax.random.key(0), toks(1, 4, 0)))
    assert report.missing == ["params/decoder/block_1/ffn/fc_out/kernel"]
    assert report.unexpected == ["params/lm_head/kernel",
                                 "unmapped/decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
                                 "unmapped/encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"]
    assert "unmapped/encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in report.describe()


# ------------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------------


def test_tiny_t5_learns_to_reverse_sequences():
    m = T5(vocab_size=12, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    g = np.random.default_rng(0)
    body = g.integers(2, 12, (32, 6))
    eos = np.ones((32, 1), np.int64)  # T5 ends every sequence with </s> = 1
    src = jnp.asarray(np.concatenate([body, eos], 1), jnp.int32)  # (32, 7)
    tgt = jnp.asarray(np.concatenate([body[:, ::-1], eos], 1), jnp.int32)  # (32, 7): reversed, then </s>

    def init(path, s):  # T5-like scales without compiling an init: norms 1, embeddings N(0, 1), kernels 1/sqrt(fan_in)
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return jnp.ones(s.shape)
        std = 1.0 if "shared" in name else 1.0 / math.sqrt(s.shape[0])
        return jnp.asarray(g.standard_normal(s.shape) * std, jnp.float32)

    g = np.random.default_rng(1)
    params = jax.tree_util.tree_map_with_path(init, jax.eval_shape(m.init, jax.random.key(0), src, tgt)["params"])
    opt = optax.adam(3e-3)

    def loss_fn(p):
        logits = m.apply({"params": p}, src, shift_right(tgt))
        return optax.softmax_cross_entropy_with_integer_labels(logits, tgt).mean()

    @jax.jit
    def train(p):
        def step(carry, _):
            p, s = carry
            loss, grad = jax.value_and_grad(loss_fn)(p)
            u, s = opt.update(grad, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(step, (p, opt.init(p)), None, length=200)
        return p, losses

    params, losses = train(params)
    assert float(losses[-1]) < 0.05 * float(losses[0]), (losses[0], losses[-1])
    out = greedy_decode(m, {"params": params}, src, 7, eos_id=1)
    assert float(jnp.mean(out == tgt)) > 0.95


# ------------------------------------------------------------------------------------------------------------------
# Beam search (jaxdl.generate.beam_search) on a 4-token vocabulary
# ------------------------------------------------------------------------------------------------------------------

BV, BEAM_LEN = 4, 3  # vocabulary (0 start/pad, 1 end of sequence, 2 and 3), longest target in the exhaustive check


@pytest.fixture(scope="module")
def beam_model():
    """A one-layer T5 over 4 tokens with random weights (seed and scale give varied best hypotheses) and three
    sources, two of them padded."""
    m = T5(vocab_size=BV, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, num_buckets=8, max_distance=6)
    src = jnp.asarray(np.random.default_rng(0).integers(2, BV, (3, 5)), jnp.int32)
    mask = jnp.asarray([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0]], jnp.int32)
    g = np.random.default_rng(4)
    shapes = jax.eval_shape(m.init, jax.random.key(0), src, src)
    v = jax.tree.map(lambda s: jnp.asarray(g.standard_normal(s.shape) * 1.3, jnp.float32), shapes)
    fwd = jax.jit(lambda v, s, t, mk: m.apply(v, s, t, mk))
    return m, v, src, mask, fwd


def _all_hypotheses():
    """Every target of at most BEAM_LEN tokens: ends with </s> = 1, or runs BEAM_LEN tokens without one; as
    (N, BEAM_LEN) ids padded with 0 and their lengths (N,)."""
    import itertools

    hyps = [h for n in range(1, BEAM_LEN + 1) for h in itertools.product(range(BV), repeat=n)
            if 1 not in h[:-1] and (n == BEAM_LEN or h[-1] == 1)]
    targets = np.zeros((len(hyps), BEAM_LEN), np.int32)
    for j, h in enumerate(hyps):
        targets[j, :len(h)] = h
    return targets, np.array([len(h) for h in hyps])


@pytest.fixture(scope="module")
def exact(beam_model):
    """Teacher-forced log-probabilities (no cache) of every hypothesis on every source: ``(scores, logp)`` with
    ``scores(alpha)`` (B, N) = the sum of a hypothesis's target log-probabilities over its length divided by
    ((5 + length) / 6) ** alpha, and ``logp`` (B, N, BEAM_LEN, V) the log-softmax at every target position."""
    m, v, src, mask, fwd = beam_model
    targets, lengths = _all_hypotheses()
    N = len(targets)
    totals, logps = [], []
    for b in range(src.shape[0]):
        logits = fwd(v, jnp.repeat(src[b:b + 1], N, 0), shift_right(jnp.asarray(targets)),
                     jnp.repeat(mask[b:b + 1], N, 0))  # (N, T, V)
        logps.append(np.asarray(jax.nn.log_softmax(logits, -1)))
        logp = np.take_along_axis(logps[-1], targets[:, :, None], -1)[..., 0]  # (N, T)
        totals.append((logp * (np.arange(BEAM_LEN)[None] < lengths[:, None])).sum(1))  # (N,)
    return (lambda alpha: np.stack(totals) / ((5 + lengths) / 6) ** alpha), np.stack(logps)


def test_beam_search_finds_the_exact_best_hypothesis_of_a_tiny_vocabulary(beam_model, exact):
    from jaxdl import generate

    m, v, src, mask, _ = beam_model
    targets, lengths = _all_hypotheses()
    # a beam as wide as the most extensions of any step (9 live prefixes x 4 tokens) never drops a hypothesis
    before = generate._beam_search._cache_size()
    best_lengths = set()
    for alpha in (0.0, 1.0):
        tokens, scores = generate.beam_search(m, v, src, mask, beam_size=36, max_len=BEAM_LEN, length_penalty=alpha,
                                              eos_id=1)
        table = exact[0](alpha)  # (B, N)
        best = np.argmax(table, axis=1)
        np.testing.assert_array_equal(tokens, targets[best])
        np.testing.assert_allclose(scores, table[np.arange(3), best], atol=1e-5)
        best_lengths |= set(lengths[best].tolist())
    assert len(best_lengths) > 1  # the check is not trivial: short and long winners, alpha matters
    assert generate._beam_search._cache_size() == before + 1  # length_penalty is traced


def test_beam_size_one_is_greedy(beam_model, exact):
    from jaxdl import generate

    m, v, src, mask, _ = beam_model
    targets, lengths = _all_hypotheses()
    # greedy from the uncached log-probabilities: the argmax after each prefix (a prefix of some hypothesis)
    greedy = np.zeros((3, BEAM_LEN), np.int32)
    for b in range(3):
        for i in range(BEAM_LEN):
            j = np.flatnonzero((targets[:, :i] == greedy[b, :i]).all(1) & (lengths > i))[0]
            greedy[b, i] = np.argmax(exact[1][b, j, i])
            if greedy[b, i] == 1:
                break
    one, one_scores = generate.beam_search(m, v, src, mask, beam_size=1, max_len=BEAM_LEN, length_penalty=0.0,
                                           eos_id=1)
    np.testing.assert_array_equal(one, greedy)
    index = [int(np.flatnonzero((targets == row).all(1))[0]) for row in greedy]
    np.testing.assert_allclose(one_scores, exact[0](0.0)[np.arange(3), index], atol=1e-5)
    # the exact search (the test above) scores at least as well as greedy under any alpha, and here better
    wide, wide_scores = generate.beam_search(m, v, src, mask, beam_size=36, max_len=BEAM_LEN, length_penalty=1.0,
                                             eos_id=1)
    assert np.all(np.asarray(wide_scores) >= exact[0](1.0)[np.arange(3), index] - 1e-5)
    assert not np.array_equal(wide, greedy)
    # errors name the culprit
    with pytest.raises(JaxdlError, match="encode/initial_state/step"):
        generate.beam_search(models.get("gpt", num_classes=BV), {}, src, beam_size=2, max_len=3)
    with pytest.raises(JaxdlError, match="source_mask of shape"):
        generate.beam_search(m, v, src, mask[:, :4], beam_size=2, max_len=3)
    with pytest.raises(JaxdlError, match="must be positive"):
        generate.beam_search(m, v, src, mask, beam_size=0, max_len=3)


def test_padded_decoder_prompts_through_the_cache_equal_the_full_forward(beam_model):
    """Rows with decoder prompts of different lengths (start token + forced prefix), padded sources: one prefill,
    each row at its own cache position (jaxdl.generate.generate_padded), the same logits as the uncached forward."""
    from jaxdl import generate

    m, v, src, mask, fwd = beam_model
    lengths, n = [1, 3, 2], 2
    prompt = jnp.asarray([[0, 0, 0], [0, 3, 2], [0, 2, 0]], jnp.int32)  # (3, 3) right-padded, start token first
    state = jax.jit(lambda v: m.apply(v, src, mask, max_length=3 + n, method="initial_state"))(v)  # encoded once
    states = generate.split_rows(state, 3)  # one state per row: leaves (3, 1, ...), counters (3,)

    def step(state, tokens):
        return m.apply(v, tokens, state, method="step")

    tokens, emitted, last = generate.generate_padded(step, states, prompt, jnp.asarray(lengths), jax.random.key(0),
                                                     num_steps=n, temperature=0.0)
    assert emitted.tolist() == [n] * 3
    target_in = np.zeros((3, 3 + n), np.int32)
    for b, k in enumerate(lengths):
        target_in[b, :k], target_in[b, k:k + n] = prompt[b, :k], tokens[b]
    full = np.asarray(fwd(v, src, jnp.asarray(target_in), mask))  # (3, 5, V), no cache
    for b, k in enumerate(lengths):
        np.testing.assert_array_equal(np.argmax(full[b, k - 1:k + n - 1], -1), tokens[b])
        np.testing.assert_allclose(last[b], full[b, k + n - 1], atol=1e-5)
