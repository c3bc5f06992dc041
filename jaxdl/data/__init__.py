"""Data sets: ``load(cfg.data)`` -> :class:`Dataset`: three splits of named arrays plus a spec.

Sources: image data sets (digits, MNIST-5k, Fashion-MNIST, MNIST, CIFAR, image folders; stratified splits), tables
(``csv``, in-memory arrays via :func:`from_arrays`, saved arrays ``arrays``; stratified, random or chronological),
series (``csv`` with ``data.context``, statsmodels' ``co2``, ``elec_equip``, ``sunspots``, ``nile``,
``macrodata``; windows, chronological) and text (``text``, ``python_stdlib``, ``shakespeare``; blocks of
character or subword tokens (:mod:`jaxdl.data.tokenize`) of contiguous spans, optionally packed documents),
labelled text (``shakespeare_passages``: comedy / history / tragedy passages, whole plays held out) and parallel
text (``bible_en_es``: verse-aligned English–Spanish pairs, whole books held out). Raw image arrays, statsmodels frames and text corpora are read once per process (cached); every :func:`load` call
returns fresh arrays, so callers may modify them freely. No function here ever touches the network.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from jaxdl.config import DataConfig
from jaxdl.data.arrays import (
    KINDS,
    MISSING,
    SPLITS,
    ArraySource,
    SourceLoader,
    build_rows,
    from_arrays,
    handle_missing,
)
from jaxdl.data.core import (
    Blocks,
    Dataset,
    Rows,
    Split,
    Windows,
    chronological_split,
    epoch_permutation,
    evenly_spaced,
    random_split,
    standardize,
    stratified_split,
    stratified_subset,
)
from jaxdl.data.parallel import ParallelSource, build_parallel
from jaxdl.data.series import build_series, check_series_config
from jaxdl.data.sources import DATASETS, RawData, read_idx
from jaxdl.data.tables import read_csv
from jaxdl.data.text import TextSource, build_text, decode, encode
from jaxdl.data import passages as _passages  # noqa: F401,E402  (registers shakespeare_passages)
from jaxdl.errors import ConfigError, DataError

__all__ = [
    "DATASETS", "ArraySource", "Blocks", "Dataset", "Rows", "Split", "TextSource", "Windows", "RawData", "build",
    "chronological_split", "clear_cache", "decode", "encode", "epoch_permutation", "evenly_spaced", "from_arrays",
    "handle_missing", "load", "load_raw", "random_split", "read_csv", "read_idx", "standardize", "stratified_split",
    "stratified_subset",
]


@functools.lru_cache(maxsize=8)
def _load_raw_cached(name: str, root: str | None) -> RawData:
    raw = DATASETS.get(name)(root)
    for a in (raw.train_x, raw.train_y, raw.val_x, raw.val_y, raw.test_x, raw.test_y):
        if a is not None:
            a.flags.writeable = False  # the cache is shared: nobody may write into it
    return raw


def load_raw(name: str, root: str | None = None) -> RawData:
    """An image data set's raw arrays (read-only, cached in-process by ``(name, root)``)."""
    if isinstance(DATASETS.get(name), SourceLoader):  # unknown names raise before anything is cached
        raise DataError(f"data set {name!r} is not an image data set (it has no raw image arrays); use "
                        f"load(DataConfig(name={name!r}, ...))")
    if root is not None:
        root = os.path.abspath(os.path.expanduser(str(root)))
    return _load_raw_cached(name, root)


def clear_cache() -> None:
    """Forget every cached raw data set (e.g. after files under a ``data.root`` changed)."""
    from jaxdl.data import series, text

    _load_raw_cached.cache_clear()
    series._statsmodels_frame.cache_clear()
    text._stdlib_text.cache_clear()
    text._shakespeare_text.cache_clear()


def _check_config(cfg: DataConfig) -> None:
    for key in ("val_fraction", "test_fraction"):
        v = getattr(cfg, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < float(v) < 1.0):
            raise ConfigError(f"data.{key}: expected a fraction strictly between 0 and 1, got {v!r}")
    for key in ("train_limit", "eval_limit"):
        limit = getattr(cfg, key)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"data.{key}: expected a positive int or None, got {limit!r}")
    if cfg.resize is not None and (len(cfg.resize) != 2 or min(cfg.resize) < 1):
        raise ConfigError(f"data.resize: expected (height, width) with positive sizes, got {cfg.resize!r}")
    if cfg.channels not in (None, 1, 3):
        raise ConfigError(f"data.channels: expected 1, 3 or none, got {cfg.channels!r}")
    for key, allowed in (("split", SPLITS), ("missing", MISSING + (None,)), ("kind", KINDS + (None,))):
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"data.{key}: expected one of {', '.join(map(str, allowed))}, got "
                              f"{getattr(cfg, key)!r}")
    check_series_config(cfg)


