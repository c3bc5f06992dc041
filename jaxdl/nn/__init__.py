"""Building blocks Flax lacks: dropout with a traced rate, activations by name, a straight-through step function."""

from jaxdl.nn.layers import ACTIVATIONS, Dropout, activation, dropout, output_activation, step_ste

__all__ = ["ACTIVATIONS", "Dropout", "activation", "dropout", "output_activation", "step_ste"]
