"""The Model boundary: input checks (eager and under jit), registry/config errors, dropout and batch-norm state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl.models as models
from jaxdl.config import model_config
from jaxdl.errors import ConfigError, JaxdlError, ModelInputError, RegistryError


def _mlp(**kw):
    kw.setdefault("widths", (16,))
    kw.setdefault("num_classes", 3)
    return models.get("mlp", **kw)


# ---------------------------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "lenet5"])
def test_wrong_shape_names_model_expected_and_actual(name):
    model = models.get(name, num_classes=10, input_shape=(8, 8, 1))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    bad = jnp.zeros((2, 7, 8, 1))
    for call in (lambda: model.apply(variables, bad),
                 lambda: jax.jit(lambda v, x: model.apply(v, x)[0])(variables, bad),
                 lambda: model.init(jax.random.key(0), bad)):
        with pytest.raises(ModelInputError) as e:
            call()
        msg = str(e.value)
        assert f"'{name}'" in msg
        assert "(batch, 8, 8, 1)" in msg
        assert "(2, 7, 8, 1)" in msg


def test_missing_batch_axis_hint():
    model = _mlp(input_shape=(8, 8, 1))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(ModelInputError, match=r"batch axis missing"):
        model.apply(variables, jnp.zeros((8, 8, 1)))


def test_integer_input_to_float_model():
    model = _mlp(input_shape=(8, 8, 1))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    x = jnp.zeros((2, 8, 8, 1), jnp.uint8)
    for call in (lambda: model.apply(variables, x),
                 lambda: jax.jit(lambda v, x: model.apply(v, x)[0])(variables, x)):
        with pytest.raises(ModelInputError) as e:
            call()
        msg = str(e.value)
        assert "'mlp'" in msg and "uint8" in msg
        assert "scale" in msg and "/ 255" in msg


def test_non_array_input():
    model = _mlp(input_shape=(4,))
    with pytest.raises(ModelInputError, match="must be an array"):
        model.apply({}, [[1.0, 2.0, 3.0, 4.0]])


@pytest.mark.parametrize("name,good,bad", [("mlp", (8, 8, 1), (2, 9, 8, 1)), ("lenet5", (8, 8, 1), (2, 8, 8, 3)),
                                            ("perceptron", (5,), (2, 6))])
def test_unknown_input_shape_mismatch_is_model_input_error(name, good, bad):
    model = models.get(name, num_classes=3)
    assert model.input_shape is None
    variables = model.init(jax.random.key(0), jnp.zeros((1, *good)))
    x = jnp.zeros(bad)
    for call in (lambda: model.apply(variables, x),
                 lambda: jax.jit(lambda v, x: model.apply(v, x)[0])(variables, x),
                 lambda: jax.jit(jax.grad(lambda v, x: model.apply(v, x)[0].sum()))(variables, x)):
        with pytest.raises(ModelInputError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"model '{name}'")
        assert str(bad) in msg


def test_with_input_and_abstract_variables():
    model = _mlp()
    with pytest.raises(JaxdlError, match="input shape unknown"):
        model.param_count()
    m2 = model.with_input(jnp.zeros((5, 4)))
    assert m2.input_shape == (4,) and m2.input_kind == "float" and model.input_shape is None
    assert m2.param_count() == 4 * 16 + 16 + 16 * 3 + 3
    assert m2.expected() == "(batch, 4) float"
    assert model.with_input((2, 2)).input_shape == (2, 2)
    with pytest.raises(ModelInputError):
        m2.apply(m2.init(jax.random.key(0), jnp.zeros((1, 4))), jnp.zeros((1, 5)))


# ---------------------------------------------------------------------------------------------------------------------
# Registry and config errors
# ---------------------------------------------------------------------------------------------------------------------


def test_registry_names():
    assert {"perceptron", "mlp", "lenet5"} <= set(models.names())
    assert "mlp" in models.MODELS


def test_unknown_model_name_suggests():
    with pytest.raises(RegistryError) as e:
        models.get("lenet", num_classes=10)
    assert "'lenet5'" in str(e.value) and "did you mean" in str(e.value)


def test_unknown_field_suggests():
    with pytest.raises(ConfigError) as e:
        models.get("mlp", widthz=(8,))
    msg = str(e.value)
    assert "model.widthz" in msg and "'model.widths'" in msg


def test_wrong_field_type():
    with pytest.raises(ConfigError) as e:
        models.get("mlp", widths="abc")
    msg = str(e.value)
    assert "model.widths" in msg and "tuple[int, ...]" in msg and "'abc'" in msg
    with pytest.raises(ConfigError, match="model.batch_norm"):
        models.get("mlp", batch_norm="yes")


@pytest.mark.parametrize("field,value", [("widths", (8, 0)), ("dropout", 1.0), ("dropout", -0.1)])
def test_invalid_values(field, value):
    with pytest.raises(ConfigError, match=f"model.{field}"):
        models.get("mlp", num_classes=3, **{field: value})


def test_num_classes_required_and_positive():
    with pytest.raises(ConfigError, match="num_classes"):
        models.get("mlp")
    with pytest.raises(ConfigError, match="num_classes"):
        models.get("mlp", num_classes=0)
    # the config's num_classes wins over the argument
    cfg = model_config("mlp", widths=(4,), num_classes=5)
    model = models.from_config(cfg, num_classes=7, input_shape=(2,))
    assert model.config.num_classes == 5 and model.name == "mlp"
    model = models.from_config(model_config("mlp", widths=(4,)), num_classes=7, input_shape=(2,))
    assert model.config.num_classes == 7
    assert model.param_count() == 2 * 4 + 4 + 4 * 7 + 7


# ---------------------------------------------------------------------------------------------------------------------
# Dropout through the model
# ---------------------------------------------------------------------------------------------------------------------


def test_dropout_eval_deterministic_and_equals_rate_zero_training():
    model = _mlp(widths=(32, 32), dropout=0.5, input_shape=(6,))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6)))
    x = jax.random.normal(jax.random.key(1), (4, 6))
    e1, _ = model.apply(variables, x, train=False)
    e2, _ = model.apply(variables, x, train=False, rng=jax.random.key(9))
    np.testing.assert_array_equal(e1, e2)
    t0, _ = model.apply(variables, x, train=True, rng=jax.random.key(3), dropout_rate=0.0)
    np.testing.assert_array_equal(t0, e1)
    t0j = jax.jit(lambda v, x, r, p: model.apply(v, x, train=True, rng=r, dropout_rate=p)[0])(
        variables, x, jax.random.key(3), jnp.float32(0.0))
    np.testing.assert_allclose(t0j, e1, rtol=1e-6, atol=1e-6)
    # the configured rate (0.5) applies when no override is given
    t1, _ = model.apply(variables, x, train=True, rng=jax.random.key(3))
    assert not np.allclose(t1, e1)


def test_dropout_rate_is_traced_without_retracing():
    model = _mlp(widths=(64,), dropout=0.2, input_shape=(6,))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6)))
    x = jax.random.normal(jax.random.key(1), (8, 6))
    traces = []

    @jax.jit
    def f(v, x, rng, rate):
        traces.append(1)
        return model.apply(v, x, train=True, rng=rng, dropout_rate=rate)[0]

    key = jax.random.key(3)
    outs = [f(variables, x, key, jnp.asarray(r, jnp.float32)) for r in (0.1, 0.5, 0.9, 0.0)]
    assert len(traces) == 1
    assert not np.allclose(outs[0], outs[1]) and not np.allclose(outs[1], outs[2])
    np.testing.assert_allclose(outs[3], model(variables, x), rtol=1e-6, atol=1e-6)


def test_dropout_without_rng_raises():
    model = _mlp(dropout=0.5, input_shape=(6,))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6)))
    x = jnp.ones((2, 6))
    with pytest.raises(JaxdlError, match=r"(?i)rng") as e:
        model.apply(variables, x, train=True)
    assert "dropout0" in str(e.value)  # names the layer
    assert "rng=key" in str(e.value)
    with pytest.raises(JaxdlError, match=r"(?i)rng"):
        jax.jit(lambda v, x: model.apply(v, x, train=True)[0])(variables, x)
    # no dropout configured: training without rng is fine
    plain = _mlp(input_shape=(6,))
    out, _ = plain.apply(plain.init(jax.random.key(0), x), x, train=True)
    assert out.shape == (2, 3)


# ---------------------------------------------------------------------------------------------------------------------
# Batch norm state
# ---------------------------------------------------------------------------------------------------------------------


def test_batch_norm_train_updates_eval_keeps_stats():
    model = _mlp(widths=(8, 8), batch_norm=True, input_shape=(6,))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6)))
    x = 2.0 + 3.0 * jax.random.normal(jax.random.key(1), (16, 6))

    out, state = jax.jit(lambda v, x: model.apply(v, x, train=True))(variables, x)
    assert set(state) == {"batch_stats"}
    assert jax.tree.structure(state["batch_stats"]) == jax.tree.structure(variables["batch_stats"])
    for old, new in zip(jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(state["batch_stats"])):
        assert not np.allclose(old, new)
    # momentum 0.9: running mean moves 10% of the way to the batch mean
    h = x @ variables["params"]["dense0"]["kernel"]
    np.testing.assert_allclose(state["batch_stats"]["bn0"]["mean"], 0.1 * h.mean(0), rtol=1e-4, atol=1e-5)

    e_out, e_state = model.apply(variables, x, train=False)
    assert set(e_state) == {"batch_stats"}
    jax.tree.map(np.testing.assert_array_equal, e_state["batch_stats"], variables["batch_stats"])
    # train mode normalises with batch statistics, eval mode with the running ones
    assert not np.allclose(out, e_out)
