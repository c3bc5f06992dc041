"""Perceptron and MLP: shapes, parameter counts, output heads, activations, training on a tiny batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl.models as models
from jaxdl.errors import ConfigError
from jaxdl.losses import cross_entropy, mse
from jaxdl.nn import step_ste


def _data(shape=(8, 8, 1), n=16, classes=10, seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, *shape), jnp.float32)
    y = jax.random.randint(ky, (n,), 0, classes)
    return x, y


def _fit(model, variables, x, y, *, steps=40, lr=1e-2, seed=1):
    """Adam on cross-entropy for ``steps`` jitted steps (train mode, with an rng); eval-mode loss before/after."""
    opt = optax.adam(lr)
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    opt_state = opt.init(params)

    @jax.jit
    def step(params, state, opt_state, rng):
        def loss_fn(p):
            out, new_state = model.apply({"params": p, **state}, x, train=True, rng=rng)
            return cross_entropy(out, y), new_state

        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, loss

    @jax.jit
    def eval_loss(params, state):
        return cross_entropy(model.apply({"params": params, **state}, x, train=False)[0], y)

    before = float(eval_loss(params, state))
    rng = jax.random.key(seed)
    train_losses = []
    for _ in range(steps):
        rng, sub = jax.random.split(rng)
        params, state, opt_state, loss = step(params, state, opt_state, sub)
        train_losses.append(float(loss))
    after = float(eval_loss(params, state))
    return before, after, train_losses


# ---------------------------------------------------------------------------------------------------------------------
# Shapes and parameter counts
# ---------------------------------------------------------------------------------------------------------------------


def test_perceptron_param_count_and_shape():
    model = models.get("perceptron", num_classes=10, input_shape=(28, 28, 1))
    assert model.param_count() == 7_850  # 784 * 10 + 10
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert set(variables) == {"params"}
    out, state = model.apply(variables, jnp.ones((3, 28, 28, 1)))
    assert out.shape == (3, 10)
    assert state == {}


def test_mlp_param_count_and_shape():
    model = models.get("mlp", widths=(128, 64), num_classes=10, input_shape=(784,))
    # 784*128+128 + 128*64+64 + 64*10+10
    assert model.param_count() == 109_386
    variables = model.init(jax.random.key(0), jnp.zeros((2, 784)))
    assert models.count_params(variables["params"]) == 109_386
    out, _ = model.apply(variables, jnp.ones((5, 784)))
    assert out.shape == (5, 10)
    assert out.dtype == jnp.float32


def test_mlp_batch_norm_drops_dense_bias():
    model = models.get("mlp", widths=(16,), num_classes=3, batch_norm=True, input_shape=(4,))
    variables = model.init(jax.random.key(0), jnp.zeros((2, 4)))
    assert "bias" not in variables["params"]["dense0"]
    assert set(variables["batch_stats"]["bn0"]) == {"mean", "var"}
    # 4*16 (no bias) + 2*16 (bn scale, bias) + 16*3+3
    assert model.param_count() == 4 * 16 + 2 * 16 + 16 * 3 + 3


def test_model_call_is_eval_outputs():
    model = models.get("mlp", widths=(8,), num_classes=3, input_shape=(4,))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    x = jnp.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(model(variables, x), model.apply(variables, x, train=False)[0])


# ---------------------------------------------------------------------------------------------------------------------
# Output heads and activations
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "gelu", "silu"])
def test_mlp_activations_by_name(act):
    model = models.get("mlp", widths=(16, 8), num_classes=4, activation=act, input_shape=(6,))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6)))
    out, _ = model.apply(variables, jax.random.normal(jax.random.key(1), (3, 6)))
    assert out.shape == (3, 4)
    assert bool(jnp.all(jnp.isfinite(out)))
    assert model.config.activation == act


def test_mlp_activations_differ():
    x = jax.random.normal(jax.random.key(1), (3, 6))
    outs = {}
    for act in ["relu", "sigmoid", "tanh"]:
        model = models.get("mlp", widths=(16,), num_classes=4, activation=act, input_shape=(6,))
        variables = model.init(jax.random.key(0), jnp.zeros((1, 6)))  # same params: same key, same shapes
        outs[act] = model(variables, x)
    assert not np.allclose(outs["relu"], outs["sigmoid"])
    assert not np.allclose(outs["relu"], outs["tanh"])


def test_unknown_activation_names_key_and_suggests():
    with pytest.raises(ConfigError) as e:
        models.get("mlp", activation="rellu", num_classes=3)
    msg = str(e.value)
    assert "model.activation" in msg
    assert "'relu'" in msg
    assert "did you mean" in msg


def test_unknown_output_head():
    with pytest.raises(ConfigError, match="model.output"):
        models.get("mlp", output="probs", num_classes=3)


def test_softmax_and_sigmoid_outputs():
    x = 3.0 * jax.random.normal(jax.random.key(1), (5, 6))
    sm = models.get("mlp", widths=(8,), num_classes=4, output="softmax", input_shape=(6,))
    v = sm.init(jax.random.key(0), jnp.zeros((1, 6)))
    p = sm(v, x)
    assert sm.output == "softmax"
    assert bool(jnp.all(p >= 0))
    np.testing.assert_allclose(jnp.sum(p, axis=-1), 1.0, rtol=1e-5)

    sg = models.get("mlp", widths=(8,), num_classes=4, output="sigmoid", input_shape=(6,))
    q = sg(sg.init(jax.random.key(0), jnp.zeros((1, 6))), x)
    assert bool(jnp.all((q > 0) & (q < 1)))
    # same params (same key): sigmoid head is sigmoid of the logits head
    lg = models.get("mlp", widths=(8,), num_classes=4, input_shape=(6,))
    np.testing.assert_allclose(q, jax.nn.sigmoid(lg(v, x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, jax.nn.softmax(lg(v, x)), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Perceptron with a step output
# ---------------------------------------------------------------------------------------------------------------------


def test_perceptron_step_forward_is_binary():
    model = models.get("perceptron", num_classes=3, input_shape=(5,))
    assert model.output == "step"  # the perceptron's default head
    variables = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    out = model(variables, jax.random.normal(jax.random.key(1), (64, 5)))
    assert out.shape == (64, 3)
    assert set(np.unique(np.asarray(out)).tolist()) <= {0.0, 1.0}
    assert 0 < float(out.mean()) < 1  # both values occur


def test_step_ste_straight_through_gradient():
    x = jnp.array([-2.0, -0.1, 0.0, 0.3, 5.0])
    np.testing.assert_array_equal(step_ste(x), jnp.array([0.0, 0.0, 0.0, 1.0, 1.0]))
    w = jnp.array([1.0, -2.0, 3.0, 0.5, 7.0])
    g = jax.grad(lambda z: jnp.sum(step_ste(z) * w))(x)
    np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(jax.jacobian(step_ste)(x), jnp.eye(5))
    # under jit too
    np.testing.assert_array_equal(jax.jit(jax.grad(lambda z: jnp.sum(step_ste(z) * w)))(x), w)


def test_perceptron_step_learns_separable_toy():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, size=(400, 2)).astype(np.float32)
    margin = pts[:, 0] + 0.5 * pts[:, 1] - 0.1
    pts, margin = pts[np.abs(margin) > 0.2][:64], margin[np.abs(margin) > 0.2][:64]
    y = (margin > 0).astype(np.int32)
    assert 10 < y.sum() < len(y) - 10
    x, target = jnp.asarray(pts), jax.nn.one_hot(y, 2)

    model = models.get("perceptron", num_classes=2, output="step", input_shape=(2,))
    variables = model.init(jax.random.key(0), x[:1])
    params = variables["params"]

    @jax.jit
    def sgd(params):
        loss, g = jax.value_and_grad(lambda p: mse(model({"params": p}, x), target))(params)
        return jax.tree.map(lambda p, d: p - 0.5 * d, params, g), loss

    for _ in range(200):
        params, loss = sgd(params)
        if float(loss) == 0.0:
            break
    out = model({"params": params}, x)
    np.testing.assert_array_equal(out, target)  # each unit fires exactly for its class
    assert float(jnp.mean(jnp.argmax(out, -1) == y)) == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Loss goes down on a tiny batch
# ---------------------------------------------------------------------------------------------------------------------


def test_perceptron_logits_loss_goes_down():
    x, y = _data()
    model = models.get("perceptron", num_classes=10, output="logits", input_shape=(8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    before, after, _ = _fit(model, variables, x, y, steps=40, lr=5e-2)
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_loss_goes_down(batch_norm):
    x, y = _data()
    model = models.get("mlp", widths=(32, 16), num_classes=10, dropout=0.1, batch_norm=batch_norm,
                       input_shape=(8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    before, after, losses = _fit(model, variables, x, y, steps=40, lr=1e-2)
    assert after < 0.5 * before, (before, after)
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
    assert all(np.isfinite(losses))
