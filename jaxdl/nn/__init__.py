"""Building blocks Flax lacks: dropout with a traced rate, activations by name, a straight-through step function,
PyTorch's adaptive average pooling, LSTM/GRU stacks equal to PyTorch's, and Transformer blocks (attention with masks
and a decoding cache, positional schemes, RMS norm, feed-forward networks)."""

from jaxdl.nn.attention import (MultiHeadAttention, causal_mask, combine_masks, dot_product_attention,
                                 padding_mask, segment_mask)
from jaxdl.nn.layers import ACTIVATIONS, Dropout, activation, dropout, output_activation, step_ste
from jaxdl.nn.pooling import adaptive_avg_pool
from jaxdl.nn.positions import (LearnedPositions, T5RelativeBias, apply_rope, relative_position_bucket,
                                 rope_inverse_frequencies, rotate_half, sinusoidal_positions)
from jaxdl.nn.recurrent import Recurrent, gru_cell, initial_state, lstm_cell, reverse_within_lengths
from jaxdl.nn.transformer import (FFN_ACTIVATIONS, GATED_ACTIVATIONS, LAYER_NORM_EPS, RMS_NORM_EPS, FeedForward,
                                  RMSNorm, gelu_exact, gelu_tanh)

__all__ = ["ACTIVATIONS", "Dropout", "FFN_ACTIVATIONS", "FeedForward", "GATED_ACTIVATIONS", "LAYER_NORM_EPS",
           "LearnedPositions", "MultiHeadAttention", "RMSNorm", "RMS_NORM_EPS", "Recurrent", "T5RelativeBias",
           "activation", "adaptive_avg_pool", "apply_rope", "causal_mask", "combine_masks", "dot_product_attention",
           "dropout", "gelu_exact", "gelu_tanh", "gru_cell", "initial_state", "lstm_cell", "output_activation",
           "padding_mask", "relative_position_bucket", "reverse_within_lengths", "rope_inverse_frequencies",
           "rotate_half", "segment_mask", "sinusoidal_positions", "step_ste"]
