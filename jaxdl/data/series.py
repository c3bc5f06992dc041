"""Series: windows over a ``(T, F)`` series with a chronological split, and statsmodels' bundled real series.

An example is ``context`` steps of every column (``inputs``, ``(context, F)``) followed by the next ``horizon`` steps
of the target columns (``targets``, ``(horizon, K)``). The series is cut into three spans — training, then
validation, then test, the last ``test_fraction`` of the time line (:func:`~jaxdl.data.core.chronological_split`) —
and windows are cut within each span only, so no training or validation input or target lies after any test step.
``standardize`` uses the training span's per-column mean and std only; targets are cut from the same standardised
series, so predictions are in standardised units (``value = x * ds.std[col] + ds.mean[col]``). Per-example
timestamps (the time of the last target step) are ``split.time``, on the host only: they are never part of a batch.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np

from jaxdl.data.arrays import ArraySource, _unknown, handle_missing, register_source, resolve_split
from jaxdl.data.core import STD_FLOOR, Dataset, Split, chronological_split, evenly_spaced
from jaxdl.errors import ConfigError, DataError

DEFAULT_CONTEXT = 24


def _columns(src: ArraySource, where: str) -> dict[str, np.ndarray]:
    """Every array of ``src`` as 1-D float64 columns (a ``(T, k)`` array: columns ``name[0]`` … ``name[k-1]``)."""
    cols = {}
    for k, a in src.arrays.items():
        if a.dtype.kind not in "iufb":
            raise DataError(f"{where}: column {k!r} has dtype {a.dtype}; a series needs numbers")
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1):
            cols[k] = a.reshape(-1)
        elif a.ndim == 2:
            cols.update({f"{k}[{j}]": a[:, j] for j in range(a.shape[1])})
        else:
            raise DataError(f"{where}: array {k!r} has shape {a.shape}; a series takes (T,) or (T, k) arrays")
    return cols


def _pick(names: tuple[str, ...], cols: dict, where: str, role: str) -> list[str]:
    """Column names for ``names`` (a name may be a column or an array whose columns are ``name[j]``)."""
    out = []
    for n in names:
        hit = [c for c in cols if c == n or c.startswith(n + "[")]
        if not hit:
            raise _unknown("column", n, list(cols), f"{where}, {role}")
        out += [c for c in hit if c not in out]
    return out


def build_series(src: ArraySource, cfg) -> Dataset:
    """Windows of ``src`` (a series) split chronologically as ``cfg`` says (see :func:`jaxdl.data.load`)."""
    where = f"data set {src.name!r}" + (f" (file {src.info['file']!r})" if "file" in src.info else "")
    cols = _columns(src, where)
    if cfg.columns and not src.info.get("table"):  # a csv already read only the chosen columns
        cols = {c: cols[c] for c in _pick(tuple(cfg.columns), cols, where, "data.columns")}
    names = tuple(cfg.targets) or tuple(src.targets) or tuple(cols)
    tcols = _pick(names, cols, where, "data.targets")
    lines = src.info.get("lines")
    time = None if src.time is None else np.asarray(src.time)
    if time is not None and not src.info.get("table"):  # csv rows are already sorted
        order = np.argsort(time, kind="stable")
        cols, time = {c: a[order] for c, a in cols.items()}, time[order]
        lines = None if lines is None else np.asarray(lines)[order]
    if time is not None and len(time) > 1:
        dup = np.flatnonzero(time[1:] == time[:-1])
        if len(dup):
            i = int(dup[0])
            at = f"lines {int(lines[i])} and {int(lines[i + 1])}" if lines is not None else f"rows {i} and {i + 1}"
            raise DataError(f"{where}: duplicate timestamp {time[i]} at {at}; a series needs one row per time step")
    how = cfg.missing or src.info.get("missing", "error")
    cols, kept = handle_missing(cols, how, where, rows=lines)
    if time is not None:
        time = time[kept]

    context = cfg.context if cfg.context is not None else int(src.info.get("context", DEFAULT_CONTEXT))
    horizon, stride = int(cfg.horizon), int(cfg.stride)
    strategy = resolve_split(cfg.split, "series", src.name)
    series = np.stack(list(cols.values()), axis=1)  # (T, F)
    spans = chronological_split(len(series), cfg.val_fraction, cfg.test_fraction)
    mean = std = None
    if cfg.standardize:
        train = series[spans[0]]
        mean = train.mean(axis=0).astype(np.float32)
        std = np.maximum(train.std(axis=0), STD_FLOOR).astype(np.float32)
        series = (series - mean) / std
    series = np.ascontiguousarray(series, dtype=np.float32)
    need = context + horizon
    starts = []
    for part, sl in zip(("train", "val", "test"), spans):
        s = np.arange(sl.start, sl.stop - need + 1, stride, dtype=np.int64)
        if len(s) == 0:
            raise DataError(f"{where}: the {part} span has {sl.stop - sl.start} of {len(series)} steps, but one "
                            f"window needs context + horizon = {context} + {horizon} = {need}; lower data.context "
                            f"(or data.horizon), or change data.val_fraction / data.test_fraction")
        starts.append(s)
    if cfg.train_limit is not None:
        starts[0] = starts[0][evenly_spaced(len(starts[0]), cfg.train_limit)]
    if cfg.eval_limit is not None:
        starts[1:] = [s[evenly_spaced(len(s), cfg.eval_limit)] for s in starts[1:]]
    names_all = list(cols)
    tidx = [names_all.index(c) for c in tcols]
    train, val, test = (Split.windows(series, s, context, horizon, tidx, time) for s in starts)

    def stamp(i):
        return None if time is None else str(time[i])
    season = cfg.season if cfg.season is not None else int(src.info.get("season", 1))
    info = {"split": strategy, "columns": names_all, "target_columns": tcols, "context": context,
            "horizon": horizon, "stride": stride, "missing": how, "season": season,
            "spans": {p: {"steps": [sl.start, sl.stop], "first_time": stamp(sl.start), "last_time": stamp(sl.stop - 1)}
                      for p, sl in zip(("train", "val", "test"), spans)},
            "normalization": {} if mean is None else {"series": {"mean": mean.tolist(), "std": std.tolist()}}}
    if "time_column" in src.info:
        info["time_column"] = src.info["time_column"]
    return Dataset(src.name, train, val, test, None, (), (context, series.shape[1]), mean, std,
                   inputs=("inputs",), targets=("targets",), kind="series", description=src.description, info=info)


# --------------------------------------------------------------------------------------------------------------------
# statsmodels' bundled series
# --------------------------------------------------------------------------------------------------------------------

# name -> (module, value columns (None: every column but the time ones), renames, description, defaults)
STATSMODELS_SERIES = {
    "co2": ("co2", None, {}, "Weekly atmospheric CO2 (ppm) at Mauna Loa, 1958-2001 (statsmodels); 59 weeks are "
            "missing and are linearly interpolated by default", {"missing": "interpolate", "season": 52}),
    "elec_equip": ("elec_equip", None, {"STS.M.I7.W.TOVT.NS0016.4.000": "elec_equip"},
                   "Monthly euro-area electrical equipment orders index, 1995-2016 (statsmodels)",
                   {"context": 12, "season": 12}),
    "sunspots": ("sunspots", ("SUNACTIVITY",), {}, "Yearly sunspot activity, 1700-2008 (statsmodels)",
                 {"season": 11}),
    "nile": ("nile", ("volume",), {}, "Yearly Nile flow at Aswan (10^8 m^3), 1871-1970 (statsmodels)",
             {"context": 10}),
    "macrodata": ("macrodata", None, {}, "Quarterly US macroeconomic data, 1959-2009 (statsmodels); time is "
                  "year + (quarter - 1) / 4", {"context": 8, "season": 4}),
}


@functools.lru_cache(maxsize=None)
def _statsmodels_frame(name: str) -> tuple[dict, np.ndarray]:
    module, values, renames, _, _ = STATSMODELS_SERIES[name]
    try:
        mod = importlib.import_module(f"statsmodels.datasets.{module}")
    except ImportError:
        raise DataError(f"{name} not installed: it ships with statsmodels (pip install statsmodels)") from None
    df = mod.load_pandas().data.rename(columns=renames)
    if name in ("sunspots",):
        time = df["YEAR"].to_numpy(np.float64)
    elif name == "nile":
        time = df["year"].to_numpy(np.float64)
    elif name == "macrodata":
        time = df["year"].to_numpy(np.float64) + (df["quarter"].to_numpy(np.float64) - 1) / 4
        df = df.drop(columns=["year", "quarter"])
    else:  # a DatetimeIndex
        time = df.index.to_numpy().astype("datetime64[D]")
    cols = {c: df[c].to_numpy(np.float64) for c in (values or df.columns)}
    for a in (*cols.values(), time):
        a.flags.writeable = False  # cached and shared
    return cols, time


def _register_statsmodels(name: str) -> None:
    _, _, _, description, defaults = STATSMODELS_SERIES[name]

    def loader(cfg) -> ArraySource:
        cols, time = _statsmodels_frame(name)
        return ArraySource(dict(cols), name=name, description=description, kind="series", time=time,
                           info={"time_column": "time", **defaults})

    loader.__doc__ = description
    register_source(name, "series")(loader)


for _name in STATSMODELS_SERIES:
    _register_statsmodels(_name)


def check_series_config(cfg) -> None:
    for key in ("horizon", "stride"):
        v = getattr(cfg, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"data.{key}: expected an int >= 1, got {v!r}")
    if cfg.level not in ("none", "last"):
        raise ConfigError(f"data.level: expected 'none' or 'last', got {cfg.level!r}")
    if cfg.season is not None and (isinstance(cfg.season, bool) or not isinstance(cfg.season, int)
                                   or cfg.season < 1):
        raise ConfigError(f"data.season: expected an int >= 1 or None, got {cfg.season!r}")
    if cfg.context is not None and (isinstance(cfg.context, bool) or not isinstance(cfg.context, int)
                                    or cfg.context < 1):
        raise ConfigError(f"data.context: expected an int >= 1 or None, got {cfg.context!r}")
