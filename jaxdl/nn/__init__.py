"""Building blocks Flax lacks: dropout with a traced rate, activations by name, a straight-through step function,
PyTorch's adaptive average pooling."""

from jaxdl.nn.layers import ACTIVATIONS, Dropout, activation, dropout, output_activation, step_ste
from jaxdl.nn.pooling import adaptive_avg_pool

__all__ = ["ACTIVATIONS", "Dropout", "activation", "adaptive_avg_pool", "dropout", "output_activation", "step_ste"]
