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
  - ``best_per_architecture.png``: the best run of each architecture;
  - ``generated_samples.png`` (generative runs: those with ``summary["scores"]`` or sample images): per
    configuration, the samples of the member (seed) with the best VALIDATION score — ``val/frechet_distance`` when
    the runs were scored, else the validation counterpart of the ranking metric (``val/nelbo`` …), never a test
    number. The image is the run's final samples PNG (``*samples*.png`` in its directory, drawn from the variables
    its scores come from), else its last per-evaluation grid (``samples/step_*.png``); each panel says which.
A bar plot that would have a single bar is not drawn.

Generative runs also get a per-configuration table of their scores (``summary["scores"]``, see
:mod:`jaxdl.tasks.generative`): mean ± std over seeds of ``val/frechet_distance`` (the ranking) beside
``test/frechet_distance``, ``test/precision``, ``test/recall`` (and ``test/conditional_accuracy`` for
class-conditional models), the chosen member and its image, in ``report.md`` and ``report_generative.csv``. Those
scores also become metrics of the runs (``--metric val/frechet_distance`` ranks the main table by them).
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
    _validation_key, best_per_architecture, best_per_architecture_figure, generated_samples,
    generated_samples_figure, learning_curves, learning_curves_figure, log_axis, make_plots, metric_by_category,
    metric_by_category_figure, metric_vs_number, metric_vs_number_figure, pooled_description)
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
    generative: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one row per configuration
    generative_columns: list[str] = dataclasses.field(default_factory=list)
    generative_csv: Path | None = None
    samples_figure: Path | None = None


# --------------------------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------------------------


def _read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _load_runs(store: SweepStore) -> list[dict[str, Any]]:
    """The store's runs; a finished run recorded before the store kept ``val``/``monitor`` gets them from its
    ``summary.json``, and a generative run its scores and samples image (:func:`_attach_generative`)."""
    runs = store.runs()
    for r in runs:
        if r["status"] not in FINISHED or not r.get("run_dir"):
            continue
        summary = _read_summary(r["run_dir"])
        if summary is None:
            continue
        if r.get("val") is None:
            r["val"] = summary.get("val")
            r["monitor"] = r.get("monitor") or summary.get("monitor")
        _attach_generative(r, summary)
    return runs


# --------------------------------------------------------------------------------------------------------------------
# Generative runs: scores and samples
# --------------------------------------------------------------------------------------------------------------------

GEN_SCORES = ("frechet_distance", "precision", "recall", "conditional_accuracy")
GEN_TEST_COLUMNS = tuple(f"test/{name}" for name in GEN_SCORES)
SAMPLES_FIGURE = "generated_samples.png"


def samples_image(run_dir: str | Path) -> tuple[Path, str] | None:
    """A run's samples and what they are: its final samples PNG (``*samples*.png`` in the run directory, drawn
    after training) else its last per-evaluation grid (``samples/step_*.png``); None when it has neither."""
    from jaxdl.train.rundir import sample_grids

    run_dir = Path(run_dir)
    finals = sorted(p for p in run_dir.glob("*samples*.png") if p.is_file())
    if finals:
        return finals[0], f"final samples ({finals[0].name})"
    grids = sample_grids(run_dir)
    if grids:
        step, path = grids[-1]
        return path, f"grid at step {step}"
    return None


def _attach_generative(run: dict[str, Any], summary: dict[str, Any]) -> None:
    """``summary["scores"]`` (``{"val": {...}, "test": {...}, "reference": ...}``; a flat dict from before the
    split is the test split's) become the run's ``val/…``/``test/…`` metrics; its samples image is recorded."""
    scores = summary.get("scores")
    if isinstance(scores, dict):
        if "frechet_distance" in scores and "test" not in scores:
            scores = {"test": scores, "reference": scores.get("reference")}
        for split in SPLITS:
            found = scores.get(split)
            if isinstance(found, dict):
                own = dict(run.get(split) or {})
                run[split] = {**{n: found[n] for n in GEN_SCORES if _number(found.get(n)) is not None}, **own}
        if isinstance(scores.get("reference"), dict) and "n" in scores["reference"]:
            run["gen_reference"] = scores["reference"]
    image = samples_image(run["run_dir"])
    if image is not None:
        run["samples_image"] = image


