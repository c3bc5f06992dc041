"""Named arrays from Python (:func:`from_arrays`), their ``.npz`` file format, missing values, and the row data sets
built from them (classification and regression tables: stratified, random or chronological splits).

An :class:`ArraySource` is data *before* splitting: ``jaxdl.data.load(cfg, source=src)`` splits and standardises it
exactly like a named data set. ``src.save(path)`` writes one ``.npz`` that ``DataConfig(name="arrays", root=path)``
reads back (how a sweep's worker processes get arrays a notebook made).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxdl.data.core import (
    Dataset,
    Split,
    chronological_split,
    evenly_spaced,
    random_split,
    stratified_split,
    stratified_subset,
)
from jaxdl.data.sources import DATASETS
from jaxdl.errors import ConfigError, DataError
from jaxdl.registry import closest

KINDS = ("classification", "regression", "series", "text")
MISSING = ("error", "drop", "ffill", "interpolate", "zero")
SPLITS = ("auto", "stratified", "random", "chronological", "blocks")
TARGET_NAMES = ("y", "label", "labels", "target", "targets")  # default targets of from_arrays, in this order
NPZ_FORMAT = 1


class SourceLoader:
    """A registered data set that is read with the whole :class:`~jaxdl.config.DataConfig` (not just ``root``)
    and returns an unsplit source (:class:`ArraySource` or :class:`~jaxdl.data.text.TextSource`)."""

    def __init__(self, fn: Callable, kind: str):
        self.fn, self.kind = fn, kind
        self.__doc__ = fn.__doc__

    def __call__(self, cfg):
        return self.fn(cfg)


def register_source(name: str, kind: str):
    """Register ``fn(cfg) -> source`` as data set ``name`` (``kind`` is its usual kind, for listings)."""
    def deco(fn):
        DATASETS.register(name, SourceLoader(fn, kind))
        return fn
    return deco


def _unknown(what: str, name: str, known, where: str) -> DataError:
    hint = closest(name, known)
    return DataError(f"{where}: unknown {what} {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                     + f" Known: {', '.join(known)}")


@dataclass(frozen=True, eq=False)
class ArraySource:
    """Named arrays sharing their leading axis (rows, or time steps of a series), not yet split.

    Attributes:
      arrays: ``{name: (N, ...) array}``.
      inputs, targets: names the model / the loss read.
      kind: ``classification | regression | series`` or None (inferred from the targets when loaded).
      class_names: names of the classes (classification).
      time: optional ``(N,)`` timestamps (numbers or ``datetime64``) of the rows.
      info: source defaults and provenance (``missing``, ``context``, ``time_column``, ``table``, ``lines`` …).
    """

    arrays: dict
    name: str = "arrays"
    description: str = ""
    inputs: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    kind: str | None = None
    class_names: tuple[str, ...] | None = None
    time: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def _meta(self) -> dict:
        info = {k: v for k, v in self.info.items() if k != "lines"}
        return {"format": NPZ_FORMAT, "name": self.name, "description": self.description, "order": list(self.arrays),
                "inputs": list(self.inputs), "targets": list(self.targets), "kind": self.kind,
                "class_names": None if self.class_names is None else list(self.class_names), "info": info}

    def fingerprint(self) -> str:
        """sha256 (hex) of the metadata and every array's name, dtype, shape and bytes — a content id for runs."""
        h = hashlib.sha256(json.dumps(self._meta(), sort_keys=True, default=str).encode())
        items = list(self.arrays.items()) + ([("__time__", self.time)] if self.time is not None else [])
        for k, a in items:
            a = np.ascontiguousarray(a)
            h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.npz`` (arrays plus a JSON metadata string) that ``DataConfig(name="arrays", root=path)``
        loads back. Returns the path written."""
        path = Path(path).expanduser()
        payload = {f"array_{i}": np.asarray(a) for i, a in enumerate(self.arrays.values())}
        if self.time is not None:
            payload["time"] = np.asarray(self.time)
        payload["meta"] = np.array(json.dumps(self._meta(), default=str))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name without it
            np.savez(f, **payload)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ArraySource:
        """Read a file written by :meth:`save` (no pickles are loaded)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise DataError(f"arrays file {str(path)!r} not found; write it with ArraySource.save(path)")
        try:
            with np.load(path, allow_pickle=False) as z:
                files = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read arrays file {str(path)!r}: {e}") from None
        if "meta" not in files:
            raise DataError(f"arrays file {str(path)!r} has no 'meta' entry: it was not written by ArraySource.save")
        meta = json.loads(str(files["meta"]))
        if meta.get("format") != NPZ_FORMAT:
            raise DataError(f"arrays file {str(path)!r} has format {meta.get('format')!r}, expected {NPZ_FORMAT}")
        arrays = {n: files[f"array_{i}"] for i, n in enumerate(meta["order"])}
        cn = meta.get("class_names")
        return cls(arrays, name=meta["name"], description=meta["description"], inputs=tuple(meta["inputs"]),
                   targets=tuple(meta["targets"]), kind=meta["kind"], class_names=None if cn is None else tuple(cn),
                   time=files.get("time"), info=dict(meta.get("info") or {}))


