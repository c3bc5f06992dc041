"""Splits, subsets, epoch permutations and standardisation (pure numpy, no data files)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdl.data import Dataset, Split, epoch_permutation, standardize, stratified_split, stratified_subset
from jaxdl.errors import DataError


def _labels(sizes, seed=0):
    y = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    return np.random.default_rng(seed).permutation(y)


def test_split_is_a_disjoint_cover():
    y = _labels([50, 30, 20, 7])
    parts = stratified_split(y, [0.7, 0.15, 0.15], seed=3)
    assert len(parts) == 3
    allidx = np.concatenate(parts)
    assert len(allidx) == len(y)
    assert np.array_equal(np.sort(allidx), np.arange(len(y)))
    for p in parts:
        assert p.dtype == np.int64


def test_split_is_deterministic_and_keyed_by_seed():
    y = _labels([40, 40, 40])
    a = stratified_split(y, [0.2, 0.8], seed=1)
    b = stratified_split(y, [0.2, 0.8], seed=1)
    c = stratified_split(y, [0.2, 0.8], seed=2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(np.sort(a[0]), np.sort(c[0]))
    # sequence seeds work too
    d = stratified_split(y, [0.2, 0.8], seed=[1, 0])
    assert np.array_equal(np.sort(d[0]), np.sort(stratified_split(y, [0.2, 0.8], seed=[1, 0])[0]))


def test_split_is_stratified():
    y = _labels([100, 60, 40])
    val, train = stratified_split(y, [0.25, 0.75], seed=0)
    assert np.array_equal(np.bincount(y[val]), [25, 15, 10])
    assert np.array_equal(np.bincount(y[train]), [75, 45, 30])


def test_split_every_class_in_every_part_when_possible():
    # class 2 has 3 examples: a 5 % share rounds to 0, but each of the 3 parts still gets one
    y = _labels([200, 100, 3])
    parts = stratified_split(y, [0.9, 0.05, 0.05], seed=0)
    for p in parts:
        assert set(np.unique(y[p])) == {0, 1, 2}
    # a class with fewer examples than parts cannot be everywhere, but nothing is lost
    y = _labels([50, 2])
    parts = stratified_split(y, [0.8, 0.1, 0.1], seed=0)
    assert sum(len(p) for p in parts) == 52
    assert sum(int((y[p] == 1).sum()) for p in parts) == 2


def test_split_parts_are_not_class_sorted():
    y = np.repeat(np.arange(5), 40)  # sorted by label, like the MNIST-5k CSV
    (part,) = stratified_split(y, [1.0], seed=0)
    assert not np.all(np.diff(y[part]) >= 0)


def test_split_remainder_becomes_a_final_part():
    y = _labels([30, 30])
    parts = stratified_split(y, [0.5], seed=0)
    assert [len(p) for p in parts] == [30, 30]


@pytest.mark.parametrize("bad", [[0.6, 0.6], [-0.1, 1.1], [], [float("nan")]])
def test_split_rejects_bad_fractions(bad):
    with pytest.raises(ValueError):
        stratified_split(np.zeros(10, dtype=int), bad, seed=0)


def test_stratified_subset_exact_size_and_balance():
    y = _labels([300, 200, 100])
    idx = stratified_subset(y, 60, seed=0)
    assert len(idx) == 60 and len(np.unique(idx)) == 60
    assert np.array_equal(np.bincount(y[idx]), [30, 20, 10])
    assert np.array_equal(idx, stratified_subset(y, 60, seed=0))
    assert np.all(np.diff(idx) > 0)  # keeps the original order
    # every class present once n >= number of classes, even a rare one
    y = _labels([1000, 5])
    assert set(y[stratified_subset(y, 10, seed=1)]) == {0, 1}
    # n >= len(y) keeps everything
    assert np.array_equal(stratified_subset(y, 10_000, seed=0), np.arange(len(y)))


def test_epoch_permutation_deterministic_and_varies_by_epoch():
    p0 = epoch_permutation(100, seed=7, epoch=0)
    assert np.array_equal(np.sort(p0), np.arange(100))
    assert np.array_equal(p0, epoch_permutation(100, seed=7, epoch=0))
    assert not np.array_equal(p0, epoch_permutation(100, seed=7, epoch=1))
    assert not np.array_equal(p0, epoch_permutation(100, seed=8, epoch=0))
    # keyed only by (seed, epoch): a "resumed" call for epoch 3 matches the uninterrupted sequence
    run = [epoch_permutation(50, 1, e) for e in range(5)]
    assert np.array_equal(run[3], epoch_permutation(50, 1, 3))
    assert np.array_equal(p0, np.random.default_rng([7, 0]).permutation(100))


def test_standardize_uses_train_statistics_per_channel():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 4, 4, 3)).astype(np.float32) * [1, 2, 3] + [0, 5, -5]
    test = train[:10] + 1.0
    mean, std, (tr, te) = standardize(train, test)
    assert mean.shape == (3,) and std.shape == (3,) and mean.dtype == np.float32
    np.testing.assert_allclose(tr.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(tr.std(axis=(0, 1, 2)), 1, atol=1e-4)
    np.testing.assert_allclose(te, (test - mean) / std, rtol=1e-5, atol=1e-5)
    assert tr.dtype == np.float32


def test_standardize_clamps_constant_channel():
    x = np.zeros((10, 2, 2, 1), np.float32)
    mean, std, (t, o) = standardize(x, x + 0.5)
    assert std[0] > 0
    assert np.all(t == 0) and np.all(np.isfinite(o))


def test_split_and_dataset_containers():
    s = Split(np.zeros((4, 2, 2, 1), np.float32), np.zeros(4, np.int32))
    assert len(s) == 4
    with pytest.raises(DataError):
        Split(np.zeros((4, 2)), np.zeros(3))
    ds = Dataset("toy", s, s, s, 2, ("a", "b"), (2, 2, 1), None, None)
    text = ds.describe()
    assert "toy" in text and "4" in text and "(2, 2, 1)" in text and "2 classes" in text
    assert "\n" not in text
