"""The sweep database is an index, not the only copy: a truncated, garbled or deleted ``sweep.db`` is moved aside and
rebuilt from the run directories (``sweep.json``, ``config.json``, ``metrics.jsonl``, ``summary.json``,
``error.txt``), and the report is the same as before the damage; a deleted run directory is trained again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_testing import env, write_experiment

def jaxdl(*args, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxdl.cli", *map(str, args)], cwd=cwd, env=env(cache),
                          capture_output=True, text=True, timeout=300)


def report(sweep: Path, cache: Path) -> tuple[str, list[str]]:
    """The Markdown report (ranked runs and per-configuration rows) on stdout, and the rows of report.csv without
    the run directories."""
    out = jaxdl("report", sweep, "--format", "md", "--no-plots", "--limit", "0", cwd=sweep.parent, cache=cache)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    return out.stdout, (sweep / "report.csv").read_text().splitlines()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One finished sweep (6 runs, 1 group, 20 steps) and its report before any damage."""
    root = tmp_path_factory.mktemp("sweepdb")
    cache = root / "cache"
    cache.mkdir()
    exp = write_experiment(root, "dbfault", 'grid(**{"optim.lr": [1e-3, 3e-3, 1e-2]}, seed=[0, 1])')
    sweep = root / "sweep"
    out = jaxdl("sweep", exp, "--workdir", sweep, "--fuse", "always", cwd=root, cache=cache)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"root": root, "cache": cache, "exp": exp, "sweep": sweep, "report": report(sweep, cache)}


def _copy(swept, name: str) -> Path:
    import shutil

    dst = swept["root"] / name
    shutil.copytree(swept["sweep"], dst)
    return dst


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage"])
def test_damaged_database_is_rebuilt_and_report_is_identical(swept, damage):
    sweep = _copy(swept, f"damaged-{damage}")
    db = sweep / "sweep.db"
    assert not (sweep / "sweep.db-wal").exists() or (sweep / "sweep.db-wal").stat().st_size == 0
    if damage == "truncate":
        data = db.read_bytes()
        db.write_bytes(data[:len(data) // 2])
    elif damage == "delete":
        db.unlink()
    else:
        db.write_bytes(os.urandom(4096) + b"garbage" * 100)
    md, rows = report(sweep, swept["cache"])
    before_md, before_rows = swept["report"]
    assert md == before_md  # same ranked rows, same metrics, same per-configuration table
    strip = lambda lines: [",".join(x for x in ln.split(",") if "/runs/" not in x) for ln in lines]  # noqa: E731
    assert strip(rows) == strip(before_rows)
    if damage != "delete":
        aside = [p.name for p in sweep.iterdir() if p.name.startswith("sweep.db.corrupt-")]
        assert len(aside) == 1, sorted(p.name for p in sweep.iterdir())
    from jaxdl.experiment.store import check_database

    assert check_database(db) is None


def test_explicit_rebuild_keeps_results_and_trains_nothing(swept):
    sweep = _copy(swept, "rebuild")
    out = jaxdl("sweep", swept["exp"], "--workdir", sweep, "--fuse", "always", "--rebuild", cwd=swept["root"],
                cache=swept["cache"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "6 runs already finished" in out.stdout
    assert any(p.name.startswith("sweep.db.old-") for p in sweep.iterdir())
    assert report(sweep, swept["cache"])[0] == swept["report"][0]


def test_deleted_run_directory_is_trained_again(swept):
    import shutil

    from jaxdl.experiment.store import SweepStore

    sweep = _copy(swept, "rundir")
    store = SweepStore(sweep / "sweep.db")
    before = {r["id"]: r["finished"] for r in store.runs()}
    victim = sorted(before)[2]
    shutil.rmtree(sweep / "runs" / victim)
    out = jaxdl("sweep", swept["exp"], "--workdir", sweep, "--fuse", "always", cwd=swept["root"],
                cache=swept["cache"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "5 runs already finished" in out.stdout and victim in out.stdout
    after = {r["id"]: r for r in store.runs()}
    assert {i for i in after if after[i]["finished"] != before[i]} == {victim}  # exactly that run retrained
    assert all(r["status"] == "completed" for r in after.values())
    steps = [json.loads(ln)["step"] for ln in (sweep / "runs" / victim / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 20


def test_a_failed_run_with_leftover_logs_is_retrained_from_scratch(tmp_path):
    """A run that failed after logging (no usable checkpoint) is retried by the next sweep run, not refused."""
    import json

    from jaxdl.config import Config, DataConfig, TrainConfig, model_config
    from jaxdl.experiment import grid, run_sweep

    base = Config(name="retry", model=model_config("mlp", widths=(16,)), data=DataConfig(name="digits"),
                  train=TrainConfig(batch_size=32, steps=8, eval_every=4, progress=False, plots=False))
    first = run_sweep(base, grid(seed=[0]), workdir=tmp_path / "sw", report=False)
    (run_id,) = [r.run_id for r in first.plan.runs]
    run_dir = tmp_path / "sw" / "runs" / run_id
    import shutil

    for p in (run_dir / "checkpoints").iterdir():  # the attempt left logs but no usable checkpoint
        if p.is_dir():
            shutil.rmtree(p)
    (run_dir / "summary.json").unlink()  # the database now holds it as unfinished
    again = run_sweep(base, grid(seed=[0]), workdir=tmp_path / "sw", report=False)
    assert not again.failed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 8
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 8]
