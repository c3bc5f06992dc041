"""Building blocks Flax lacks: dropout with a traced rate, activations by name, a straight-through step function,
PyTorch's adaptive average pooling, LSTM/GRU stacks equal to PyTorch's."""

from jaxdl.nn.layers import ACTIVATIONS, Dropout, activation, dropout, output_activation, step_ste
from jaxdl.nn.pooling import adaptive_avg_pool
from jaxdl.nn.recurrent import Recurrent, gru_cell, initial_state, lstm_cell, reverse_within_lengths

__all__ = ["ACTIVATIONS", "Dropout", "Recurrent", "activation", "adaptive_avg_pool", "dropout", "gru_cell",
           "initial_state", "lstm_cell", "output_activation", "reverse_within_lengths", "step_ste"]