def _check_image_config(cfg: DataConfig) -> None:
    """Options of tables, series and text make no sense for an image data set: say so instead of ignoring them."""
    if cfg.split not in ("auto", "stratified"):
        raise ConfigError(f"data.split={cfg.split!r}: image data set {cfg.name!r} is split stratified (auto)")
    if cfg.kind not in (None, "classification"):
        raise ConfigError(f"data.kind={cfg.kind!r}: image data set {cfg.name!r} is a classification data set")
    for key in ("context", "time_column", "glob"):
        if getattr(cfg, key) is not None:
            raise ConfigError(f"data.{key} applies to series/text data sets; {cfg.name!r} is an image data set")
    for key in ("columns", "targets"):
        if getattr(cfg, key):
            raise ConfigError(f"data.{key} applies to tables and series; {cfg.name!r} is an image data set")


def _reshape_images(x: np.ndarray, cfg: DataConfig, name: str) -> np.ndarray:
    """Apply ``data.channels`` and ``data.resize`` to float NHWC images (in chunks, to bound memory)."""
    if (cfg.resize is not None or cfg.channels is not None) and x.ndim != 4:
        raise ConfigError(f"data.resize / data.channels need images (N, H, W, C); data set {name!r} has examples "
                          f"of shape {x.shape[1:]}")
    if cfg.channels is not None and x.shape[-1] != cfg.channels:
        if cfg.channels == 3 and x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        elif cfg.channels == 1 and x.shape[-1] == 3:
            x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        else:
            raise ConfigError(f"data.channels={cfg.channels}: cannot convert {x.shape[-1]}-channel images")
    if cfg.resize is not None and tuple(x.shape[1:3]) != tuple(cfg.resize):
        import jax

        h, w = cfg.resize
        out = np.empty((len(x), h, w, x.shape[-1]), np.float32)
        for i in range(0, len(x), 2048):
            chunk = x[i:i + 2048]
            out[i:i + len(chunk)] = np.asarray(jax.image.resize(chunk, (len(chunk), h, w, x.shape[-1]), "bilinear"))
        x = out
    return x


