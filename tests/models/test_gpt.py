"""GPT-2 and Llama-style decoders: parameter counts, shapes, cached decoding = the causal forward, sampling past the
context (sliding window), training through fit on Shakespeare, populations and traced dropout. Tiny sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl.models as models
from jaxdl import generate
from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig
from jaxdl.errors import ConfigError, ModelInputError
from jaxdl.models.gpt import GPTConfig

V, B, T = 37, 2, 10
TINY = {"gpt": dict(num_classes=V, context_length=12, d_model=32, num_layers=1, num_heads=4),
        "llama": dict(num_classes=V, context_length=12, d_model=32, num_layers=1, num_heads=4, num_kv_heads=2,
                      mlp_dim=48)}


def _tokens(b=B, t=T, seed=1):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, V)


def _random(model, x, scale=0.5, seed=0):
    """Random normal variables (peaked, varied logits) of ``model``'s shapes; nothing compiled."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def test_param_counts_of_the_reference_shapes():
    # HF GPT2LMHeadModel (tied lm_head) counts 124,439,808; SmolLM2-135M's GGUF tensors hold 134,515,008 numbers
    # (no output.weight: tied), checked against the file in tests/test_gguf_import.py
    assert models.get("gpt2", input_shape=(8,)).param_count() == 124_439_808
    assert models.get("smollm2_135m", input_shape=(8,)).param_count() == 134_515_008
    llama = models.get("llama", **TINY["llama"], input_shape=(T,)).abstract_variables()["params"]
    attn = llama["block_0"]["attn"]
    assert attn["query"]["kernel"].shape == (32, 32) and attn["key"]["kernel"].shape == (32, 16)  # 2 kv heads of 8
    assert "bias" not in attn["query"] and set(llama["block_0"]["mlp"]) == {"gate", "up", "down"}
    assert "head" not in llama and "positions" not in llama
    gpt = models.get("gpt", **{**TINY["gpt"], "num_layers": 2}, input_shape=(T,)).abstract_variables()["params"]
    assert gpt["positions"]["position_embedding"]["embedding"].shape == (12, 32)
    assert set(gpt["block_1"]["mlp"]) == {"fc_in", "fc_out"} and gpt["block_1"]["mlp"]["fc_in"]["kernel"].shape == (
        32, 128)
    untied = models.get("llama", **TINY["llama"], tie_embeddings=False, input_shape=(T,))
    assert untied.param_count() == models.get("llama", **TINY["llama"], input_shape=(T,)).param_count() + 32 * V


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_cached_decoding_equals_the_causal_forward(name):
    model = models.get(name, **TINY[name])
    x = _tokens()
    variables = _random(model, x)
    full = jax.jit(lambda v, x: model(v, x))(variables, x)  # (B, T, V)
    assert full.shape == (B, T, V) and bool(jnp.all(jnp.isfinite(full)))

    @jax.jit
    def decode(variables, x):
        state, _ = model.apply(variables, {"batch_size": B, "max_length": T}, method="initial_state")
        out = []
        for start, stop in ((0, 7), (7, 8), (8, 10)):  # a prefill, then one token, then two
            (logits, state), _ = model.apply(variables, {"tokens": x[:, start:stop], "state": state}, method="step")
            out.append(logits)
        return jnp.concatenate(out, axis=1)

    diff = float(jnp.max(jnp.abs(decode(variables, x) - full)))
    assert diff < 1e-5, diff


def test_sampling_past_the_context_crops_like_nanogpt_and_errors_name_the_culprit():
    model = models.get("gpt", **{**TINY["gpt"], "context_length": 8})
    prompt = _tokens(t=3)
    variables = _random(model, prompt)
    out = np.asarray(generate.sample(model, variables, prompt, jax.random.key(0), num_steps=12, temperature=0.0))
    seq = np.asarray(prompt)
    forward = jax.jit(lambda v, x: model(v, x))  # one shape: windows shorter than 8 are padded on the right
    for _ in range(12):  # the cache for 8 positions, then each step re-reads the latest 8 tokens
        window = seq[:, -8:]
        n = window.shape[1]
        logits = forward(variables, jnp.asarray(np.pad(window, ((0, 0), (0, 8 - n)))))[:, n - 1]  # causal: pads unseen
        seq = np.concatenate([seq, np.argmax(np.asarray(logits), -1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq[:, 3:])
    drawn = generate.sample(model, variables, prompt, jax.random.key(1), num_steps=12, temperature=1.0, top_k=5)
    assert drawn.shape == (B, 12) and not np.array_equal(np.asarray(drawn), out)

    with pytest.raises(ModelInputError, match="more than the model's context of 8"):
        model(variables, _tokens(t=9))
    with pytest.raises(ModelInputError, match="needs the 'cache' collection"):
        model.module.apply(variables, prompt, decode=True, mutable=["cache"])
    with pytest.raises(ConfigError, match="num_heads=4 is not divisible by model.num_kv_heads=3"):
        models.get("llama", **{**TINY["llama"], "num_kv_heads": 3})
    with pytest.raises(ConfigError, match="d_model=30 is not divisible by model.num_heads=4"):
        models.get("gpt", **{**TINY["gpt"], "d_model": 30})


def test_population_vmap_and_traced_dropout():
    model = models.get("llama", **{**TINY["llama"], "dropout": 0.1})
    x = _tokens()
    p0, p1 = _random(model, x, seed=0)["params"], _random(model, x, seed=1)["params"]
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), p0, p1)
    key = jax.random.key(2)
    traces = []

    @jax.jit
    @jax.vmap
    def train_logits(params, rate):  # a population: two parameter sets, two dropout rates, one program
        traces.append(1)
        return model.apply({"params": params}, x, train=True, rng=key, dropout_rate=rate)[0]

    both = train_logits(stacked, jnp.zeros(2))  # (2, B, T, V); rate 0 is the eval forward
    assert both.shape == (2, B, T, V)
    assert np.allclose(both[1], jax.jit(lambda p: model({"params": p}, x))(p1), atol=1e-5)
    dropped = train_logits(stacked, jnp.array([0.0, 0.5]))
    assert np.allclose(dropped[0], both[0], atol=1e-5) and not np.allclose(dropped[1], both[1], atol=1e-3)
    assert len(traces) == 1  # new rates are new numbers, not a new program


def test_tiny_gpt_trains_on_shakespeare(tmp_path, load_dataset):
    ds = load_dataset(DataConfig(name="shakespeare", block_size=16, train_limit=256, eval_limit=32))
    from jaxdl.train import fit

    cfg = Config(name="gpt_lm", task="language_model",
                 model=GPTConfig(context_length=16, d_model=32, num_layers=1, num_heads=2),
                 data=DataConfig(name="shakespeare", block_size=16), optim=OptimConfig(lr=3e-3),
                 train=TrainConfig(batch_size=16, steps=20, eval_every=20, driver="host", progress=False,
                                   checkpoints=False, plots=False))
    result = fit(cfg, dataset=ds, workdir=tmp_path)
    s = result.summary
    assert s["test"]["bpc"] < np.log2(ds.num_classes)  # better than uniform after 20 steps
    # the run's samples went past the 16-position context (300 characters) through the sliding window
    assert len(s["samples"][0]["text"]) > 100
