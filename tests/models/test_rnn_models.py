"""Recurrent model families (rnn_lm, rnn_classifier, rnn_forecaster): shapes, names, lengths, dropout, populations,
step-wise decoding, config validation. Tiny sizes throughout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl.models as models
from jaxdl.errors import ConfigError, ModelInputError

B, T, H = 3, 6, 8


def _lm(cell="lstm", num_layers=1, dropout=0.0, vocab=11):
    return models.get("rnn_lm", num_classes=vocab, input_shape=(T,), cell=cell, hidden_size=H, embed_dim=4,
                      num_layers=num_layers, dropout=dropout)


def _tokens(n=B, t=T, vocab=11, seed=0):
    return jax.random.randint(jax.random.key(seed), (n, t), 0, vocab)


def _floats(*shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _init(model, x, seed=0):
    """Random variables of ``model``'s shapes (``eval_shape``: nothing compiled; ``model.init`` itself is tested in
    test_lm_shapes_names_and_param_count)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: jnp.asarray(0.4 * rng.standard_normal(s.shape), s.dtype), shapes)


def _run(model, variables, x):
    """Eval-mode outputs, jitted (one compilation is cheaper than running the scans op by op)."""
    return jax.jit(lambda v, x: model.apply(v, x)[0])(variables, x)


# ---------------------------------------------------------------------------------------------------------------------
# Shapes, parameter names and counts
# ---------------------------------------------------------------------------------------------------------------------


def test_lm_shapes_names_and_param_count():
    for cell, g in (("lstm", 4), ("gru", 3)):
        assert _lm(cell).param_count() == 11 * 4 + g * H * (4 + H) + 2 * g * H + H * 11 + 11
    model = _lm("gru")
    assert model.input_kind == "int"  # from the registry's ModelSpec
    variables = jax.jit(model.init)(jax.random.key(0), _tokens())
    assert set(variables["params"]) == {"embedding", "rnn", "head"}
    assert variables["params"]["embedding"]["embedding"].shape == (11, 4)
    assert variables["params"]["rnn"]["l0"]["weight_hh"].shape == (H, 3 * H)
    assert _run(model, variables, _tokens()).shape == (B, T, 11)
    with pytest.raises(ModelInputError, match="rnn_lm"):
        model.apply(variables, _floats(B, T))


@pytest.mark.parametrize("bidirectional,pooling", [(True, "last"), (False, "max")])
def test_classifier_sequence_shapes(bidirectional, pooling):
    model = models.get("rnn_classifier", num_classes=5, input_shape=(T, 2), hidden_size=H, cell="gru",
                       bidirectional=bidirectional, pooling=pooling, num_layers=2)
    x = _floats(B, T, 2)
    variables = _init(model, x)
    assert set(variables["params"]) == {"rnn", "head"}
    d = 2 if bidirectional else 1
    assert variables["params"]["head"]["kernel"].shape == (d * H, 5)
    assert _run(model, variables, x).shape == (B, 5)


@pytest.mark.parametrize("shape", [(8, 8, 1), (8, 8)])
def test_classifier_reads_images_row_by_row(shape):
    model = models.get("rnn_classifier", num_classes=10, input_shape=shape, hidden_size=H)
    x = _floats(B, *shape)
    variables = _init(model, x)
    assert variables["params"]["rnn"]["l0"]["weight_ih"].shape == (8, 4 * H)  # 8 features (one row) per step
    out = _run(model, variables, x)
    assert out.shape == (B, 10)
    # the same rows as a (B, T=8, F=8) sequence give the same logits
    np.testing.assert_allclose(_run(model.with_input((8, 8)), variables, x.reshape(B, 8, 8)), out, atol=1e-6)


