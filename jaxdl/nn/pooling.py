"""Pooling Flax lacks: PyTorch's adaptive average pooling, exactly (AlexNet's and VGG's classifier input)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _pool_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) averaging matrix of PyTorch's adaptive pooling: row i averages [⌊i·size/out⌋, ⌈(i+1)·size/out⌉)."""
    m = np.zeros((out, size), np.float32)
    for i in range(out):
        start = (i * size) // out
        end = -((-(i + 1) * size) // out)  # ceil((i + 1) * size / out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, output_size: int | tuple[int, int]) -> jax.Array:
    """Exact adaptive average pooling of NHWC ``x`` to ``output_size`` (PyTorch's ``adaptive_avg_pool2d`` bins).

    Output cell (i, j) averages rows ``⌊i·H/h⌋ … ⌈(i+1)·H/h⌉ − 1`` and the same columns; bins may overlap and, when
    the input is smaller than the output, cells are replicated. Works for any static H, W ≥ 1. Implemented as two
    small averaging matrices (separable), so it is cheap and differentiable; equal sizes are the identity and
    divisible sizes a plain reshape-mean.
    """
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    b, h, w, c = x.shape
    if (h, w) == (oh, ow):
        return x
    if h % oh == 0 and w % ow == 0:
        return x.reshape(b, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4))  # (B, oh, ow, C)
    ph = jnp.asarray(_pool_matrix(h, oh), x.dtype)
    pw = jnp.asarray(_pool_matrix(w, ow), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", ph, x, pw, precision=jax.lax.Precision.HIGHEST)  # (B, oh, ow, C)


__all__ = ["adaptive_avg_pool"]
