"""``from_nnx``: a Flax NNX module wrapped as a pure init/apply pair."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxdl.errors import ModelInputError
from jaxdl.losses import cross_entropy
from jaxdl.models import from_nnx


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(4, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.bn(self.lin(x)))))


@pytest.fixture(scope="module")
def setup():
    model = from_nnx(Net, "net", input_shape=(4,))
    variables = model.init(jax.random.key(0), jnp.zeros((2, 4)))
    x = 1.0 + 2.0 * jax.random.normal(jax.random.key(1), (8, 4))
    return model, variables, x


def _eq(a, b):
    return all(bool(jnp.array_equal(u, v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_init_layout(setup):
    model, variables, _ = setup
    assert model.name == "net"
    assert set(variables) == {"params", "nnx_state"}
    shapes = jax.tree.map(jnp.shape, variables["params"])
    assert shapes["lin"] == {"kernel": (4, 16), "bias": (16,)}
    assert shapes["bn"] == {"scale": (16,), "bias": (16,)}
    assert shapes["out"] == {"kernel": (16, 3), "bias": (3,)}
    assert set(variables["nnx_state"]["bn"]) == {"mean", "var"}
    assert model.param_count() == 4 * 16 + 16 + 2 * 16 + 16 * 3 + 3
    # init is a pure function of the key
    again = model.init(jax.random.key(0), jnp.zeros((2, 4)))
    assert _eq(again["params"], variables["params"])
    other = model.init(jax.random.key(1), jnp.zeros((2, 4)))
    assert not _eq(other["params"], variables["params"])


def test_eval_deterministic_and_state_unchanged(setup):
    model, variables, x = setup
    o1, s1 = model.apply(variables, x)
    o2, s2 = model.apply(variables, x, rng=jax.random.key(5))
    assert o1.shape == (8, 3)
    np.testing.assert_array_equal(o1, o2)
    assert _eq(s1["nnx_state"], variables["nnx_state"])
    assert _eq(s2["nnx_state"], variables["nnx_state"])


def test_train_updates_batch_stats_and_is_pure(setup):
    model, variables, x = setup
    key = jax.random.key(3)
    t1, s1 = model.apply(variables, x, train=True, rng=key)
    t2, s2 = model.apply(variables, x, train=True, rng=key)
    t3, _ = model.apply(variables, x, train=True, rng=jax.random.key(4))
    np.testing.assert_array_equal(t1, t2)
    assert not np.array_equal(t1, t3)  # different dropout masks
    assert _eq(s1, s2)
    bn_old, bn_new = variables["nnx_state"]["bn"], s1["nnx_state"]["bn"]
    assert not np.allclose(bn_old["mean"], bn_new["mean"])
    assert not np.allclose(bn_old["var"], bn_new["var"])
    # the inputs were not mutated: eval output unchanged after training calls
    np.testing.assert_array_equal(model.apply(variables, x)[0], setup[0].apply(variables, x)[0])
    assert bool(jnp.all(variables["nnx_state"]["bn"]["mean"] == 0))


def test_jit_matches_eager_and_grad(setup):
    model, variables, x = setup
    key = jax.random.key(3)
    f = jax.jit(lambda v, x, r: model.apply(v, x, train=True, rng=r))
    j_out, j_state = f(variables, x, key)
    e_out, e_state = model.apply(variables, x, train=True, rng=key)
    np.testing.assert_allclose(j_out, e_out, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 j_state["nnx_state"]["bn"], e_state["nnx_state"]["bn"])
    # eager works after a traced call (no leaked tracers)
    np.testing.assert_allclose(model.apply(variables, x)[0], jax.jit(lambda v, x: model.apply(v, x)[0])(variables, x),
                               rtol=1e-5, atol=1e-6)

    y = jnp.arange(8) % 3

    def loss(p):
        out, _ = model.apply({**variables, "params": p}, x, train=True, rng=key)
        return cross_entropy(out, y)

    g = jax.jit(jax.grad(loss))(variables["params"])
    assert jax.tree.structure(g) == jax.tree.structure(variables["params"])
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))
    assert float(jnp.abs(g["lin"]["kernel"]).sum()) > 0
    eps = 1e-3
    bumped = jax.tree.map(lambda p, d: p - eps * d, variables["params"], g)
    assert float(loss(bumped)) < float(loss(variables["params"]))


def test_adam_reduces_loss():
    model = from_nnx(Net, input_shape=(4,))
    assert model.name == "net"
    kx, ky = jax.random.split(jax.random.key(7))
    x = jax.random.normal(kx, (16, 4))
    y = jax.random.randint(ky, (16,), 0, 3)
    variables = model.init(jax.random.key(0), x)
    params, state = variables["params"], {"nnx_state": variables["nnx_state"]}
    opt = optax.adam(3e-2)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, state, opt_state, rng):
        def loss_fn(p):
            out, new_state = model.apply({"params": p, **state}, x, train=True, rng=rng)
            return cross_entropy(out, y), new_state

        (loss, new_state), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, loss

    eval_loss = jax.jit(lambda p, s: cross_entropy(model.apply({"params": p, **s}, x)[0], y))
    before = float(eval_loss(params, state))
    rng = jax.random.key(1)
    for _ in range(40):
        rng, sub = jax.random.split(rng)
        params, state, opt_state, _ = step(params, state, opt_state, sub)
    after = float(eval_loss(params, state))
    assert after < 0.5 * before, (before, after)


def test_input_check(setup):
    model, variables, _ = setup
    with pytest.raises(ModelInputError, match=r"'net'.*\(batch, 4\)"):
        model.apply(variables, jnp.zeros((2, 5)))
    with pytest.raises(ModelInputError, match="int32"):
        model.apply(variables, jnp.zeros((2, 4), jnp.int32))


def test_unknown_input_shape_mismatch_is_model_input_error(setup):
    _, variables, _ = setup
    model = from_nnx(Net)
    assert model.input_shape is None and model.name == "net"
    x = jnp.zeros((2, 5))
    for call in (lambda: model.apply(variables, x), lambda: jax.jit(lambda v, x: model.apply(v, x)[0])(variables, x)):
        with pytest.raises(ModelInputError) as e:
            call()
        assert str(e.value).startswith("model 'net' cannot take inputs of shape (2, 5)")
