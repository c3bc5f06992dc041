"""Data sets: ``load(cfg.data)`` -> :class:`Dataset` with deterministic, stratified train/val/test splits.

Raw arrays are read once per process (cached by data-set name and root); every :func:`load` call returns fresh
arrays, so callers may modify them freely. No function here ever touches the network.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from jaxdl.config import DataConfig
from jaxdl.data.core import (
    Dataset,
    Split,
    epoch_permutation,
    standardize,
    stratified_split,
    stratified_subset,
)
from jaxdl.data.sources import DATASETS, RawData, read_idx
from jaxdl.errors import ConfigError

__all__ = [
    "DATASETS", "Dataset", "Split", "RawData", "load", "load_raw", "clear_cache", "epoch_permutation",
    "standardize", "stratified_split", "stratified_subset", "read_idx",
]


@functools.lru_cache(maxsize=8)
def _load_raw_cached(name: str, root: str | None) -> RawData:
    raw = DATASETS.get(name)(root)
    for a in (raw.train_x, raw.train_y, raw.val_x, raw.val_y, raw.test_x, raw.test_y):
        if a is not None:
            a.flags.writeable = False  # the cache is shared: nobody may write into it
    return raw


def load_raw(name: str, root: str | None = None) -> RawData:
    """The data set's raw arrays (read-only, cached in-process by ``(name, root)``)."""
    DATASETS.get(name)  # unknown names raise before anything is cached
    if root is not None:
        root = os.path.abspath(os.path.expanduser(str(root)))
    return _load_raw_cached(name, root)


def clear_cache() -> None:
    """Forget every cached raw data set (e.g. after files under a ``data.root`` changed)."""
    _load_raw_cached.cache_clear()


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


def load(cfg: DataConfig) -> Dataset:
    """Build the :class:`Dataset` described by ``cfg`` (a :class:`~jaxdl.config.DataConfig`).

    * Data sets with an official test split keep it; the others have ``test_fraction`` of all examples carved out
      as the test split (stratified, keyed by ``split_seed``).
    * ``val_fraction`` of the remaining training pool becomes the validation split (stratified, keyed by
      ``split_seed``); the test split does not depend on ``val_fraction``. A data set with an official
      validation split (an ``image_folder`` with a ``val/`` folder) keeps it and its whole pool is training data.
    * ``train_limit`` keeps a stratified subset of that many training examples.
    * ``standardize`` standardises every split per channel with the training split's mean and std.
    """
    DATASETS.get(cfg.name)  # unknown name: the registry's 'did you mean' error, before any other check
    _check_config(cfg)
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
    )
