"""jaxdl.nn attention against PyTorch (scaled_dot_product_attention, nn.MultiheadAttention with the same weights),
the decoding cache against uncached causal attention (MHA and GQA, with RoPE), masks, dropout and error messages."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxdl.errors import ConfigError, ModelInputError  # noqa: E402
from jaxdl.nn import (MultiHeadAttention, causal_mask, combine_masks, dot_product_attention,  # noqa: E402
                      padding_mask, segment_mask)

ATOL = 1e-5
B, T, D = 2, 6, 16


def key(seed):
    """A key for initialisation whose random bits compile several times faster on CPU than the default threefry's
    (but differ under vmap from the unbatched ones: dropout tests use the default keys)."""
    return jax.random.key(seed, impl="unsafe_rbg")


def jitted(fn, **static):
    """``fn`` with ``static`` keyword arguments bound, jitted (eager Flax is many times slower on CPU)."""
    return jax.jit(partial(fn, **static))


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def to_torch(a):  # (B, T, H, Dh) -> (B, H, T, Dh)
    return torch.tensor(np.asarray(a)).transpose(1, 2)


def from_torch(t):  # (B, H, T, Dh) -> (B, T, H, Dh)
    return t.transpose(1, 2).numpy()


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_dot_product_attention_matches_torch_causal_and_masked(heads, kv_heads):
    q, k, v = rand(B, T, heads, 8, seed=0), rand(B, T, kv_heads, 8, seed=1), rand(B, T, kv_heads, 8, seed=2)
    gqa = dict(enable_gqa=True) if kv_heads != heads else {}
    sdpa = torch.nn.functional.scaled_dot_product_attention
    ref = from_torch(sdpa(to_torch(q), to_torch(k), to_torch(v), is_causal=True, **gqa))
    attend = jax.jit(dot_product_attention, static_argnames="scale")
    np.testing.assert_allclose(attend(q, k, v, causal_mask(T)), ref, atol=ATOL)
    # A boolean mask combining padding and causality (key 0 is always visible: no fully masked rows).
    mask = np.asarray(combine_masks(causal_mask(T), padding_mask(np.array([6, 3]), T)))
    ref = from_torch(sdpa(to_torch(q), to_torch(k), to_torch(v), attn_mask=torch.tensor(mask), **gqa))
    np.testing.assert_allclose(attend(q, k, v, mask), ref, atol=ATOL)
    # Custom scale and an additive bias.
    bias = rand(1, heads, T, T, seed=3)
    ref = from_torch(sdpa(to_torch(q), to_torch(k), to_torch(v), attn_mask=torch.tensor(bias), scale=1.0, **gqa))
    np.testing.assert_allclose(attend(q, k, v, bias=bias, scale=1.0), ref, atol=ATOL)


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    q, k, v = rand(1, 3, 2, 4, seed=0), rand(1, 3, 2, 4, seed=1), rand(1, 3, 2, 4, seed=2)
    mask = np.ones((1, 1, 3, 3), bool)
    mask[..., 1, :] = False
    out, g = jax.jit(jax.value_and_grad(lambda q: dot_product_attention(q, k, v, mask)[0, 1].sum()))(q)
    assert out == 0.0
    assert np.isfinite(g).all() and (g[:, 1] == 0).all()


def test_bf16_inputs_keep_float32_scores():
    q, k, v = rand(1, T, 2, 8, seed=0), rand(1, T, 2, 8, seed=1), rand(1, T, 2, 8, seed=2)
    lo = [jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)]
    out, w = dot_product_attention(*lo, causal_mask(T), return_weights=True)
    assert out.dtype == jnp.bfloat16 and w.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out, np.float32), dot_product_attention(q, k, v, causal_mask(T)),
                               atol=5e-2)


def torch_mha_pair(kdim=None, seed=0):
    torch.manual_seed(seed)
    ref = torch.nn.MultiheadAttention(D, 4, batch_first=True, kdim=kdim, vdim=kdim)
    sd = {n: p.detach().numpy() for n, p in ref.named_parameters()}
    if kdim is None:
        wq, wk, wv = np.split(sd["in_proj_weight"], 3, axis=0)
    else:
        wq, wk, wv = sd["q_proj_weight"], sd["k_proj_weight"], sd["v_proj_weight"]
    bq, bk, bv = np.split(sd["in_proj_bias"], 3)
    params = {"query": {"kernel": wq.T, "bias": bq}, "key": {"kernel": wk.T, "bias": bk},
              "value": {"kernel": wv.T, "bias": bv},
              "out": {"kernel": sd["out_proj.weight"].T, "bias": sd["out_proj.bias"]}}
    return ref, {"params": params}


def test_self_attention_matches_torch_multihead_attention_with_key_padding():
    ref, variables = torch_mha_pair()
    x = rand(B, T, D, seed=4)
    lengths = np.array([6, 4])
    token_mask = np.arange(T)[None] < lengths[:, None]  # (B, T)
    y_ref, _ = ref(*(torch.tensor(x),) * 3, key_padding_mask=torch.tensor(~token_mask), need_weights=False)
    mha = MultiHeadAttention(num_heads=4)
    assert jax.tree.map(np.shape, jax.eval_shape(mha.init, key(0), x)) == jax.tree.map(np.shape, variables)
    apply = jitted(mha.apply)
    y = apply(variables, x, mask=padding_mask(token_mask))
    np.testing.assert_allclose(y, y_ref.detach().numpy(), atol=ATOL)
    # Causal self-attention (torch: attn_mask True = not allowed).
    y_ref, _ = ref(*(torch.tensor(x),) * 3, attn_mask=torch.tensor(~np.asarray(causal_mask(T))[0, 0]),
                   need_weights=False)
    np.testing.assert_allclose(apply(variables, x, mask=causal_mask(T)), y_ref.detach().numpy(), atol=ATOL)


def test_cross_attention_matches_torch_multihead_attention():
    ref, variables = torch_mha_pair(kdim=10)
    x, ctx = rand(B, T, D, seed=5), rand(B, 4, 10, seed=6)
    ctx_mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    y_ref, _ = ref(torch.tensor(x), torch.tensor(ctx), torch.tensor(ctx),
                   key_padding_mask=torch.tensor(~ctx_mask), need_weights=False)
    y = jitted(MultiHeadAttention(num_heads=4).apply)(variables, x, ctx, mask=padding_mask(ctx_mask))
    np.testing.assert_allclose(y, y_ref.detach().numpy(), atol=ATOL)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_cached_decoding_equals_uncached_causal_attention(kv_heads):
    mha = MultiHeadAttention(num_heads=4, num_kv_heads=kv_heads, use_bias=False, rope_theta=10000.0)
    x = rand(B, T, D, seed=7)
    params = jitted(mha.init)(key(1), x)["params"]
    full = jitted(mha.apply)({"params": params}, x, mask=causal_mask(T))
    cache = jitted(mha.init, decode=True)(key(1), jnp.zeros((B, T + 2, D)))["cache"]
    assert cache["cached_key"].shape == (B, T + 2, kv_heads, D // 4) and int(cache["cache_index"]) == 0
    step = jax.jit(lambda c, xt: mha.apply({"params": params, "cache": c}, xt, decode=True, mutable=["cache"]))

    c, outs = cache, []
    for t in range(T):  # one token at a time
        y, upd = step(c, x[:, t:t + 1])
        c = upd["cache"]
        outs.append(y)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, atol=ATOL)
    assert int(c["cache_index"]) == T

    y0, upd = step(cache, x[:, :4])  # prefill 4 tokens, then 2 steps of one
    y1, upd = step(upd["cache"], x[:, 4:5])
    y2, upd = step(upd["cache"], x[:, 5:6])
    np.testing.assert_allclose(np.concatenate([y0, y1, y2], axis=1), full, atol=ATOL)


def test_decoding_past_the_cache_is_nan_and_too_long_inputs_fail():
    mha = MultiHeadAttention(num_heads=2)
    x = rand(1, 3, 8)
    v = jitted(mha.init, decode=True)(key(0), jnp.zeros((1, 3, 8)))
    step = jitted(mha.apply, decode=True, mutable=["cache"])
    y, upd = step(v, x[:, :2])
    assert np.isfinite(y).all()
    y, _ = step({**v, **upd}, x[:, :2])  # 2 + 2 > 3
    assert np.isnan(y).all()
    with pytest.raises(ModelInputError, match="4 new tokens do not fit in a cache of length 3"):
        step(v, rand(1, 4, 8))


def test_segment_mask_packed_sequences_equal_separate_runs():
    mha = MultiHeadAttention(num_heads=2, num_kv_heads=1, rope_theta=10000.0)
    a, b = rand(1, 4, 8, seed=8), rand(1, 3, 8, seed=9)
    variables = jitted(mha.init)(key(2), a)
    apply = jitted(mha.apply)
    packed = np.concatenate([a, b, np.zeros((1, 1, 8), np.float32)], axis=1)  # (1, 8, 8): a, b, one pad
    seg = np.array([[1, 1, 1, 1, 2, 2, 2, 0]])
    pos = np.array([[0, 1, 2, 3, 0, 1, 2, 0]])
    mask = combine_masks(segment_mask(seg), causal_mask(8))
    y = apply(variables, packed, mask=mask, positions=pos)
    np.testing.assert_allclose(y[:, :4], apply(variables, a, mask=causal_mask(4)), atol=ATOL)
    np.testing.assert_allclose(y[:, 4:7], apply(variables, b, mask=causal_mask(3)), atol=ATOL)


def test_attention_dropout_traced_rate_zero_is_eval_and_vmaps_over_members():
    mha = MultiHeadAttention(num_heads=2, dropout=0.5)
    x = rand(B, T, 8)
    stacked = jax.jit(jax.vmap(lambda k: mha.init(k, x)))(jax.random.split(key(3), 3))
    keys = jax.random.split(jax.random.key(3), 3)  # a population of 3 members

    def run(v, rate, key):
        return mha.apply(v, x, mask=causal_mask(T), train=True, dropout_rate=rate, rngs={"dropout": key})

    def check(stacked, rates, keys):  # one compilation for the three runs
        member2 = jax.tree.map(lambda a: a[2], stacked)
        return (jax.vmap(run)(stacked, rates, keys), run(member2, rates[2], keys[2]),
                jax.vmap(lambda v: mha.apply(v, x, mask=causal_mask(T)))(stacked))

    out, alone, evaluate = jax.jit(check)(stacked, jnp.array([0.0, 0.3, 0.9]), keys)
    np.testing.assert_allclose(out[0], evaluate[0], atol=ATOL)  # traced rate 0 == eval
    np.testing.assert_allclose(out[2], alone, atol=ATOL)  # a member == its standalone run
    assert not np.allclose(out[2], evaluate[2], atol=1e-3)
    member0 = jax.tree.map(lambda a: a[0], stacked)
    with pytest.raises(ModelInputError, match="needs an RNG key"):
        jax.eval_shape(partial(mha.apply, train=True), member0, x)


def test_options_head_dim_no_projection_and_no_bias():
    mha = MultiHeadAttention(num_heads=3, head_dim=4, use_bias=False, out_bias=True, output_projection=True,
                             out_features=5)
    shapes = jax.tree.map(np.shape, jax.eval_shape(mha.init, key(0), rand(1, 2, 10))["params"])
    assert shapes == {"query": {"kernel": (10, 12)}, "key": {"kernel": (10, 12)}, "value": {"kernel": (10, 12)},
                      "out": {"kernel": (12, 5), "bias": (5,)}}
    raw = MultiHeadAttention(num_heads=3, head_dim=4, output_projection=False)
    y, _ = jax.eval_shape(raw.init_with_output, key(0), rand(1, 2, 10))
    assert y.shape == (1, 2, 12)


def test_error_messages_name_the_culprit():
    x = rand(1, 2, 10)
    with pytest.raises(ConfigError, match="d_model=10 is not divisible by num_heads=4"):
        jax.eval_shape(MultiHeadAttention(num_heads=4).init, key(0), x)
    with pytest.raises(ConfigError, match="num_heads=6 is not divisible by num_kv_heads=4"):
        jax.eval_shape(MultiHeadAttention(num_heads=6, num_kv_heads=4, head_dim=2).init, key(0), x)
    mha = MultiHeadAttention(num_heads=2)
    variables = jax.eval_shape(mha.init, key(0), x)
    with pytest.raises(ModelInputError, match="decode=True needs the 'cache' collection"):
        jax.eval_shape(partial(mha.apply, decode=True, mutable=["cache"]), variables, x)
    cached = jax.eval_shape(partial(mha.init, decode=True), key(0), x)
    with pytest.raises(ModelInputError, match="mutable=\\['cache'\\]"):
        jax.eval_shape(partial(mha.apply, decode=True), cached, x)
    with pytest.raises(ModelInputError, match="mask of shape \\(3, 1, 1, 2\\) does not broadcast"):
        jax.eval_shape(partial(mha.apply, mask=np.ones((3, 1, 1, 2), bool)), variables, x)
    with pytest.raises(ModelInputError, match="rope_theta is set but a context was given"):
        jax.eval_shape(MultiHeadAttention(num_heads=2, rope_theta=1e4).init, key(0), x, x)
    with pytest.raises(ModelInputError, match="pass length="):
        padding_mask(np.array([1, 2]))