def from_arrays(arrays: dict | None = None, *, name: str = "arrays", description: str = "",
                inputs: tuple[str, ...] | None = None, targets: tuple[str, ...] | None = None,
                kind: str | None = None, class_names: tuple[str, ...] | None = None, time=None,
                **named) -> ArraySource:
    """In-memory arrays as a data source: ``from_arrays(x=X, y=y)`` or
    ``from_arrays({"features": F, "price": p}, inputs=("features",), targets=("price",))``.

    Args:
      arrays, named: the arrays by name (both may be given; names must differ); all share their leading axis.
      name, description: recorded in the Dataset (and so in every run made with it).
      inputs, targets: the names the model and the loss read. Defaults: targets the first of ``y``, ``label``,
        ``labels``, ``target``, ``targets`` present, else the last array; inputs every other array.
      kind: ``classification | regression | series``; None infers it when loaded: one 1-D integer (or string)
        target -> classification (``num_classes`` = ``len(class_names)`` or max + 1), float -> regression.
      class_names: class names for integer labels.
      time: optional ``(N,)`` timestamps of the rows (sorted by when loaded as a series).

    Returns:
      An :class:`ArraySource`; pass it to ``jaxdl.data.load(cfg, source=...)``.
    """
    merged = dict(arrays or {})
    for k in named:
        if k in merged:
            raise DataError(f"from_arrays: array {k!r} is given twice (in arrays and as a keyword)")
    merged.update(named)
    if not merged:
        raise DataError("from_arrays: no arrays given")
    out = {}
    for k, a in merged.items():
        a = np.asarray(a)
        if a.dtype == object:
            raise DataError(f"from_arrays: array {k!r} has dtype object; pass numeric (or string label) arrays")
        if a.ndim == 0:
            raise DataError(f"from_arrays: array {k!r} is a scalar; every array needs a leading example axis")
        out[k] = a
    lengths = {k: len(a) for k, a in out.items()}
    if len(set(lengths.values())) > 1:
        raise DataError("from_arrays: arrays have different lengths: "
                        + ", ".join(f"{k} {n}" for k, n in lengths.items()))
    if kind is not None and kind not in KINDS[:3]:
        raise DataError(f"from_arrays: kind must be classification, regression or series, got {kind!r}")
    names = list(out)
    for role, given in (("inputs", inputs), ("targets", targets)):
        for n in given or ():
            if n not in out:
                raise _unknown("array", n, names, f"from_arrays {role}")
    if targets is None:
        if kind == "series":
            targets = ()
        else:
            targets = next(((n,) for n in TARGET_NAMES if n in out and n not in (inputs or ())), None)
            targets = targets or ((names[-1],) if len(names) > 1 else ())
    if inputs is None:
        inputs = tuple(n for n in names if n not in targets)
    if kind != "series" and (not inputs or not targets):
        raise DataError(f"from_arrays: need at least one input and one target array, got inputs {tuple(inputs)} "
                        f"and targets {tuple(targets)} (a series: pass kind='series')")
    if time is not None:
        time = np.asarray(time)
        if time.shape != (lengths[names[0]],):
            raise DataError(f"from_arrays: time has shape {time.shape}, expected ({lengths[names[0]]},)")
    return ArraySource(out, name=name, description=description, inputs=tuple(inputs), targets=tuple(targets),
                       kind=kind, class_names=None if class_names is None else tuple(class_names), time=time)


