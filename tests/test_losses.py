"""Numerical parity of jaxdl.losses with torch.nn.functional, plus masking, jit/vmap, gradients and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxdl import losses
from jaxdl.errors import ConfigError, DataError, RegistryError

RTOL, ATOL = 1e-5, 1e-6
REDUCTIONS = ["mean", "sum", "none"]
N, T, C = 6, 3, 5


def rng(seed=0):
    return np.random.default_rng(seed)


def close(ours, ref):
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)


def t(x):
    return torch.from_numpy(np.array(x))


def data(seed=0, shape=(N, C)):
    r = rng(seed)
    logits = r.normal(size=shape).astype(np.float32) * 2
    labels = r.integers(0, shape[-1], size=shape[:-1]).astype(np.int32)
    probs = r.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(np.float32)
    weights = r.uniform(0.2, 2.0, size=shape[-1]).astype(np.float32)
    return logits, labels, probs, weights


# ------------------------------------------------------------------------------------------------ registry


def test_registry():
    assert losses.get("mse") is losses.mse
    assert losses.get("cross_entropy") is losses.cross_entropy
    assert losses.get("bce") is losses.binary_cross_entropy
    assert set(losses.LOSSES.names()) == {"mse", "cross_entropy", "bce"}
    with pytest.raises(RegistryError, match="did you mean 'mse'"):
        losses.get("msee")


# ------------------------------------------------------------------------------------------------ mse


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(reduction):
    r = rng(1)
    p, y = r.normal(size=(N, 4)).astype(np.float32), r.normal(size=(N, 4)).astype(np.float32)
    close(losses.mse(p, y, reduction=reduction), F.mse_loss(t(p), t(y), reduction=reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_mask_matches_subset(reduction):
    r = rng(2)
    p, y = r.normal(size=(N, 2, 3)).astype(np.float32), r.normal(size=(N, 2, 3)).astype(np.float32)
    keep = np.array([1, 0, 1, 1, 0, 1], bool)
    p_garbage = np.where(keep[:, None, None], p, np.nan).astype(np.float32)  # masked inputs must not leak
    ours = losses.mse(p_garbage, y, reduction=reduction, mask=keep)
    ref = F.mse_loss(t(p[keep]), t(y[keep]), reduction=reduction)
    if reduction == "none":
        full = np.zeros_like(p)
        full[keep] = ref.numpy()
        ref = full
    close(ours, ref)


# ------------------------------------------------------------------------------------------------ cross-entropy


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "kind,smoothing,weighted",
    [
        ("int", 0.0, False),
        ("int", 0.1, False),
        ("int", 0.0, True),
        ("int", 0.2, True),
        ("prob", 0.0, False),
        ("prob", 0.15, False),
        ("prob", 0.0, True),
        ("prob", 0.25, True),
    ],
)
def test_cross_entropy_matches_torch(kind, smoothing, weighted, reduction):
    logits, labels, probs, weights = data(3)
    y = labels if kind == "int" else probs
    cw = weights if weighted else None
    ours = losses.cross_entropy(logits, y, label_smoothing=smoothing, class_weights=cw, reduction=reduction)
    ref = F.cross_entropy(
        t(logits), t(y).long() if kind == "int" else t(y), weight=None if cw is None else t(cw),
        label_smoothing=smoothing, reduction=reduction,
    )
    close(ours, ref)


def test_cross_entropy_one_hot_equals_int_labels():
    logits, labels, _, _ = data(4)
    one_hot = np.eye(C, dtype=np.float32)[labels]
    close(losses.cross_entropy(logits, one_hot), losses.cross_entropy(logits, labels))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["int", "prob"])
def test_cross_entropy_3d_matches_torch(kind, reduction):
    logits, labels, probs, weights = data(5, shape=(N, T, C))
    y = labels if kind == "int" else probs
    ours = losses.cross_entropy(logits, y, label_smoothing=0.1, class_weights=weights, reduction=reduction)
    ty = t(labels).long() if kind == "int" else t(probs).movedim(-1, 1)
    ref = F.cross_entropy(t(logits).movedim(-1, 1), ty, weight=t(weights), label_smoothing=0.1, reduction=reduction)
    close(ours, ref)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing,weighted", [(0.0, False), (0.1, False), (0.0, True), (0.2, True)])
def test_cross_entropy_mask_matches_ignore_index(smoothing, weighted, reduction):
    logits, labels, _, weights = data(6, shape=(N, T, C))
    keep = rng(7).random((N, T)) > 0.4
    cw = weights if weighted else None
    padded = np.where(keep, labels, -100).astype(np.int32)  # garbage labels at masked positions
    ours = losses.cross_entropy(logits, padded, label_smoothing=smoothing, class_weights=cw,
                                reduction=reduction, mask=keep)
    ref = F.cross_entropy(t(logits).movedim(-1, 1), t(padded).long(), weight=None if cw is None else t(cw),
                          label_smoothing=smoothing, reduction=reduction, ignore_index=-100)
    close(ours, ref)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_prob_mask_matches_subset(reduction):
    logits, _, probs, weights = data(8)
    keep = np.array([1, 1, 0, 1, 0, 1], bool)
    ours = losses.cross_entropy(logits, probs, class_weights=weights, label_smoothing=0.1,
                                reduction=reduction, mask=keep)
    ref = F.cross_entropy(t(logits[keep]), t(probs[keep]), weight=t(weights), label_smoothing=0.1,
                          reduction=reduction)
    if reduction == "none":
        full = np.zeros(N, np.float32)
        full[keep] = ref.numpy()
        ref = full
    close(ours, ref)


@pytest.mark.parametrize("kind", ["int", "prob"])
def test_cross_entropy_from_probabilities(kind):
    logits, labels, probs, weights = data(9)
    p = np.asarray(jax.nn.softmax(logits, axis=-1))
    y = labels if kind == "int" else probs
    ours = losses.cross_entropy(p, y, class_weights=weights, label_smoothing=0.1, from_logits=False)
    ref = F.cross_entropy(torch.log(t(p)), t(y).long() if kind == "int" else t(y), weight=t(weights),
                          label_smoothing=0.1)
    close(ours, ref)
    if kind == "int":
        close(losses.cross_entropy(p, y, from_logits=False), F.nll_loss(torch.log(t(p)), t(y).long()))


def test_cross_entropy_gradients_match_torch_autograd():
    logits, labels, _, weights = data(10, shape=(N, T, C))
    keep = rng(11).random((N, T)) > 0.3
    padded = np.where(keep, labels, -100).astype(np.int32)

    def f(z):
        return losses.cross_entropy(z, padded, label_smoothing=0.1, class_weights=weights, mask=keep)

    g = jax.grad(f)(jnp.asarray(logits))
    tz = t(logits).requires_grad_(True)
    F.cross_entropy(tz.movedim(-1, 1), t(padded).long(), weight=t(weights), label_smoothing=0.1,
                    ignore_index=-100).backward()
    close(g, tz.grad)
    assert np.all(np.asarray(g)[~keep] == 0)


def test_cross_entropy_traced_hyperparameters_under_jit():
    logits, labels, _, weights = data(12)

    @jax.jit
    def f(z, y, eps, w):
        return losses.cross_entropy(z, y, label_smoothing=eps, class_weights=w)

    traced = f(logits, labels, jnp.asarray(0.1), jnp.asarray(weights))
    close(traced, losses.cross_entropy(logits, labels, label_smoothing=0.1, class_weights=weights))
    # eps == 0 traced is exactly the unsmoothed loss, and -inf logits stay usable without smoothing (as in torch)
    z = logits.copy()
    z[:, 0] = -np.inf
    y = np.where(labels == 0, 1, labels).astype(np.int32)
    close(f(z, y, jnp.asarray(0.0), jnp.ones(C)), F.cross_entropy(t(z), t(y).long()))


def test_vmap_over_batch_of_problems():
    logits, labels, _, _ = data(13, shape=(3, N, C))
    out = jax.vmap(lambda z, y, e: losses.cross_entropy(z, y, label_smoothing=e))(
        logits, labels, jnp.array([0.0, 0.1, 0.2])
    )
    ref = [F.cross_entropy(t(logits[i]), t(labels[i]).long(), label_smoothing=e) for i, e in enumerate([0, .1, .2])]
    close(out, torch.stack(ref))


# ------------------------------------------------------------------------------------------------ bce


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_w,w", [(False, False), (True, False), (False, True), (True, True)])
def test_bce_matches_torch(pos_w, w, reduction):
    r = rng(14)
    x = (r.normal(size=(N, C)) * 4).astype(np.float32)
    y = (r.random((N, C)) > 0.5).astype(np.float32)
    y[0] = r.random(C)  # soft targets too
    pw = r.uniform(0.5, 3.0, size=C).astype(np.float32) if pos_w else None
    wt = r.uniform(0.1, 2.0, size=(N, 1)).astype(np.float32) if w else None
    ours = losses.binary_cross_entropy(x, y, pos_weight=pw, weight=wt, reduction=reduction)
    ref = F.binary_cross_entropy_with_logits(t(x), t(y), pos_weight=None if pw is None else t(pw),
                                             weight=None if wt is None else t(wt), reduction=reduction)
    close(ours, ref)


def test_bce_stable_for_large_logits():
    x = np.array([[-200.0, -50.0, 0.0, 50.0, 200.0]], np.float32)
    y = np.array([[1.0, 0.0, 1.0, 1.0, 0.0]], np.float32)
    ours = losses.binary_cross_entropy(x, y, reduction="none")
    assert np.all(np.isfinite(np.asarray(ours)))
    close(ours, F.binary_cross_entropy_with_logits(t(x), t(y), reduction="none"))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_from_probabilities(reduction):
    r = rng(15)
    p = r.uniform(0.02, 0.98, size=(N, C)).astype(np.float32)
    y = (r.random((N, C)) > 0.5).astype(np.float32)
    wt = r.uniform(0.1, 2.0, size=(N, C)).astype(np.float32)
    ours = losses.binary_cross_entropy(p, y, weight=wt, reduction=reduction, from_logits=False)
    close(ours, F.binary_cross_entropy(t(p), t(y), weight=t(wt), reduction=reduction))
    # pos_weight on probabilities == pos_weight on their logits
    pw = r.uniform(0.5, 3.0, size=C).astype(np.float32)
    ours = losses.binary_cross_entropy(p, y, pos_weight=pw, reduction=reduction, from_logits=False)
    ref = F.binary_cross_entropy_with_logits(torch.logit(t(p).double()), t(y).double(), pos_weight=t(pw).double(),
                                             reduction=reduction)
    close(ours, ref.float())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_mask_matches_subset(reduction):
    r = rng(16)
    x = r.normal(size=(N, T, C)).astype(np.float32)
    y = (r.random((N, T, C)) > 0.5).astype(np.float32)
    pw = r.uniform(0.5, 3.0, size=C).astype(np.float32)
    keep = np.array([0, 1, 1, 0, 1, 1], bool)
    ours = losses.binary_cross_entropy(np.where(keep[:, None, None], x, np.nan), y, pos_weight=pw,
                                       reduction=reduction, mask=keep)
    ref = F.binary_cross_entropy_with_logits(t(x[keep]), t(y[keep]), pos_weight=t(pw), reduction=reduction)
    if reduction == "none":
        full = np.zeros_like(x)
        full[keep] = ref.numpy()
        ref = full
    close(ours, ref)


def test_bce_traced_weights_under_jit():
    r = rng(17)
    x, y = r.normal(size=(N, C)).astype(np.float32), (r.random((N, C)) > 0.5).astype(np.float32)
    pw, wt = r.uniform(0.5, 3, C).astype(np.float32), r.uniform(0.1, 2, (N, C)).astype(np.float32)
    f = jax.jit(lambda a, b, c, d: losses.binary_cross_entropy(a, b, pos_weight=c, weight=d))
    close(f(x, y, pw, wt), F.binary_cross_entropy_with_logits(t(x), t(y), pos_weight=t(pw), weight=t(wt)))


# ------------------------------------------------------------------------------------------------ masking edge


@pytest.mark.parametrize(
    "call",
    [
        lambda m: losses.mse(np.ones((N, 2)), np.zeros((N, 2)), mask=m),
        lambda m: losses.cross_entropy(data(0)[0], data(0)[1], class_weights=data(0)[3], label_smoothing=0.1, mask=m),
        lambda m: losses.cross_entropy(data(0)[0], data(0)[2], mask=m),
        lambda m: losses.binary_cross_entropy(np.ones((N, 2)), np.zeros((N, 2)), mask=m),
    ],
)
def test_all_masked_batch_is_zero(call):
    m = np.zeros(N, bool)
    assert float(call(m)) == 0.0
    g = jax.grad(lambda z: losses.cross_entropy(z, data(0)[1], mask=m))(jnp.asarray(data(0)[0]))
    assert np.all(np.asarray(g) == 0)


# ------------------------------------------------------------------------------------------------ errors


def test_cross_entropy_shape_error_names_loss_and_shapes():
    with pytest.raises(DataError) as e:
        losses.cross_entropy(np.zeros((8, 10)), np.zeros((8, 3), np.int32))
    msg = str(e.value)
    assert "cross_entropy" in msg and "(8, 3)" in msg and "(8, 10)" in msg and "(8,)" in msg
    # also under jit (shape checks are static)
    with pytest.raises(DataError, match=r"cross_entropy.*\(8, 10\)"):
        jax.jit(losses.cross_entropy)(jnp.zeros((8, 10)), jnp.zeros((8,), jnp.float32))
    with pytest.raises(DataError, match=r"cross_entropy: class_weights shape \(3,\).*\(10,\)"):
        losses.cross_entropy(np.zeros((8, 10)), np.zeros(8, np.int32), class_weights=np.ones(3))
    with pytest.raises(DataError, match=r"cross_entropy: mask shape \(4,\).*\(8,\)"):
        losses.cross_entropy(np.zeros((8, 10)), np.zeros(8, np.int32), mask=np.ones(4, bool))


def test_bce_and_mse_shape_errors():
    with pytest.raises(DataError, match=r"binary_cross_entropy: targets shape \(4, 2\).*logits shape \(4, 3\)"):
        losses.binary_cross_entropy(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"binary_cross_entropy: pos_weight shape \(2,\).*\(4, 3\)"):
        losses.binary_cross_entropy(np.zeros((4, 3)), np.zeros((4, 3)), pos_weight=np.ones(2))
    with pytest.raises(DataError, match=r"mse: target shape \(4,\).*pred shape \(4, 1\)"):
        losses.mse(np.zeros((4, 1)), np.zeros(4))


def test_bad_reduction_is_config_error():
    for fn, args in [(losses.mse, (np.zeros(3), np.zeros(3))),
                     (losses.cross_entropy, (np.zeros((3, 2)), np.zeros(3, np.int32))),
                     (losses.binary_cross_entropy, (np.zeros(3), np.zeros(3)))]:
        with pytest.raises(ConfigError, match="unknown reduction 'avg'"):
            fn(*args, reduction="avg")
