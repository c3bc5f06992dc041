"""Sweep reports: a ranked table (terminal, Markdown, CSV) and plots, from the sweep database.

Plots (PNG, in ``SWEEP_DIR/plots``):
  - ``learning_curves.png``: validation accuracy against the step, one panel per group, one line per member;
  - ``<metric>_vs_<key>.png``: the final metric against each swept number (log axis when the values span more than a
    decade; seeds aggregated as mean ± std), one line per architecture;
  - ``<metric>_by_<axis>.png``: the metric for each choice of each swept category (loss, regularisation …),
    mean ± std over everything else;
  - ``best_per_architecture.png``: the best run of each architecture.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from jaxdl.errors import ConfigError
from jaxdl.experiment.store import SweepStore

FORMATS = ("rich", "md", "csv")


@dataclasses.dataclass
class Report:
    rows: list[dict[str, Any]]
    columns: list[str]
    plots: list[Path]
    markdown: Path
    csv: Path


def _metric(run: dict[str, Any], metric: str) -> float | None:
    split, name = metric.split("/", 1)
    if split == "test":
        value = (run.get("test") or {}).get(name)
    else:
        value = (run.get("final") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _lower_is_better(metric: str) -> bool:
    return "loss" in metric


def collect(store: SweepStore, metric: str) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Rows (one per run, ranked), the swept dotted keys (plain axes) and the label axes (``model``, ``reg`` …)."""
    runs = store.runs()
    label_axes = sorted({k for r in runs for k in (r["labels"] or {})}, key=lambda a: (a != "model", a))
    swept = sorted({k for r in runs for k in (r["swept"] or {})})
    rows = []
    for r in runs:
        labels, values = r["labels"] or {}, r["swept"] or {}
        row = {"run": r["id"], "status": r["status"],
               "model": labels.get("model") or r["config"]["model"]["name"],
               **{axis: labels.get(axis, "") for axis in label_axes if axis != "model"},
               **{k: values.get(k) for k in swept},
               "val/accuracy": (r.get("final") or {}).get("val/accuracy"),
               "test/accuracy": (r.get("test") or {}).get("accuracy"),
               "test/loss": (r.get("test") or {}).get("loss"),
               "wall_s": r.get("wall_s"), "group": r["group_id"], "run_dir": r["run_dir"]}
        row["_score"] = _metric(r, metric)
        rows.append(row)
    sign = 1.0 if _lower_is_better(metric) else -1.0
    rows.sort(key=lambda row: (row["status"] != "completed", row["_score"] is None,
                               sign * (row["_score"] if row["_score"] is not None else 0.0)))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows, swept, [a for a in label_axes if a != "model"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def make_report(sweep_dir: str | Path, *, metric: str = "test/accuracy", fmt: str = "rich", plots: bool = True,
                console=None, limit: int | None = 40) -> Report:
    """Print the ranked table and write report.md, report.csv and the plots. Returns what was written."""
    from rich.table import Table

    from jaxdl.experiment.plan import make_console

    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if "/" not in metric:
        raise ConfigError(f"--metric: expected split/name such as test/accuracy or val/loss, got {metric!r}")
    sweep_dir = Path(sweep_dir)
    db = sweep_dir / "sweep.db"
    if not db.is_file():
        raise ConfigError(f"{sweep_dir} is not a sweep directory (no sweep.db)")
    store = SweepStore(db)
    rows, swept, label_axes = collect(store, metric)
    columns = ["rank", "run", "status", "model", *label_axes, *swept, "val/accuracy", "test/accuracy", "test/loss",
               "wall_s"]
    md = sweep_dir / "report.md"
    csv_path = sweep_dir / "report.csv"
    md.write_text(_markdown(rows, columns, metric))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns + ["group", "run_dir"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths = make_plots(store, rows, swept, label_axes, metric, sweep_dir / "plots") if plots else []
    console = console or make_console()
    shown = rows[:limit] if limit else rows
    if fmt == "rich":
        table = Table(title=f"{sweep_dir.name}: {len(rows)} runs ranked by {metric}")
        for c in columns:
            table.add_column(c, justify="right" if c in ("rank", "val/accuracy", "test/accuracy", "test/loss",
                                                         "wall_s") else "left", overflow="fold")
        for row in shown:
            table.add_row(*[_fmt(row.get(c)) for c in columns])
        console.print(table)
    elif fmt == "md":
        console.print(_markdown(shown, columns, metric), markup=False, highlight=False)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(shown)
        console.print(buf.getvalue(), markup=False, highlight=False)
    console.print(f"table: {md}  {csv_path}")
    for p in paths:
        console.print(f"plot: {p}")
    return Report(rows, columns, paths, md, csv_path)


def _markdown(rows: list[dict[str, Any]], columns: list[str], metric: str) -> str:
    lines = [f"Ranked by {metric}.", "", "| " + " | ".join(columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def make_plots(store: SweepStore, rows, swept, label_axes, metric, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [learning_curves(store, out_dir / "learning_curves.png")]
    ok = [r for r in rows if r["_score"] is not None]
    name = metric.replace("/", "_")
    for key in swept:
        values = [r.get(key) for r in ok]
        if key == "seed" or not values:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            paths.append(metric_vs_number(ok, key, metric, out_dir / f"{name}_vs_{key.replace('.', '_')}.png"))
        else:
            paths.append(metric_by_category(ok, key, metric, out_dir / f"{name}_by_{key.replace('.', '_')}.png"))
    for axis in label_axes:
        paths.append(metric_by_category(ok, axis, metric, out_dir / f"{name}_by_{axis}.png"))
    if ok:
        paths.append(best_per_architecture(ok, metric, out_dir / "best_per_architecture.png"))
    return [p for p in paths if p is not None]


def learning_curves(store: SweepStore, path: Path, key: str = "val/accuracy") -> Path | None:
    by_group: dict[str, list[dict]] = defaultdict(list)
    for run in store.runs():
        by_group[run["group_id"]].append(run)
    if not by_group:
        return None
    plt = _plt()
    n = len(by_group)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, (gid, runs) in zip(axes.flat, sorted(by_group.items())):
        cfg = runs[0]["config"]
        for run in runs:
            recs = [r for r in store.metrics(run["id"]) if key in r]
            if recs:
                ax.plot([r["step"] for r in recs], [r[key] for r in recs], lw=1, alpha=0.8,
                        color="tab:red" if run["status"] == "diverged" else None)
        bn = "/bn" if cfg["model"].get("batch_norm") else ""
        ax.set_title(f"{cfg['model']['name']}/{cfg['loss']['name']}{bn} ({len(runs)})", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _mean_std(values):
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std()) if len(arr) > 1 else 0.0


def metric_vs_number(rows, key: str, metric: str, path: Path) -> Path:
    """Final metric against a swept number, one line per architecture, seeds aggregated as mean ± std."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    by_model: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_model[r["model"]][float(r[key])].append(r["_score"])
    xs_all = [x for m in by_model.values() for x in m]
    for model, points in sorted(by_model.items()):
        xs = sorted(points)
        stats = [_mean_std(points[x]) for x in xs]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=model)
    positive = [x for x in xs_all if x > 0]
    if positive and len(positive) == len(xs_all) and max(positive) / min(positive) > 10:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def metric_by_category(rows, key: str, metric: str, path: Path) -> Path:
    """The metric for each value of a categorical axis, per architecture (mean ± std over everything else)."""
    plt = _plt()
    cats = sorted({str(r.get(key)) for r in rows})
    models = sorted({r["model"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(cats) * max(1, len(models)) / 2), 4))
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        means, stds, xs = [], [], []
        for i, c in enumerate(cats):
            vals = [r["_score"] for r in rows if r["model"] == model and str(r.get(key)) == c]
            if vals:
                m, s = _mean_std(vals)
                means.append(m)
                stds.append(s)
                xs.append(i + j * width)
        ax.bar(xs, means, width=width, yerr=stds, capsize=3, label=model)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(cats))])
    ax.set_xticklabels(cats, rotation=20, fontsize=8)
    ax.set_xlabel(key)
    ax.set_ylabel(f"{metric} (mean ± std)")
    low = min((r["_score"] for r in rows), default=0.0)
    if not _lower_is_better(metric):
        ax.set_ylim(max(0.0, low - 0.05), None)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def best_per_architecture(rows, metric: str, path: Path) -> Path:
    plt = _plt()
    best: dict[str, dict] = {}
    lower = _lower_is_better(metric)
    for r in rows:
        cur = best.get(r["model"])
        if cur is None or (r["_score"] < cur["_score"] if lower else r["_score"] > cur["_score"]):
            best[r["model"]] = r
    models = sorted(best, key=lambda m: best[m]["_score"], reverse=not lower)
    fig, ax = plt.subplots(figsize=(max(4, 1.5 * len(models)), 4))
    bars = ax.bar(models, [best[m]["_score"] for m in models], color="tab:blue")
    for bar, m in zip(bars, models):
        ax.annotate(f"{best[m]['_score']:.4f}\n{best[m]['run']}", (bar.get_x() + bar.get_width() / 2,
                                                                    bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title("best run per architecture")
    if not lower:
        ax.set_ylim(0, 1.08)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
