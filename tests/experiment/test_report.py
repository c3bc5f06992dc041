"""Sweep reports on fake sweeps (hand-written summaries and metric records; nothing trains): validation ranking,
metric columns from what the runs have, the seed-aggregated table, plots, and the ``jaxdl report`` command line."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

from jaxdl import cli
from jaxdl.errors import ConfigError
from jaxdl.experiment import report as report_lib
from jaxdl.experiment.report import make_report
from jaxdl.experiment.store import SweepStore


def quiet():
    from rich.console import Console

    return Console(file=io.StringIO(), width=200)


def summaries(sweep_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in (sweep_dir / "runs").glob("*/summary.json")}


def test_default_ranking_is_the_validation_metric_of_the_same_variables(fake_sweep):
    sweep = fake_sweep("classification")
    rep = make_report(sweep, fmt="md", plots=False, console=quiet())
    assert rep.metric == "val/accuracy" and rep.mode == "max"
    truth = summaries(sweep)
    # ranked by summary["val"] (best-checkpoint/final variables), not by test and not by the last evaluation
    expected = sorted(truth, key=lambda k: -truth[k]["val"]["accuracy"])
    assert [r["run"] for r in rep.rows] == expected
    for row in rep.rows:  # every value of a row from the same variables
        s = truth[row["run"]]
        assert row["val/accuracy"] == s["val"]["accuracy"] and row["test/accuracy"] == s["test"]["accuracy"]
        assert row["val/loss"] == s["val"]["loss"] and row["test/loss"] == s["test"]["loss"]
    assert rep.columns[-5:] == ["val/accuracy", "test/accuracy", "val/loss", "test/loss", "wall_s"]
    assert (sweep / "report.md").read_text().startswith("Ranked by val/accuracy (higher is better)")
    # an explicit test metric is still allowed (and said to leak)
    by_test = make_report(sweep, metric="test/accuracy", fmt="md", plots=False, console=quiet())
    assert [r["run"] for r in by_test.rows] == sorted(truth, key=lambda k: -truth[k]["test"]["accuracy"])
    assert "leaks the test set" in (sweep / "report.md").read_text()


def test_regression_report_ranks_by_the_monitored_metric_and_shows_only_its_metrics(fake_sweep):
    sweep = fake_sweep("regression")
    rep = make_report(sweep, fmt="md", plots=False, console=quiet())
    assert rep.metric == "val/rmse" and rep.mode == "min"  # from summary["monitor"]
    truth = summaries(sweep)
    assert [r["run"] for r in rep.rows] == sorted(truth, key=lambda k: truth[k]["val"]["rmse"])
    assert [c for c in rep.columns if "/" in c] == ["val/rmse", "test/rmse", "val/loss", "test/loss"]
    assert "accuracy" not in (sweep / "report.md").read_text()


def test_metric_direction_follows_the_name(fake_sweep):
    for name in ("val/accuracy", "test/f1", "val/r2", "val/bleu", "val/top5_accuracy", "val/auc"):
        assert report_lib.higher_is_better(name), name
    for name in ("val/loss", "val/perplexity", "val/rmse", "val/bits_per_char", "val/mae"):
        assert not report_lib.higher_is_better(name), name
    sweep = fake_sweep("language_model")
    rep = make_report(sweep, metric="val/perplexity", fmt="csv", plots=False, console=quiet())
    assert rep.mode == "min"
    ppl = [r["val/perplexity"] for r in rep.rows]
    assert ppl == sorted(ppl)
    assert make_report(sweep, fmt="csv", plots=False, console=quiet()).metric == "val/loss"  # no accuracy: loss


def test_seed_aggregated_table(fake_sweep):
    sweep = fake_sweep("classification", failed=1)
    rep = make_report(sweep, fmt="md", plots=False, console=quiet())
    truth = {r["run"]: r for r in rep.rows}
    assert len(rep.by_config) == 4 * 2  # lr × weight decay (and its label); seeds pooled
    for item in rep.by_config:
        members = [r for r in truth.values() if r["status"] == "completed" and r["optim.lr"] == item["optim.lr"]
                   and r["optim.weight_decay"] == item["optim.weight_decay"]]
        assert item["n"] == len(members) and item["n"] in (2, 3)
        for col in ("val/accuracy", "test/accuracy"):
            vals = [m[col] for m in members]
            assert item[f"{col} mean"] == pytest.approx(np.mean(vals))
            assert item[f"{col} std"] == pytest.approx(np.std(vals, ddof=1))
    means = [i["val/accuracy mean"] for i in rep.by_config]
    assert means == sorted(means, reverse=True)
    with rep.by_config_csv.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and "seed" not in table[0] and set(table[0]) >= {"val/accuracy mean", "n", "optim.lr"}
    md = (sweep / "report.md").read_text()
    assert "Per configuration: mean ± std" in md and "| val/accuracy (mean ± std) |" in md


def test_plots_leave_the_matplotlib_backend_alone(fake_sweep, tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    sweep = fake_sweep("classification", models=("mlp", "cnn"))
    store = SweepStore(sweep / "sweep.db")
    rows, _, _ = report_lib.collect(store, "val/accuracy")
    truth = summaries(sweep)
    for r in rows:  # what any version of the report gives its plots
        r["_score"] = r["val/accuracy"] = truth[r["run"]]["val"]["accuracy"]
    try:
        matplotlib.use("svg")
        report_lib.learning_curves(store, tmp_path / "lc.png", key="val/accuracy")
        report_lib.metric_vs_number(rows, "optim.lr", "val/accuracy", tmp_path / "n.png")
        report_lib.metric_by_category(rows, "reg", "val/accuracy", tmp_path / "c.png")
        report_lib.best_per_architecture(rows, "val/accuracy", tmp_path / "b.png")
        assert matplotlib.get_backend() == "svg"
        rep = make_report(sweep, fmt="md", console=quiet())
        assert matplotlib.get_backend() == "svg"
        names = {p.name for p in rep.plots}
        assert {"learning_curves.png", "val_accuracy_vs_optim_lr.png", "val_accuracy_by_reg.png",
                "best_per_architecture.png"} <= names
    finally:
        matplotlib.use(before)


def test_learning_curves_name_each_member_and_plot_the_ranking_metric(fake_sweep):
    sweep = fake_sweep("regression", weight_decays=(0.0,), seeds=(0, 1))
    store = SweepStore(sweep / "sweep.db")
    runs = store.runs()
    fig = report_lib.learning_curves_figure(runs, {r["id"]: store.metrics(r["id"]) for r in runs}, "val/rmse")
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == sorted(f"lr={lr:g} seed={s}" for lr in (1e-4, 1e-3, 1e-2, 1e-1) for s in (0, 1))
    assert ax.get_ylabel() == "val/rmse"
    for line, run in zip(ax.get_lines(), runs):
        assert list(line.get_ydata()) == [m["val/rmse"] for m in store.metrics(run["id"])]


def test_aggregate_plots_say_what_they_pool_and_use_a_log_axis_over_decades(fake_sweep):
    rep = make_report(fake_sweep("classification"), fmt="csv", plots=False, console=quiet())
    rows = rep.rows
    fig = report_lib.metric_vs_number_figure(rows, "optim.lr", rep.metric)
    ax = fig.axes[0]
    assert ax.get_title() == "mean ± std over seeds and reg, weight_decay (n=6)"
    assert ax.get_xscale() == "log"  # 1e-4 … 1e-1
    fixed = [r for r in rows if r["optim.weight_decay"] == 0.0]
    assert report_lib.metric_vs_number_figure(fixed, "optim.lr", rep.metric).axes[0].get_title() == \
        "mean ± std over seeds (n=3)"
    narrow = [dict(r, **{"optim.lr": {1e-4: 0.1, 1e-3: 0.2, 1e-2: 0.3, 1e-1: 0.5}[r["optim.lr"]]}) for r in fixed]
    assert report_lib.metric_vs_number_figure(narrow, "optim.lr", rep.metric).axes[0].get_xscale() == "linear"
    bars = report_lib.metric_by_category_figure(rows, "reg", rep.metric).axes[0]
    assert bars.get_title() == "mean ± std over seeds and lr, weight_decay (n=12)"


def test_a_bar_plot_of_one_bar_is_not_drawn(fake_sweep, tmp_path):
    rep = make_report(fake_sweep("classification", weight_decays=(0.0,)), fmt="csv", console=quiet())
    names = {p.name for p in rep.plots}
    assert "best_per_architecture.png" not in names and "val_accuracy_by_reg.png" not in names  # one model, one reg
    assert not (rep.markdown.parent / "plots" / "best_per_architecture.png").exists()
    assert report_lib.best_per_architecture(rep.rows, rep.metric, tmp_path / "b.png") is None
    assert not (tmp_path / "b.png").exists()


# --------------------------------------------------------------------------------------------------------------------
# jaxdl report
# --------------------------------------------------------------------------------------------------------------------


def test_report_rejects_a_metric_no_run_has(fake_sweep, capsys):
    sweep = fake_sweep("classification")
    (sweep / "report.md").write_text("previous report\n")
    assert cli.main(["report", str(sweep), "--metric", "val/acuracy", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --metric val/acuracy: no run has it")
    assert "did you mean 'val/accuracy'" in err
    assert "available: val/accuracy, val/loss, test/accuracy, test/loss" in err
    assert (sweep / "report.md").read_text() == "previous report\n"
    assert cli.main(["report", str(sweep), "--metric", "val/loss", "--no-plots", "--format", "md"]) == 0
    assert "Ranked by val/loss" in capsys.readouterr().out


def _markdown_tables(text: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            assert line.endswith("|"), f"unterminated row: {line!r}"
            current.append([c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])])
        else:
            current = None
    return tables


def test_report_md_on_stdout_is_valid_markdown_and_nothing_wraps(fake_sweep, capsys):
    sweep = fake_sweep("classification", failed=2)
    assert cli.main(["report", str(sweep), "--format", "md", "--no-plots", "--limit", "0"]) == 0
    out = capsys.readouterr().out
    tables = _markdown_tables(out)
    assert len(tables) == 2  # ranked runs, then configurations over seeds
    for table in tables:
        header, sep, *rows = table
        assert all(re.fullmatch(r"-{3,}", c) for c in sep) and len(sep) == len(header)
        assert rows and all(len(r) == len(header) for r in rows)
    runs, configs = tables
    assert len(runs) == 2 + 24 and len(configs) == 2 + 8
    assert max(len(line) for line in out.splitlines()) > 120  # long rows stayed whole
    assert "[/" not in out and "\x1b[" not in out  # no rich markup, no colour codes
    # rich tables are not folded at 80 columns when stdout is a pipe: every run id sits whole on its row
    assert cli.main(["report", str(sweep), "--no-plots", "--limit", "0"]) == 0
    out = capsys.readouterr().out
    rep = make_report(sweep, plots=False, console=quiet())
    for row in rep.rows:
        line = next(line for line in out.splitlines() if f" {row['run']} " in line)
        assert row["reg"] in line and row["status"] in line


def test_run_summary_shows_the_runs_own_metrics(tmp_path, capsys):
    summary = {"name": "reg", "val": {"loss": 0.25, "mse": 0.25, "mae": 0.4, "rmse": 0.5},
               "test": {"loss": 0.36, "mse": 0.36, "mae": 0.5, "rmse": 0.6}, "steps": 10,
               "final": {"train/loss": 0.2, "val/loss": 0.25}}
    cli._print_summary(summary, tmp_path)
    out = capsys.readouterr().out
    assert "accuracy" not in out and "rmse" in out and "0.6000" in out and "mae" in out


def test_make_report_errors_name_the_problem(fake_sweep, tmp_path):
    with pytest.raises(ConfigError, match="not a sweep directory"):
        make_report(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="--format"):
        make_report(fake_sweep(), fmt="html")


def test_report_lists_the_baselines_runs_computed(fake_sweep):
    sweep = fake_sweep("regression", weight_decays=(0.0,), seeds=(0, 1))
    base = {"val": {"naive": {"rmse": 3.0, "mase": 1.2}, "seasonal_naive": {"rmse": 1.5, "mase": 0.6}},
            "test": {"naive": {"rmse": 3.5, "mase": 1.3}, "seasonal_naive": {"rmse": 1.25, "mase": 0.5}}}
    for path in (sweep / "runs").glob("*/summary.json"):  # every run shares its data, so one row per baseline
        summary = json.loads(path.read_text())
        path.write_text(json.dumps({**summary, "task": "forecast", "baselines": base}))
    rep = make_report(sweep, fmt="md", plots=False, console=quiet())
    rows, columns = report_lib.baselines(report_lib._load_runs(report_lib.SweepStore(sweep / "sweep.db")))
    assert [r["baseline"] for r in rows] == ["naive", "seasonal_naive"]
    assert columns == ["baseline", "data", "val/mase", "test/mase", "val/rmse", "test/rmse"]
    text = rep.markdown.read_text()
    assert "Baselines computed by the library on the same data" in text
    assert "| seasonal_naive |  | 0.6 | 0.5 | 1.5 | 1.25 |" in text
