"""Hugging Face GPT-2 / BERT / T5 state dicts through the converters and `jaxdl convert`: GPT-2 logits against an
independent numpy forward written here from GPT-2's equations, `.safetensors` and PyTorch `.bin` round trips for the
three families, and the messages that name missing and unexpected keys."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.numpy import save_file  # noqa: E402

from jaxdl import cli, models  # noqa: E402
from jaxdl.convert import check_against, convert_state_dict, flatten  # noqa: E402
from jaxdl.errors import CheckpointError, ConfigError  # noqa: E402
from jaxdl.models.bert import convert_bert_state_dict  # noqa: E402
from jaxdl.models.gpt import config_from_hf, convert_gpt2_state_dict  # noqa: E402
from jaxdl.models.t5 import convert_t5_state_dict  # noqa: E402
from jaxdl.transfer import load_variables  # noqa: E402

# tiny GPT-2: vocabulary, context, width, layers, heads, sequence length
V, C, D, L, H, T = 23, 12, 16, 2, 4, 9
GPT_FIELDS = [f"model.context_length={C}", f"model.d_model={D}", f"model.num_layers={L}", f"model.num_heads={H}"]


def gpt2_state_dict(seed=0, prefix="transformer.", lm_head=True):
    """Random torch tensors with GPT2LMHeadModel's names and shapes (Conv1D weights (in, out), fused c_attn) and
    its causal-mask buffers."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, std=0.2: torch.randn(*s, generator=g) * std  # noqa: E731
    sd = {f"{prefix}wte.weight": r(V, D, std=0.5), f"{prefix}wpe.weight": r(C, D, std=0.1)}
    for i in range(L):
        p = f"{prefix}h.{i}."
        sd.update({f"{p}ln_1.weight": 1 + r(D, std=0.1), f"{p}ln_1.bias": r(D, std=0.1),
                   f"{p}attn.bias": torch.tril(torch.ones(C, C, dtype=torch.bool))[None, None],
                   f"{p}attn.masked_bias": torch.tensor(-1e4),
                   f"{p}attn.c_attn.weight": r(D, 3 * D), f"{p}attn.c_attn.bias": r(3 * D, std=0.1),
                   f"{p}attn.c_proj.weight": r(D, D), f"{p}attn.c_proj.bias": r(D, std=0.1),
                   f"{p}ln_2.weight": 1 + r(D, std=0.1), f"{p}ln_2.bias": r(D, std=0.1),
                   f"{p}mlp.c_fc.weight": r(D, 4 * D), f"{p}mlp.c_fc.bias": r(4 * D, std=0.1),
                   f"{p}mlp.c_proj.weight": r(4 * D, D), f"{p}mlp.c_proj.bias": r(D, std=0.1)})
    sd.update({f"{prefix}ln_f.weight": 1 + r(D, std=0.1), f"{prefix}ln_f.bias": r(D, std=0.1)})
    if lm_head:
        sd["lm_head.weight"] = sd[f"{prefix}wte.weight"].clone()  # tied: an equal copy in the file
    return sd


def gpt2_reference(sd, tokens):
    """GPT-2's forward in float64 numpy, from its equations (pre-LN blocks, Conv1D x @ W + b, gelu_new, tied head):
    h = wte[x] + wpe[t];  h += c_proj(attn(ln_1 h));  h += c_proj(gelu_new(c_fc(ln_2 h)));  logits = ln_f(h) wteᵀ."""
    w = {k.removeprefix("transformer."): v.double().numpy() for k, v in sd.items()}

    def ln(x, name):  # biased variance, eps 1e-5
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def gelu_new(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    B, n = tokens.shape
    dh = D // H
    h = w["wte.weight"][tokens] + w["wpe.weight"][np.arange(n)]  # (B, T, D)
    future = np.triu(np.ones((n, n), bool), k=1)  # key j > query i
    for i in range(L):
        p = f"h.{i}."
        qkv = ln(h, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # (B, T, 3D)
        q, k, v = (a.reshape(B, n, H, dh).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1))  # (B, H, T, dh)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)  # (B, H, T, T)
        s = np.where(future, -np.inf, s)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ v).transpose(0, 2, 1, 3).reshape(B, n, D)  # (B, T, D)
        h = h + o @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        f = gelu_new(ln(h, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])  # (B, T, 4D)
        h = h + f @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    return ln(h, "ln_f") @ w["wte.weight"].T  # (B, T, V)


def gpt_model():
    return models.get("gpt", num_classes=V, context_length=C, d_model=D, num_layers=L, num_heads=H, input_shape=(T,))


def numpy_dict(sd):
    return {k: v.numpy() for k, v in sd.items()}


