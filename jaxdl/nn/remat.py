"""Rematerialisation of a model's blocks (``model.remat=blocks``): :func:`call` runs one block under ``nn.remat``.

Without remat, the backward pass reads every intermediate activation the forward pass kept: for a deep network most
of a training step's memory. Under ``nn.remat`` (``jax.checkpoint``) a block keeps only its inputs; its inner
activations are recomputed from them when the gradient reaches the block — about one more forward pass of compute
for a peak memory of (block inputs) + (one block's intermediates) instead of (all intermediates).

The lifted transform is applied to a function of the already-named submodule, so variables keep their paths
(``layer1_0/conv1/kernel`` with or without remat) and pretrained-weight converters and checkpoints work unchanged.
RNG streams (dropout, stochastic depth) are lifted too: a block draws the same random numbers either way.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn


def _is_static(value: Any) -> bool:
    """Python scalars (``train``, ``decode``, a fixed dropout rate, a missing mask) are structure, not data:
    ``jax.checkpoint`` would trace them, and a traced ``train`` cannot steer Python control flow."""
    return value is None or isinstance(value, (bool, int, float, str))


def call(remat: bool, block: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``block(*args, **kwargs)``; with ``remat``, under ``nn.remat`` so that the block's intermediate activations
    are recomputed in the backward pass instead of being kept.

    Args:
      remat: whether to rematerialise.
      block: a Linen submodule created (and named) in the caller's compact method.
      args, kwargs: the block's arguments. Python scalars and None are closed over (static); arrays and pytrees of
        arrays (including traced hyperparameters such as a dropout rate) are passed through ``jax.checkpoint``.
    Returns: what ``block`` returns; values and gradients equal the plain call's.
    """
    if not remat:
        return block(*args, **kwargs)
    positional = [(i, a) for i, a in enumerate(args) if not _is_static(a)]
    names = [k for k, v in kwargs.items() if not _is_static(v)]

    def run(module, *dynamic):
        full = list(args)
        for (i, _), value in zip(positional, dynamic):
            full[i] = value
        keywords = dict(kwargs)
        keywords.update(zip(names, dynamic[len(positional):]))
        return module(*full, **keywords)

    return nn.remat(run)(block, *(a for _, a in positional), *(kwargs[k] for k in names))


__all__ = ["call"]