@register_source("arrays", "any")
def _arrays_file(cfg) -> ArraySource:
    """Arrays saved with ``ArraySource.save(path)``; ``data.root`` is the ``.npz`` file."""
    if cfg.root is None:
        raise DataError("data set 'arrays' not found: it reads a .npz written by ArraySource.save(path); set "
                        "data.root=FILE")
    return ArraySource.load(cfg.root)


# --------------------------------------------------------------------------------------------------------------------
# Missing values
# --------------------------------------------------------------------------------------------------------------------


def handle_missing(arrays: dict, how: str, where: str, rows: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Deal with NaN entries of the floating arrays in ``arrays`` (all ``(N, ...)``), along the row axis.

    Args:
      how: ``error`` (raise naming ``where``, the array/column and its first missing row), ``drop`` (rows with any
        missing value), ``ffill`` (last value before it; a leading gap raises), ``interpolate`` (linear in the row
        index; leading/trailing gaps take the nearest value) or ``zero``.
      rows: how to name row ``i`` in messages (e.g. CSV line numbers); default ``i``.

    Returns:
      ``(arrays, kept)``: the new arrays and the indices of the rows kept (all of them unless ``drop``).
    """
    n = len(next(iter(arrays.values())))
    keep = np.arange(n)
    label = (lambda i: f"line {int(rows[i])}") if rows is not None else (lambda i: f"row {i}")
    bad = {k: np.isnan(a).reshape(n, -1).any(axis=1) for k, a in arrays.items()
           if np.issubdtype(a.dtype, np.floating)}
    bad = {k: m for k, m in bad.items() if m.any()}
    if not bad:
        return arrays, keep
    if how == "error":
        k, m = next(iter(bad.items()))
        raise DataError(f"{where}: column {k!r} has {int(m.sum())} missing value(s), the first at "
                        f"{label(int(np.argmax(m)))}; set data.missing to drop, ffill, interpolate or zero")
    if how == "drop":
        keep = np.flatnonzero(~np.logical_or.reduce(list(bad.values())))
        if len(keep) == 0:
            raise DataError(f"{where}: every row has a missing value; nothing is left after data.missing=drop")
        return {k: a[keep] for k, a in arrays.items()}, keep
    out = dict(arrays)
    for k in bad:
        a = np.array(arrays[k], dtype=np.float64).reshape(n, -1)
        for j in range(a.shape[1]):
            c, m = a[:, j], np.isnan(a[:, j])
            if not m.any():
                continue
            if m.all():
                raise DataError(f"{where}: column {k!r} has no values at all")
            if how == "zero":
                c[m] = 0.0
            elif how == "ffill":
                if m[0]:
                    raise DataError(f"{where}: column {k!r} starts with a missing value ({label(0)}): nothing to "
                                    "carry forward; use data.missing=interpolate or drop")
                last = np.maximum.accumulate(np.where(m, 0, np.arange(n)))
                a[:, j] = c[last]
            elif how == "interpolate":
                x = np.arange(n)
                a[:, j] = np.interp(x, x[~m], c[~m])
            else:
                raise ConfigError(f"data.missing: expected one of {', '.join(MISSING)}, got {how!r}")
        out[k] = a.reshape(arrays[k].shape).astype(arrays[k].dtype)
    return out, keep


# --------------------------------------------------------------------------------------------------------------------
# Row data sets
# --------------------------------------------------------------------------------------------------------------------


def labels_of(y: np.ndarray, class_names, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class labels as int32 ``0 .. K-1`` and their names (strings are mapped to their sorted order)."""
    if y.ndim != 1:
        raise DataError(f"{where}: classification needs 1-D labels, got shape {y.shape}")
    if y.dtype.kind in "US":
        names, y = np.unique(y, return_inverse=True)
        return y.astype(np.int32), tuple(str(v) for v in names)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{where}: classification labels must be whole numbers, got values like "
                            f"{y[~(y == np.round(y))][:3].tolist()}")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{where}: cannot use dtype {y.dtype} as class labels")
    y = y.astype(np.int64)
    k = len(class_names) if class_names else int(y.max()) + 1 if len(y) else 0
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise DataError(f"{where}: labels span {int(y.min())}..{int(y.max())}, expected 0..{k - 1}"
                        + (f" ({k} class_names)" if class_names else ""))
    names = tuple(class_names) if class_names else tuple(str(i) for i in range(k))
    return y.astype(np.int32), names


