"""File-format readers on small files the tests write: IDX (gz and raw), CIFAR-10 batches, MNIST-5k CSV."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from jaxdl.config import DataConfig
from jaxdl.data import DATASETS, load, read_idx
from jaxdl.data.sources import FASHION_MNIST_CLASSES, read_mnist5k_csv
from jaxdl.errors import DataError


def idx_bytes(arr: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    header = struct.pack(">BBBB", 0, 0, codes[arr.dtype], arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path, arr, compress=None):
    data = idx_bytes(arr)
    compress = str(path).endswith(".gz") if compress is None else compress
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_read_idx_roundtrip(tmp_path, dtype, name):
    arr = (np.arange(2 * 3 * 4) * 3 - (0 if dtype == np.uint8 else 5)).astype(dtype).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / name, arr))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_read_idx_detects_gzip_by_content(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    out = read_idx(write_idx(tmp_path / "labels-idx1-ubyte", arr, compress=True))
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("case", ["truncated", "trailing", "magic", "dtype", "short", "header", "badgzip"])
def test_read_idx_malformed_names_the_file(tmp_path, case):
    good = idx_bytes(np.zeros((3, 4, 4), np.uint8))
    data = {
        "truncated": good[:-5],
        "trailing": good + b"\x00",
        "magic": b"\x01\x02" + good[2:],
        "dtype": good[:2] + b"\x42" + good[3:],
        "short": good[:3],
        "header": good[:9],
        "badgzip": gzip.compress(good)[:-10],
    }[case]
    path = tmp_path / f"broken-{case}-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match=f"broken-{case}-idx3-ubyte"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope-idx1-ubyte")


def _write_fake_mnist(root, n_train=40, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    sfx = ".gz" if gz else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", x, compress=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", y, compress=gz)
        arrays[prefix] = (x, y)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_root(tmp_path, gz):
    arrays = _write_fake_mnist(tmp_path, gz=gz)
    ds = load(DataConfig(name="fashion_mnist", root=str(tmp_path), val_fraction=0.25, standardize=False))
    assert len(ds.train) == 30 and len(ds.val) == 10 and len(ds.test) == 20
    assert ds.input_shape == (28, 28, 1) and ds.train.x.shape[1:] == (28, 28, 1)
    assert ds.class_names == FASHION_MNIST_CLASSES and ds.num_classes == 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[-1] == "Ankle boot"
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int32
    # official test split kept in order, scaled to [0, 1]
    tx, ty = arrays["t10k"]
    np.testing.assert_allclose(ds.test.x[..., 0], tx / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.test.y, ty)
    # val is carved from train, stratified: each of the 10 classes (4 examples each) gives 1 to val
    assert np.array_equal(np.bincount(ds.val.y, minlength=10), np.ones(10))
    # every train/val image is one of the training images
    train_x = arrays["train"][0].reshape(40, -1)
    got = np.round(np.concatenate([ds.train.x, ds.val.x]).reshape(40, -1) * 255).astype(np.uint8)
    assert sorted(map(bytes, got)) == sorted(map(bytes, train_x))


def test_fashion_mnist_missing_file_in_root(tmp_path):
    _write_fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*not found"):
        DATASETS.get("fashion_mnist")(str(tmp_path))


def test_fashion_mnist_mismatched_counts(tmp_path):
    _write_fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(39, np.uint8))
    with pytest.raises(DataError, match="40 images.*39 labels"):
        DATASETS.get("fashion_mnist")(str(tmp_path))


def test_mnist_from_root_with_raw_files(tmp_path):
    _write_fake_mnist(tmp_path, n_train=60, gz=False)
    ds = load(DataConfig(name="mnist", root=str(tmp_path), val_fraction=0.5))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 30, 20)
    assert ds.class_names == tuple("0123456789")


def _cifar_batch(n, label_offset=0, seed=0):
    """Each image: red channel = its index, green = row, blue = column (channel-major rows of 3072)."""
    rows = np.zeros((n, 3, 32, 32), np.uint8)
    rows[:, 0] = np.arange(n, dtype=np.uint8)[:, None, None]
    rows[:, 1] = np.arange(32, dtype=np.uint8)[None, :, None]
    rows[:, 2] = np.arange(32, dtype=np.uint8)[None, None, :] + 100
    return {b"batch_label": b"fake", b"data": rows.reshape(n, 3072),
            b"labels": [(i + label_offset) % 10 for i in range(n)], b"filenames": [b"x.png"] * n}


def _write_cifar(root, n=4, protocol=pickle.DEFAULT_PROTOCOL, meta=True):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        with open(root / f"data_batch_{i}", "wb") as f:
            pickle.dump(_cifar_batch(n, label_offset=i), f, protocol=protocol)
    with open(root / "test_batch", "wb") as f:
        pickle.dump(_cifar_batch(n + 1), f, protocol=protocol)
    if meta:
        names = [f"class{i}".encode() for i in range(10)]
        with open(root / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_cifar10_orientation_is_nhwc(tmp_path, protocol):
    _write_cifar(tmp_path, protocol=protocol)
    raw = DATASETS.get("cifar10")(str(tmp_path))
    assert raw.train_x.shape == (20, 32, 32, 3) and raw.test_x.shape == (5, 32, 32, 3)
    assert raw.train_x.dtype == np.uint8
    x = raw.test_x
    assert x[3, 7, 11, 0] == 3  # red: image index
    assert x[3, 7, 11, 1] == 7  # green: row (H axis)
    assert x[3, 7, 11, 2] == 111  # blue: column (W axis) + 100
    assert np.all(x[:, :, 5, 1] == np.arange(32)[None, :])
    assert np.all(x[:, 9, :, 2] == np.arange(32)[None, :] + 100)
    np.testing.assert_array_equal(raw.train_y[:4], [1, 2, 3, 4])  # data_batch_1 first
    assert raw.class_names == tuple(f"class{i}" for i in range(10))


def test_cifar10_load_and_parent_dir(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py", n=10, meta=False)
    ds = load(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.2))
    assert ds.input_shape == (32, 32, 3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (40, 10, 11)
    assert ds.class_names[0] == "airplane" and ds.mean.shape == (3,)


def test_cifar10_missing_and_malformed(tmp_path):
    with pytest.raises(DataError, match="not found.*data.root="):
        DATASETS.get("cifar10")(None)
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 not found"):
        DATASETS.get("cifar10")(str(tmp_path))
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        DATASETS.get("cifar10")(str(tmp_path))
    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"data_batch_3.*\(N, 3072\)"):
        DATASETS.get("cifar10")(str(tmp_path))


def test_cifar10_refuses_code_in_pickles(tmp_path):
    _write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="refusing.*print"):
        DATASETS.get("cifar10")(str(tmp_path))


def test_mnist5k_csv_reader(tmp_path):
    rows = np.zeros((3, 785), np.int64)
    rows[:, :784] = np.arange(784) % 256
    rows[:, 784] = [0, 1, 9]
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    x, y = read_mnist5k_csv(path)
    assert x.shape == (3, 28, 28, 1) and x.dtype == np.uint8
    assert x[0, 1, 2, 0] == 28 + 2  # row-major 28×28
    np.testing.assert_array_equal(y, [0, 1, 9])
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="bad.csv.*785"):
        read_mnist5k_csv(bad)
