"""CSV files: ``DataConfig(name="csv", root="file.csv", columns=(...), targets=(...), time_column="date")``.

A CSV is read as a table (rows; random, stratified or chronological split) or, with ``data.context`` set, as a
series (windows, chronological split — see :mod:`jaxdl.data.series`). The first line is the header. Only the chosen
columns are read. Cells that are empty or ``NA``/``NaN``/``N/A``/``null`` (any case) are missing: an error naming the
file, the column and the first line, unless ``data.missing`` says how to fill them.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from jaxdl.data.arrays import ArraySource, _unknown, register_source
from jaxdl.errors import DataError

MISSING_CELLS = frozenset({"", "na", "nan", "n/a", "null"})
_INT = re.compile(r"^[+-]?\d+$")


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_CELLS


def _numbers(cells: list[str], lines: np.ndarray, path: str, col: str) -> np.ndarray:
    out = np.empty(len(cells), dtype=np.float64)
    for i, c in enumerate(cells):
        if _is_missing(c):
            out[i] = np.nan
            continue
        try:
            out[i] = float(c)
        except ValueError:
            raise DataError(f"csv file {path!r}, column {col!r}, line {int(lines[i])}: cannot read {c!r} as a "
                            "number") from None
    return out


def _times(cells: list[str], lines: np.ndarray, path: str, col: str) -> np.ndarray:
    """Timestamps: all numbers (float64), else all ISO dates/times (``datetime64``)."""
    for i, c in enumerate(cells):
        if _is_missing(c):
            raise DataError(f"csv file {path!r}, time column {col!r}, line {int(lines[i])}: missing timestamp "
                            "(rows need a time; data.missing=drop removes such rows)")
    try:
        return np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        pass
    out = []
    for i, c in enumerate(cells):
        try:
            out.append(np.datetime64(c.strip()))
        except ValueError:
            raise DataError(f"csv file {path!r}, time column {col!r}, line {int(lines[i])}: cannot read {c!r} as a "
                            "number or an ISO date (YYYY-MM-DD[THH:MM[:SS]])") from None
    return np.array(out).astype("datetime64[s]")


def read_csv(path: str | Path, columns: tuple[str, ...] = (), targets: tuple[str, ...] = (),
             time_column: str | None = None, missing: str = "error", series: bool = False) -> ArraySource:
    """Read the chosen columns of a CSV file into an :class:`ArraySource` of 1-D columns (sorted by time).

    Args:
      columns: input columns (empty: every column but the targets and the time column).
      targets: predicted columns (empty: a table predicts its last column; a series every column).
      time_column: parsed as numbers or ISO dates; rows are sorted by it (stable) and it is not an input.
      missing: ``drop`` removes rows with a missing cell here (so class-label columns can be dropped too); the
        other modes are applied when the data set is built.
      series: read for windows (targets default to every column).

    Returns:
      An :class:`ArraySource` with ``info["table"]`` set, ``info["lines"]`` the file line of each row.
    """
    path = Path(path).expanduser()
    where = f"csv file {str(path)!r}"
    if not path.is_file():
        raise DataError(f"{where} not found; set data.root=FILE to a CSV file with a header line")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{where} is empty: expected a header line")
            header = [h.strip() for h in header]
            rows, lines = [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(header):
                    raise DataError(f"{where}, line {reader.line_num}: {len(row)} fields, the header has "
                                    f"{len(header)}")
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise DataError(f"{where} is not UTF-8 text: {e}") from None
    except csv.Error as e:
        raise DataError(f"{where}: malformed CSV: {e}") from None
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{where}: duplicate column names {dupes}")
    if not rows:
        raise DataError(f"{where} has a header but no data rows")
    for role, names in (("data.columns", columns), ("data.targets", targets),
                        ("data.time_column", (time_column,) if time_column else ())):
        for n in names:
            if n not in header:
                raise _unknown("column", n, header, f"{where}, {role}")
    if time_column and (time_column in columns or time_column in targets):
        raise DataError(f"{where}: the time column {time_column!r} cannot also be an input or target column")
    rest = [h for h in header if h != time_column]
    if not targets and not series:
        targets = (rest[-1],) if not columns else tuple(h for h in rest if h not in columns)[-1:]
        if not targets:
            raise DataError(f"{where}: no column is left to predict; set data.targets")
    if not columns:
        columns = tuple(h for h in rest if h not in targets)
    if not columns and not series:
        raise DataError(f"{where}: no input columns: every column is a target or the time column")
    cols = {h: [r[header.index(h)] for r in rows] for h in dict.fromkeys(columns + targets)}
    lines_a = np.asarray(lines, dtype=np.int64)

    arrays, kind, class_names = {}, None, None
    categorical = {}
    for h, cells in cols.items():
        present = [c for c in cells if not _is_missing(c)]
        numeric = True
        try:
            for c in present:
                float(c)
        except ValueError:
            numeric = False
        if not numeric and not series and tuple(targets) == (h,):
            categorical[h] = np.array([c.strip() for c in cells])  # class names, e.g. "setosa"
        else:
            arrays[h] = _numbers(cells, lines_a, str(path), h)
            if not series and tuple(targets) == (h,) and present and all(_INT.match(c.strip()) for c in present):
                kind = "classification"  # integer labels; data.kind=regression overrides
    drop = np.zeros(len(rows), bool)
    for h, a in categorical.items():
        gaps = np.array([_is_missing(c) for c in cols[h]])
        if gaps.any() and missing != "drop":
            raise DataError(f"{where}: column {h!r} has {int(gaps.sum())} missing class label(s), the first at "
                            f"line {int(lines_a[np.argmax(gaps)])}; set data.missing=drop to remove those rows")
        drop |= gaps
        kind = "classification"
    time = None
    if time_column:
        tcells = [r[header.index(time_column)] for r in rows]
        if missing == "drop":
            drop |= np.array([_is_missing(c) for c in tcells])
        keep = np.flatnonzero(~drop)
        time = _times([tcells[i] for i in keep], lines_a[keep], str(path), time_column)
    keep = np.flatnonzero(~drop)
    arrays = {h: (categorical[h] if h in categorical else arrays[h])[keep] for h in cols}
    lines_a = lines_a[keep]
    if time is not None:
        order = np.argsort(time, kind="stable")
        arrays = {h: a[order] for h, a in arrays.items()}
        time, lines_a = time[order], lines_a[order]
    info = {"table": True, "file": str(path), "lines": lines_a, "missing": "error"}
    if time_column:
        info["time_column"] = time_column
    return ArraySource(arrays, name=path.stem, description=f"CSV file {path.name}",
                       inputs=tuple(columns), targets=tuple(targets), kind="series" if series else kind,
                       class_names=class_names, time=time, info=info)


@register_source("csv", "any")
def csv_source(cfg) -> ArraySource:
    """A CSV file (``data.root``): a table, or with ``data.context`` set a series."""
    if cfg.root is None:
        raise DataError("data set 'csv' not found: set data.root=FILE to a CSV file with a header line")
    series = cfg.context is not None or cfg.kind == "series"
    return read_csv(cfg.root, tuple(cfg.columns), tuple(cfg.targets), cfg.time_column, cfg.missing or "error",
                    series=series)