def infer_kind(src: ArraySource, targets: tuple[str, ...]) -> str:
    if src.kind is not None:
        return src.kind
    if len(targets) == 1:
        y = src.arrays[targets[0]]
        if y.ndim == 1 and (y.dtype.kind in "iubUS" or src.class_names):
            return "classification"
    return "regression"


def resolve_split(strategy: str, kind: str, name: str) -> str:
    """The concrete split strategy for ``data.split`` on a data set of this kind (``auto`` picks by kind)."""
    auto = {"classification": "stratified", "regression": "random", "series": "chronological", "text": "blocks"}
    if strategy == "auto":
        return auto[kind]
    allowed = {"classification": ("stratified", "random", "chronological"),
               "regression": ("random", "chronological"), "series": ("chronological",), "text": ("blocks",)}[kind]
    if strategy not in allowed:
        raise ConfigError(f"data.split={strategy!r} does not apply to {kind} data set {name!r}; use "
                          f"{' or '.join(('auto',) + allowed)}")
    return strategy


def _standardize_rows(train: np.ndarray, *others: np.ndarray):
    """Per-last-axis statistics of ``train`` (every axis but the last; 1-D arrays: one scalar)."""
    from jaxdl.data.core import STD_FLOOR

    axes = tuple(range(train.ndim - 1)) if train.ndim > 1 else (0,)
    mean = train.mean(axis=axes, dtype=np.float64).astype(np.float32)
    std = np.maximum(train.std(axis=axes, dtype=np.float64), STD_FLOOR).astype(np.float32)
    return mean, std, tuple(((a.astype(np.float32) - mean) / std).astype(np.float32) for a in (train, *others))