def test_gpt2_safetensors_through_cli_matches_reference_forward(tmp_path, capsys):
    sd = gpt2_state_dict()
    save_file(numpy_dict(sd), str(tmp_path / "model.safetensors"))
    rc = cli.main(["convert", str(tmp_path / "model.safetensors"), str(tmp_path / "gpt.npz"), "--model", "gpt",
                   "--num-classes", str(V), "--input-shape", str(T), *GPT_FIELDS])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"{4 + 16 * L} tensors converted" in out.out  # wte, wpe, ln_f (2); per block 12 + c_attn split in 3 × 2
    variables, meta = load_variables(tmp_path / "gpt.npz")
    assert meta["model"] == "gpt" and meta["fields"]["d_model"] == D
    tokens = np.random.default_rng(0).integers(0, V, (2, T))
    logits = gpt_model()(jax.tree.map(jnp.asarray, variables), jnp.asarray(tokens, jnp.int32))
    np.testing.assert_allclose(np.asarray(logits), gpt2_reference(sd, tokens), atol=1e-5, rtol=1e-5)


def test_gpt2model_keys_without_prefix_and_a_pytorch_bin(tmp_path, capsys):
    full = flatten(convert_gpt2_state_dict(gpt2_state_dict()))
    bare = gpt2_state_dict(prefix="", lm_head=False)  # GPT2Model: no "transformer.", no head
    assert flatten(convert_state_dict(bare, "gpt2")).keys() == full.keys()  # found by model-name prefix
    torch.save(bare, tmp_path / "pytorch_model.bin")
    rc = cli.main(["convert", str(tmp_path / "pytorch_model.bin"), str(tmp_path / "gpt.npz"), "--model", "gpt",
                   "--num-classes", str(V), *GPT_FIELDS])  # input shape: gpt's example (64,) > C is not needed
    assert rc == 2 and "64 tokens are more than the model's context of 12 positions" in capsys.readouterr().err
    rc = cli.main(["convert", str(tmp_path / "pytorch_model.bin"), str(tmp_path / "gpt.npz"), "--model", "gpt",
                   "--num-classes", str(V), "--input-shape", str(C), *GPT_FIELDS])
    assert rc == 0, capsys.readouterr().err
    got = flatten(load_variables(tmp_path / "gpt.npz")[0])
    assert got.keys() == full.keys()
    for k in full:
        np.testing.assert_array_equal(got[k], full[k])
    q = full["params/block_1/attn/query/kernel"]
    np.testing.assert_array_equal(q, bare["h.1.attn.c_attn.weight"].numpy()[:, :D])  # q | k | v along outputs


def test_gpt2_missing_and_unexpected_keys_are_named(tmp_path, capsys):
    sd = numpy_dict(gpt2_state_dict())
    del sd["transformer.h.1.mlp.c_fc.bias"]
    sd["transformer.h.0.attn.rotary.inv_freq"] = np.ones(4, np.float32)
    save_file(sd, str(tmp_path / "bad.safetensors"))
    args = ["convert", str(tmp_path / "bad.safetensors"), str(tmp_path / "bad.npz"), "--model", "gpt",
            "--num-classes", str(V), "--input-shape", str(T), *GPT_FIELDS]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "does not fit model 'gpt'" in err
    assert "missing (the model has them, the file does not): params/block_1/mlp/fc_in/bias" in err
    assert "unexpected (in the file, not in the model): unmapped/transformer.h.0.attn.rotary.inv_freq" in err
    assert not (tmp_path / "bad.npz").exists()
    assert cli.main([*args, "--allow-missing"]) == 0  # written anyway, the keys listed
    assert "params/block_1/mlp/fc_in/bias" in capsys.readouterr().out and (tmp_path / "bad.npz").exists()


def test_gpt2_untied_head_and_bad_fused_projection_are_named():
    sd = gpt2_state_dict()
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0  # differs from wte: this model has no separate head
    report = check_against(convert_gpt2_state_dict(sd), gpt_model().abstract_variables())
    assert report.unexpected == ["unmapped/lm_head.weight"] and not report.missing
    sd["transformer.h.0.attn.c_attn.weight"] = torch.zeros(D, 3 * D + 1)
    with pytest.raises(CheckpointError, match=r"'transformer.h.0.attn.c_attn.weight' has shape \(16, 49\); "
                                              r"expected a fused q\|k\|v projection"):
        convert_gpt2_state_dict(sd)


def test_gpt2_config_from_hf():
    hf = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
          "activation_function": "gelu_new", "resid_pdrop": 0.1}
    cfg = config_from_hf(hf, name="gpt2")
    assert models.from_config(cfg, input_shape=(8,)).param_count() == 124_439_808
    with pytest.raises(ConfigError, match="activation_function='relu'"):
        config_from_hf({**hf, "activation_function": "relu"})
    with pytest.raises(ConfigError, match="n_inner=1000"):
        config_from_hf({**hf, "n_inner": 1000})


# ------------------------------------------------------------------------------------------------------------------
# BERT and T5 through the same command
# ------------------------------------------------------------------------------------------------------------------

BV, BD, BF, BP = 30, 16, 32, 20  # BERT vocabulary, width, FFN width, positions


