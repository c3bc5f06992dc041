"""Mixed precision: the dtype a model computes in, and dynamic loss scaling for float16.

``train.precision`` names a :class:`Policy`:

- ``fp32``: everything in float32 (the default).
- ``bf16``: the model computes in bfloat16. Parameters, optimizer state, normalisation statistics, losses and
  metrics stay float32: the model boundary (:meth:`jaxdl.models.Model.with_compute_dtype`) casts the floating
  ``params`` collection and the floating inputs to bfloat16 for the call and casts the outputs back to float32, so
  gradients arrive in float32 through the casts. bfloat16 has float32's exponent range: no loss scaling is needed.
- ``fp16``: as bf16 with float16, plus **dynamic loss scaling** — float16's largest value is 65504 and its smallest
  normal 6e-5, so small gradients underflow unless the loss is multiplied by a scale ``S`` before differentiating
  (gradients are divided by ``S`` afterwards, in float32). A step whose gradients are not finite is skipped
  (parameters, optimizer and model state unchanged), counted, and halves ``S``; ``growth_interval`` finite steps in
  a row double it. The scale state lives in :class:`LossScale` (``TrainState.loss_scale``; None for fp32/bf16).

Batch norm: Flax's ``BatchNorm`` reduces half-precision inputs in float32 and keeps its running statistics in their
(float32) dtype, so statistics stay float32 under every policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jaxdl.errors import ConfigError

DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class Policy:
    """A precision policy.

    Attributes:
      name: ``fp32`` | ``bf16`` | ``fp16``.
      init_scale: the float16 loss scale a run starts with (PyTorch's GradScaler starts at 2**16; 2**15 leaves one
        doubling of headroom).
      growth_interval: finite steps in a row after which the scale doubles.
      min_scale: the scale is never halved below this; an overflow *at* this scale is a real divergence (the step
        reports ``finite=False`` and the loop freezes the run) rather than a scale to tune.
      max_scale: the scale never doubles above this (float32 gradients times the scale stay finite).
    """

    name: str = "fp32"
    init_scale: float = 2.0 ** 15
    growth_interval: int = 2000
    min_scale: float = 1.0
    max_scale: float = 2.0 ** 24

    @property
    def compute_dtype(self) -> Any:
        return DTYPES[self.name]

    @property
    def loss_scaling(self) -> bool:
        return self.name == "fp16"


FP32 = Policy()


def policy(name: str, **kwargs) -> Policy:
    """The policy named by ``train.precision``.

    Raises:
      ConfigError: for an unknown name, naming ``train.precision`` and the valid names.
    """
    if name not in DTYPES:
        raise ConfigError(f"train.precision: expected one of {', '.join(DTYPES)}, got {name!r}")
    p = Policy(name, **kwargs)
    if not (p.min_scale > 0 and p.min_scale <= p.init_scale <= p.max_scale and p.growth_interval >= 1):
        raise ConfigError(f"loss scaling: expected 0 < min_scale <= init_scale <= max_scale and growth_interval >= 1, "
                          f"got {p}")
    return p


def is_floating(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating leaf of ``tree`` cast to ``dtype`` (integer, boolean and key leaves unchanged)."""
    return jax.tree.map(lambda x: x.astype(dtype) if is_floating(x) and x.dtype != dtype else x, tree)


def cast_like(tree: Any, reference: Any) -> Any:
    """``tree`` with each floating leaf cast to the dtype of the matching leaf of ``reference`` (same structure)."""
    return jax.tree.map(lambda x, r: x.astype(r.dtype) if is_floating(x) and x.dtype != r.dtype else x, tree,
                        reference)


# --------------------------------------------------------------------------------------------------------------------
# Dynamic loss scaling (fp16)
# --------------------------------------------------------------------------------------------------------------------


class LossScale(flax.struct.PyTreeNode):
    """Dynamic loss-scale state (scalars; a population's have a leading member axis)."""

    scale: jax.Array  # float32: the loss is multiplied by it before differentiation
    good_steps: jax.Array  # int32: finite steps since the scale last changed
    skipped: jax.Array  # int32: steps skipped so far because their gradients overflowed


def init_loss_scale(p: Policy) -> LossScale | None:
    """The initial scale state of ``p`` (None without loss scaling)."""
    if not p.loss_scaling:
        return None
    return LossScale(scale=jnp.asarray(p.init_scale, jnp.float32), good_steps=jnp.zeros((), jnp.int32),
                     skipped=jnp.zeros((), jnp.int32))


def all_finite(tree: Any) -> jax.Array:
    """Whether every element of every floating leaf is finite (a boolean scalar)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if is_floating(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def next_loss_scale(state: LossScale, finite: jax.Array, p: Policy) -> LossScale:
    """The scale state after a step: halve (not below ``min_scale``) and count a skip on overflow; double after
    ``growth_interval`` finite steps in a row (not above ``max_scale``)."""
    grown = state.good_steps + 1 >= p.growth_interval
    scale = jnp.where(finite, jnp.where(grown, jnp.minimum(state.scale * 2.0, p.max_scale), state.scale),
                      jnp.maximum(state.scale * 0.5, p.min_scale))
    good = jnp.where(finite & ~grown, state.good_steps + 1, 0).astype(jnp.int32)
    return LossScale(scale=scale.astype(jnp.float32), good_steps=good,
                     skipped=state.skipped + (~finite).astype(jnp.int32))


__all__ = ["DTYPES", "FP32", "LossScale", "Policy", "all_finite", "cast_floating", "cast_like", "init_loss_scale",
           "next_loss_scale", "policy"]
