"""Sweep reports: a ranked table, a per-configuration table aggregating seeds (terminal, Markdown, CSV) and plots,
from the sweep database.

Runs are ranked by a **validation** metric: by default the metric the runs monitored (``summary["monitor"]``;
else ``val/accuracy`` when the runs have it, else ``val/loss``), in the direction the monitor names (else: higher is
better for accuracy-like names — accuracy, f1, auc, r2, bleu … — lower for everything else). The test value of the
same metric is shown beside it and never used to choose: choosing by test accuracy is test-set leakage. Every value
in a row comes from ``summary["val"]`` / ``summary["test"]``, evaluated on the same variables (the best checkpoint
when it was restored, else the final ones).

Plots (PNG, in ``SWEEP_DIR/plots``; drawn on :class:`matplotlib.figure.Figure` objects — the user's matplotlib
backend is never touched):
  - ``learning_curves.png``: the ranking metric's validation curve against the step, one panel per group, one line
    per member, a legend naming each member by its swept values;
  - ``<metric>_vs_<key>.png``: the metric against each swept number (log axis when the values span two decades or
    more), one line per architecture, mean ± std over what the plot pools (its title says what: seeds alone, or
    seeds and the other swept axes);
  - ``<metric>_by_<axis>.png``: the metric for each choice of each swept category (loss, regularisation …);
  - ``best_per_architecture.png``: the best run of each architecture.
A bar plot that would have a single bar is not drawn.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

from jaxdl.errors import ConfigError
from jaxdl.experiment.metrics import (  # noqa: F401 — re-exported: the report's public names
    HIGHER_IS_BETTER, SPLITS, _format_value, _mean_std, _number, _pair, available_metrics, check_metric,
    default_metric, describe_values, higher_is_better, metric_columns, metric_mode, metric_value, short_names)
from jaxdl.experiment.plots import (  # noqa: F401 — re-exported
    best_per_architecture, best_per_architecture_figure, learning_curves, learning_curves_figure, log_axis,
    make_plots, metric_by_category, metric_by_category_figure, metric_vs_number, metric_vs_number_figure,
    pooled_description)
from jaxdl.console import PIPE_WIDTH, make_console  # noqa: F401  (re-exported)
from jaxdl.experiment.store import FINISHED, SweepStore

FORMATS = ("rich", "md", "csv")


@dataclasses.dataclass
class Report:
    rows: list[dict[str, Any]]
    columns: list[str]
    plots: list[Path]
    markdown: Path
    csv: Path
    metric: str = "val/loss"
    mode: str = "min"
    by_config: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    by_config_columns: list[str] = dataclasses.field(default_factory=list)
    by_config_csv: Path | None = None


# --------------------------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------------------------


def _load_runs(store: SweepStore) -> list[dict[str, Any]]:
    """The store's runs; a finished run recorded before the store kept ``val``/``monitor`` gets them from its
    ``summary.json``."""
    runs = store.runs()
    for r in runs:
        if r.get("val") is None and r["status"] in FINISHED and r.get("run_dir"):
            try:
                summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
            except (OSError, ValueError):
                continue
            r["val"] = summary.get("val")
            r["monitor"] = r.get("monitor") or summary.get("monitor")
    return runs


def collect(store: SweepStore, metric: str | None = None, runs: list[dict[str, Any]] | None = None
            ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Rows (one per run, ranked by ``metric``, default :func:`default_metric`), the swept dotted keys (plain axes)
    and the label axes other than ``model`` (``reg`` …)."""
    runs = _load_runs(store) if runs is None else runs
    metric = metric or default_metric(runs)
    mode = metric_mode(metric, runs)
    label_axes = sorted({k for r in runs for k in (r["labels"] or {})}, key=lambda a: (a != "model", a))
    label_axes = [a for a in label_axes if a != "model"]
    swept = sorted({k for r in runs for k in (r["swept"] or {})})
    values_cols = metric_columns(metric, runs)
    rows = []
    for r in runs:
        labels, values = r["labels"] or {}, r["swept"] or {}
        model = labels.get("model") or ((r.get("config") or {}).get("model") or {}).get("name", "")
        row = {"run": r["id"], "status": r["status"], "model": model,
               **{axis: labels.get(axis, "") for axis in label_axes},
               **{k: values.get(k) for k in swept},
               **{c: metric_value(r, c) for c in values_cols},
               "wall_s": r.get("wall_s"), "group": r["group_id"], "run_dir": r["run_dir"],
               "error": ((r.get("error") or "").strip().splitlines() or [""])[-1]}
        row["_score"] = metric_value(r, metric)
        # what the run varies: its label choices (but the architecture, which plots keep apart) and swept values
        row["_axes"] = {**{a: labels[a] for a in label_axes if a in labels},
                        **{k: values[k] for k in swept if k in values}}
        rows.append(row)
    sign = -1.0 if mode == "max" else 1.0
    rows.sort(key=lambda row: (row["status"] != "completed", row["_score"] is None,
                               sign * (row["_score"] if row["_score"] is not None else 0.0)))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows, swept, label_axes