def test_classifier_token_ids_through_embedding():
    model = models.get("rnn_classifier", num_classes=3, input_shape=(T,), hidden_size=H, embed_dim=4, vocab_size=11)
    assert model.input_kind == "int"
    variables = _init(model, _tokens())
    assert set(variables["params"]) == {"embedding", "rnn", "head"}
    assert _run(model, variables, _tokens()).shape == (B, 3)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_classifier_lengths_ignore_padding(pooling):
    model = models.get("rnn_classifier", num_classes=4, hidden_size=H, bidirectional=True, pooling=pooling)
    x = _floats(2, T, 3)
    lengths = jnp.array([T, 3])
    variables = _init(model, {"inputs": x, "lengths": lengths})
    out = _run(model, variables, {"inputs": x, "lengths": lengths})
    garbage = x.at[1, 3:].set(100.0)  # what follows an example's length never matters
    np.testing.assert_allclose(_run(model, variables, {"inputs": garbage, "lengths": lengths}), out, atol=1e-5)
    short = _run(model, variables, x[1:, :3])  # example 1 alone, cut to its length
    np.testing.assert_allclose(out[1:], short, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_forecaster_shapes(bidirectional):
    model = models.get("rnn_forecaster", num_classes=6, input_shape=(12, 2), hidden_size=H, num_layers=2,
                       bidirectional=bidirectional)
    x = _floats(B, 12, 2)
    variables = _init(model, x)
    assert set(variables["params"]) == {"rnn", "head"}
    assert model.output == "logits"  # no output activation: unbounded values for the regression task
    assert _run(model, variables, x).shape == (B, 6)


@pytest.mark.parametrize("name", ["rnn_lm", "rnn_classifier", "rnn_forecaster"])
def test_registry_example_shapes_count_params(name):
    spec = models.MODELS.get(name)
    assert models.get(name, num_classes=10, input_shape=spec.example_shape, hidden_size=H).param_count() > 0


# ---------------------------------------------------------------------------------------------------------------------
# Dropout, populations, training
# ---------------------------------------------------------------------------------------------------------------------


def test_traced_dropout_rate_only_in_train_mode():
    model = _lm(num_layers=2, dropout=0.0)
    x = _tokens()
    variables = _init(model, x)

    @jax.jit
    def run(rate, key):
        train = model.apply(variables, x, train=True, rng=key, dropout_rate=rate)[0]
        return train, model.apply(variables, x, train=False, dropout_rate=rate)[0]

    key = jax.random.key(1)
    train0, eval0 = run(jnp.float32(0.0), key)
    train5, eval5 = run(jnp.float32(0.5), key)
    assert run._cache_size() == 1  # a new rate is a new value, not a new program
    np.testing.assert_allclose(eval0, eval5)
    np.testing.assert_allclose(train0, eval0, atol=1e-6)
    assert not np.allclose(train5, eval5, atol=1e-3)


def test_vmap_over_stacked_params():
    model = models.get("rnn_classifier", num_classes=4, input_shape=(T, 2), hidden_size=H, dropout=0.1)
    x = _floats(B, T, 2)
    members = [_init(model, x, s) for s in (0, 1)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *members)
    rates = jnp.array([0.0, 0.3])

    def apply(v, rate, key):
        return model.apply(v, x, train=True, rng=key, dropout_rate=rate)[0]

    out = jax.jit(jax.vmap(apply, in_axes=(0, 0, None)))(stacked, rates, jax.random.key(2))
    assert out.shape == (2, B, 4)
    np.testing.assert_allclose(out[0], _run(model, members[0], x), atol=1e-5)  # rate 0 = eval


@pytest.mark.parametrize("name", ["rnn_lm", "rnn_forecaster"])
def test_loss_goes_down_on_a_tiny_batch(name):
    if name == "rnn_lm":
        model, x = _lm("gru"), _tokens(n=4, t=T + 1)
        inputs, targets = x[:, :-1], x[:, 1:]

        def loss(out):
            return optax.softmax_cross_entropy_with_integer_labels(out, targets).mean()
    else:
        model = models.get("rnn_forecaster", num_classes=2, hidden_size=H)
        inputs = _floats(4, T, 1)
        targets = jnp.stack([inputs[:, -1, 0], inputs[:, 0, 0]], axis=1)  # (4, 2)

        def loss(out):
            return jnp.mean((out - targets) ** 2)

    params = _init(model, inputs)["params"]
    opt = optax.adam(5e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(lambda p: loss(model.apply({"params": p}, inputs)[0]))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    first = None
    for _ in range(15):
        params, state, value = step(params, state)
        first = float(value) if first is None else first
    assert float(value) < 0.5 * first


# ---------------------------------------------------------------------------------------------------------------------
# Step-wise decoding
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,num_layers", [("lstm", 2), ("gru", 1)])
def test_lm_step_from_initial_state_equals_call(cell, num_layers):
    model = _lm(cell, num_layers=num_layers)
    x = _tokens()
    variables = _init(model, x)
    state, _ = model.apply(variables, B, method="initial_state")
    leaves = jax.tree.leaves(state)
    assert len(leaves) == (2 if cell == "lstm" else 1)
    assert all(leaf.shape == (num_layers, B, H) and not leaf.any() for leaf in leaves)

    @jax.jit
    def both(variables, state):
        pieces = []
        for a, b in [(0, 2), (2, 3), (3, T)]:  # a chunk, a single token, the rest
            (logits, state), _ = model.apply(variables, {"tokens": x[:, a:b], "state": state}, method="step")
            pieces.append(logits)
        return jnp.concatenate(pieces, axis=1), model.apply(variables, x)[0]

    stepped, full = both(variables, state)
    np.testing.assert_allclose(stepped, full, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Config validation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,fields,key", [
    ("rnn_lm", {"cell": "rnn"}, "model.cell"),
    ("rnn_lm", {"hidden_size": 0}, "model.hidden_size"),
    ("rnn_lm", {"embed_dim": 0}, "model.embed_dim"),
    ("rnn_lm", {"dropout": 1.0}, "model.dropout"),
    ("rnn_lm", {"bidirectional": True}, "bidirectional"),
    ("rnn_classifier", {"pooling": "avg"}, "model.pooling"),
    ("rnn_classifier", {"embed_dim": 8}, "model.vocab_size"),
    ("rnn_forecaster", {"num_layers": 0}, "model.num_layers"),
    ("rnn_forecaster", {"cell": "LSTM"}, "model.cell"),
])
def test_config_errors_name_the_key(name, fields, key):
    with pytest.raises(ConfigError, match=key):
        models.get(name, num_classes=4, **fields)
