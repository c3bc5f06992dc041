"""Attention maps: MultiHeadAttention records its probabilities only when asked; jaxdl.interpret.attention_maps
collects them per layer for GPT, Llama (grouped-query), BERT (padding) and T5 (encoder, decoder, cross), checked
against a softmax computed here; plot_attention writes a layers × heads PNG."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import models
from jaxdl.errors import JaxdlError
from jaxdl.interpret import attention_maps, plot_attention
from jaxdl.models.bert import Bert
from jaxdl.models.t5 import T5

V, B, T = 13, 2, 6


def tokens(shape, seed=0, low=1):
    return jnp.asarray(np.random.default_rng(seed).integers(low, V, shape), jnp.int32)


def random_variables(init, *example, seed=0):
    """Random values in the shapes ``init`` would give (traced with eval_shape, never compiled: tests stay fast)."""
    g = np.random.default_rng(seed)
    shapes = jax.eval_shape(init, jax.random.key(0), *example)
    return jax.tree.map(lambda s: jnp.asarray(g.standard_normal(s.shape) * 0.4, s.dtype), shapes)


@pytest.fixture(scope="module")
def gpt():
    model = models.get("gpt", num_classes=V, context_length=8, d_model=16, num_layers=2, num_heads=2,
                       input_shape=(T,))
    variables = random_variables(model.init, tokens((1, T)))
    x = tokens((B, T))
    return model, variables, x, attention_maps(model, variables, x)  # one compile shared by the GPT tests


def assert_rows_sum_to_one(a, valid_rows=None):
    sums = a.sum(-1)  # (B, H, Tq)
    np.testing.assert_allclose(sums if valid_rows is None else sums[valid_rows], 1.0, atol=1e-5)


def test_gpt_maps_are_causal_probabilities_and_match_a_softmax_computed_here(gpt):
    model, variables, x, maps = gpt
    assert list(maps) == ["block_0/attn", "block_1/attn"]
    for a in maps.values():
        assert a.shape == (B, 2, T, T) and a.dtype == np.float32
        assert_rows_sum_to_one(a)
        assert np.all(a[..., np.triu_indices(T, k=1)[0], np.triu_indices(T, k=1)[1]] == 0.0)  # no future keys
        assert np.all(np.diagonal(a, axis1=-2, axis2=-1) > 0)
    # layer 0 from its parameters: A = softmax(q kᵀ / sqrt(Dh)) with q, k from LayerNorm(wte[x] + wpe[t])
    p = jax.tree.map(np.asarray, variables["params"])
    h = p["token_embedding"]["embedding"][np.asarray(x)] + p["positions"]["position_embedding"]["embedding"][:T]
    n = p["block_0"]["norm_1"]
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5) * n["scale"] + n["bias"]
    att = p["block_0"]["attn"]
    q, k = ((h @ att[m]["kernel"] + att[m]["bias"]).reshape(B, T, 2, 8).transpose(0, 2, 1, 3)
            for m in ("query", "key"))  # (B, H, T, Dh)
    s = np.where(np.tril(np.ones((T, T), bool)), q @ k.transpose(0, 1, 3, 2) / np.sqrt(8), -np.inf)
    want = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(maps["block_0/attn"], want / want.sum(-1, keepdims=True), atol=1e-5)


def test_recording_changes_nothing_unless_asked(gpt):
    model, variables, x, _ = gpt
    assert "intermediates" not in variables  # init does not keep them
    both = jax.jit(lambda v, x: (model.module.apply(v, x),  # intermediates not mutable: just the logits
                                 model.module.apply(v, x, mutable=["intermediates"])))
    plain, (recorded, state) = both(variables, x)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(recorded))
    assert state["intermediates"]["block_1"]["attn"]["attention_weights"][0].shape == (B, 2, T, T)
    logits, model_state = jax.eval_shape(model.apply, variables, x)  # the jaxdl boundary: nothing extra kept
    assert model_state == {} and logits.shape == (B, T, V)


def test_llama_grouped_query_gives_one_map_per_query_head():
    model = models.get("llama", num_classes=V, context_length=8, d_model=16, num_layers=1, num_heads=4,
                       num_kv_heads=2, mlp_dim=24, input_shape=(T,))
    x = tokens((B, T))
    maps = attention_maps(model, random_variables(model.init, x, seed=1), x)
    a = maps["block_0/attn"]
    assert list(maps) == ["block_0/attn"] and a.shape == (B, 4, T, T)
    assert_rows_sum_to_one(a)
    assert np.allclose(np.triu(a, k=1), 0.0)


def test_bert_padded_keys_get_zero_weight():
    m = Bert(head="none", vocab_size=V, max_positions=T, d_model=16, num_layers=2, num_heads=2, ffn_dim=32,
             dropout=0.0, attention_dropout=0.0)
    x = tokens((B, T))
    mask = jnp.asarray([[1] * T, [1] * 4 + [0] * (T - 4)], jnp.int32)
    variables = random_variables(m.init, x, seed=2)
    maps = attention_maps(m, variables, x, token_mask=mask)  # the mask as a keyword argument of the call
    assert list(maps) == ["layer_0/attention", "layer_1/attention"]
    for a in maps.values():
        assert a.shape == (B, 2, T, T)
        assert_rows_sum_to_one(a)
        assert np.all(a[1, :, :, 4:] == 0.0) and np.all(a[1, :, :, :4] > 0)  # padded keys: exactly zero


def test_t5_encoder_decoder_and_cross_attention():
    m = T5(vocab_size=V, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, num_buckets=8, max_distance=6)
    S, Tt = 7, 4
    src, tgt = tokens((B, S)), tokens((B, Tt), seed=3, low=0)
    smask = jnp.asarray([[1] * S, [1] * 5 + [0] * 2], jnp.int32)
    maps = attention_maps(m, random_variables(m.init, src, tgt, seed=3), {"source": src, "target_in": tgt,
                                                                   "source_mask": smask})
    assert list(maps) == ["encoder/block_0/self_attention", "decoder/block_0/self_attention",
                          "decoder/block_0/cross_attention"]  # call order: the encoder, then the decoder
    for name, a in maps.items():
        assert_rows_sum_to_one(a)
        if name.startswith("encoder"):
            assert a.shape == (B, 2, S, S) and np.all(a[1, :, :, 5:] == 0.0)
        elif name.endswith("cross_attention"):
            assert a.shape == (B, 2, Tt, S) and np.all(a[1, :, :, 5:] == 0.0)  # padded source keys
        else:
            assert a.shape == (B, 2, Tt, Tt) and np.allclose(np.triu(a, k=1), 0.0)  # causal decoder


def test_plot_attention_writes_a_png_grid(gpt, tmp_path):
    maps = gpt[3]
    labels = list("abcdef")
    path = plot_attention(maps, labels, tmp_path / "sub" / "attention.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    one = plot_attention(maps, None, tmp_path / "one.png", layers=[-1], heads=[1], example=1)
    from PIL import Image

    assert Image.open(path).size[0] > Image.open(one).size[0] and Image.open(path).size[1] > Image.open(one).size[1]
    with pytest.raises(JaxdlError, match="no attention map named 'block_9/attn'; maps: block_0/attn, block_1/attn"):
        plot_attention(maps, labels, tmp_path / "x.png", layers=["block_9/attn"])
    with pytest.raises(JaxdlError, match="layer index 2 is out of range for 2 maps"):
        plot_attention(maps, labels, tmp_path / "x.png", layers=[2])
    with pytest.raises(JaxdlError, match="head 2 is out of range; the maps have 2 heads"):
        plot_attention(maps, labels, tmp_path / "x.png", heads=[2])
    with pytest.raises(JaxdlError, match="example 2 is out of range for a batch of 2"):
        plot_attention(maps, labels, tmp_path / "x.png", example=2)
    with pytest.raises(JaxdlError, match="no attention maps to draw"):
        plot_attention({}, labels, tmp_path / "x.png")
    with pytest.raises(JaxdlError, match=r"map 'block_0/attn' has shape \(2, 6, 6\); expected \(B, H, Tq, Tk\)"):
        plot_attention({"block_0/attn": maps["block_0/attn"][0]}, labels, tmp_path / "x.png")


def test_models_without_attention_are_refused():
    mlp = models.get("mlp", num_classes=3, input_shape=(4,))
    x = jnp.zeros((1, 4))
    with pytest.raises(JaxdlError, match="MLP recorded no attention weights"):
        attention_maps(mlp, random_variables(mlp.init, x), x)
    with pytest.raises(JaxdlError, match="expected a jaxdl Model or a Linen module, got function"):
        attention_maps(lambda v, x: x, {}, x)


def test_explain_attention_for_a_text_run(gpt, tmp_path, capsys):
    from types import SimpleNamespace

    from jaxdl import cli
    from jaxdl.errors import DataError

    model, variables, _, _ = gpt
    vocab = ["<unk>", *"abcdefghij ", "\n"]  # a character data set's info["vocab"] (13 entries = V)
    run = SimpleNamespace(model=model, dataset=SimpleNamespace(name="letters", info={"vocab": vocab}))
    npz, png = cli.explain_attention(run, {"params": variables["params"], "model_state": {}}, "ab c\nd", tmp_path)
    with np.load(npz) as f:
        assert list(f.files) == ["block_0/attn", "block_1/attn"] and f["block_1/attn"].shape == (1, 2, 6, 6)
        assert_rows_sum_to_one(f["block_0/attn"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert cli.encode_text(run.dataset, "a b")[1] == ["a", "␣", "b"]
    with pytest.raises(DataError, match="data set 'digits' has no vocabulary or tokenizer to encode text with"):
        cli.encode_text(SimpleNamespace(name="digits", info={}), "abc")
    with pytest.raises(DataError, match="'' encodes to no tokens"):
        cli.explain_attention(run, {"params": variables["params"], "model_state": {}}, "", tmp_path)
    assert cli.main(["explain", str(tmp_path)]) == 2
    assert "give --image FILE (attribution maps of an image model) or --attention TEXT" in capsys.readouterr().err
