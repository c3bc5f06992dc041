"""from_arrays sources: kind inference, splits, names recorded, the .npz round trip, CSV tables and series."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdl.config import DataConfig
from jaxdl.data import ArraySource, from_arrays, load
from jaxdl.errors import ConfigError, DataError


def _xy(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * 4 + 2, rng.integers(0, 3, n)


def test_from_arrays_classification():
    x, y = _xy()
    ds = load(DataConfig(), source=from_arrays(x=x, y=y, name="blobs", description="three blobs"))
    assert ds.name == "blobs" and ds.description == "three blobs"
    assert ds.kind == "classification" and ds.num_classes == 3 and ds.class_names == ("0", "1", "2")
    assert ds.inputs == ("x",) and ds.targets == ("y",) and ds.input_shape == (3,)
    assert ds.info["split"] == "stratified" and len(ds.train) + len(ds.val) + len(ds.test) == 120
    assert ds.train.y.dtype == np.int32 and ds.train.x.dtype == np.float32
    np.testing.assert_allclose(ds.train.x.mean(0), 0, atol=1e-5)  # standardised with training statistics
    for s in (ds.train, ds.val, ds.test):
        assert set(np.unique(s.y)) == {0, 1, 2}
    named = load(DataConfig(), source=from_arrays(x=x, y=np.array(["a", "b", "c"])[y]))
    assert named.class_names == ("a", "b", "c")


def test_from_arrays_regression_random_split():
    x, _ = _xy()
    price = x @ np.array([1.0, -2.0, 0.5])
    src = from_arrays({"features": x, "price": price}, inputs=("features",), targets=("price",), name="houses")
    ds = load(DataConfig(val_fraction=0.2, test_fraction=0.25, split_seed=3), source=src)
    assert ds.kind == "regression" and ds.num_classes is None and ds.name == "houses"
    assert ds.info["split"] == "random" and (len(ds.train), len(ds.val), len(ds.test)) == (72, 18, 30)
    assert "classes" not in ds.describe() and "regression of price" in ds.describe()
    assert ds.train.batch(np.array([[0, 1]]))["price"].shape == (1, 2)
    again = load(DataConfig(val_fraction=0.2, test_fraction=0.25, split_seed=3), source=src)
    np.testing.assert_array_equal(ds.test.y, again.test.y)
    with pytest.raises(ConfigError, match="data.split='stratified' does not apply to regression"):
        load(DataConfig(split="stratified"), source=src)


def test_from_arrays_errors():
    with pytest.raises(DataError, match="different lengths: x 3, y 4"):
        from_arrays(x=np.zeros(3), y=np.zeros(4))
    with pytest.raises(DataError, match="unknown array 'z'"):
        from_arrays(x=np.zeros(3), y=np.zeros(3), targets=("z",))
    with pytest.raises(DataError, match=r"labels span 0\.\.5, expected 0\.\.2 \(3 class_names\)"):
        load(DataConfig(), source=from_arrays(x=np.zeros((6, 1)), y=np.arange(6), class_names=("a", "b", "c")))
    with pytest.raises(DataError, match=r"column 'x' has 1 missing value\(s\), the first at row 2"):
        load(DataConfig(), source=from_arrays(x=np.array([1, 2, np.nan, 4, 5, 6.0]), y=np.zeros(6)))


def test_save_load_round_trip(tmp_path):
    x, y = _xy()
    src = from_arrays(x=x, y=y, name="blobs", description="d", class_names=("r", "g", "b"))
    path = src.save(tmp_path / "sweep" / "data.npz")
    back = ArraySource.load(path)
    assert back.fingerprint() == src.fingerprint() and back.class_names == ("r", "g", "b")
    a = load(DataConfig(), source=src)
    b = load(DataConfig(name="arrays", root=str(path)))
    assert b.name == "blobs" and b.class_names == ("r", "g", "b")
    for s, t in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        np.testing.assert_array_equal(s.x, t.x)
        np.testing.assert_array_equal(s.y, t.y)
    assert from_arrays(x=x + 1, y=y).fingerprint() != src.fingerprint()
    with pytest.raises(DataError, match=r"arrays file .*nope\.npz' not found"):
        load(DataConfig(name="arrays", root=str(tmp_path / "nope.npz")))
    with pytest.raises(DataError, match="set data.root=FILE"):
        load(DataConfig(name="arrays"))


CSV = """date,temp,humidity,label
2020-01-03,3.5,40,1
2020-01-01,1.5,NA,0
2020-01-02,2.5,42,1
2020-01-05,,44,0
2020-01-04,4.5,45,2
2020-01-06,6.5,46,2
2020-01-07,7.5,47,0
2020-01-08,8.5,48,1
2020-01-09,9.5,49,2
2020-01-10,10.5,50,0
"""


def test_csv_columns_time_sort_and_missing(tmp_path):
    path = tmp_path / "weather.csv"
    path.write_text(CSV)
    base = dict(name="csv", root=str(path), time_column="date", targets=("label",))
    with pytest.raises(DataError, match=r"weather\.csv'\): column 'temp' has 1 missing.* first at line 5; set "):
        load(DataConfig(**base, missing="error", split="chronological", columns=("temp",)))
    ds = load(DataConfig(**base, missing="drop", split="chronological", standardize=False))
    assert ds.kind == "classification" and ds.num_classes == 3 and ds.inputs == ("features",)
    assert ds.info["columns"] == ["temp", "humidity"] and ds.info["time_column"] == "date"
    times = np.concatenate([ds.train.time, ds.val.time, ds.test.time])
    assert np.all(np.diff(times) > np.timedelta64(0)) and len(times) == 8  # sorted; two rows dropped
    assert ds.train.x[0].tolist() == [2.5, 42.0]  # Jan 1 dropped (humidity NA), Jan 2 first
    filled = load(DataConfig(**base, missing="interpolate", split="chronological", standardize=False,
                             columns=("temp",)))
    first = filled.train.x[:4, 0].tolist()
    assert first == [1.5, 2.5, 3.5, 4.5] and filled.info["columns"] == ["temp"]
    # a series read of the same file: windows over the time-sorted rows
    series = dict(name="csv", root=str(path), time_column="date", columns=("temp", "humidity"), targets=("temp",),
                  context=1, val_fraction=0.3, test_fraction=0.3)
    s = load(DataConfig(**series, missing="interpolate"))
    assert s.kind == "series" and s.input_shape == (1, 2) and s.info["target_columns"] == ["temp"]
    with pytest.raises(DataError, match=r"column 'humidity' starts with a missing value \(line 3\)"):
        load(DataConfig(**series, missing="ffill"))  # Jan 1 (line 3) comes first once sorted by date


def test_csv_errors_name_the_culprit(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,x\n")
    with pytest.raises(DataError, match=r"t\.csv', column 'a'.*line 3: cannot read 'x'|column 'b', line 3"):
        load(DataConfig(name="csv", root=str(path), columns=("b",), targets=("a",)))
    with pytest.raises(DataError, match=r"t\.csv', data.columns: unknown column 'c'.*Known: a, b"):
        load(DataConfig(name="csv", root=str(path), columns=("c",)))
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match=r"line 3: 1 fields, the header has 2"):
        load(DataConfig(name="csv", root=str(path)))
    path.write_text("d,v\n2020-01-01,1\nsoon,2\n")
    with pytest.raises(DataError, match=r"time column 'd', line 3: cannot read 'soon'"):
        load(DataConfig(name="csv", root=str(path), time_column="d", context=1))
    with pytest.raises(DataError, match=r"csv file .*missing\.csv' not found"):
        load(DataConfig(name="csv", root=str(tmp_path / "missing.csv")))
    with pytest.raises(ConfigError, match="data.missing: expected one of"):
        load(DataConfig(name="csv", root=str(path), missing="guess"))


def test_csv_regression_table(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["x1,x2,y"] + [f"{a:.3f},{b:.3f},{a - b:.3f}" for a, b in rng.normal(size=(40, 2))]
    path = tmp_path / "reg.csv"
    path.write_text("\n".join(rows) + "\n")
    ds = load(DataConfig(name="csv", root=str(path)))
    assert ds.kind == "regression" and ds.targets == ("y",) and ds.input_shape == (2,)
    assert ds.info["split"] == "random" and ds.train.y.dtype == np.float32


def test_more_errors_and_overrides(tmp_path):
    x, y = _xy(30)
    with pytest.raises(DataError, match="array 'o' has dtype object"):
        from_arrays(x=x, o=np.array([None] * 30))
    with pytest.raises(DataError, match="kind must be classification, regression or series, got 'text'"):
        from_arrays(x=x, y=y, kind="text")
    with pytest.raises(DataError, match="array 'x' is given twice"):
        from_arrays({"x": x}, x=x, y=y)
    with pytest.raises(DataError, match=r"need at least one input and one target array.*kind='series'"):
        from_arrays(x=x)
    with pytest.raises(ConfigError, match="data.resize applies to image data sets; 'arrays'"):
        load(DataConfig(resize=(4, 4)), source=from_arrays(x=x, y=y))
    with pytest.raises(ConfigError, match="data.kind: expected one of"):
        load(DataConfig(kind="images"), source=from_arrays(x=x, y=y))
    with pytest.raises(DataError, match="expected an ArraySource"):
        load(DataConfig(), source={"x": x})
    # integer targets read as regression when asked; chronological rows keep the given order
    ds = load(DataConfig(kind="regression", split="chronological"), source=from_arrays(x=x, y=y, time=np.arange(30)))
    assert ds.kind == "regression" and ds.num_classes is None and ds.train.time.max() < ds.test.time.min()
    path = tmp_path / "int.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i % 3}\n" for i in range(30)))
    assert load(DataConfig(name="csv", root=str(path))).kind == "classification"
    assert load(DataConfig(name="csv", root=str(path), kind="regression")).kind == "regression"
    with pytest.raises(DataError, match="not an image data set"):
        from jaxdl.data import load_raw

        load_raw("csv")
