"""BERT: parameter counts, heads, padding invariance, vmap over parameter sets, the Hugging Face converter (checked
against an independent PyTorch forward pass written here from the BERT equations), training."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl import models
from jaxdl.convert import check_against, convert_state_dict, flatten
from jaxdl.errors import ConfigError, ModelInputError
from jaxdl.models.bert import Bert, convert_bert_state_dict, mean_pool

TINY = dict(vocab_size=50, max_positions=16, d_model=16, num_layers=2, num_heads=2, ffn_dim=32, dropout=0.0,
            attention_dropout=0.0)


def tiny(head="classify", num_classes=3, **kw):
    return Bert(num_classes=num_classes, head=head, **{**TINY, **kw})


def toks(B=2, T=7, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(1, TINY["vocab_size"], (B, T)), jnp.int32)


@pytest.mark.parametrize("name, expected", [("bert_base", 109_482_240), ("minilm_l6", 22_713_216)])
def test_parameter_counts(name, expected):
    # bert_base: HF BertModel(bert-base-uncased) with its pooler; minilm_l6: all-MiniLM-L6-v2's BertModel
    model = models.get(name, head="none", num_classes=1, input_shape=(16,))
    assert model.param_count() == expected


@pytest.mark.parametrize("head, shape", [("none", (2, 7, 16)), ("mlm", (2, 7, 50)), ("classify", (2, 3)),
                                         ("token_classify", (2, 7, 3))])
def test_head_shapes(head, shape):
    m = tiny(head)
    x = jax.ShapeDtypeStruct((2, 7), jnp.int32)
    v = jax.eval_shape(m.init, jax.random.key(0), x)  # shapes only: nothing is computed
    assert jax.eval_shape(m.apply, v, x).shape == shape
    if head == "token_classify":  # HF BertForTokenClassification has no pooler
        assert "pooler" not in v["params"]
    if head == "mlm":  # decoder tied to the word embeddings: no separate decoder matrix
        assert set(v["params"]) >= {"mlm_transform", "mlm_norm", "mlm_bias"} and "mlm_decoder" not in v["params"]


def test_registry_dict_inputs_and_errors():
    model = models.get("bert", num_classes=4, **TINY)
    spec = jax.ShapeDtypeStruct((2, 7), jnp.int32)
    batch = {"tokens": spec, "token_types": spec, "token_mask": spec}
    v = jax.eval_shape(model.init, jax.random.key(0), batch)
    assert jax.eval_shape(lambda v, b: model.apply(v, b)[0], v, batch).shape == (2, 4)
    assert jax.eval_shape(lambda v, x: model.apply(v, x)[0], v, spec).shape == (2, 4)  # a single token array
    with pytest.raises(ModelInputError, match="token_mask"):
        jax.eval_shape(lambda v, b: model.apply(v, b), v, {**batch, "token_mask": jnp.ones((2, 5), jnp.int32)})
    with pytest.raises(ModelInputError, match="max_positions"):
        jax.eval_shape(lambda v, x: model.apply(v, x), v, jnp.ones((1, 17), jnp.int32))
    with pytest.raises(ModelInputError, match="token ids"):
        jax.eval_shape(lambda v, x: model.apply(v, x), v, jnp.ones((1, 7), jnp.float32))
    with pytest.raises(ConfigError, match="model.head"):
        models.get("bert", num_classes=2, head="pool")
    with pytest.raises(ConfigError, match="num_heads"):
        models.get("bert", num_classes=2, d_model=30, num_heads=4)


def params_from_hf(seed=0, **kw):
    """Random variables for a tiny classifier without compiling an init: a random HF state dict, converted."""
    return jax.tree.map(jnp.asarray, convert_bert_state_dict(hf_state_dict(seed=seed, **kw)))


def test_padding_does_not_change_real_tokens():
    m = tiny("none")
    x = toks(2, 5)
    v = params_from_hf()
    apply = jax.jit(lambda v, x, mk: m.apply(v, x, token_mask=mk))
    ref = apply(v, x, jnp.ones((2, 5), jnp.int32))
    padded = jnp.concatenate([x, jnp.full((2, 4), 7, jnp.int32)], axis=1)  # pad ids that are real words
    mask = jnp.concatenate([jnp.ones((2, 5)), jnp.zeros((2, 4))], axis=1).astype(jnp.int32)
    out = apply(v, padded, mask)
    np.testing.assert_allclose(out[:, :5], ref, atol=1e-5)
    np.testing.assert_allclose(mean_pool(out, mask), mean_pool(ref), atol=1e-5)


def test_vmap_over_two_parameter_sets():
    m = tiny("classify")
    x = toks()
    vs = [params_from_hf(seed) for seed in (0, 1)]
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), *vs)
    out = jax.jit(jax.vmap(m.apply, in_axes=(0, None)))(stacked, x)  # (2, B, C)
    apply = jax.jit(m.apply)
    for i in (0, 1):
        np.testing.assert_allclose(out[i], apply(vs[i], x), atol=1e-5)
    assert not np.allclose(out[0], out[1])


# ------------------------------------------------------------------------------------------------------------------
# Hugging Face state dicts and an independent PyTorch forward pass
# ------------------------------------------------------------------------------------------------------------------


def hf_state_dict(L=2, D=16, F=32, V=50, P=16, C=3, prefix="bert.", mlm=False, seed=0, old_ln=False):
    """A random state dict with HF BertFor… key names and shapes (Linear weights (out, in))."""
    g = np.random.default_rng(seed)
    r = lambda *s: (g.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    w, b = ("gamma", "beta") if old_ln else ("weight", "bias")
    sd = {"embeddings.word_embeddings.weight": r(V, D), "embeddings.position_embeddings.weight": r(P, D),
          "embeddings.token_type_embeddings.weight": r(2, D), f"embeddings.LayerNorm.{w}": 1 + r(D),
          f"embeddings.LayerNorm.{b}": r(D), "embeddings.position_ids": np.arange(P)[None],
          "pooler.dense.weight": r(D, D), "pooler.dense.bias": r(D)}
    for i in range(L):
        p = f"encoder.layer.{i}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            sd[p + n + ".weight"], sd[p + n + ".bias"] = r(D, D), r(D)
        sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"] = r(F, D), r(F)
        sd[p + "output.dense.weight"], sd[p + "output.dense.bias"] = r(D, F), r(D)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[f"{p}{n}.{w}"], sd[f"{p}{n}.{b}"] = 1 + r(D), r(D)
    sd = {prefix + k: v for k, v in sd.items()}
    if mlm:
        bias = r(V)
        sd.update({"cls.predictions.transform.dense.weight": r(D, D), "cls.predictions.transform.dense.bias": r(D),
                   f"cls.predictions.transform.LayerNorm.{w}": 1 + r(D),
                   f"cls.predictions.transform.LayerNorm.{b}": r(D), "cls.predictions.bias": bias,
                   "cls.predictions.decoder.weight": sd[prefix + "embeddings.word_embeddings.weight"].copy(),
                   "cls.predictions.decoder.bias": bias.copy()})
    else:
        sd["classifier.weight"], sd["classifier.bias"] = r(C, D), r(C)
    return sd


def torch_bert(sd, tokens, types, mask, heads=2, mlm=False, prefix="bert."):
    """BERT's forward pass from the paper's equations in PyTorch (HF semantics: post-LN, erf GELU, eps 1e-12)."""
    import torch
    import torch.nn.functional as F

    t = {k.removeprefix(prefix): torch.tensor(np.asarray(v)) for k, v in sd.items()}
    lin = lambda x, n: F.linear(x, t[n + ".weight"], t[n + ".bias"])  # noqa: E731
    ln = lambda x, n: F.layer_norm(x, x.shape[-1:], t[n + ".weight"], t[n + ".bias"], 1e-12)  # noqa: E731
    tok, typ = (torch.tensor(np.asarray(a), dtype=torch.long) for a in (tokens, types))
    B, T = tok.shape
    x = t["embeddings.word_embeddings.weight"][tok] + t["embeddings.position_embeddings.weight"][:T] \
        + t["embeddings.token_type_embeddings.weight"][typ]
    x = ln(x, "embeddings.LayerNorm")
    add = (1.0 - torch.tensor(np.asarray(mask), dtype=torch.float32))[:, None, None, :] * torch.finfo(torch.float32).min
    i = 0
    while f"encoder.layer.{i}.intermediate.dense.weight" in t:
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + f"attention.self.{n}").view(B, T, heads, -1).transpose(1, 2)
                   for n in ("query", "key", "value"))  # (B, H, T, Dh)
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + add
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1)
        x = ln(x + lin(a, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = lin(F.gelu(lin(x, p + "intermediate.dense")), p + "output.dense")
        x = ln(x + h, p + "output.LayerNorm")
        i += 1
    if mlm:
        h = ln(F.gelu(lin(x, "cls.predictions.transform.dense")), "cls.predictions.transform.LayerNorm")
        return (h @ t["embeddings.word_embeddings.weight"].T + t["cls.predictions.bias"]).numpy()
    pooled = torch.tanh(lin(x[:, 0], "pooler.dense"))
    return x.numpy(), lin(pooled, "classifier").numpy()


def test_converter_matches_pytorch_forward():
    sd = hf_state_dict()
    variables = convert_state_dict(sd, "bert")  # found by model-name prefix
    tokens, types = toks(2, 6), jnp.asarray([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], jnp.int32)
    mask = jnp.asarray([[1] * 6, [1, 1, 1, 1, 0, 0]], jnp.int32)
    m = tiny("classify")
    report = check_against(variables, jax.eval_shape(m.init, jax.random.key(0), tokens))
    assert report.ok, report.describe()
    hidden, logits = torch_bert(sd, tokens, types, mask)
    np.testing.assert_allclose(jax.jit(m.apply)(variables, tokens, types, mask), logits, atol=1e-4)
    out = jax.jit(tiny("none").apply)(variables, tokens, types, mask)
    np.testing.assert_allclose(np.asarray(out)[mask == 1], hidden[np.asarray(mask) == 1], atol=1e-4)


def test_converter_reads_bare_bertmodel_keys_and_gamma_beta():
    # BertModel files have no "bert." prefix; TF-era files name LayerNorm parameters gamma/beta
    new, old = (flatten(convert_bert_state_dict(hf_state_dict(prefix=p, old_ln=o))) for p, o in (("bert.", False),
                                                                                                  ("", True)))
    assert set(new) == set(old) and not any(k.startswith("unmapped") for k in new)
    for k in new:
        np.testing.assert_array_equal(new[k], old[k])


def test_converter_mlm_head_tied_decoder():
    sd = {k: v for k, v in hf_state_dict(mlm=True).items() if "pooler" not in k}  # BertForMaskedLM: no pooler
    variables = convert_bert_state_dict(sd)
    tokens, types = toks(2, 5), jnp.asarray([[0, 0, 1, 1, 1], [0] * 5], jnp.int32)
    mask = jnp.asarray([[1] * 5, [1, 1, 1, 0, 0]], jnp.int32)
    m = tiny("mlm")
    report = check_against(variables, jax.eval_shape(m.init, jax.random.key(0), tokens))
    assert report.ok, report.describe()
    logits = np.asarray(jax.jit(m.apply)(variables, tokens, types, mask))
    ref = torch_bert(sd, tokens, types, mask, mlm=True)
    np.testing.assert_allclose(logits[np.asarray(mask) == 1], ref[np.asarray(mask) == 1], atol=1e-4)
    sd["cls.predictions.decoder.weight"] = sd["cls.predictions.decoder.weight"] + 1.0  # untied: reported
    assert "unmapped/cls.predictions.decoder.weight" in flatten(convert_bert_state_dict(sd))


def test_converter_lists_missing_and_unexpected_by_name():
    sd = hf_state_dict(L=1)
    del sd["bert.encoder.layer.0.output.dense.bias"]
    sd["cls.seq_relationship.weight"] = np.zeros((2, 16), np.float32)  # NSP head: no place in this model
    variables = convert_state_dict(sd, "minilm_l6")
    report = check_against(variables, jax.eval_shape(tiny("classify").init, jax.random.key(0), toks()))
    assert "params/layer_0/ffn/fc_out/bias" in report.missing
    assert any(p.startswith("params/layer_1/") for p in report.missing)
    assert report.unexpected == ["unmapped/cls.seq_relationship.weight"]
    assert "unmapped/cls.seq_relationship.weight" in report.describe()


# ------------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------------


def test_loss_goes_down_on_a_tiny_batch():
    m = tiny("classify", num_layers=1, dropout=0.1, attention_dropout=0.1)
    x, y = toks(8, 6, seed=3), jnp.asarray([0, 1, 2, 1] * 2)
    params = params_from_hf(L=1)["params"]
    opt = optax.adam(3e-3)

    def loss_fn(p, key):
        logits = m.apply({"params": p}, x, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, s, key):
        loss, g = jax.value_and_grad(loss_fn)(p, key)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    state, losses = opt.init(params), []
    for i in range(30):
        params, state, loss = step(params, state, jax.random.key(i))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_tiny_classifier_trains_through_fit(tmp_path):
    from jaxdl import data as data_lib
    from jaxdl.config import Config, OptimConfig, TrainConfig, model_config
    from jaxdl.train import fit

    g = np.random.default_rng(0)
    tokens = g.integers(2, 20, (64, 8)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[::3, 6:] = 0
    label = (tokens[:, 1] < 10).astype(np.int32)
    source = data_lib.from_arrays(tokens=tokens, token_mask=mask, label=label, name="toy_tokens")
    cfg = Config(name="bert_toy", model=model_config("bert", **{**TINY, "vocab_size": 20, "num_layers": 1}),
                 optim=OptimConfig(lr=3e-3),
                 train=TrainConfig(batch_size=16, steps=10, eval_every=10, driver="host", progress=False,
                                   plots=False, checkpoints=False))
    result = fit(cfg, data=source, workdir=tmp_path)
    assert result.summary["data"] == "toy_tokens"
    assert np.isfinite(result.summary["test"]["loss"]) and "accuracy" in result.summary["test"]