def bert_state_dict(seed=1):
    """Random arrays with HF BertModel's names (Linear weights (out, in)), with its position_ids buffer."""
    g = np.random.default_rng(seed)
    r = lambda *s: (g.standard_normal(s) * 0.2).astype(np.float32)  # noqa: E731
    sd = {"embeddings.word_embeddings.weight": r(BV, BD), "embeddings.position_embeddings.weight": r(BP, BD),
          "embeddings.token_type_embeddings.weight": r(2, BD), "embeddings.LayerNorm.weight": 1 + r(BD),
          "embeddings.LayerNorm.bias": r(BD), "embeddings.position_ids": np.arange(BP)[None],
          "pooler.dense.weight": r(BD, BD), "pooler.dense.bias": r(BD)}
    for i in range(2):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query": (BD, BD), "attention.self.key": (BD, BD),
                             "attention.self.value": (BD, BD), "attention.output.dense": (BD, BD),
                             "intermediate.dense": (BF, BD), "output.dense": (BD, BF)}.items():
            sd[f"{p}{name}.weight"], sd[f"{p}{name}.bias"] = r(o, n), r(o)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[f"{p}{name}.weight"], sd[f"{p}{name}.bias"] = 1 + r(BD), r(BD)
    return sd


TV, TD, TKV, TH, TF = 24, 16, 8, 2, 32  # T5 vocabulary, width, head width, heads, FFN width


def t5_state_dict(seed=2):
    """Random arrays with HF T5ForConditionalGeneration's names (tied copies of ``shared`` included)."""
    g = np.random.default_rng(seed)
    r = lambda *s: (g.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    shared = r(TV, TD)
    sd = {"shared.weight": shared, "encoder.embed_tokens.weight": shared.copy(),
          "decoder.embed_tokens.weight": shared.copy(), "lm_head.weight": shared.copy()}
    for stack in ("encoder", "decoder"):
        for i in range(2):
            p = f"{stack}.block.{i}.layer."
            for a in ["0.SelfAttention"] + (["1.EncDecAttention"] if stack == "decoder" else []):
                sd.update({f"{p}{a}.{n}.weight": r(TH * TKV, TD) for n in "qkv"})
                sd[f"{p}{a}.o.weight"] = r(TD, TH * TKV)
                sd[f"{p}{a[0]}.layer_norm.weight"] = 1 + r(TD)
            f = "2" if stack == "decoder" else "1"
            sd[f"{p}{f}.DenseReluDense.wi.weight"], sd[f"{p}{f}.DenseReluDense.wo.weight"] = r(TF, TD), r(TD, TF)
            sd[f"{p}{f}.layer_norm.weight"] = 1 + r(TD)
        sd[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = r(8, TH)
        sd[f"{stack}.final_layer_norm.weight"] = 1 + r(TD)
    return sd


FAMILIES = {
    "bert": (bert_state_dict, convert_bert_state_dict,
             ["--num-classes", "2", "--input-shape", "8", f"model.vocab_size={BV}", f"model.max_positions={BP}",
              f"model.d_model={BD}", "model.num_layers=2", "model.num_heads=4", f"model.ffn_dim={BF}",
              "model.head=none"],
             "encoder.layer.1.attention.self.key.bias", "params/layer_1/attention/key/bias"),
    "t5": (t5_state_dict, convert_t5_state_dict,  # the input shape is t5's example (16,)
           ["--num-classes", str(TV), f"model.d_model={TD}", f"model.d_kv={TKV}", f"model.d_ff={TF}",
            "model.num_layers=2", f"model.num_heads={TH}", "model.relative_buckets=8"],
           "decoder.block.1.layer.1.EncDecAttention.v.weight", "params/decoder/block_1/cross_attention/value/kernel"),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bert_and_t5_safetensors_through_cli(family, tmp_path, capsys):
    make, convert, args, drop, path = FAMILIES[family]
    sd = make()
    save_file(sd, str(tmp_path / "model.safetensors"))
    cmd = ["convert", str(tmp_path / "model.safetensors"), str(tmp_path / "out.npz"), "--model", family, *args]
    assert cli.main(cmd) == 0, capsys.readouterr().err
    want = flatten(convert(sd))
    assert f"{len(want)} tensors converted" in capsys.readouterr().out
    got = flatten(load_variables(tmp_path / "out.npz")[0])
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    # one required weight missing, one entry with no place: both named, nothing written
    sd = {k: v for k, v in sd.items() if k != drop} | {"extra.dense.weight": np.zeros((2, 2), np.float32)}
    save_file(sd, str(tmp_path / "bad.safetensors"))
    cmd = ["convert", str(tmp_path / "bad.safetensors"), str(tmp_path / "bad.npz"), "--model", family, *args]
    assert cli.main(cmd) == 2
    err = capsys.readouterr().err
    assert f"missing (the model has them, the file does not): {path}" in err
    assert "unexpected (in the file, not in the model): unmapped/extra.dense.weight" in err
    assert not (tmp_path / "bad.npz").exists()