def _to_float(x: np.ndarray, max_value: float) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (always a fresh array)."""
    return np.multiply(x, np.float32(1.0 / max_value), dtype=np.float32)


def build(source: ArraySource | TextSource, cfg: DataConfig) -> Dataset:
    """Split and standardise an unsplit source as ``cfg`` says: text -> blocks; a series (``kind="series"``, or
    ``data.context`` / ``data.kind=series`` set) -> windows; anything else -> rows."""
    if isinstance(source, ParallelSource):  # pairs of texts: split, tokenised and padded (data/parallel.py)
        return build_parallel(source, cfg)
    if isinstance(source, Dataset):  # a source that splits itself (shakespeare_passages holds out whole plays)
        return source
    if isinstance(source, TextSource):
        if cfg.resize is not None or cfg.channels is not None or cfg.context is not None:
            raise ConfigError(f"data.resize / data.channels / data.context do not apply to text data set "
                              f"{source.name!r}")
        if cfg.kind not in (None, "text"):
            raise ConfigError(f"data.kind={cfg.kind!r}: {source.name!r} is a text data set")
        return build_text(source, cfg)
    if not isinstance(source, ArraySource):
        raise DataError(f"load(source=...): expected an ArraySource (jaxdl.data.from_arrays) or a TextSource, got "
                        f"{type(source).__name__}")
    if cfg.kind == "text":
        raise ConfigError(f"data.kind='text': {source.name!r} holds arrays, not text")
    for key in ("resize", "channels"):
        if getattr(cfg, key) is not None:
            raise ConfigError(f"data.{key} applies to image data sets; {source.name!r} holds arrays")
    if cfg.context is not None or cfg.kind == "series" or (cfg.kind is None and source.kind == "series"):
        return build_series(source, cfg)
    return build_rows(source, cfg)


def load(cfg: DataConfig, source: ArraySource | TextSource | None = None) -> Dataset:
    """Build the :class:`Dataset` described by ``cfg`` (a :class:`~jaxdl.config.DataConfig`).

    Args:
      cfg: which data set (``cfg.name``, ignored when ``source`` is given) and how to split it.
      source: in-memory data (:func:`from_arrays`); the config's splitting, standardisation and limits apply to it
        exactly as to a named data set, and the Dataset carries the source's name and description.

    Tables, series and text: see :func:`build` and the modules ``arrays``, ``tables``, ``series``, ``text``.
    Image data sets:

    * Data sets with an official test split keep it; the others have ``test_fraction`` of all examples carved out
      as the test split (stratified, keyed by ``split_seed``).
    * ``val_fraction`` of the remaining training pool becomes the validation split (stratified, keyed by
      ``split_seed``); the test split does not depend on ``val_fraction``. A data set with an official
      validation split (an ``image_folder`` with a ``val/`` folder) keeps it and its whole pool is training data.
    * ``train_limit`` keeps a stratified subset of that many training examples.
    * ``standardize`` standardises every split per channel with the training split's mean and std.
    """
    if source is not None:
        _check_config(cfg)
        return build(source, cfg)
    entry = DATASETS.get(cfg.name)  # unknown name: the registry's 'did you mean' error, before any other check
    _check_config(cfg)
    if isinstance(entry, SourceLoader):
        return build(entry(cfg), cfg)
    _check_image_config(cfg)
    raw = load_raw(cfg.name, cfg.root)
    seed = int(cfg.split_seed)
    if seed < 0:
        raise ConfigError(f"data.split_seed: expected an int >= 0, got {seed}")

    if raw.has_test:
        pool = np.arange(len(raw.train_y))
        test_x, test_y = _to_float(raw.test_x, raw.max_value), raw.test_y.astype(np.int32)
    else:
        test_idx, pool = stratified_split(raw.train_y, [cfg.test_fraction, 1.0 - cfg.test_fraction], [seed, 0])
        test_x, test_y = _to_float(raw.train_x[test_idx], raw.max_value), raw.train_y[test_idx].astype(np.int32)

    if raw.has_val:
        train_idx = pool
    else:
        val_rel, train_rel = stratified_split(raw.train_y[pool], [cfg.val_fraction, 1.0 - cfg.val_fraction],
                                              [seed, 1])
        val_idx, train_idx = pool[val_rel], pool[train_rel]
    if cfg.train_limit is not None and cfg.train_limit < len(train_idx):
        keep = stratified_subset(raw.train_y[train_idx], cfg.train_limit, [seed, 2])
        train_idx = train_idx[keep]

    train_x = _to_float(raw.train_x[train_idx], raw.max_value)
    if raw.has_val:
        val_x, val_y = _to_float(raw.val_x, raw.max_value), raw.val_y.astype(np.int32)
    else:
        val_x, val_y = _to_float(raw.train_x[val_idx], raw.max_value), raw.train_y[val_idx].astype(np.int32)
    if cfg.eval_limit is not None:
        if len(val_y) > cfg.eval_limit:
            keep = stratified_subset(val_y, cfg.eval_limit, [seed, 3])
            val_x, val_y = val_x[keep], val_y[keep]
        if len(test_y) > cfg.eval_limit:
            keep = stratified_subset(test_y, cfg.eval_limit, [seed, 4])
            test_x, test_y = test_x[keep], test_y[keep]
    train_x, val_x, test_x = (_reshape_images(a, cfg, cfg.name) for a in (train_x, val_x, test_x))
    mean = std = None
    if cfg.standardize:
        mean, std, (train_x, val_x, test_x) = standardize(train_x, val_x, test_x)

    return Dataset(
        name=cfg.name,
        train=Split(train_x, raw.train_y[train_idx].astype(np.int32)),
        val=Split(val_x, val_y),
        test=Split(test_x, test_y),
        num_classes=len(raw.class_names),
        class_names=tuple(raw.class_names),
        input_shape=tuple(int(d) for d in train_x.shape[1:]),
        mean=mean,
        std=std,
        description=f"image data set {cfg.name}" + (f" ({raw.source})" if raw.source else ""),
        info={"split": "stratified" + (" (official test split)" if raw.has_test else "")},
    )
