"""An inline sweep end to end: plan, fusion decision, runs, store, report and plots."""

import json
import textwrap

import pytest

from jaxdl.errors import ConfigError
from jaxdl.experiment.report import make_report
from jaxdl.experiment.runner import run_sweep
from jaxdl.experiment.store import SweepStore

EXPERIMENT = '''
"""Tiny test study.

Run: jaxdl sweep {path}
"""
from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config
from jaxdl.experiment import grid


def get_config():
    return Config(name="tiny", model=model_config("mlp", widths=(16,)), data=DataConfig(name="digits"),
                  optim=OptimConfig(lr=3e-3),
                  train=TrainConfig(batch_size=32, steps=20, eval_every=10, progress=False, driver="scan"))


def get_sweep():
    return grid(model=[{{"name": "mlp", "widths": (16,)}}, {{"name": "perceptron", "output": "logits"}}],
                reg=[{{"label": "none"}}, {{"label": "l2", "optim.l2": 1e-3}}],
                **{{"optim.lr": [1e-3, 1e-2], "seed": [0, 1]}})
'''


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "tiny.py"
    path.write_text(textwrap.dedent(EXPERIMENT.format(path=path)))
    return path


def test_inline_sweep_records_runs_decisions_and_report(experiment, tmp_path):
    out = tmp_path / "sweep"
    result = run_sweep(experiment, workdir=out, fuse="auto")
    store = SweepStore(out / "sweep.db")
    assert store.counts() == {"completed": 16}
    groups = store.groups()
    assert len(groups) == 2 and all(g["members"] == 8 for g in groups)
    for g in groups:  # decided by the timed probe, with its numbers stored
        d = g["decision"]
        assert d["how"] in ("probe", "cached probe") and d["fused_s_per_step"] > 0 and d["one_by_one_s_per_step"] > 0
        assert g["fused"] == (d["fused_s_per_step"] < d["one_by_one_s_per_step"])
    for run in store.runs():
        assert run["labels"]["model"] in ("mlp", "perceptron") and run["labels"]["reg"] in ("none", "l2")
        assert set(run["swept"]) == {"optim.lr", "seed"}
        assert [m["step"] for m in store.metrics(run["id"])] == [10, 20]
        meta = json.loads((out / "runs" / run["id"] / "config.json").read_text())
        assert meta["sweep_group"] == run["group_id"] and meta["fusion"]["reason"]
        assert (out / "runs" / run["id"] / "tb").is_dir()  # TensorBoard event files
    assert result.plan.skipped == []

    report = make_report(out, fmt="md")
    assert report.metric == "val/accuracy"  # validation ranks; test is shown beside it
    scores = [r["val/accuracy"] for r in report.rows]
    assert scores == sorted(scores, reverse=True)
    for row in report.rows:  # both from summary.json's val/test: the same variables
        summary = json.loads((out / "runs" / row["run"] / "summary.json").read_text())
        assert row["val/accuracy"] == summary["val"]["accuracy"]
        assert row["test/accuracy"] == summary["test"]["accuracy"]
    names = {p.name for p in report.plots}
    assert {"learning_curves.png", "val_accuracy_vs_optim_lr.png", "val_accuracy_by_reg.png",
            "best_per_architecture.png"} <= names
    assert all(p.stat().st_size > 5000 for p in report.plots)
    md = (out / "report.md").read_text()
    assert md.startswith("Ranked by val/accuracy") and "| rank | run | status | model | reg |" in md
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 17
    assert len((out / "report_by_config.csv").read_text().splitlines()) == 1 + 8  # 16 runs, 2 seeds each
    loss_report = make_report(out, metric="test/loss", fmt="csv", plots=False)
    losses = [r["test/loss"] for r in loss_report.rows]
    assert losses == sorted(losses)


def test_rerun_skips_finished_runs(experiment, tmp_path, capsys):
    out = tmp_path / "sweep"
    run_sweep(experiment, workdir=out, sweep="optim.lr=0.01 seed=0:2", report=False)
    store = SweepStore(out / "sweep.db")
    finished = {r["id"]: r["finished"] for r in store.runs()}
    capsys.readouterr()
    result = run_sweep(experiment, workdir=out, sweep="optim.lr=0.01 seed=0:3", report=False)
    assert "2 runs already finished" in capsys.readouterr().out
    runs = {r["id"]: r for r in SweepStore(out / "sweep.db").runs()}
    assert len(runs) == 3 and all(r["status"] == "completed" for r in runs.values())
    assert all(runs[k]["finished"] == v for k, v in finished.items())
    assert sum(len(g["statuses"]) for g in result.groups) == 1


def test_fuse_overrides_and_errors(experiment, tmp_path):
    out = tmp_path / "a"
    run_sweep(experiment, workdir=out, sweep="optim.lr=0.01,0.02", fuse="never", report=False)
    g = SweepStore(out / "sweep.db").groups()[0]
    assert g["fused"] is False and g["decision"]["reason"] == "--fuse=never"
    out = tmp_path / "b"
    run_sweep(experiment, workdir=out, sweep="optim.lr=0.01,0.02", fuse="always", report=False)
    g = SweepStore(out / "sweep.db").groups()[0]
    assert g["fused"] is True and g["decision"]["reason"] == "--fuse=always"
    with pytest.raises(ConfigError, match="--fuse"):
        run_sweep(experiment, workdir=out, fuse="sometimes")
    with pytest.raises(ConfigError, match="optim.lrr"):
        run_sweep(experiment, workdir=out, sweep="optim.lrr=1")
    with pytest.raises(ConfigError, match="not a sweep directory"):
        make_report(tmp_path / "nothing")


def test_dry_run_prints_plan_and_trains_nothing(experiment, tmp_path, capsys):
    out = tmp_path / "dry"
    result = run_sweep(experiment, workdir=out, dry_run=True)
    text = capsys.readouterr().out
    assert "16 runs in 2 groups" in text and "probe decides" in text and "mem/member" in text
    assert not (out / "sweep.db").exists() and len(result.plan.runs) == 16
    lines = text.splitlines()
    for g in result.plan.groups:  # every member: its run id and the values it takes
        assert f"group {g.id} ({g.title}): 8 members" in text
        for r in g.runs:
            (line,) = [line for line in lines if line.split()[:1] == [r.run_id]]
            lr, seed, reg, model = r.values["optim.lr"], r.values["seed"], r.labels["reg"], r.labels["model"]
            assert line.split()[1:] == [f"model={model}", f"reg={reg}", f"lr={lr:g}", f"seed={seed}"]


def test_quickstart_plan():
    from jaxdl.experiment.plan import build_plan
    from jaxdl.experiment.runner import load_experiment

    base, spec, name = load_experiment("experiments/quickstart.py")
    plan = build_plan(base, spec, name)
    archs = {r.config.model.name for r in plan.runs}
    losses = {r.config.loss.name for r in plan.runs}
    regs = {r.labels["reg"] for r in plan.runs}
    assert archs == {"perceptron", "mlp", "lenet5"} and losses == {"cross_entropy", "mse"}
    assert regs == {"none", "dropout", "l2", "batch_norm"} and {r.config.seed for r in plan.runs} == {0, 1, 2}
    assert len(plan.runs) == 60 and len(plan.groups) == 10
