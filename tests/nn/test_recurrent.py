"""jaxdl.nn.Recurrent against PyTorch's nn.LSTM / nn.GRU holding the same weights: outputs, final states and input
gradients (full-length and packed variable-length batches, initial states), initialisation, dropout, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from jaxdl.convert import convert_recurrent_state_dict  # noqa: E402
from jaxdl.errors import ConfigError, ModelInputError  # noqa: E402
from jaxdl.nn import Recurrent, initial_state  # noqa: E402

B, T, F, H = 3, 5, 4, 6
ATOL = 1e-5
TORCH = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
LENGTHS = np.array([5, 2, 3])  # unsorted, one full-length


def pair(cell, num_layers=2, bidirectional=True, seed=0):
    """A PyTorch module and the Flax module + variables holding its weights."""
    torch.manual_seed(seed)
    ref = TORCH[cell](F, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    mod = Recurrent(cell, H, num_layers=num_layers, bidirectional=bidirectional)
    return ref, mod, convert_recurrent_state_dict(ref.state_dict())


def inputs(seed=1):
    return np.random.default_rng(seed).standard_normal((B, T, F)).astype(np.float32)


def states(cell, state):
    """Final state as a list of numpy arrays ([h] or [h, c])."""
    return [np.asarray(s.detach() if hasattr(s, "detach") else s) for s in (state if cell == "lstm" else (state,))]


def torch_run(ref, x, lengths=None, state=None):
    xt = torch.tensor(x, requires_grad=True)
    st = None if state is None else (tuple(torch.tensor(np.asarray(s)) for s in state) if isinstance(state, tuple)
                                     else torch.tensor(np.asarray(state)))
    if lengths is None:
        out, fin = ref(xt, st)
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        out, fin = ref(packed, st)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    out.sum().backward()
    return out.detach().numpy(), fin, xt.grad.numpy()


def jax_run(mod, variables, x, lengths=None, state=None):
    def f(x):
        out, fin = mod.apply(variables, x, None if lengths is None else jnp.asarray(lengths), state)
        return out.sum(), (out, fin)

    (_, (out, fin)), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(jnp.asarray(x))
    return np.asarray(out), fin, np.asarray(grad)


def assert_parity(cell, ref, mod, variables, x, lengths=None, state=None, grads=False):
    out_t, fin_t, grad_t = torch_run(ref, x, lengths, state)
    out_j, fin_j, grad_j = jax_run(mod, variables, x, lengths, state)
    np.testing.assert_allclose(out_j, out_t, atol=ATOL)
    for a, b in zip(states(cell, fin_j), states(cell, fin_t), strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)
    if grads:
        np.testing.assert_allclose(grad_j, grad_t, atol=ATOL)
    return out_j


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_two_layers_full_length(cell):
    ref, mod, variables = pair(cell)
    out = assert_parity(cell, ref, mod, variables, inputs(), grads=True)
    assert out.shape == (B, T, 2 * H)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_two_layers_packed_lengths(cell):
    ref, mod, variables = pair(cell)
    out = assert_parity(cell, ref, mod, variables, inputs(), LENGTHS, grads=True)
    assert np.all(out[1, 2:] == 0) and np.all(out[2, 3:] == 0)  # padding is zero, as pad_packed_sequence gives


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_initial_state(cell):
    ref, mod, variables = pair(cell)
    rng = np.random.default_rng(2)
    h0 = rng.standard_normal((4, B, H)).astype(np.float32)
    state = (h0, rng.standard_normal((4, B, H)).astype(np.float32)) if cell == "lstm" else h0
    assert_parity(cell, ref, mod, variables, inputs(), LENGTHS, state)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_unidirectional_one_layer_with_gradients(cell):
    ref, mod, variables = pair(cell, num_layers=1, bidirectional=False)
    out = assert_parity(cell, ref, mod, variables, inputs(), LENGTHS, grads=True)
    assert out.shape == (B, T, H)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_init_matches_pytorch_shapes_and_bounds(cell):
    ref, mod, converted = pair(cell)
    variables = jax.jit(mod.init)(jax.random.key(0), jnp.zeros((1, T, F)))
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, converted)
    leaves = jax.tree.leaves(variables)
    assert len(leaves) == 16  # 2 layers x 2 directions x 4 tensors
    bound = 1 / np.sqrt(H)
    for leaf in leaves:
        assert np.all(np.abs(leaf) <= bound) and np.std(leaf) > bound / 4  # uniform(-1/sqrt(H), 1/sqrt(H))
    assert variables["params"]["l1"]["weight_ih"].shape == (2 * H, (4 if cell == "lstm" else 3) * H)


def test_initial_state_helper_layout():
    h, c = initial_state("lstm", 2, True, B, H)
    assert h.shape == c.shape == (4, B, H) and not np.any(h)
    assert initial_state("gru", 3, False, B, H).shape == (3, B, H)


def test_dropout_between_layers_traced_rate_and_vmap():
    mod = Recurrent("gru", H, num_layers=2, dropout=0.5)
    x = jnp.asarray(inputs())
    variables = mod.init(jax.random.key(0), x)

    @jax.jit
    def run(variables, rate):  # rate None: the module's own 0.5
        return mod.apply(variables, x, train=True, dropout_rate=rate, rngs={"dropout": jax.random.key(1)})[0]

    evaluated = jax.jit(lambda v: mod.apply(v, x)[0])(variables)
    assert not np.allclose(run(variables, None), evaluated)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), variables)  # a population of two members
    outs = jax.vmap(run)(stacked, jnp.array([0.0, 0.5], jnp.float32))  # traced rates
    assert outs.shape == (2, B, T, H)
    np.testing.assert_allclose(outs[0], evaluated, atol=1e-6)  # rate 0 (an array) is the identity
    assert not np.allclose(outs[1], evaluated)


def test_unknown_cell():
    with pytest.raises(ConfigError, match="unknown cell 'rnn'.*lstm, gru"):
        Recurrent("rnn", H).init(jax.random.key(0), jnp.zeros((1, T, F)))


def test_input_not_3d():
    with pytest.raises(ModelInputError, match=r"Recurrent\(lstm\).*\(batch, time, features\).*\(5, 4\)"):
        Recurrent("lstm", H).init(jax.random.key(0), jnp.zeros((T, F)))


def test_wrong_feature_count():
    _, mod, variables = pair("gru", num_layers=1, bidirectional=False)
    with pytest.raises(ModelInputError, match=r"Recurrent\(gru\): layer l0 expects inputs with 4 features.*got 7"):
        mod.apply(variables, jnp.zeros((B, T, 7)))


def test_initial_state_wrong_shape():
    _, mod, variables = pair("lstm")
    bad = (jnp.zeros((2, B, H)), jnp.zeros((4, B, H)))
    with pytest.raises(ModelInputError, match=r"Recurrent\(lstm\): initial_state h0 .*\(4, 3, 6\).*got \(2, 3, 6\)"):
        mod.apply(variables, jnp.zeros((B, T, F)), None, bad)
    with pytest.raises(ModelInputError, match=r"Recurrent\(lstm\): initial_state must be a pair \(h0, c0\)"):
        mod.apply(variables, jnp.zeros((B, T, F)), None, jnp.zeros((4, B, H)))


def test_lengths_wrong_shape():
    _, mod, variables = pair("gru", num_layers=1, bidirectional=False)
    with pytest.raises(ModelInputError, match=r"Recurrent\(gru\): lengths must have shape \(batch,\) = \(3,\)"):
        mod.apply(variables, jnp.zeros((B, T, F)), jnp.array([1, 2]))