def generative(rows: list[dict[str, Any]], runs: list[dict[str, Any]], swept: list[str], label_axes: list[str],
               metric: str) -> tuple[list[dict[str, Any]], list[str], str]:
    """One row per configuration of the generative runs (seeds pooled): mean ± std of the validation score that
    chooses (``val/frechet_distance`` when any run was scored, else the validation counterpart of ``metric``) and of
    the test scores beside it, ``n``, and the member with the best validation score (``chosen``, its ``seed`` and
    ``samples`` image). Ranked by the mean validation score. Returns (rows, columns, the choosing metric)."""
    by_id = {r["id"]: r for r in runs}
    gen = [row for row in rows if row["status"] != "failed"
           and (by_id[row["run"]].get("samples_image") or any(metric_value(by_id[row["run"]], f"{split}/{n}")
                                                              is not None for split in SPLITS for n in GEN_SCORES))]
    if not gen:
        return [], [], ""
    value = lambda row, c: metric_value(by_id[row["run"]], c)  # noqa: E731
    choose = ("val/frechet_distance" if any(value(r, "val/frechet_distance") is not None for r in gen)
              else _validation_key(metric))
    mode = metric_mode(choose, runs)
    sign = -1.0 if mode == "max" else 1.0
    cols = [choose, *[c for c in GEN_TEST_COLUMNS if c != choose and any(value(r, c) is not None for r in gen)]]
    keys = ["model", *label_axes, *[k for k in swept if k != "seed"]]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in gen:
        groups.setdefault(json.dumps([row.get(k) for k in keys], default=str), []).append(row)
    out = []
    for members in groups.values():
        item: dict[str, Any] = {k: members[0].get(k) for k in keys}
        for c in cols:
            vals = [v for m in members if (v := value(m, c)) is not None]
            item[f"{c} mean"], item[f"{c} std"] = _mean_std(vals) if vals else (None, None)
        scored = [m for m in members if value(m, choose) is not None]
        item["n"] = len(scored)
        best = min(scored, key=lambda m: sign * value(m, choose)) if scored else None
        item["chosen"] = best["run"] if best else None
        item["seed"] = best.get("seed") if best else None
        image = by_id[best["run"]].get("samples_image") if best else None
        item["samples"] = str(image[0]) if image else None
        item["_image"] = image
        item["_best"] = value(best, choose) if best else None
        item["_test_fd"] = value(best, "test/frechet_distance") if best else None
        out.append(item)
    out.sort(key=lambda it: (it[f"{choose} mean"] is None, sign * (it[f"{choose} mean"] or 0.0)))
    for rank, it in enumerate(out, 1):
        it["rank"] = rank
    columns = ["rank", *keys, *[f"{c} {s}" for c in cols for s in ("mean", "std")], "n", "chosen", "seed",
               "samples"]
    return out, columns, choose


def _gen_references(runs: list[dict[str, Any]]) -> list[str]:
    """One line per distinct reference (data set, n) the generative runs were scored beside."""
    lines, seen = [], set()
    for r in runs:
        ref = r.get("gen_reference")
        key = json.dumps(ref, sort_keys=True, default=str) if ref else None
        if not ref or key in seen or _number(ref.get("frechet_real_vs_real")) is None:
            continue
        seen.add(key)
        rr, rg = ref.get("pr_real_vs_real") or {}, ref.get("pr_real_vs_gaussian") or {}
        lines.append(f"Reference ({ref.get('data', 'fashion_mnist')}, n={ref['n']} images per side): real vs real "
                     f"FD {_fmt(ref['frechet_real_vs_real'])} (precision {_fmt(rr.get('precision'))}, recall "
                     f"{_fmt(rr.get('recall'))}); pixel Gaussian FD {_fmt(ref.get('frechet_real_vs_gaussian'))} "
                     f"(precision {_fmt(rg.get('precision'))}, recall {_fmt(rg.get('recall'))}).")
    return lines


def _generative_note(choose: str, mode: str) -> str:
    best = "lower" if mode == "min" else "higher"
    return (f"Generative scores per configuration: mean ± std (sample std) over seeds, n seeds each; ranked by "
            f"{choose} ({best} is better). `chosen` is the seed with the best {choose}, whose samples "
            f"plots/{SAMPLES_FIGURE} shows; test/* are held-out results beside it, never used to choose. Fréchet "
            "distances are in a shipped classifier's features (not comparable to Inception FID).")


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