def by_config(rows: list[dict[str, Any]], swept: list[str], label_axes: list[str], metric: str, mode: str,
              columns: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per configuration (every swept value and label but ``seed``): mean ± std over its seeds of the
    ranking metric and its counterpart on the other split, and ``n`` (seeds with a value). Ranked by the mean."""
    keys = ["model", *label_axes, *[k for k in swept if k != "seed"]]
    pair = [c for c in _pair(metric) if c in columns]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "failed":
            continue
        groups.setdefault(json.dumps([row.get(k) for k in keys], default=str), []).append(row)
    out = []
    for members in groups.values():
        item = {k: members[0].get(k) for k in keys}
        for c in pair:
            vals = [m[c] for m in members if m.get(c) is not None]
            item[f"{c} mean"], item[f"{c} std"] = _mean_std(vals) if vals else (None, None)
        item["n"] = sum(1 for m in members if m.get(metric) is not None)
        item["seeds"] = ",".join(str(m.get("seed")) for m in members if "seed" in m and m.get(metric) is not None)
        out.append(item)
    sign = -1.0 if mode == "max" else 1.0
    out.sort(key=lambda it: (it[f"{metric} mean"] is None, sign * (it[f"{metric} mean"] or 0.0)))
    for rank, it in enumerate(out, 1):
        it["rank"] = rank
    return out, ["rank", *keys, *[f"{c} {s}" for c in pair for s in ("mean", "std")], "n"]


def baselines(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the baselines the task computed beside the runs (``summary["baselines"]``: naive, seasonal-naive and
    drift forecasts; unigram and bigram language models), one per baseline and data setup (runs that share their data
    share their baselines), with a ``split/metric`` column for each value."""
    rows, seen, columns = [], set(), set()
    for r in runs:
        if r["status"] not in FINISHED or not r.get("run_dir"):
            continue
        try:
            summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        found = summary.get("baselines")
        if not found:
            continue
        data = (r.get("config") or {}).get("data") or {}
        keys = {"forecast": ("name", "context", "horizon", "season"),
                "language_model": ("name", "block_size")}.get(summary.get("task"), ("name",))
        setup = ", ".join(f"{k}={data[k]}" for k in keys if data.get(k) is not None)
        key = json.dumps([setup, found], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        names = sorted({n for split in SPLITS for n in (found.get(split) or {})})
        for name in names:
            row: dict[str, Any] = {"baseline": name, "data": setup}
            for split in SPLITS:
                for m, v in ((found.get(split) or {}).get(name) or {}).items():
                    row[f"{split}/{m}"] = v
                    columns.add(f"{split}/{m}")
            rows.append(row)
    order = sorted(columns, key=lambda c: (c.split("/")[1], c.split("/")[0] != "val"))
    return rows, ["baseline", "data", *order]


# --------------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def _display_config_rows(items, columns) -> tuple[list[dict[str, str]], list[str]]:
    """Per-configuration rows for people: ``mean ± std`` in one cell."""
    shown_cols, rows = [], []
    for c in columns:
        if c.endswith(" std"):
            continue
        shown_cols.append(c[:-5] + " (mean ± std)" if c.endswith(" mean") else c)
    for it in items:
        row = {}
        for c in columns:
            if c.endswith(" std"):
                continue
            if c.endswith(" mean"):
                base = c[:-5]
                m, s = it.get(c), it.get(f"{base} std")
                row[base + " (mean ± std)"] = "-" if m is None else f"{m:.4g} ± {s:.2g}"
            else:
                row[c] = _fmt(it.get(c))
        rows.append(row)
    return rows, shown_cols


def _md_cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def _ranking_note(metric: str, mode: str) -> str:
    best = "higher" if mode == "max" else "lower"
    split, _, name = metric.partition("/")
    if split == "val":
        return (f"Ranked by {metric} ({best} is better). test/{name} is the held-out result of the same variables, "
                "shown beside it and never used to choose.")
    return f"Ranked by {metric} ({best} is better) as asked: choosing by a test metric leaks the test set."


def _markdown(rows, columns, metric, mode, config_rows=None, config_columns=None, base=None) -> str:
    lines = [_ranking_note(metric, mode), "", *_md_table(rows, columns)]
    if config_rows is not None:
        shown, cols = _display_config_rows(config_rows, config_columns)
        lines += ["", f"Per configuration: mean ± std (sample std) over seeds of {metric}, n seeds each; ranked by "
                  "the mean.", "", *_md_table(shown, cols)]
    if base and base[0]:
        lines += ["", BASELINE_NOTE, "", *_md_table(*base)]
    return "\n".join(lines) + "\n"


BASELINE_NOTE = "Baselines computed by the library on the same data, split and horizon (no training, no choice):"


def _csv_text(rows, columns) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def make_report(sweep_dir: str | Path, *, metric: str | None = None, fmt: str = "rich", plots: bool = True,
                console=None, limit: int | None = 40) -> Report:
    """Print the ranked and per-configuration tables and write report.md, report.csv, report_by_config.csv and the
    plots. ``metric``: ranking metric (``val/…`` or ``test/…``), default the runs' monitored validation metric.
    Raises ConfigError (and writes nothing) for a metric no run has."""
    from rich.table import Table

    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    sweep_dir = Path(sweep_dir)
    db = sweep_dir / "sweep.db"
    runs_dir = sweep_dir / "runs"
    if not db.is_file() and not (runs_dir.is_dir() and any((d / "sweep.json").is_file() or (d / "config.json")
                                                           .is_file() for d in runs_dir.iterdir())):
        raise ConfigError(f"{sweep_dir} is not a sweep directory (no sweep.db, no run directories)")
    store = SweepStore(db)  # checked on open: a damaged or missing database is rebuilt from the run directories
    store.reconcile()  # a finished run whose directory is gone is pending again, not reported as completed
    runs = _load_runs(store)
    if metric is not None:
        check_metric(metric, runs)
    metric = metric or default_metric(runs)
    mode = metric_mode(metric, runs)
    rows, swept, label_axes = collect(store, metric, runs)
    values_cols = metric_columns(metric, runs)
    columns = ["rank", "run", "status", "model", *label_axes, *swept, *values_cols, "wall_s"]
    configs, config_cols = by_config(rows, swept, label_axes, metric, mode, values_cols)
    base = baselines(runs)

    md = sweep_dir / "report.md"
    csv_path = sweep_dir / "report.csv"
    config_csv = sweep_dir / "report_by_config.csv"
    md.write_text(_markdown(rows, columns, metric, mode, configs, config_cols, base))
    csv_path.write_text(_csv_text(rows, columns + ["group", "run_dir", "error"]))
    config_csv.write_text(_csv_text(configs, config_cols))
    paths = make_plots(store, rows, swept, label_axes, metric, sweep_dir / "plots", runs=runs) if plots else []

    console = console or make_console()
    # with --format md/csv stdout holds only the tables; where the files went is said on stderr
    info = console if fmt == "rich" or console.stderr else make_console(stderr=True)
    shown = rows[:limit] if limit else rows
    if fmt == "rich":
        table = Table(title=f"{sweep_dir.name}: {len(rows)} runs ranked by {metric} ({mode})")
        numeric = {"rank", "wall_s", *values_cols}
        for c in columns:
            table.add_column(c, justify="right" if c in numeric else "left")
        for row in shown:
            table.add_row(*[_fmt(row.get(c)) for c in columns])
        console.print(table)
        console.print(_ranking_note(metric, mode), soft_wrap=True, markup=False, highlight=False)
        shown_cfg, cfg_cols = _display_config_rows(configs, config_cols)
        ctable = Table(title=f"{len(configs)} configurations: mean ± std over seeds (n seeds each), ranked by "
                             f"{metric}")
        for c in cfg_cols:
            ctable.add_column(c, justify="right" if c in ("rank", "n") or "mean" in c else "left")
        for row in shown_cfg[:limit] if limit else shown_cfg:
            ctable.add_row(*[row.get(c, "-") for c in cfg_cols])
        console.print(ctable)
        if base[0]:
            btable = Table(title=BASELINE_NOTE)
            for c in base[1]:
                btable.add_column(c, justify="left" if c in ("baseline", "data") else "right")
            for row in base[0]:
                btable.add_row(*[_fmt(row.get(c)) for c in base[1]])
            console.print(btable)
    elif fmt == "md":
        shown_cfg = configs[:limit] if limit else configs
        console.print(_markdown(shown, columns, metric, mode, shown_cfg, config_cols, base), markup=False,
                      highlight=False, soft_wrap=True, emoji=False)
    else:
        console.print(_csv_text(shown, columns).rstrip("\n"), markup=False, highlight=False, soft_wrap=True,
                      emoji=False)
    info.print(f"table: {md}  {csv_path}  {config_csv}", soft_wrap=True, markup=False, highlight=False)
    for p in paths:
        info.print(f"plot: {p}", soft_wrap=True, markup=False, highlight=False)
    return Report(rows, columns, paths, md, csv_path, metric, mode, configs, config_cols, config_csv)
