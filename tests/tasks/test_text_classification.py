"""Text classification through the runner: token inputs (tokens, token_mask) into BERT (mean or [CLS] pooling) and
the LSTM classifier; MiniLM initialisation and a frozen encoder; input and config errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import models
from jaxdl.config import Config, OptimConfig, TrainConfig, model_config
from jaxdl.data.core import Dataset, Split
from jaxdl.errors import ConfigError, ModelInputError

T, V = 10, 40


def _split(n: int, seed: int) -> Split:
    """Right-padded token rows [CLS]=2 … [SEP]=3, padding 0; the class is the first word's id modulo 3."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, T + 1, n)
    tokens = np.zeros((n, T), np.int32)
    for i, n_i in enumerate(lengths):
        tokens[i, :n_i] = [2, *rng.integers(4, V, n_i - 2), 3]
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    return Split.rows({"tokens": tokens, "token_mask": mask, "label": (tokens[:, 1] % 3).astype(np.int32)},
                      inputs=("tokens", "token_mask"), targets=("label",))


@pytest.fixture(scope="module")
def ds():
    return Dataset("first_word", _split(256, 0), _split(64, 1), _split(64, 2), 3, ("a", "b", "c"), (T,), None, None,
                   inputs=("tokens", "token_mask"), targets=("label",), kind="classification")


BERT = {"vocab_size": V, "d_model": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "max_positions": T,
        "dropout": 0.0, "attention_dropout": 0.0, "pooling": "mean"}
LSTM = {"cell": "lstm", "embed_dim": 16, "vocab_size": V, "hidden_size": 16, "pooling": "mean"}


@pytest.mark.parametrize("name, fields", [("bert", BERT), ("rnn_classifier", LSTM)], ids=["bert", "lstm"])
def test_text_classifiers_learn_through_the_runner(tmp_path, ds, name, fields):
    from jaxdl.train import fit

    cfg = Config(name=f"text_{name}", model=model_config(name, **fields), optim=OptimConfig(name="adam", lr=2e-2),
                 train=TrainConfig(batch_size=64, steps=30, eval_every=30, driver="host", eval_batch_size=64,
                                   progress=False, plots=False, checkpoints=False))
    result = fit(cfg, dataset=ds, workdir=tmp_path)
    s = result.summary
    assert s["task"] == "classification"
    lines = [ln for ln in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train/loss"' in ln]
    assert s["final"]["train/loss"] < 0.8 * np.log(3), lines[-1]  # from chance (ln 3) down
    assert s["val"]["accuracy"] > 0.6  # chance: 1/3


@pytest.fixture(scope="module")
def tiny():
    """Tiny BERT ([CLS] pooler kept) and LSTM classifiers with jitted inits (compiled once for the module)."""
    tokens = jnp.array([[2, 5, 6, 3, 0, 0], [2, 7, 3, 0, 0, 0]], jnp.int32)
    mask = (tokens > 0).astype(jnp.int32)
    bert = models.get("bert", num_classes=3, **{**BERT, "pooling": "cls"})
    lstm = models.get("rnn_classifier", num_classes=3, **LSTM)
    example = {"tokens": tokens, "token_mask": mask}
    return (tokens, mask, bert, jax.jit(bert.init)(jax.random.key(0), example), lstm,
            jax.jit(lstm.init)(jax.random.key(0), example))


def test_cls_and_mean_pooling_ignore_padding(tiny):
    tokens, mask, bert, v, _, _ = tiny
    other = tokens.at[:, 4:].set(9)  # different ids at padded positions
    for pooling in ("cls", "mean"):
        mod = dataclasses.replace(bert.module, pooling=pooling)
        f = jax.jit(lambda t: mod.apply(v, t, token_mask=mask))  # noqa: B023
        np.testing.assert_allclose(f(tokens), f(other), atol=1e-6)


def test_minilm_loads_and_a_frozen_encoder_does_not_move():
    from jaxdl import optim, transfer
    from jaxdl.convert import load_pretrained
    from jaxdl.errors import DataError
    from jaxdl_testing import missing_data

    try:
        source = load_pretrained("packaged:all_minilm_l6_v2", "minilm_l6")
    except DataError as e:
        missing_data(str(e))
    m = models.from_config(model_config("minilm_l6", head="classify", pooling="mean"), num_classes=3)
    example = {"tokens": jnp.zeros((1, 8), jnp.int32), "token_mask": jnp.ones((1, 8), jnp.int32)}
    shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), example))
    target = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), dict(shapes))  # stands in for a fresh init
    merged, report = transfer.merge_pretrained(target, source)
    assert len(report.loaded) == 101 and not report.mismatched
    assert report.missing == ["params/classifier/bias", "params/classifier/kernel"]  # the new head
    assert report.unexpected == ["params/pooler/bias", "params/pooler/kernel"]  # mean pooling reads no pooler
    np.testing.assert_array_equal(merged["params"]["word_embeddings"]["embedding"],
                                  source["params"]["word_embeddings"]["embedding"])
    params = jax.tree.map(jnp.asarray, merged["params"])
    cfg = OptimConfig(name="adamw", lr=1e-2, freeze=("^(?!classifier)",))
    opt = optim.build(cfg, 10)
    hp = jax.tree.map(jnp.asarray, optim.hparams(cfg))

    @jax.jit
    def step(params):
        grads = jax.tree.map(jnp.ones_like, params)  # every parameter gets a gradient
        return opt.update(grads, opt.init(params, hp), params, hp, jnp.asarray(0))[0]

    updates = step(params)
    moved = {optim.param_path(p) for p, u in jax.tree_util.tree_flatten_with_path(updates)[0] if jnp.any(u != 0)}
    assert moved == {"classifier/bias", "classifier/kernel"}


def test_text_input_errors_name_the_culprit(tiny):
    tokens, mask, bert, v, lstm, lv = tiny
    with pytest.raises(ModelInputError, match=r"embeddings of shape \(2, 6, 8\), expected \(2, 6, 16\)"):
        jax.eval_shape(lambda: bert.module.apply(v, tokens, embeddings=jnp.zeros((2, 6, 8))))
    with pytest.raises(ConfigError, match="model.pooling: unknown pooling 'max'; expected one of cls, mean"):
        models.get("bert", num_classes=3, **{**BERT, "pooling": "max"})
    with pytest.raises(ModelInputError, match=r"token_mask of shape \(2, 5\) does not match tokens of shape"):
        jax.eval_shape(lambda: lstm.module.apply(lv, tokens=tokens, token_mask=mask[:, :5]))
    with pytest.raises(ModelInputError, match="no input"):
        jax.eval_shape(lambda: lstm.module.apply(lv))
    with pytest.raises(ModelInputError, match=r"embeddings of shape \(2, 6, 3\), expected \(2, 6, 16\)"):
        jax.eval_shape(lambda: lstm.module.apply(lv, tokens=tokens, embeddings=jnp.zeros((2, 6, 3))))