def _markdown(rows, columns, metric, mode, config_rows=None, config_columns=None, base=None, gen=None) -> str:
    lines = [_ranking_note(metric, mode), "", *_md_table(rows, columns)]
    if config_rows is not None:
        shown, cols = _display_config_rows(config_rows, config_columns)
        lines += ["", f"Per configuration: mean ± std (sample std) over seeds of {metric}, n seeds each; ranked by "
                  "the mean.", "", *_md_table(shown, cols)]
    if gen and gen["rows"]:
        shown, cols = _display_config_rows(gen["rows"], gen["columns"])
        lines += ["", _generative_note(gen["choose"], gen["mode"]), "", *_md_table(shown, cols)]
        lines += [line for ref in gen["references"] for line in ("", ref)]
        if gen.get("figure"):
            lines += ["", f"![samples of each configuration's {gen['choose']}-best seed](plots/{SAMPLES_FIGURE})"]
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
    gen_rows, gen_cols, choose = generative(rows, runs, swept, label_axes, metric)
    gen = {"rows": gen_rows, "columns": gen_cols, "choose": choose, "mode": metric_mode(choose, runs) if choose
           else "min", "references": _gen_references(runs), "figure": None}

    md = sweep_dir / "report.md"
    csv_path = sweep_dir / "report.csv"
    config_csv = sweep_dir / "report_by_config.csv"
    gen_csv = sweep_dir / "report_generative.csv" if gen_rows else None
    paths = make_plots(store, rows, swept, label_axes, metric, sweep_dir / "plots", runs=runs) if plots else []
    if plots and gen_rows:
        gen["figure"] = generated_samples(gen_rows, ["model", *label_axes, *[k for k in swept if k != "seed"]],
                                          choose, gen["mode"], sweep_dir / "plots" / SAMPLES_FIGURE)
        paths += [gen["figure"]] if gen["figure"] else []
    md.write_text(_markdown(rows, columns, metric, mode, configs, config_cols, base, gen))
    csv_path.write_text(_csv_text(rows, columns + ["group", "run_dir", "error"]))
    config_csv.write_text(_csv_text(configs, config_cols))
    if gen_csv is not None:
        gen_csv.write_text(_csv_text(gen_rows, gen_cols))

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
        if gen_rows:
            shown_gen, gen_shown_cols = _display_config_rows(gen_rows, gen_cols)
            gtable = Table(title=_generative_note(choose, gen["mode"]))
            for c in gen_shown_cols:
                gtable.add_column(c, justify="right" if c in ("rank", "n", "seed") or "mean" in c else "left")
            for row in shown_gen[:limit] if limit else shown_gen:
                gtable.add_row(*[row.get(c, "-") for c in gen_shown_cols])
            console.print(gtable)
            for line in gen["references"]:
                console.print(line, soft_wrap=True, markup=False, highlight=False)
        if base[0]:
            btable = Table(title=BASELINE_NOTE)
            for c in base[1]:
                btable.add_column(c, justify="left" if c in ("baseline", "data") else "right")
            for row in base[0]:
                btable.add_row(*[_fmt(row.get(c)) for c in base[1]])
            console.print(btable)
    elif fmt == "md":
        shown_cfg = configs[:limit] if limit else configs
        console.print(_markdown(shown, columns, metric, mode, shown_cfg, config_cols, base, gen), markup=False,
                      highlight=False, soft_wrap=True, emoji=False)
    else:
        console.print(_csv_text(shown, columns).rstrip("\n"), markup=False, highlight=False, soft_wrap=True,
                      emoji=False)
    info.print(f"table: {md}  {csv_path}  {config_csv}" + (f"  {gen_csv}" if gen_csv else ""), soft_wrap=True,
               markup=False, highlight=False)
    for p in paths:
        info.print(f"plot: {p}", soft_wrap=True, markup=False, highlight=False)
    return Report(rows, columns, paths, md, csv_path, metric, mode, configs, config_cols, config_csv, gen_rows,
                  gen_cols, gen_csv, gen["figure"])
