"""Norms and feed-forward networks of Transformer blocks.

Layer norm is Flax's ``nn.LayerNorm`` (parameters ``scale`` and ``bias``, PyTorch's ``weight`` and ``bias``); its
default epsilon (1e-6) is neither GPT-2's nor BERT's, so set it: ``nn.LayerNorm(epsilon=LAYER_NORM_EPS["gpt2"])``.
RMS norm (T5, Llama) is :class:`RMSNorm`. Feed-forward networks (:class:`FeedForward`)::

    FeedForward(3072, "gelu_new")   # GPT-2: fc_out(gelu_tanh(fc_in(x)))
    FeedForward(3072, "gelu")       # BERT:  exact erf GELU
    FeedForward(1536, "swiglu", use_bias=False)  # Llama: down(silu(gate(x)) * up(x))
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.errors import ConfigError
from jaxdl.nn.layers import Dropout
from jaxdl.registry import unknown_message

# Layer-norm epsilons of the reference models (HF ``layer_norm_epsilon`` / ``layer_norm_eps``).
LAYER_NORM_EPS = {"gpt2": 1e-5, "bert": 1e-12}
# RMS-norm epsilons (HF ``layer_norm_epsilon`` / ``rms_norm_eps``).
RMS_NORM_EPS = {"t5": 1e-6, "llama": 1e-6, "smollm2": 1e-5}


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), as T5's ``T5LayerNorm`` and Llama's ``LlamaRMSNorm``::

        y = x * rsqrt(mean(x², axis=-1) + eps) * scale

    No mean subtraction, no bias. Computed in float32 and cast back to the input dtype (or ``dtype``).
    Parameter: ``scale`` (features,), initialised to ones — HF's ``weight`` as is.
    """

    epsilon: float = 1e-6
    use_scale: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)  # (..., D)
        if self.use_scale:
            y = y * self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype).astype(jnp.float32)
        return y.astype(self.dtype or x.dtype)


def gelu_exact(x: jax.Array) -> jax.Array:
    """``x Φ(x)`` with the erf-based normal CDF (PyTorch's ``F.gelu``, HF ``"gelu"``, BERT)."""
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """The tanh approximation ``0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))`` (HF ``"gelu_new"``, GPT-2, T5 v1.1)."""
    return jax.nn.gelu(x, approximate=True)


# Plain activations: fc_out(act(fc_in(x))). Note "gelu" is the exact GELU here, as in PyTorch and HF.
FFN_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": gelu_exact, "gelu_new": gelu_tanh, "gelu_tanh": gelu_tanh, "relu": jax.nn.relu, "silu": jax.nn.silu}
# Gated activations (Shazeer 2020): down(act(gate(x)) * up(x)).
GATED_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "swiglu": jax.nn.silu, "geglu": gelu_exact, "geglu_tanh": gelu_tanh, "reglu": jax.nn.relu}


class FeedForward(nn.Module):
    """The position-wise feed-forward network of a Transformer block.

    Plain activations (``gelu``, ``gelu_new``/``gelu_tanh``, ``relu``, ``silu``)::

        y = fc_out(act(fc_in(x)))                 # Dense fc_in (D, hidden), fc_out (hidden, D_out)

    Gated activations (``swiglu`` — Llama, ``geglu`` — exact GELU, ``geglu_tanh`` — T5 v1.1 "gated-gelu",
    ``reglu``)::

        y = down(act(gate(x)) * up(x))            # Dense gate, up (D, hidden), down (hidden, D_out)

    Kernels are ``(in, out)``: a PyTorch ``nn.Linear.weight`` transposed (GPT-2's ``Conv1D.weight`` as is).
    Names for HF: GPT-2 ``c_fc``/``c_proj`` → ``fc_in``/``fc_out``; BERT ``intermediate.dense``/``output.dense`` →
    ``fc_in``/``fc_out``; Llama ``gate_proj``/``up_proj``/``down_proj`` → ``gate``/``up``/``down``; T5
    ``wi``/``wo`` → ``fc_in``/``fc_out`` and ``wi_0``/``wi_1``/``wo`` → ``gate``/``up``/``down``.

    Dropout: ``inner_dropout`` after the activation (T5's ``DenseReluDense`` dropout), ``dropout`` on the output
    (GPT-2's MLP dropout; usually a block applies its residual dropout itself and leaves this at 0).
    """

    hidden_dim: int
    activation: str = "gelu"
    out_features: int | None = None  # None: the input's feature size
    use_bias: bool = True
    dropout: float = 0.0
    inner_dropout: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, dropout_rate: jax.Array | float | None = None,
                 inner_dropout_rate: jax.Array | float | None = None) -> jax.Array:
        """Args: x (..., D); train: apply dropout (RNG stream ``"dropout"``); dropout_rate, inner_dropout_rate:
        override ``dropout``/``inner_dropout`` (may be traced arrays). Returns (..., out_features or D)."""
        dense = partial(nn.Dense, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=self.kernel_init, bias_init=self.bias_init)
        if self.activation in GATED_ACTIVATIONS:
            act = GATED_ACTIVATIONS[self.activation]
            h = act(dense(self.hidden_dim, name="gate")(x)) * dense(self.hidden_dim, name="up")(x)  # (..., hidden)
            out_name = "down"
        elif self.activation in FFN_ACTIVATIONS:
            h = FFN_ACTIVATIONS[self.activation](dense(self.hidden_dim, name="fc_in")(x))  # (..., hidden)
            out_name = "fc_out"
        else:
            raise ConfigError("FeedForward: " + unknown_message(
                "activation", self.activation, [*FFN_ACTIVATIONS, *GATED_ACTIVATIONS]))
        h = Dropout(self.inner_dropout, name="inner_dropout")(h, train=train, rate=inner_dropout_rate)
        y = dense(self.out_features or x.shape[-1], name=out_name)(h)  # (..., D_out)
        return Dropout(self.dropout, name="output_dropout")(y, train=train, rate=dropout_rate)
