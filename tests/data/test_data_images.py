"""CIFAR-100 and image-folder sources on tiny files the tests write."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from jaxdl.config import DataConfig
from jaxdl.data import DATASETS, clear_cache, load, load_raw
from jaxdl.data import sources
from jaxdl.errors import DataError


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()  # tmp_path roots are unique, but tests here also rewrite files under one root
    yield
    clear_cache()


def test_registry_lists_new_sources():
    assert {"cifar100", "image_folder"} <= set(DATASETS.names())


# --------------------------------------------------------------------------------------------------------------------
# CIFAR-100
# --------------------------------------------------------------------------------------------------------------------


def _cifar100_part(n, offset):
    """Each image: red = its index, green = row, blue = column + 100 (channel-major rows of 3072)."""
    rows = np.zeros((n, 3, 32, 32), np.uint8)
    rows[:, 0] = np.arange(n, dtype=np.uint8)[:, None, None]
    rows[:, 1] = np.arange(32, dtype=np.uint8)[None, :, None]
    rows[:, 2] = np.arange(32, dtype=np.uint8)[None, None, :] + 100
    fine = [(7 * i + offset) % 100 for i in range(n)]
    return {b"filenames": [b"x.png"] * n, b"batch_label": b"fake", b"data": rows.reshape(n, 3072),
            b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine]}


def _write_cifar100(base, n_train=200, n_test=7):
    base.mkdir(parents=True, exist_ok=True)
    for name, n, off in (("train", n_train, 0), ("test", n_test, 3)):
        with open(base / name, "wb") as f:
            pickle.dump(_cifar100_part(n, off), f, protocol=2)
    with open(base / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, f)


def test_cifar100_orientation_labels_and_names(tmp_path):
    _write_cifar100(tmp_path / "cifar-100-python")
    raw = DATASETS.get("cifar100")(str(tmp_path))  # the parent directory works too
    assert raw.train_x.shape == (200, 32, 32, 3) and raw.test_x.shape == (7, 32, 32, 3)
    assert raw.train_x.dtype == np.uint8
    x = raw.test_x
    assert tuple(x[5, 7, 11]) == (5, 7, 111)  # (image index, row, column + 100): NHWC
    assert np.all(x[:, :, 4, 1] == np.arange(32)[None, :])
    assert np.all(x[:, 9, :, 2] == np.arange(32)[None, :] + 100)
    np.testing.assert_array_equal(raw.test_y, [(7 * i + 3) % 100 for i in range(7)])  # fine, not coarse
    assert raw.class_names == tuple(f"fine{i}" for i in range(100))

    ds = load(DataConfig(name="cifar100", root=str(tmp_path / "cifar-100-python"), val_fraction=0.5))
    assert ds.num_classes == 100 and ds.input_shape == (32, 32, 3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (100, 100, 7)
    assert ds.class_names[42] == "fine42" and ds.mean.shape == (3,)


def test_cifar100_missing_malformed_and_unsafe(tmp_path):
    with pytest.raises(DataError, match="not found.*data.root="):
        DATASETS.get("cifar100")(None)
    _write_cifar100(tmp_path)
    (tmp_path / "meta").unlink()
    with pytest.raises(DataError, match="meta not found"):
        DATASETS.get("cifar100")(str(tmp_path))
    with open(tmp_path / "meta", "wb") as f:
        pickle.dump({b"label_names": []}, f)
    with pytest.raises(DataError, match="meta.*fine_label_names"):
        DATASETS.get("cifar100")(str(tmp_path))
    with open(tmp_path / "test", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match="test.*fine_labels"):
        DATASETS.get("cifar100")(str(tmp_path))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "train", "wb") as f:
        pickle.dump({b"data": Evil(), b"fine_labels": []}, f)
    with pytest.raises(DataError, match="refusing.*print"):
        DATASETS.get("cifar100")(str(tmp_path))


# --------------------------------------------------------------------------------------------------------------------
# image_folder
# --------------------------------------------------------------------------------------------------------------------

CLASSES = ("cat", "dog", "emu")


def _img(path, size_wh, value, mode="RGB"):
    """A constant image whose colour encodes ``value`` (RGB: (v, 2v, 3v) mod 256; L: v)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size_wh
    if mode == "L":
        arr = np.full((h, w), value, np.uint8)
    else:
        arr = np.empty((h, w, 3), np.uint8)
        arr[...] = [value % 256, (2 * value) % 256, (3 * value) % 256]
    Image.fromarray(arr).save(path)
    return path


def _write_split(folder, n_per_class, mode="RGB", sizes=((6, 4),), exts=(".png", ".jpg")):
    k = 0
    for ci, c in enumerate(CLASSES):
        for j in range(n_per_class):
            _img(folder / c / f"im{j:02d}{exts[k % len(exts)]}", sizes[k % len(sizes)], 40 * ci + 10, mode)
            k += 1


