"""Population helpers: per-member pytrees stacked on a leading axis, on the host, and masked updates."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.config import Config
from jaxdl.train.step import make_hparams


def stack_hparams(cfgs: list[Config]) -> dict[str, jax.Array]:
    """Per-member hyperparameters as arrays with a leading population axis (every dynamic key, for every member)."""
    each = [make_hparams(c) for c in cfgs]
    return {k: jnp.stack([h[k] for h in each]) for k in each[0]}


def stack_members(trees: list[Any]) -> Any:
    """Member pytrees stacked on a leading population axis, on the host (numpy; no device program per leaf)."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def member(tree: Any, i: int) -> Any:
    """Member ``i`` of a stacked (population) pytree. Give it host (numpy) arrays in loops: slicing device arrays
    eagerly compiles one small program per leaf shape."""
    return jax.tree.map(lambda x: x[i], tree)


def select(keep: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``keep`` (per member: ``keep`` is the leading axes of every leaf), else ``old``."""
    def pick(n, o):
        return jnp.where(keep.reshape(keep.shape + (1,) * (n.ndim - keep.ndim)), n, o)

    return jax.tree.map(pick, new, old)


def to_host(tree: Any) -> Any:
    """One device-to-host fetch of a pytree, as numpy arrays."""
    return jax.tree.map(np.asarray, jax.device_get(tree))
