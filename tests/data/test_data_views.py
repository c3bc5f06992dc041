"""The Split API on every view: batch == gather under jax.jit, (B,) and (P, B) indices, specs, compat x/y."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.data import Dataset, Split, chronological_split, evenly_spaced, random_split
from jaxdl.errors import DataError


def _splits():
    rng = np.random.default_rng(0)
    rows = Split.rows({"image": rng.normal(size=(10, 4, 4, 1)).astype(np.float32),
                       "label": rng.integers(0, 3, 10).astype(np.int32)})
    series = rng.normal(size=(40, 3)).astype(np.float32)
    windows = Split.windows(series, np.arange(0, 30, 3), context=5, horizon=2, target_columns=(2, 0),
                            time=np.arange(40) * 10)
    blocks = Split.blocks(np.arange(50, dtype=np.int32), np.arange(0, 40, 8), block_size=8)
    return {"rows": rows, "windows": windows, "blocks": blocks}


@pytest.mark.parametrize("kind", ["rows", "windows", "blocks"])
@pytest.mark.parametrize("shape", [(4,), (2, 3)])
def test_batch_equals_jitted_gather(kind, shape):
    split = _splits()[kind]
    idx = np.arange(int(np.prod(shape))).reshape(shape)[..., ::-1] % len(split)
    host = split.batch(idx)
    dev = jax.jit(split.gather)(jax.tree.map(jnp.asarray, split.storage()), jnp.asarray(idx))
    assert tuple(host) == split.names == tuple(dev)
    for k, (shp, dt) in split.example_spec().items():
        assert host[k].shape == idx.shape + shp and host[k].dtype == dt
        np.testing.assert_array_equal(host[k], np.asarray(dev[k]))


def test_gather_inside_scan():
    split = _splits()["windows"]
    storage = jax.tree.map(jnp.asarray, split.storage())

    def body(c, idx):
        return c + split.gather(storage, idx)["targets"].sum(), None

    total, _ = jax.lax.scan(body, 0.0, jnp.arange(8).reshape(4, 2))
    assert np.isclose(float(total), float(split.batch(np.arange(8))["targets"].sum()), rtol=1e-5)


def test_windows_cut_the_right_steps():
    split = _splits()["windows"]
    series = split.storage()["series"]
    b = split.batch(np.array([2]))  # starts[2] = 6
    np.testing.assert_array_equal(b["inputs"][0], series[6:11])
    np.testing.assert_array_equal(b["targets"][0], series[11:13][:, [2, 0]])
    assert split.time[2] == 120  # the last target step, 12
    assert set(split.storage()) == {"series", "starts"} and split.storage()["starts"].dtype == np.int32


def test_blocks_are_shifts_and_overlap_by_one():
    split = _splits()["blocks"]
    b = split.batch(np.array([0, 1]))["tokens"]
    assert b.shape == (2, 9)
    assert b[0, -1] == b[1, 0]  # consecutive blocks share one id: inputs tokens[:-1], targets tokens[1:]


def test_compat_x_y_and_errors():
    s = Split(np.zeros((4, 2, 2, 1)), np.arange(4))
    assert s.names == ("image", "label") and s.x.shape == (4, 2, 2, 1) and s.y.shape == (4,)
    with pytest.raises(DataError, match="4 inputs but 3 labels"):
        Split(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(DataError, match=r"different lengths: a 4, b 3"):
        Split.rows({"a": np.zeros(4), "b": np.zeros(3)})
    with pytest.raises(DataError, match=r"row splits only.*batch"):
        _ = _splits()["windows"].x
    with pytest.raises(DataError, match="overruns the series of 40 steps"):
        Split.windows(np.zeros((40, 1)), [36], context=4, horizon=1, target_columns=(0,))
    with pytest.raises(DataError, match="overruns the stream of 10 tokens"):
        Split.blocks(np.zeros(10, np.int32), [5], block_size=5)


def test_dataset_positional_and_describe_every_kind():
    s = _splits()
    ds = Dataset("toy", s["rows"], s["rows"], s["rows"], 3, ("a", "b", "c"), (4, 4, 1), None, None,
                 info={"split": "stratified"})
    assert "3 classes" in ds.describe() and "split stratified" in ds.describe()
    reg = Dataset("reg", s["rows"], s["rows"], s["rows"], None, (), (4, 4, 1), None, None, targets=("label",),
                  kind="regression", info={"split": "random"})
    assert "classes" not in reg.describe() and "regression of label" in reg.describe()
    ser = Dataset("ser", s["windows"], s["windows"], s["windows"], None, (), (5, 3), None, None,
                  inputs=("inputs",), targets=("targets",), kind="series",
                  info={"split": "chronological", "columns": ["a", "b", "c"], "target_columns": ["c", "a"],
                        "horizon": 2})
    assert "windows" in ser.describe() and "split chronological" in ser.describe()
    txt = Dataset("txt", s["blocks"], s["blocks"], s["blocks"], 50, (), (9,), None, None, inputs=("tokens",),
                  targets=("tokens",), kind="text", info={"split": "blocks"})
    assert "blocks of 9 tokens" in txt.describe() and "split blocks" in txt.describe()
    for d in (ds, reg, ser, txt):
        assert "\n" not in d.describe()


def test_chronological_and_random_split_helpers():
    tr, va, te = chronological_split(100, 0.2, 0.1)
    assert (tr, va, te) == (slice(0, 72), slice(72, 90), slice(90, 100))
    with pytest.raises(DataError, match="at least 3 steps"):
        chronological_split(2, 0.1, 0.1)
    a = random_split(50, 0.2, 0.2, seed=1)
    assert sorted(np.concatenate(a).tolist()) == list(range(50)) and [len(p) for p in a] == [32, 8, 10]
    b = random_split(50, 0.4, 0.2, seed=1)
    np.testing.assert_array_equal(a[2], b[2])  # the test part does not depend on val_fraction
    assert evenly_spaced(10, 4).tolist() == [0, 3, 6, 9] and len(evenly_spaced(3, 9)) == 3