def test_image_folder_train_test_rgb_mixed_sizes(tmp_path):
    # train sizes: (6, 4) most common, some (9, 5) and (3, 3) get resized; test all (5, 5)
    _write_split(tmp_path / "train", 4, sizes=((6, 4), (9, 5), (6, 4), (3, 3)))
    _write_split(tmp_path / "test", 2, sizes=((5, 5),), exts=(".jpeg", ".bmp"))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    raw = DATASETS.get("image_folder")(str(tmp_path))
    assert raw.class_names == CLASSES
    assert raw.train_x.shape == (12, 4, 6, 3) and raw.test_x.shape == (6, 4, 6, 3)  # (H, W) of the (6, 4) images
    assert raw.train_x.dtype == np.uint8 and not raw.has_val
    np.testing.assert_array_equal(raw.train_y, np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(raw.test_y, np.repeat([0, 1, 2], 2))
    # constant images stay constant through resizing: the colour of class 1 is (50, 100, 150)
    png = raw.train_x[4]  # dog/im00.png, lossless
    assert np.all(png == np.array([50, 100, 150], np.uint8))
    assert np.allclose(raw.test_x[2:4].reshape(-1, 3).mean(0), [50, 100, 150], atol=3)  # JPEG/BMP, approx.

    ds = load(DataConfig(name="image_folder", root=str(tmp_path), val_fraction=0.25, standardize=False))
    assert ds.input_shape == (4, 6, 3) and ds.num_classes == 3 and ds.class_names == CLASSES
    assert (len(ds.train), len(ds.val), len(ds.test)) == (9, 3, 6)
    assert np.array_equal(np.bincount(ds.val.y, minlength=3), [1, 1, 1])
    assert ds.train.x.dtype == np.float32 and 0.0 <= ds.train.x.min() and ds.train.x.max() <= 1.0
    np.testing.assert_allclose(ds.test.x, raw.test_x / 255.0, rtol=1e-6)


def test_image_folder_grayscale_gives_one_channel(tmp_path):
    _write_split(tmp_path / "train", 3, mode="L", sizes=((5, 5), (7, 3), (5, 5)))
    _write_split(tmp_path / "val", 1, mode="L", sizes=((5, 5),))
    raw = DATASETS.get("image_folder")(str(tmp_path))
    assert raw.train_x.shape == (9, 5, 5, 1) and raw.val_x.shape == (3, 5, 5, 1) and not raw.has_test
    assert np.all(raw.val_x[:, 0, 0, 0] == [10, 50, 90])
    ds = load(DataConfig(name="image_folder", root=str(tmp_path), test_fraction=1 / 3))
    assert ds.input_shape == (5, 5, 1) and ds.mean.shape == (1,)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 3, 3)  # official val kept; test carved from train
    np.testing.assert_array_equal(ds.val.y, [0, 1, 2])


def test_image_folder_one_rgb_image_makes_all_rgb(tmp_path):
    _write_split(tmp_path / "train", 2, mode="L", exts=(".png",))
    _img(tmp_path / "train" / "emu" / "colour.png", (6, 4), 7, mode="RGB")
    raw = DATASETS.get("image_folder")(str(tmp_path))
    assert raw.train_x.shape == (7, 4, 6, 3)
    assert np.all(raw.train_x[0] == 10)  # a gray image is replicated into R, G and B


def test_image_folder_flat_layout_is_carved_stratified(tmp_path):
    _write_split(tmp_path, 10, exts=(".png",))
    raw = DATASETS.get("image_folder")(str(tmp_path))
    assert not raw.has_test and not raw.has_val and raw.train_x.shape == (30, 4, 6, 3)
    ds = load(DataConfig(name="image_folder", root=str(tmp_path), val_fraction=0.25, test_fraction=0.2))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 6)
    for split, n in ((ds.train, 6), (ds.val, 2), (ds.test, 2)):
        np.testing.assert_array_equal(np.bincount(split.y, minlength=3), [n] * 3)
    again = load(DataConfig(name="image_folder", root=str(tmp_path), val_fraction=0.25, test_fraction=0.2))
    np.testing.assert_array_equal(ds.test.y, again.test.y)


def test_image_folder_mismatched_classes_names_the_split(tmp_path):
    _write_split(tmp_path / "train", 1, exts=(".png",))
    _img(tmp_path / "test" / "cat" / "a.png", (6, 4), 1)
    _img(tmp_path / "test" / "yak" / "a.png", (6, 4), 1)
    with pytest.raises(DataError, match=r"split 'test'.*missing \['dog', 'emu'\], extra \['yak'\]"):
        DATASETS.get("image_folder")(str(tmp_path))


def test_image_folder_unreadable_file_is_named(tmp_path):
    _write_split(tmp_path / "train", 2, exts=(".png",))
    (tmp_path / "train" / "dog" / "x.png").write_bytes(b"this is not a png at all")
    with pytest.raises(DataError, match=r"cannot read image .*dog.x\.png"):
        DATASETS.get("image_folder")(str(tmp_path))
    # a valid header with truncated pixel data fails on decoding, and is named too
    noise = np.random.default_rng(0).integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "train" / "dog" / "x.png")
    good = (tmp_path / "train" / "dog" / "x.png").read_bytes()
    (tmp_path / "train" / "dog" / "x.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"x\.png"):
        DATASETS.get("image_folder")(str(tmp_path))


def test_image_folder_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match="not found.*data.root="):
        DATASETS.get("image_folder")(None)
    with pytest.raises(DataError, match="not found.*nope"):
        DATASETS.get("image_folder")(str(tmp_path / "nope"))
    (tmp_path / "root").mkdir()
    with pytest.raises(DataError, match="root.*empty"):
        DATASETS.get("image_folder")(str(tmp_path / "root"))
    _write_split(tmp_path / "root", 1, exts=(".png",))
    (tmp_path / "root" / "fox").mkdir()
    with pytest.raises(DataError, match=r"fox.*empty"):
        DATASETS.get("image_folder")(str(tmp_path / "root"))


def test_image_folder_size_override(tmp_path, monkeypatch):
    _write_split(tmp_path / "train", 1, exts=(".png",))
    monkeypatch.setattr(sources, "IMAGE_FOLDER_SIZE", (3, 2))
    assert load_raw("image_folder", str(tmp_path)).train_x.shape == (3, 3, 2, 3)
