"""Text classifiers on token inputs (tokens, token_mask): BERT (mean or [CLS] pooling) and the LSTM classifier
learn, padding is ignored; MiniLM initialisation and a frozen encoder; input and config errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import models
from jaxdl.config import OptimConfig, model_config
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


@pytest.fixture(scope="module")
def tiny(ds):
    """Tiny BERT ([CLS] pooler kept) and LSTM classifiers with jitted inits (compiled once for the module)."""
    example = {k: jnp.asarray(v) for k, v in ds.train.batch(np.arange(2)).items() if k != "label"}
    bert = models.get("bert", num_classes=3, **{**BERT, "pooling": "cls"})
    lstm = models.get("rnn_classifier", num_classes=3, **LSTM)
    return (example["tokens"], example["token_mask"], bert, jax.jit(bert.init)(jax.random.key(0), example), lstm,
            jax.jit(lstm.init)(jax.random.key(0), example))


@pytest.mark.parametrize("name", ["bert", "lstm"])
def test_text_classifiers_learn(ds, tiny, name):
    """Adam on cross-entropy over the token inputs: from chance (ln 3) down, and above chance on validation (the
    runner's path — task=classification with tokens and token_mask — is trained in test_interpret_text)."""
    import optax

    _, _, bert, bv, lstm, lv = tiny
    model, variables = (dataclasses.replace(bert.module, pooling="mean"), bv) if name == "bert" else (lstm.module, lv)
    params = {k: v for k, v in variables["params"].items() if k != "pooler"}  # mean pooling reads no pooler
    train = {k: jnp.asarray(v) for k, v in ds.train.batch(np.arange(len(ds.train))).items()}
    val = {k: jnp.asarray(v) for k, v in ds.val.batch(np.arange(len(ds.val))).items()}
    opt = optax.adam(2e-2)

    def loss(params, b):
        logits = model.apply({"params": params}, tokens=b["tokens"], token_mask=b["token_mask"])  # (N, 3)
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["label"]).mean(), logits

    @jax.jit
    def run(params):
        def step(carry, _):
            params, state = carry
            (value, _), grads = jax.value_and_grad(loss, has_aux=True)(params, train)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value

        (params, _), values = jax.lax.scan(step, (params, opt.init(params)), None, length=40)
        return values, loss(params, val)[1]

    values, logits = run(params)
    assert abs(float(values[0]) - np.log(3)) < 0.3 and float(values[-1]) < 0.6 * np.log(3), values
    assert float(jnp.mean(logits.argmax(-1) == val["label"])) > 0.6  # chance: 1/3


def test_cls_and_mean_pooling_ignore_padding(tiny):
    tokens, mask, bert, v, _, _ = tiny
    other = jnp.where(mask == 0, 9, tokens)  # different ids at padded positions
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
    with pytest.raises(ModelInputError, match=r"embeddings of shape \(2, 10, 8\), expected \(2, 10, 16\)"):
        jax.eval_shape(lambda: bert.module.apply(v, tokens, embeddings=jnp.zeros((2, 10, 8))))
    with pytest.raises(ConfigError, match="model.pooling: unknown pooling 'max'; expected one of cls, mean"):
        models.get("bert", num_classes=3, **{**BERT, "pooling": "max"})
    with pytest.raises(ModelInputError, match=r"token_mask of shape \(2, 5\) does not match tokens of shape"):
        jax.eval_shape(lambda: lstm.module.apply(lv, tokens=tokens, token_mask=mask[:, :5]))
    with pytest.raises(ModelInputError, match="no input"):
        jax.eval_shape(lambda: lstm.module.apply(lv))
    with pytest.raises(ModelInputError, match=r"embeddings of shape \(2, 10, 3\), expected \(2, 10, 16\)"):
        jax.eval_shape(lambda: lstm.module.apply(lv, tokens=tokens, embeddings=jnp.zeros((2, 10, 3))))
