"""Small layers shared by the model zoo."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.errors import JaxdlError
from jaxdl.registry import Registry

ACTIVATIONS: Registry[Callable[[jax.Array], jax.Array]] = Registry("activation")
ACTIVATIONS.register("relu", nn.relu)
ACTIVATIONS.register("sigmoid", nn.sigmoid)
ACTIVATIONS.register("tanh", jnp.tanh)
ACTIVATIONS.register("gelu", nn.gelu)
ACTIVATIONS.register("silu", nn.silu)
ACTIVATIONS.register("elu", nn.elu)
ACTIVATIONS.register("leaky_relu", nn.leaky_relu)
ACTIVATIONS.register("relu6", nn.relu6)
ACTIVATIONS.register("identity", lambda x: x)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function registered as ``name`` (relu, sigmoid, tanh, gelu, silu, elu, leaky_relu, …)."""
    return ACTIVATIONS.get(name)


@jax.custom_jvp
def step_ste(x: jax.Array) -> jax.Array:
    """Heaviside step ``1[x > 0]`` with a straight-through (identity) gradient.

    With an MSE loss, gradient descent through this output is Rosenblatt's perceptron rule:
    ``w += lr * (y - step(w·x)) * x`` (up to the constant factor 2).
    """
    return (x > 0).astype(x.dtype)


@step_ste.defjvp
def _step_ste_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return step_ste(x), dx


OUTPUTS = ("logits", "softmax", "sigmoid", "step")


def output_activation(name: str, x: jax.Array) -> jax.Array:
    """Apply a model's output head: ``logits`` (none), ``softmax``, ``sigmoid`` or ``step`` (straight-through)."""
    if name == "logits":
        return x
    if name == "softmax":
        return jax.nn.softmax(x, axis=-1)
    if name == "sigmoid":
        return jax.nn.sigmoid(x)
    if name == "step":
        return step_ste(x)
    raise JaxdlError(f"unknown model output {name!r}; expected one of {', '.join(OUTPUTS)}")


def dropout(x: jax.Array, rate: jax.Array | float, rng: jax.Array) -> jax.Array:
    """Inverted dropout whose ``rate`` may be a traced array (so sweeping it never recompiles).

    ``y = x * m / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)``; ``rate = 0`` is the identity.
    """
    rate = jnp.asarray(rate, dtype=x.dtype)
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, x.shape)
    # Guard rate == 1 (keep == 0): everything is dropped, output 0 rather than NaN.
    return jnp.where(mask, x / jnp.maximum(keep, jnp.finfo(x.dtype).tiny), 0.0).astype(x.dtype)


class Dropout(nn.Module):
    """Dropout with a rate given at call time (an array under ``jit``) and a module default.

    Uses the ``"dropout"`` RNG stream. In eval mode (``train=False``) it is the identity.
    """

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, rate: jax.Array | float | None = None) -> jax.Array:
        if not train:
            return x
        rate = self.rate if rate is None else rate
        if isinstance(rate, (int, float)) and rate == 0.0:
            return x
        if not self.has_rng("dropout"):
            raise JaxdlError(
                f"{'/'.join(map(str, self.path)) or 'Dropout'}: training with dropout needs an RNG "
                "key: call model.apply(variables, x, train=True, rng=key)"
            )
        return dropout(x, rate, self.make_rng("dropout"))
