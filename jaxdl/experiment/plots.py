"""Sweep plots (PNG, in ``SWEEP_DIR/plots``), drawn on :class:`matplotlib.figure.Figure` objects — never pyplot,
so the user's matplotlib backend and open figures are left alone. What each plot shows: see
:mod:`jaxdl.experiment.report`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from jaxdl.experiment.metrics import _mean_std, _number, describe_values, higher_is_better, metric_mode, short_names
from jaxdl.experiment.store import SweepStore


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


MAX_SAMPLE_PANELS = 16  # configurations shown in generated_samples.png (the best by the validation score)


def generated_samples_figure(items: list[dict[str, Any]], keys: list[str], choose: str, mode: str):
    """One panel per configuration (``items`` from :func:`jaxdl.experiment.report.generative`, best first): the
    samples image of its member with the best ``choose`` (a validation score), titled with the configuration, the
    chosen run and seed, its ``choose`` value and test Fréchet distance, and what the image is. None when no
    configuration has an image."""
    import matplotlib.image

    shown = [it for it in items if it.get("_image")][:MAX_SAMPLE_PANELS]
    if not shown:
        return None
    cols = min(4, len(shown))
    nrows = math.ceil(len(shown) / cols)
    fig = _figure(3.4 * cols, 3.9 * nrows + 0.5)
    axes = np.asarray(fig.subplots(nrows, cols, squeeze=False))
    varying = [k for k in keys if len({json.dumps(it.get(k), default=str) for it in items}) > 1] or keys[:1]
    short = "val FD" if choose == "val/frechet_distance" else choose
    for ax, it in zip(axes.flat, shown):
        path, what = it["_image"]
        ax.imshow(matplotlib.image.imread(str(path)), cmap="gray")
        ax.set_axis_off()
        config = describe_values({k: it.get(k) for k in varying if it.get(k) is not None}) or "all runs"
        test = f", test FD {it['_test_fd']:.4g}" if it.get("_test_fd") is not None else ""
        seed = f" seed={it['seed']}" if it.get("seed") is not None else ""
        ax.set_title(f"#{it['rank']} {config}\n{it['chosen']}{seed}\n{short} {it['_best']:.4g}{test}\n{what}",
                     fontsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    which = "lowest" if mode == "min" else "highest"
    more = f" (best {len(shown)} of {len(items)} configurations)" if len(items) > len(shown) else ""
    fig.suptitle(f"Samples of each configuration's seed with the {which} {choose}{more}; test scores never choose",
                 fontsize=9)
    return fig


def generated_samples(items: list[dict[str, Any]], keys: list[str], choose: str, mode: str, path: Path
                      ) -> Path | None:
    fig = generated_samples_figure(items, keys, choose, mode)
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.35 / fig.get_figheight()))  # room for the suptitle
    fig.savefig(path, dpi=90)
    return path