def build_rows(src: ArraySource, cfg) -> Dataset:
    """Split a row source (a table) into a :class:`Dataset` as ``cfg`` says (see :func:`jaxdl.data.load`)."""
    where = f"data set {src.name!r}"
    arrays = dict(src.arrays)
    inputs, targets = tuple(src.inputs), tuple(src.targets)
    if cfg.targets:  # pick other arrays as targets / inputs
        for n in cfg.targets + cfg.columns:
            if n not in arrays:
                raise _unknown("array", n, list(arrays), f"{where}: data.targets/data.columns")
        targets = tuple(cfg.targets)
        inputs = tuple(cfg.columns) or tuple(n for n in arrays if n not in targets)
    elif cfg.columns and not src.info.get("table"):
        raise ConfigError(f"data.columns: {where} is a set of arrays; name inputs and targets with data.targets "
                          "(and data.columns for the inputs)")
    arrays = {k: arrays[k] for k in inputs + tuple(t for t in targets if t not in inputs)}
    kind = cfg.kind or infer_kind(src, targets)
    if kind not in ("classification", "regression"):
        raise ConfigError(f"data.kind={kind!r}: {where} is a table of rows (classification or regression); "
                          "set data.context for windows of a series")
    how = cfg.missing or src.info.get("missing", "error")
    lines = src.info.get("lines")
    arrays, kept = handle_missing(arrays, how, where + (f" (file {src.info['file']!r})" if "file" in src.info else ""),
                                  rows=lines)
    time = None if src.time is None else np.asarray(src.time)[kept]

    num_classes, class_names = None, ()
    if kind == "classification":
        if len(targets) != 1:
            raise DataError(f"{where}: classification needs exactly one target array, got {targets}")
        y, class_names = labels_of(arrays[targets[0]], src.class_names, f"{where}, target {targets[0]!r}")
        arrays[targets[0]] = y
        num_classes = len(class_names)
    if src.info.get("table"):  # CSV: input columns -> one (N, F) "features" array
        feats = np.stack([arrays[c].astype(np.float32) for c in inputs], axis=1)
        tgt = {t: arrays[t] for t in targets}
        if kind == "regression":
            tgt = {t: a.astype(np.float32) for t, a in tgt.items()}
            if len(targets) > 1:
                tgt = {"targets": np.stack(list(tgt.values()), axis=1)}
        arrays, info_cols = {"features": feats, **tgt}, {"columns": list(inputs), "target_columns": list(targets)}
        inputs, targets = ("features",), tuple(tgt)
    else:
        info_cols = {}
        if kind == "regression":
            arrays.update({t: arrays[t].astype(np.float32) for t in targets if arrays[t].dtype.kind == "f"})

    n = len(next(iter(arrays.values())))
    seed = int(cfg.split_seed)
    strategy = resolve_split(cfg.split, kind, src.name)
    if strategy == "stratified":
        y = arrays[targets[0]]
        test_idx, pool = stratified_split(y, [cfg.test_fraction, 1.0 - cfg.test_fraction], [seed, 0])
        val_rel, train_rel = stratified_split(y[pool], [cfg.val_fraction, 1.0 - cfg.val_fraction], [seed, 1])
        parts = [pool[train_rel], pool[val_rel], test_idx]
        subset = lambda idx, k, key: idx[stratified_subset(y[idx], k, [seed, key])]
    elif strategy == "random":
        parts = list(random_split(n, cfg.val_fraction, cfg.test_fraction, seed))
        subset = lambda idx, k, key: np.sort(idx[np.random.default_rng([seed, key]).permutation(len(idx))[:k]])
    else:  # chronological: rows in time order (a source with timestamps is sorted by them)
        order = np.arange(n) if time is None else np.argsort(time, kind="stable")
        parts = [order[s] for s in chronological_split(n, cfg.val_fraction, cfg.test_fraction)]
        subset = lambda idx, k, key: idx[evenly_spaced(len(idx), k)]
    if cfg.train_limit is not None and cfg.train_limit < len(parts[0]):
        parts[0] = subset(parts[0], cfg.train_limit, 2)
    if cfg.eval_limit is not None:
        for j, key in ((1, 3), (2, 4)):
            if cfg.eval_limit < len(parts[j]):
                parts[j] = subset(parts[j], cfg.eval_limit, key)
    for part, idx in zip(("train", "val", "test"), parts):
        if len(idx) == 0:
            raise DataError(f"{where}: the {part} split is empty ({n} rows); change data.val_fraction / "
                            "data.test_fraction")

    splits = [{k: a[idx] for k, a in arrays.items()} for idx in parts]
    norm = {}
    if cfg.standardize:
        for k in inputs:
            if splits[0][k].dtype.kind == "f":
                mean, std, outs = _standardize_rows(*(s[k] for s in splits))
                for s, o in zip(splits, outs):
                    s[k] = o
                norm[k] = {"mean": mean, "std": std}
    for s in splits:  # float64 -> float32 (what devices hold)
        for k, a in s.items():
            if a.dtype == np.float64:
                s[k] = a.astype(np.float32)
    times = [None if time is None else time[idx] for idx in parts]
    train, val, test = (Split.rows(s, inputs=inputs, targets=targets, time=t) for s, t in zip(splits, times))
    first = norm.get(inputs[0], {})
    info = {"split": strategy, **info_cols,  # JSON-friendly: a run may record it
            "normalization": {k: {m: v.tolist() for m, v in st.items()} for k, st in norm.items()}}
    if "time_column" in src.info:
        info["time_column"] = src.info["time_column"]
    return Dataset(src.name, train, val, test, num_classes, tuple(class_names),
                   tuple(int(d) for d in splits[0][inputs[0]].shape[1:]), first.get("mean"), first.get("std"),
                   inputs=inputs, targets=targets, kind=kind, description=src.description, info=info)
