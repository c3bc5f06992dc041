"""Sweep metrics: which one ranks a sweep, in which direction, a run's values, and how swept values are named.

Shared by the tables (:mod:`jaxdl.experiment.report`) and the plots (:mod:`jaxdl.experiment.plots`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np

from jaxdl.errors import ConfigError

SPLITS = ("val", "test")
# metric names (or name parts) for which higher is better; everything else (loss, mse, perplexity …) is minimised
HIGHER_IS_BETTER = {"accuracy", "acc", "f1", "auc", "auroc", "r2", "bleu", "chrf", "precision", "recall", "iou",
                    "dice", "top1", "top5", "map", "ndcg", "mrr", "rouge"}


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
# Values: aggregates and how swept values are written
# --------------------------------------------------------------------------------------------------------------------


def _mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


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
