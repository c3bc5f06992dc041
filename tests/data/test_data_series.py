"""Series: chronological windows (no future in training or normalisation), statsmodels' real series."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxdl.config import DataConfig
from jaxdl.data import chronological_split, from_arrays, load
from jaxdl.errors import ConfigError, DataError


def _series_source(n=200):
    t = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(0)
    order = rng.permutation(n)  # given out of order: the loader sorts by time
    cols = {"a": (np.sin(t / 5) + t / 50)[order], "b": rng.normal(size=n)[order]}
    return from_arrays(cols, kind="series", time=(2000.0 + t)[order], name="toy_series", description="toy")


def test_chronological_windows_and_train_only_statistics():
    cfg = DataConfig(name="ignored", context=8, horizon=2, targets=("a",))
    ds = load(cfg, source=_series_source())
    assert ds.kind == "series" and ds.num_classes is None and ds.name == "toy_series"
    assert ds.inputs == ("inputs",) and ds.targets == ("targets",) and ds.input_shape == (8, 2)
    assert ds.info["split"] == "chronological" and "split chronological" in ds.describe()
    # no timestamp in train or validation is later than any in test (nor train later than val)
    assert ds.train.time.max() < ds.val.time.min() and ds.val.time.max() < ds.test.time.min()
    # every window lies inside its span: the inputs' and targets' steps never cross a boundary
    tr, va, te = chronological_split(200, 0.15, 0.15)
    for split, sl in ((ds.train, tr), (ds.val, va), (ds.test, te)):
        s = split.view.starts
        assert s.min() >= sl.start and s.max() + 8 + 2 <= sl.stop
    # normalisation statistics come from the training span only
    raw = np.stack([np.sin(np.arange(200) / 5) + np.arange(200) / 50, np.zeros(200)], 1)
    np.testing.assert_allclose(ds.mean[0], raw[tr, 0].mean(), rtol=1e-5)
    assert not np.isclose(ds.mean[0], raw[:, 0].mean(), rtol=1e-3)
    b = ds.train.batch(np.array([0, 1]))
    assert b["inputs"].shape == (2, 8, 2) and b["targets"].shape == (2, 2, 1)
    np.testing.assert_allclose(b["targets"][0, :, 0] * ds.std[0] + ds.mean[0], raw[8:10, 0], rtol=1e-4)


def test_series_limits_stride_and_errors():
    src = _series_source()
    ds = load(DataConfig(context=4, stride=3, train_limit=10, eval_limit=2), source=src)
    assert len(ds.train) == 10 and len(ds.val) == 2 and len(ds.test) == 2
    assert np.all(np.diff(ds.val.view.starts) % 3 == 0)
    with pytest.raises(DataError, match=r"the val span has 26 of 200 steps.*context \+ horizon = 30 \+ 1"):
        load(DataConfig(context=30), source=src)
    with pytest.raises(DataError, match=r"unknown column 'c'.*Known: a, b"):
        load(DataConfig(context=4, targets=("c",)), source=src)
    with pytest.raises(ConfigError, match=r"data.split='random' does not apply to series"):
        load(DataConfig(context=4, split="random"), source=src)
    with pytest.raises(ConfigError, match="data.horizon"):
        load(DataConfig(context=4, horizon=0), source=src)
    dup = from_arrays({"a": np.arange(5.0)}, kind="series", time=np.array([1, 2, 2, 3, 4]))
    with pytest.raises(DataError, match="duplicate timestamp 2 at rows 1 and 2"):
        load(DataConfig(context=1), source=dup)


@pytest.mark.parametrize("name,n,columns", [("co2", 2284, ["co2"]), ("sunspots", 309, ["SUNACTIVITY"]),
                                            ("nile", 100, ["volume"]), ("elec_equip", 257, ["elec_equip"])])
def test_statsmodels_series(load_dataset, name, n, columns):
    ds = load_dataset(DataConfig(name=name))
    assert ds.kind == "series" and ds.info["columns"] == columns and ds.description
    spans = ds.info["spans"]
    assert spans["train"]["steps"][0] == 0 and spans["test"]["steps"][1] == n
    assert ds.train.time.max() < ds.val.time.min() <= ds.val.time.max() < ds.test.time.min()
    for split in (ds.train, ds.val, ds.test):
        b = split.batch(np.arange(len(split)))
        assert np.all(np.isfinite(b["inputs"])) and b["targets"].shape[1:] == (1, 1)


def test_co2_missing_values(load_dataset):
    ds = load_dataset(DataConfig(name="co2"))  # 59 missing weeks, interpolated by default
    assert ds.info["missing"] == "interpolate"
    with pytest.raises(DataError, match=r"data set 'co2': column 'co2' has 59 missing value\(s\), the first at row"):
        load_dataset(DataConfig(name="co2", missing="error"))
    dropped = load_dataset(DataConfig(name="co2", missing="drop"))
    assert dropped.info["spans"]["test"]["steps"][1] == 2284 - 59


def test_macrodata_multivariate(load_dataset):
    ds = load_dataset(DataConfig(name="macrodata", targets=("realgdp", "unemp")))
    assert ds.input_shape == (8, 12) and ds.info["target_columns"] == ["realgdp", "unemp"]
    assert ds.train.batch(np.array([0]))["targets"].shape == (1, 1, 2)


def test_series_config_on_images_is_an_error():
    with pytest.raises(ConfigError, match="data.context applies to series"):
        load(DataConfig(name="digits", context=4))
    with pytest.raises(ConfigError, match="data.split='chronological': image data set 'digits'"):
        load(dataclasses.replace(DataConfig(name="digits"), split="chronological"))
