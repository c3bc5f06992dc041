"""Positional schemes against NumPy ports of the reference formulas (HF's rotate_half RoPE, T5's
_relative_position_bucket, the sinusoidal table)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.errors import ConfigError, ModelInputError
from jaxdl.nn import LearnedPositions, T5RelativeBias, apply_rope, relative_position_bucket, sinusoidal_positions

ATOL = 1e-5


def key(seed):  # initialisation only: compiles faster on CPU than the default threefry
    return jax.random.key(seed, impl="unsafe_rbg")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def hf_rope(x, positions, theta):
    """HF LlamaRotaryEmbedding + apply_rotary_pos_emb, in NumPy; x (B, T, H, Dh), positions (B, T)."""
    dh = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, dh, 2, dtype=np.float64) / dh)
    freqs = positions[..., None].astype(np.float64) * inv_freq  # (B, T, Dh/2)
    emb = np.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # (B, T, 1, Dh)

    def rotate_half(a):
        a1, a2 = a[..., : dh // 2], a[..., dh // 2:]
        return np.concatenate([-a2, a1], axis=-1)

    return x * np.cos(emb) + rotate_half(x) * np.sin(emb)


def test_rope_matches_hf_rotate_half_formula_and_preserves_relative_scores():
    x = rand(2, 5, 3, 8)
    pos = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])  # second row: as if decoding after 7 cached tokens
    out = jax.jit(apply_rope, static_argnums=2)(x, pos, 500.0)
    np.testing.assert_allclose(out, hf_rope(x, pos, 500.0), atol=ATOL)
    np.testing.assert_allclose(jax.jit(apply_rope)(x, pos[0]), hf_rope(x, np.stack([pos[0]] * 2), 1e4), atol=ATOL)
    # q·k after rotation depends only on the position difference.
    q, k = rand(1, 1, 1, 8, seed=1), rand(1, 1, 1, 8, seed=2)
    rotated = hf_rope(np.concatenate([q, k, q, k], axis=1), np.array([[3, 1, 9, 7]]), 1e4)  # (1, 4, 1, 8)
    dots = [(rotated[0, 0] * rotated[0, 1]).sum(), (rotated[0, 2] * rotated[0, 3]).sum()]
    assert abs(dots[0] - dots[1]) < 1e-4
    assert jax.eval_shape(apply_rope, jnp.asarray(x, jnp.bfloat16), pos).dtype == jnp.bfloat16
    with pytest.raises(ModelInputError, match="positions of shape \\(4,\\) do not match the 5 time steps"):
        apply_rope(x, np.arange(4))
    with pytest.raises(ConfigError, match="head_dim must be even"):
        apply_rope(rand(1, 2, 1, 3), np.arange(2))


def hf_relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """T5Attention._relative_position_bucket (transformers), ported line by line to NumPy (float32 log, as torch)."""
    relative_buckets = np.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0).astype(np.int64) * num_buckets
        relative_position = np.abs(relative_position)
    else:
        relative_position = -np.minimum(relative_position, np.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0): unused, as in torch
        rp_if_large = max_exact + (
            np.log(relative_position.astype(np.float32) / max_exact) / np.float32(math.log(max_distance / max_exact))
            * (num_buckets - max_exact)).astype(np.int64)
    rp_if_large = np.minimum(rp_if_large, np.full_like(rp_if_large, num_buckets - 1))
    return relative_buckets + np.where(is_small, relative_position, rp_if_large)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 40)])
def test_t5_bucketing_matches_reference_formula(bidirectional, num_buckets, max_distance):
    rel = np.arange(-300, 301)
    ours = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets,
                                    max_distance=max_distance)
    ref = hf_relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    np.testing.assert_array_equal(ours, ref)
    assert ours.min() == 0 and ours.max() == num_buckets - 1


def test_t5_relative_bias_looks_up_the_table_per_head():
    mod = T5RelativeBias(num_heads=3, bidirectional=False)
    variables = jax.jit(mod.init, static_argnums=(1, 2))(key(0), 4, 6)
    table = np.asarray(variables["params"]["relative_attention_bias"]["embedding"])
    assert table.shape == (32, 3)
    bias = jax.jit(mod.apply, static_argnums=(1, 2))(variables, 4, 6)
    assert bias.shape == (1, 3, 4, 6)
    buckets = hf_relative_position_bucket(np.arange(6)[None, :] - np.arange(4)[:, None], False)
    np.testing.assert_allclose(bias[0], table[buckets].transpose(2, 0, 1), atol=0)
    # Decoding one token at position 2 against a cache of 6: the bias is row 2 of the full one.
    step = jax.jit(mod.apply, static_argnums=2)(variables, jnp.array([2]), 6)
    np.testing.assert_allclose(step[:, :, 0], bias[:, :, 2], atol=0)


def test_sinusoidal_table_is_the_papers_formula():
    pe = sinusoidal_positions(7, 6)
    p, i = np.arange(7)[:, None], np.arange(3)[None, :]
    angle = p / 10000 ** (2 * i / 6)
    np.testing.assert_allclose(pe[:, 0::2], np.sin(angle), atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(angle), atol=1e-6)
    assert sinusoidal_positions(np.zeros((2, 3), int), 4).shape == (2, 3, 4)


def test_learned_positions_param_layout_and_length_check():
    mod = LearnedPositions(8, 4)
    variables = jax.jit(mod.init, static_argnums=1)(key(0), 5)
    assert variables["params"]["position_embedding"]["embedding"].shape == (8, 4)
    table = variables["params"]["position_embedding"]["embedding"]
    np.testing.assert_array_equal(mod.apply(variables, jnp.array([[3, 0]])), table[jnp.array([[3, 0]])])
    with pytest.raises(ModelInputError, match="9 tokens is longer than the 8 positions"):
        mod.apply(variables, 9)
