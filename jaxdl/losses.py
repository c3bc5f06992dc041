"""Loss functions: pure, jittable and vmappable, with the numbers of their PyTorch counterparts.

Every loss takes ``reduction`` ("mean" | "sum" | "none") and an optional ``mask``, and gives the same values as
``torch.nn.functional.mse_loss``, ``cross_entropy`` and ``binary_cross_entropy_with_logits`` for the same arguments.

Conventions shared by all losses:

* Numeric hyper-parameters (``label_smoothing``, ``class_weights``, ``pos_weight``, ``weight``) may be traced jax
  arrays: the code branches only on whether they are ``None``, never on their values.
* Shape checks are static (they read ``.shape`` only), so they work under ``jax.jit`` and ``jax.vmap`` and fail at
  trace time with a :class:`~jaxdl.errors.DataError` that names the loss, the expected and the actual shape.
  An unknown ``reduction`` raises :class:`~jaxdl.errors.ConfigError`.
* ``mask`` (bool or float) has a shape that is a prefix of the per-element loss shape (typically the batch axis,
  or ``labels.shape`` for cross-entropy with class indices) and is broadcast over the remaining axes. Masked-out
  entries contribute exactly 0 (their inputs are replaced before any arithmetic, so garbage or NaN padding cannot
  leak into values or gradients). ``"mean"`` divides by the (weighted) count of kept entries, which reproduces
  torch's ``ignore_index`` semantics; an all-masked batch gives 0 instead of NaN. ``"none"`` returns the
  per-element loss with masked entries zeroed.
* Half-precision inputs are computed in float32; the result has the promoted floating dtype (float32, or float64
  when x64 is on and an input is float64).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdl.errors import ConfigError, DataError
from jaxdl.registry import Registry

__all__ = ["LOSSES", "binary_cross_entropy", "cross_entropy", "get", "mse"]

REDUCTIONS = ("mean", "sum", "none")

LOSSES: Registry[Callable[..., jax.Array]] = Registry("loss")


# --------------------------------------------------------------------------------------------------- helpers


def _check_reduction(loss: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(
            f"{loss}: unknown reduction {reduction!r}; expected one of {', '.join(repr(r) for r in REDUCTIONS)}"
        )


def _float_dtype(*arrays) -> jnp.dtype:
    """The dtype losses are computed in: the promoted dtype of the inputs, at least float32."""
    dtype = jnp.float32
    for a in arrays:
        if a is not None:
            dtype = jnp.promote_types(dtype, jnp.asarray(a).dtype)
    return dtype


def _log_clamped(p: jax.Array) -> jax.Array:
    """``log(max(p, eps))`` with eps = 1e-12 (or the dtype's smallest normal, if larger)."""
    eps = max(1e-12, float(jnp.finfo(p.dtype).tiny))
    return jnp.log(jnp.clip(p, eps, None))


def _prepare_mask(loss: str, mask, loss_shape: tuple[int, ...], expected: str, dtype):
    """Validate ``mask`` against ``loss_shape`` and return ``(keep, weight)``, both broadcastable to ``loss_shape``.

    ``keep`` is boolean (entry contributes), ``weight`` is the float mask value (1.0 for a boolean mask)."""
    mask = jnp.asarray(mask)
    if mask.ndim > len(loss_shape) or tuple(mask.shape) != tuple(loss_shape[: mask.ndim]):
        raise DataError(
            f"{loss}: mask shape {tuple(mask.shape)} does not match the per-example loss shape {tuple(loss_shape)}: "
            f"expected {expected} (or another leading prefix of {tuple(loss_shape)})"
        )
    mask = mask.reshape(mask.shape + (1,) * (len(loss_shape) - mask.ndim))
    if mask.dtype == jnp.bool_:
        return mask, mask.astype(dtype)
    weight = mask.astype(dtype)
    return weight != 0, weight


def _safe_divide(total: jax.Array, count: jax.Array) -> jax.Array:
    """``total / count``, or 0 where ``count`` is 0 (an all-masked batch), with NaN-free gradients."""
    nonzero = count != 0
    return jnp.where(nonzero, total / jnp.where(nonzero, count, 1), jnp.zeros_like(total))


def _reduce(loss: jax.Array, reduction: str, count) -> jax.Array:
    """Apply ``reduction``; ``count`` is the denominator of "mean" (None: the number of elements)."""
    if reduction == "none":
        return loss
    total = jnp.sum(loss)
    if reduction == "sum":
        return total
    if count is None:
        return total / loss.size if loss.size else jnp.zeros_like(total)
    return _safe_divide(total, count)


def _check_broadcast(loss: str, name: str, value, shape: tuple[int, ...]) -> None:
    vshape = tuple(jnp.shape(value))
    try:
        out = jnp.broadcast_shapes(vshape, shape)
    except ValueError:
        out = None
    if out != tuple(shape):
        raise DataError(
            f"{loss}: {name} shape {vshape} does not broadcast to the input shape {tuple(shape)}: "
            f"expected a shape broadcastable to {tuple(shape)}, e.g. ({shape[-1] if shape else 1},) or ()"
        )


# --------------------------------------------------------------------------------------------------- losses


@LOSSES.register("mse")
def mse(pred, target, *, reduction: str = "mean", mask=None) -> jax.Array:
    r"""Mean squared error, elementwise: :math:`\ell_i = (\hat y_i - y_i)^2` (``F.mse_loss``).

    Args:
      pred: predictions, any shape.
      target: targets, same shape as ``pred``.
      reduction: "mean" (:math:`\sum_i m_i \ell_i / \sum_i m_i`, i.e. over all elements), "sum" or "none".
      mask: optional bool/float mask whose shape is a prefix of ``pred.shape`` (usually ``pred.shape[:1]``, the
        batch axis), broadcast over the remaining axes.

    Returns:
      A scalar for "mean"/"sum"; for "none" an array of ``pred.shape`` with masked entries zeroed.

    Raises:
      DataError: ``pred`` and ``target`` (or ``mask``) shapes disagree.
      ConfigError: unknown ``reduction``.
    """
    _check_reduction("mse", reduction)
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    if pred.shape != target.shape:
        raise DataError(
            f"mse: target shape {tuple(target.shape)} does not match pred shape {tuple(pred.shape)}: "
            f"expected {tuple(pred.shape)}"
        )
    dtype = _float_dtype(pred, target)
    pred, target = pred.astype(dtype), target.astype(dtype)
    if mask is None:
        return _reduce(jnp.square(pred - target), reduction, None)
    keep, w = _prepare_mask("mse", mask, pred.shape, f"{tuple(pred.shape[:1])}", dtype)
    pred = jnp.where(keep, pred, 0)
    target = jnp.where(keep, target, 0)
    loss = jnp.where(keep, jnp.square(pred - target) * w, 0)
    return _reduce(loss, reduction, jnp.sum(jnp.broadcast_to(w, pred.shape)))


@LOSSES.register("cross_entropy")
def cross_entropy(
    logits,
    labels,
    *,
    label_smoothing=0.0,
    class_weights=None,
    reduction: str = "mean",
    mask=None,
    from_logits: bool = True,
) -> jax.Array:
    r"""Softmax cross-entropy over the LAST axis, numerically identical to ``F.cross_entropy``.

    With :math:`\log p = \mathrm{log\_softmax}(z)` (or :math:`\log \max(z, 10^{-12})` when ``from_logits=False``),
    :math:`C` classes, smoothing :math:`\varepsilon` and class weights :math:`w` (all ones when ``None``):

    * integer labels :math:`y_i`:
      :math:`\ell_i = (1-\varepsilon)\, w_{y_i} (-\log p_{i,y_i}) + \frac{\varepsilon}{C} \sum_c w_c (-\log p_{i,c})`;
      "mean" is :math:`\sum_i m_i \ell_i / \sum_i m_i w_{y_i}` (torch's weighted mean; the mask acts like
      ``ignore_index``).
    * probability / one-hot labels :math:`q_i`: :math:`\tilde q = (1-\varepsilon) q + \varepsilon / C`,
      :math:`\ell_i = -\sum_c w_c \tilde q_{i,c} \log p_{i,c}`; "mean" is :math:`\sum_i m_i \ell_i / \sum_i m_i`
      (the number of kept examples — class weights do not normalise, as in torch).

    Args:
      logits: ``(..., C)`` unnormalised scores, e.g. ``(N, C)`` or ``(N, T, C)``; probabilities if
        ``from_logits=False``.
      labels: integer class indices of shape ``logits.shape[:-1]``, in ``[0, C)`` (out-of-range unmasked labels
        give NaN), or float class probabilities of shape ``logits.shape``.
      label_smoothing: :math:`\varepsilon \in [0, 1]`, float or (traced) scalar array.
      class_weights: optional ``(C,)`` per-class weights (float or traced array).
      reduction: "mean", "sum" or "none".
      mask: optional bool/float mask of shape ``logits.shape[:-1]`` (or a leading prefix of it).
      from_logits: if False, ``logits`` holds probabilities and their clamped log is used as :math:`\log p`.

    Returns:
      A scalar for "mean"/"sum"; for "none" an array of shape ``logits.shape[:-1]`` with masked entries zeroed.

    Raises:
      DataError: labels/logits/class_weights/mask shapes disagree.
      ConfigError: unknown ``reduction``.
    """
    _check_reduction("cross_entropy", reduction)
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim < 1:
        raise DataError(f"cross_entropy: logits shape {tuple(logits.shape)} has no class axis: expected (..., C)")
    lead, n_classes = tuple(logits.shape[:-1]), logits.shape[-1]
    int_labels = jnp.issubdtype(labels.dtype, jnp.integer)
    float_labels = jnp.issubdtype(labels.dtype, jnp.floating)
    if not ((int_labels and labels.shape == lead) or (float_labels and labels.shape == logits.shape)):
        got = f"labels shape {tuple(labels.shape)}"
        if labels.shape in (lead, logits.shape):
            got += f" with dtype {labels.dtype}"
        raise DataError(
            f"cross_entropy: {got} does not match logits shape {tuple(logits.shape)}: "
            f"expected {lead} integer class indices or {tuple(logits.shape)} class probabilities"
        )
    if class_weights is not None:
        class_weights = jnp.asarray(class_weights)
        if class_weights.shape != (n_classes,):
            raise DataError(
                f"cross_entropy: class_weights shape {tuple(class_weights.shape)} does not match logits shape "
                f"{tuple(logits.shape)}: expected ({n_classes},), one weight per class"
            )
    dtype = _float_dtype(logits, None if int_labels else labels, class_weights)
    logits = logits.astype(dtype)
    eps = jnp.asarray(label_smoothing, dtype)
    w = None if class_weights is None else class_weights.astype(dtype)

    keep = mw = None
    if mask is not None:
        keep, mw = _prepare_mask("cross_entropy", mask, lead, f"{lead}", dtype)
        # Replace masked inputs before any arithmetic: padding labels such as -100 or NaN logits must not leak.
        logits = jnp.where(keep[..., None], logits, 0)
        labels = jnp.where(keep, labels, 0) if int_labels else jnp.where(keep[..., None], labels, 0)

    logp = jax.nn.log_softmax(logits, axis=-1) if from_logits else _log_clamped(logits)

    if int_labels:
        valid = (labels >= 0) & (labels < n_classes)
        idx = jnp.clip(labels, 0, n_classes - 1)
        nll = -jnp.take_along_axis(logp, idx[..., None], axis=-1)[..., 0]
        nll = jnp.where(valid, nll, jnp.nan)
        w_y = jnp.ones_like(nll) if w is None else w[idx]
        smooth = -jnp.sum(logp if w is None else logp * w, axis=-1)
        # where(eps == 0) keeps -inf logits (masked-out classes) usable without smoothing, like torch.
        smooth_term = jnp.where(eps == 0, jnp.zeros_like(smooth), smooth * (eps / n_classes))
        loss = (1 - eps) * w_y * nll + smooth_term
        if keep is None:
            count = None if w is None else jnp.sum(w_y)
        else:
            loss = jnp.where(keep, loss * mw, 0)
            count = jnp.sum(jnp.broadcast_to(mw, lead) * w_y)
        return _reduce(loss, reduction, count)

    q = labels.astype(dtype)
    q = q * (1 - eps) + eps / n_classes
    loss = -jnp.sum(logp * q if w is None else logp * q * w, axis=-1)
    count = None
    if keep is not None:
        loss = jnp.where(keep, loss * mw, 0)
        count = jnp.sum(jnp.broadcast_to(mw, lead))
    return _reduce(loss, reduction, count)


@LOSSES.register("bce")
def binary_cross_entropy(
    logits,
    targets,
    *,
    pos_weight=None,
    weight=None,
    reduction: str = "mean",
    mask=None,
    from_logits: bool = True,
) -> jax.Array:
    r"""Elementwise binary cross-entropy, identical to ``F.binary_cross_entropy_with_logits``.

    With :math:`\log\sigma(x)` computed stably (``jax.nn.log_sigmoid``), positive-class weight :math:`p_w` and
    element weight :math:`w` (ones when ``None``):

    .. math:: \ell = -w\,[\,p_w\, t \log\sigma(x) + (1 - t) \log(1 - \sigma(x))\,]

    When ``from_logits=False``, ``logits`` holds probabilities :math:`p` and
    :math:`\ell = -w\,[p_w\, t \log\max(p, 10^{-12}) + (1-t)\log\max(1-p, 10^{-12})]`
    (``F.binary_cross_entropy`` for :math:`p_w = 1`, away from its -100 log clamp).

    Args:
      logits: scores (or probabilities if ``from_logits=False``), any shape.
      targets: targets in [0, 1], same shape as ``logits``.
      pos_weight: optional weight of positive examples, broadcast against ``logits`` (over the last axis for a
        ``(C,)`` array, like torch).
      weight: optional rescaling weight broadcastable to ``logits.shape``; it does not change the "mean"
        denominator (as in torch).
      reduction: "mean" (over all kept elements), "sum" or "none".
      mask: optional bool/float mask whose shape is a prefix of ``logits.shape`` (usually the batch axis),
        broadcast over the remaining axes.
      from_logits: whether ``logits`` are logits (True) or probabilities (False).

    Returns:
      A scalar for "mean"/"sum"; for "none" an array of ``logits.shape`` with masked entries zeroed.

    Raises:
      DataError: targets/pos_weight/weight/mask shapes disagree with ``logits``.
      ConfigError: unknown ``reduction``.
    """
    _check_reduction("binary_cross_entropy", reduction)
    logits, targets = jnp.asarray(logits), jnp.asarray(targets)
    if logits.shape != targets.shape:
        raise DataError(
            f"binary_cross_entropy: targets shape {tuple(targets.shape)} does not match logits shape "
            f"{tuple(logits.shape)}: expected {tuple(logits.shape)}"
        )
    if pos_weight is not None:
        _check_broadcast("binary_cross_entropy", "pos_weight", pos_weight, logits.shape)
    if weight is not None:
        _check_broadcast("binary_cross_entropy", "weight", weight, logits.shape)
    dtype = _float_dtype(logits, targets, pos_weight, weight)
    x, t = logits.astype(dtype), targets.astype(dtype)

    keep = mw = None
    if mask is not None:
        keep, mw = _prepare_mask("binary_cross_entropy", mask, x.shape, f"{tuple(x.shape[:1])}", dtype)
        x = jnp.where(keep, x, 0)
        t = jnp.where(keep, t, 0)

    if from_logits:
        # -log(sigmoid(x)) = softplus(-x); -log(1 - sigmoid(x)) = x + softplus(-x)  (torch's formulation)
        neg_log_sig = -jax.nn.log_sigmoid(x)
        if pos_weight is None:
            loss = (1 - t) * x + neg_log_sig
        else:
            pw = jnp.asarray(pos_weight, dtype)
            loss = (1 - t) * x + (1 + (pw - 1) * t) * neg_log_sig
    else:
        pos = t * _log_clamped(x)
        if pos_weight is not None:
            pos = jnp.asarray(pos_weight, dtype) * pos
        loss = -(pos + (1 - t) * _log_clamped(1 - x))
    if weight is not None:
        loss = loss * jnp.asarray(weight, dtype)

    if keep is None:
        return _reduce(jnp.broadcast_to(loss, x.shape), reduction, None)
    loss = jnp.where(keep, loss * mw, 0)
    return _reduce(loss, reduction, jnp.sum(jnp.broadcast_to(mw, x.shape)))


def get(name: str) -> Callable[..., jax.Array]:
    """The loss function registered under ``name`` ("mse", "cross_entropy", "bce"); RegistryError otherwise."""
    return LOSSES.get(name)
