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
import math
import re
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from jaxdl.errors import ConfigError
from jaxdl.experiment.store import FINISHED, SweepStore

FORMATS = ("rich", "md", "csv")
SPLITS = ("val", "test")
# metric names (or name parts) for which higher is better; everything else (loss, mse, perplexity …) is minimised
HIGHER_IS_BETTER = {"accuracy", "acc", "f1", "auc", "auroc", "r2", "bleu", "chrf", "precision", "recall", "iou",
                    "dice", "top1", "top5", "map", "ndcg", "mrr", "rouge"}


# when the output is not a terminal (a pipe, a log file, CI) rich would assume 80 columns and wrap tables and long
# lines; this is wide enough for any table, which rich draws at its natural width
PIPE_WIDTH = 10_000


def make_console(stderr: bool = False):
    """A rich console on stdout (or stderr); when the output is not a terminal nothing is wrapped: tables take their
    natural width and long lines stay one line."""
    from rich.console import Console

    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)


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
# Metrics: which one ranks, in which direction, and their values
# --------------------------------------------------------------------------------------------------------------------


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` (``val/accuracy``, ``test/rmse``, ``bleu`` …) are better, by its name."""
    name = metric.split("/", 1)[-1].lower()
    parts = [p for p in re.split(r"[^a-z0-9]+", name) if p]
    return any(p in HIGHER_IS_BETTER or p.endswith("accuracy") for p in parts)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def metric_value(run: dict[str, Any], metric: str) -> float | None:
    """``val/x`` or ``test/x`` of a run: ``run["val"]["x"]`` / ``run["test"]["x"]`` (same variables); None if absent
    or not finite."""
    split, _, name = metric.partition("/")
    if split not in SPLITS:
        return None
    return _number((run.get(split) or {}).get(name))


def available_metrics(runs: list[dict[str, Any]]) -> list[str]:
    """Every ``val/…`` and ``test/…`` metric at least one run has a finite value of (validation first)."""
    found = {f"{split}/{name}" for r in runs for split in SPLITS for name, v in (r.get(split) or {}).items()
             if _number(v) is not None}
    return sorted(found, key=lambda m: (SPLITS.index(m.split("/", 1)[0]), m))


def _monitors(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for r in runs if isinstance(m := r.get("monitor"), dict) and isinstance(m.get("name"), str)]


def default_metric(runs: list[dict[str, Any]]) -> str:
    """The runs' monitored validation metric (the most common ``monitor`` of their summaries; a monitored training
    metric ranks by its validation counterpart); else ``val/accuracy`` if any run has it, else ``val/loss``."""
    available = set(available_metrics(runs))
    names = Counter(m["name"] for m in _monitors(runs))
    for name, _ in names.most_common():
        candidate = "val/" + name.split("/", 1)[-1]
        if candidate in available:
            return candidate
    return "val/accuracy" if "val/accuracy" in available else "val/loss"


def metric_mode(metric: str, runs: list[dict[str, Any]] = ()) -> str:
    """``max`` or ``min``: the ``mode`` of a run's monitor naming this metric (any split), else by the name."""
    name = metric.split("/", 1)[-1]
    for m in _monitors(runs):
        if m["name"].split("/", 1)[-1] == name and m.get("mode") in ("min", "max"):
            return m["mode"]
    return "max" if higher_is_better(metric) else "min"


def check_metric(metric: str, runs: list[dict[str, Any]]) -> None:
    """ConfigError naming the metric, the closest available ones and all available ones, unless some run has it."""
    from jaxdl.registry import closest

    available = available_metrics(runs)
    if metric in available:
        return
    hints = closest(metric, available) or [m for m in (f"val/{metric}", f"test/{metric}") if m in available]
    msg = f"--metric {metric}: no run has it"
    if hints:
        msg += f" (did you mean {' or '.join(repr(h) for h in hints)}?)"
    raise ConfigError(msg + f"; available: {', '.join(available) or 'none (no run has finished)'}")


def _pair(metric: str) -> list[str]:
    """The ranking metric's column, then the same metric on the other split (``val/x`` → ``test/x``)."""
    split, _, name = metric.partition("/")
    other = "test" if split == "val" else "val"
    return [metric, f"{other}/{name}"]


def metric_columns(metric: str, runs: list[dict[str, Any]]) -> list[str]:
    """Ranking metric, its counterpart on the other split, then ``val/loss`` and ``test/loss`` — those the runs
    have (the ranking metric is always shown)."""
    available = set(available_metrics(runs))
    cols = []
    for c in [*_pair(metric), "val/loss", "test/loss"]:
        if c not in cols and (c == metric or c in available):
            cols.append(c)
    return cols


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


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def short_names(keys) -> dict[str, str]:
    """Each dotted key by its last part (``optim.lr`` → ``lr``) unless two keys share it."""
    keys = list(keys)
    last = Counter(k.rsplit(".", 1)[-1] for k in keys)
    return {k: k.rsplit(".", 1)[-1] if last[k.rsplit(".", 1)[-1]] == 1 else k for k in keys}


def describe_values(values: dict[str, Any], keys=None) -> str:
    """``lr=0.001 seed=0``: the given axes' values (all by default) with short key names."""
    keys = list(values) if keys is None else [k for k in keys if k in values]
    names = short_names(keys)
    return " ".join(f"{names[k]}={_format_value(values[k])}" for k in keys)


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


def _mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


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


def _markdown(rows, columns, metric, mode, config_rows=None, config_columns=None) -> str:
    lines = [_ranking_note(metric, mode), "", *_md_table(rows, columns)]
    if config_rows is not None:
        shown, cols = _display_config_rows(config_rows, config_columns)
        lines += ["", f"Per configuration: mean ± std (sample std) over seeds of {metric}, n seeds each; ranked by "
                  "the mean.", "", *_md_table(shown, cols)]
    return "\n".join(lines) + "\n"


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
    if not db.is_file():
        raise ConfigError(f"{sweep_dir} is not a sweep directory (no sweep.db)")
    store = SweepStore(db)
    runs = _load_runs(store)
    if metric is not None:
        check_metric(metric, runs)
    metric = metric or default_metric(runs)
    mode = metric_mode(metric, runs)
    rows, swept, label_axes = collect(store, metric, runs)
    values_cols = metric_columns(metric, runs)
    columns = ["rank", "run", "status", "model", *label_axes, *swept, *values_cols, "wall_s"]
    configs, config_cols = by_config(rows, swept, label_axes, metric, mode, values_cols)

    md = sweep_dir / "report.md"
    csv_path = sweep_dir / "report.csv"
    config_csv = sweep_dir / "report_by_config.csv"
    md.write_text(_markdown(rows, columns, metric, mode, configs, config_cols))
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
    elif fmt == "md":
        shown_cfg = configs[:limit] if limit else configs
        console.print(_markdown(shown, columns, metric, mode, shown_cfg, config_cols), markup=False,
                      highlight=False, soft_wrap=True, emoji=False)
    else:
        console.print(_csv_text(shown, columns).rstrip("\n"), markup=False, highlight=False, soft_wrap=True,
                      emoji=False)
    info.print(f"table: {md}  {csv_path}  {config_csv}", soft_wrap=True, markup=False, highlight=False)
    for p in paths:
        info.print(f"plot: {p}", soft_wrap=True, markup=False, highlight=False)
    return Report(rows, columns, paths, md, csv_path, metric, mode, configs, config_cols, config_csv)


# --------------------------------------------------------------------------------------------------------------------
# Plots: drawn on Figure objects (never pyplot), so the user's backend and open figures are left alone
# --------------------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save(fig, path: Path | None) -> Path | None:
    if fig is None or path is None:
        return None
    with warnings.catch_warnings():  # long legends or labels: tight_layout does what it can
        warnings.filterwarnings("ignore", message="Tight layout not applied")
        fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def _validation_key(metric: str) -> str:
    return "val/" + metric.split("/", 1)[-1]


def make_plots(store: SweepStore, rows, swept, label_axes, metric, out_dir: Path, runs=None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [learning_curves(store, out_dir / "learning_curves.png", key=_validation_key(metric), runs=runs)]
    ok = [r for r in rows if r["_score"] is not None]
    mode = metric_mode(metric, runs or [])
    name = metric.replace("/", "_")
    for key in swept:
        values = [r.get(key) for r in ok]
        if key == "seed" or not values:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            paths.append(metric_vs_number(ok, key, metric, out_dir / f"{name}_vs_{key.replace('.', '_')}.png"))
        else:
            paths.append(metric_by_category(ok, key, metric, out_dir / f"{name}_by_{key.replace('.', '_')}.png",
                                            mode=mode))
    for axis in label_axes:
        paths.append(metric_by_category(ok, axis, metric, out_dir / f"{name}_by_{axis}.png", mode=mode))
    if ok:
        paths.append(best_per_architecture(ok, metric, out_dir / "best_per_architecture.png", mode=mode))
    return [p for p in paths if p is not None]


def _member_label(run: dict[str, Any], varying: list[str]) -> str:
    values = {**{a: v for a, v in (run.get("labels") or {}).items() if a != "model"}, **(run.get("swept") or {})}
    return describe_values(values, varying or None) or run["id"]


def learning_curves_figure(runs: list[dict[str, Any]], metrics: dict[str, list[dict[str, Any]]], key: str):
    """One panel per group, one line per member (``key`` against the step), each member named in a legend by the
    swept values that differ within its group. None when there are no runs."""
    by_group: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_group[run["group_id"]].append(run)
    if not by_group:
        return None
    n = len(by_group)
    cols = min(4, n)
    nrows = math.ceil(n / cols)
    fig = _figure(4.5 * cols, 3.5 * nrows)
    axes = np.asarray(fig.subplots(nrows, cols, squeeze=False))
    for ax, (gid, members) in zip(axes.flat, sorted(by_group.items())):
        cfg = members[0].get("config") or {}
        model, loss = cfg.get("model") or {}, cfg.get("loss") or {}
        values = [{**{a: v for a, v in (m.get("labels") or {}).items() if a != "model"}, **(m.get("swept") or {})}
                  for m in members]
        keys = sorted({k for v in values for k in v})
        varying = [k for k in keys if len({json.dumps(v.get(k), default=str) for v in values}) > 1]
        for run in members:
            recs = [r for r in metrics.get(run["id"], []) if _number(r.get(key)) is not None]
            if not recs:
                continue
            label = _member_label(run, varying)
            diverged = run["status"] == "diverged"
            ax.plot([r["step"] for r in recs], [r[key] for r in recs], lw=1, alpha=0.85,
                    label=label + (" (diverged)" if diverged else ""), **({"color": "tab:red"} if diverged else {}))
        bn = "/bn" if model.get("batch_norm") else ""
        name = (members[0].get("labels") or {}).get("model") or model.get("name", gid)
        ax.set_title(f"{name}/{loss.get('name', '')}{bn} ({len(members)})", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=6, ncol=1 if len(members) <= 8 else 2)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig


def learning_curves(store: SweepStore, path: Path, key: str = "val/accuracy", runs=None) -> Path | None:
    runs = store.runs() if runs is None else runs
    return _save(learning_curves_figure(runs, {r["id"]: store.metrics(r["id"]) for r in runs}, key), path)


def pooled_description(rows, held: set[str], counts: list[int]) -> str:
    """What a plotted mean ± std aggregates: ``mean ± std over seeds (n=3)`` when only seeds vary among the runs a
    point pools, else e.g. ``mean ± std over seeds and lr, weight_decay (n=12)``; empty when nothing is pooled."""
    axes = sorted({a for r in rows for a in r.get("_axes", {})} - held - {"model"})
    pooled = [a for a in axes if len({json.dumps(r.get("_axes", {}).get(a), default=str) for r in rows}) > 1]
    if not counts or max(counts) <= 1:
        return ""
    n = f"n={counts[0]}" if min(counts) == max(counts) else f"n={min(counts)}–{max(counts)}"
    names = short_names([a for a in pooled if a != "seed"])
    others = sorted(names, key=names.get)
    if not others:
        what = "seeds" if "seed" in pooled else "runs"
    elif "seed" in pooled:
        what = "seeds and " + ", ".join(names[a] for a in others)
    else:
        what = ", ".join(names[a] for a in others)
    return f"mean ± std over {what} ({n})"


def log_axis(values) -> bool:
    """A log axis for positive values spanning two decades or more (lr 1e-4 … 1e-1)."""
    values = [float(v) for v in values]
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 100


def metric_vs_number_figure(rows, key: str, metric: str):
    """The metric against a swept number, one line per architecture, mean ± std over the runs at each value."""
    by_model: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_model[r["model"]][float(r[key])].append(r["_score"])
    xs_all = sorted({x for m in by_model.values() for x in m})
    if len(xs_all) < 2:
        return None
    fig = _figure(6, 4)
    ax = fig.subplots()
    counts = []
    for model, points in sorted(by_model.items()):
        xs = sorted(points)
        stats = [_mean_std(points[x]) for x in xs]
        counts += [len(points[x]) for x in xs]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=model)
    if log_axis(xs_all):
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(pooled_description(rows, {key}, counts) or f"{metric} per run", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def metric_vs_number(rows, key: str, metric: str, path: Path) -> Path | None:
    return _save(metric_vs_number_figure(rows, key, metric), path)


def _unit_interval(values) -> bool:
    return all(0.0 <= v <= 1.0 for v in values)


def metric_by_category_figure(rows, key: str, metric: str, mode: str | None = None):
    """Bars: the metric for each value of a categorical axis, per architecture (mean ± std over the runs pooled).
    None when there would be a single bar."""
    mode = mode or ("max" if higher_is_better(metric) else "min")
    value = lambda r: str(r.get(key, r.get("_axes", {}).get(key)))  # noqa: E731
    cats = sorted({value(r) for r in rows})
    models = sorted({r["model"] for r in rows})
    bars = {(m, c): [r["_score"] for r in rows if r["model"] == m and value(r) == c] for m in models for c in cats}
    if sum(1 for v in bars.values() if v) < 2:
        return None
    fig = _figure(max(5, 1.2 * len(cats) * max(1, len(models)) / 2), 4)
    ax = fig.subplots()
    width = 0.8 / max(1, len(models))
    counts = []
    for j, model in enumerate(models):
        means, stds, xs = [], [], []
        for i, c in enumerate(cats):
            vals = bars[(model, c)]
            if vals:
                m, s = _mean_std(vals)
                means.append(m)
                stds.append(s)
                xs.append(i + j * width)
                counts.append(len(vals))
        ax.bar(xs, means, width=width, yerr=stds, capsize=3, label=model)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(cats))])
    ax.set_xticklabels(cats, rotation=20, fontsize=8)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(pooled_description(rows, {key}, counts) or f"{metric} per run", fontsize=9)
    scores = [r["_score"] for r in rows]
    if mode == "max" and _unit_interval(scores):
        ax.set_ylim(max(0.0, min(scores) - 0.05), None)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig


def metric_by_category(rows, key: str, metric: str, path: Path, mode: str | None = None) -> Path | None:
    return _save(metric_by_category_figure(rows, key, metric, mode), path)


def best_per_architecture_figure(rows, metric: str, mode: str | None = None):
    """Bars: each architecture's best run by ``metric``. None for a single architecture (one bar)."""
    lower = (mode or ("max" if higher_is_better(metric) else "min")) == "min"
    best: dict[str, dict] = {}
    for r in rows:
        cur = best.get(r["model"])
        if cur is None or (r["_score"] < cur["_score"] if lower else r["_score"] > cur["_score"]):
            best[r["model"]] = r
    if len(best) < 2:
        return None
    models = sorted(best, key=lambda m: best[m]["_score"], reverse=not lower)
    fig = _figure(max(4, 1.5 * len(models)), 4)
    ax = fig.subplots()
    bars = ax.bar(models, [best[m]["_score"] for m in models], color="tab:blue")
    for bar, m in zip(bars, models):
        ax.annotate(f"{best[m]['_score']:.4g}\n{best[m]['run']}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(f"best run per architecture ({'lowest' if lower else 'highest'} {metric})", fontsize=9)
    ax.margins(y=0.2)
    return fig


def best_per_architecture(rows, metric: str, path: Path, mode: str | None = None) -> Path | None:
    return _save(best_per_architecture_figure(rows, metric, mode), path)
