"""The model boundary: named inputs, named RNG streams, mutable collections and named methods."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.errors import ModelInputError
from jaxdl.models import as_model, from_linen


class TwoInputs(nn.Module):
    """Token ids plus segment ids; ``encode`` is a second entry point; ``decode`` keeps a step counter in a
    ``cache`` collection (what a decoding cache looks like); dropout and a ``noise`` stream in training."""

    def setup(self):
        self.embed = nn.Embed(11, 4)
        self.segment = nn.Embed(2, 4)
        self.head = nn.Dense(3)
        self.drop = nn.Dropout(0.5)
        self.count = self.variable("cache", "count", lambda: jnp.zeros((), jnp.int32))

    def encode(self, tokens, segment_ids):
        return self.embed(tokens) + self.segment(segment_ids)  # (B, T, 4)

    def decode(self, tokens, segment_ids):
        self.count.value += 1
        return self.head(self.encode(tokens, segment_ids))

    def __call__(self, tokens, segment_ids, train: bool = False):
        h = self.encode(tokens, segment_ids)
        if train:
            h = self.drop(h, deterministic=False)
            h = h + 0.01 * jax.random.normal(self.make_rng("noise"), h.shape)
        return self.head(h).mean(axis=1)


@pytest.fixture
def batch():
    return {"tokens": jnp.arange(12).reshape(2, 6) % 11, "segment_ids": jnp.ones((2, 6), jnp.int32)}


def test_named_inputs_methods_and_mutable_collections(batch):
    model = from_linen(TwoInputs(), "two_inputs", input_kind="int")
    variables = model.init(jax.random.key(0), batch)
    out, state = model.apply(variables, batch)
    assert out.shape == (2, 3) and set(state) == {"cache"}
    enc, _ = model.apply(variables, batch, method="encode")
    assert enc.shape == (2, 6, 4)
    _, state = model.apply(variables, batch, method="decode", mutable=("cache",))
    assert int(state["cache"]["count"]) == int(variables["cache"]["count"]) + 1


def test_named_rng_streams_reach_the_module(batch):
    model = from_linen(TwoInputs(), "two_inputs", input_kind="int")
    variables = model.init(jax.random.key(0), batch)
    keys = {"dropout": jax.random.key(1), "noise": jax.random.key(2)}
    a, _ = model.apply(variables, batch, train=True, rngs=keys)
    b, _ = model.apply(variables, batch, train=True, rngs={**keys, "noise": jax.random.key(3)})
    c, _ = model.apply(variables, batch, train=True, rngs=keys)
    assert not np.allclose(a, b) and np.array_equal(a, c)


def test_non_array_input_is_named(batch):
    model = as_model(TwoInputs(), input_kind="int")
    with pytest.raises(ModelInputError, match=r"input 'segment_ids' must be an array, got list"):
        model.apply({}, {"tokens": batch["tokens"], "segment_ids": [1, 2]})
