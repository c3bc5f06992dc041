"""End-to-end tests of the sweep runner's executors (inline, processes, Ray), of resuming a SIGKILLed sweep, and of
the ``jaxdl sweep`` / ``jaxdl report`` command lines.

Everything trains the tiny digits experiment of ``conftest.py`` (MLP(16) and perceptron, 30 steps). To keep the file
fast on a small machine, one inline sweep is shared as the reference, one Ray instance serves both Ray tests, and a
module-wide persistent XLA compilation cache lets worker processes load the programs the test process compiled.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxdl.cli import main
from jaxdl.experiment.runner import run_sweep
from jaxdl.experiment.store import SweepStore

REPO = Path(__file__).resolve().parents[2]
# Ray and the subprocess tests fork+exec helpers from this (multithreaded, JAX-importing) process: that is safe.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "curves.png")


def quiet_console():
    from rich.console import Console

    return Console(file=io.StringIO(), width=200)


@contextlib.contextmanager
def persistent_compilation_cache(directory: Path):
    """Turn on JAX's on-disk compilation cache in this process (restored afterwards); child processes get it from the
    environment variables the caller sets."""
    import jax

    try:
        from jax._src import compilation_cache
    except ImportError:  # pragma: no cover — private module moved: run without the cache
        yield
        return
    names = {"jax_compilation_cache_dir": str(directory), "jax_persistent_cache_min_compile_time_secs": 0.0,
             "jax_persistent_cache_min_entry_size_bytes": 0}
    old = {n: getattr(jax.config, n) for n in names}
    for n, v in names.items():
        jax.config.update(n, v)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        for n, v in old.items():
            jax.config.update(n, v)
        compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A module directory, environment for worker processes (CPU, isolated caches, shared compilation cache)."""
    root = tmp_path_factory.mktemp("executors")
    xla_cache = root / "xla-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAX_PLATFORMS", "cpu")
        mp.setenv("JAXDL_CACHE_DIR", str(root / "jaxdl-cache"))
        mp.setenv("JAX_COMPILATION_CACHE_DIR", str(xla_cache))
        mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        mp.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        with persistent_compilation_cache(xla_cache):
            yield root


@pytest.fixture(scope="module")
def inline_reference(shared, write_tiny_experiment):
    """The tiny sweep trained by the inline executor: ``{run_id: store row}``."""
    exp = write_tiny_experiment(shared / "experiments")
    result = run_sweep(exp, workdir=shared / "inline", fuse="always", executor="inline", report=False,
                       console=quiet_console())
    runs = {r["id"]: r for r in result.store.runs()}
    assert len(runs) == 8 and all(r["status"] == "completed" for r in runs.values())
    return runs


def assert_same_results(store: SweepStore, reference: dict[str, dict]) -> None:
    runs = {r["id"]: r for r in store.runs()}
    assert set(runs) == set(reference)
    assert store.counts() == {"completed": len(reference)}
    for run_id, ref in reference.items():
        for key in ("accuracy", "loss"):
            np.testing.assert_allclose(runs[run_id]["test"][key], ref["test"][key], rtol=1e-5, atol=1e-5,
                                       err_msg=f"{run_id} test/{key}")
        np.testing.assert_allclose(runs[run_id]["final"]["val/loss"], ref["final"]["val/loss"], rtol=1e-5,
                                   atol=1e-5, err_msg=f"{run_id} val/loss")


def assert_run_dirs(sweep_dir: Path, store: SweepStore, steps: int = 30) -> None:
    for run in store.runs():
        d = Path(run["run_dir"])
        assert d == sweep_dir / "runs" / run["id"]
        for name in RUN_FILES:
            assert (d / name).is_file(), f"{d} lacks {name}"
        assert (d / "checkpoints").is_dir() and any(p.name.isdigit() for p in (d / "checkpoints").iterdir())
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == steps
        assert [r["step"] for r in store.metrics(run["id"])] == list(range(10, steps + 1, 10))


# --------------------------------------------------------------------------------------------------------------------
# 1. processes
# --------------------------------------------------------------------------------------------------------------------


def test_processes_executor_matches_inline(tiny_experiment, tmp_path, inline_reference):
    console = quiet_console()
    result = run_sweep(tiny_experiment, workdir=tmp_path / "procs", fuse="always", executor="processes", workers=2,
                       report=False, console=console)
    assert len(result.plan.groups) == 2 and len(result.groups) == 2
    assert {g["group_id"] for g in result.groups} == {g.id for g in result.plan.groups}
    assert all(set(g["statuses"].values()) == {"completed"} for g in result.groups)
    assert_same_results(result.store, inline_reference)
    assert_run_dirs(tmp_path / "procs", result.store)
    assert {g["id"]: g["fused"] for g in result.store.groups()} == {g.id: True for g in result.plan.groups}


# --------------------------------------------------------------------------------------------------------------------
# 2. Ray
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_started_by_runner(shared, inline_reference, write_tiny_experiment):
    """One real local Ray instance for the module: the runner starts it (no Ray running yet). Its ``ray.shutdown`` is
    recorded but deferred, so the second Ray test can reuse the warm instance; the fixture shuts it down."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    real_init, real_shutdown = ray.init, ray.shutdown
    calls = {"init": [], "shutdown": 0}

    def init(*args, **kwargs):
        calls["init"].append(kwargs)
        return real_init(*args, **kwargs)

    def shutdown(*args, **kwargs):
        calls["shutdown"] += 1

    exp = write_tiny_experiment(shared / "experiments")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ray, "init", init)
            mp.setattr(ray, "shutdown", shutdown)
            result = run_sweep(exp, workdir=shared / "ray-local", fuse="always", executor="ray", report=False,
                               console=quiet_console())
        yield {"result": result, "calls": calls, "address": ray.get_runtime_context().gcs_address,
               "cpus": ray.cluster_resources().get("CPU")}
    finally:
        real_shutdown()


def test_ray_executor_starts_local_instance(ray_started_by_runner, inline_reference):
    info = ray_started_by_runner
    (kwargs,) = info["calls"]["init"]
    assert kwargs.get("_node_ip_address") == "127.0.0.1"
    assert kwargs.get("num_cpus") == 2 and info["cpus"] == 2
    assert kwargs.get("include_dashboard") is False and "address" not in kwargs
    assert info["calls"]["shutdown"] == 1  # the instance it started, it shuts down
    result = info["result"]
    assert all(set(g["statuses"].values()) == {"completed"} for g in result.groups) and len(result.groups) == 2
    assert_same_results(result.store, inline_reference)


def test_ray_executor_uses_running_instance(ray_started_by_runner, inline_reference, tiny_experiment, tmp_path,
                                            monkeypatch):
    import ray

    address = ray_started_by_runner["address"]
    assert ray.is_initialized()
    calls = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: calls.append(("init", k)))
    monkeypatch.setattr(ray, "shutdown", lambda *a, **k: calls.append(("shutdown", k)))
    result = run_sweep(tiny_experiment, workdir=tmp_path / "ray-address", fuse="always", executor="ray",
                       ray_address=address, report=False, console=quiet_console())
    assert calls == []  # connected to the running instance, left it running
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == address
    assert_same_results(result.store, inline_reference)


# --------------------------------------------------------------------------------------------------------------------
# 3. SIGKILL mid-sweep, then rerun
# --------------------------------------------------------------------------------------------------------------------


def _snapshot(db: Path) -> dict[str, dict]:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("SELECT id, status, started, finished, run_dir FROM runs").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return {}
    return {r[0]: {"status": r[1], "started": r[2], "finished": r[3], "run_dir": r[4]} for r in rows}


def _has_checkpoint(run_dir: str | None) -> bool:
    d = Path(run_dir or "/nonexistent") / "checkpoints"
    return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


def test_sigkilled_sweep_resumes_without_retraining(shared, write_tiny_experiment, tmp_path):
    steps = 60
    exp = write_tiny_experiment(tmp_path / "experiments", "killme", steps=steps, lrs=(3e-3, 1e-2, 3e-2),
                                two_models=False)
    workdir = tmp_path / "sweep"
    db = workdir / "sweep.db"
    cmd = [sys.executable, "-m", "jaxdl.cli", "sweep", str(exp), "--workdir", str(workdir), "--fuse", "never"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        enough_at = None
        while True:
            assert proc.poll() is None, f"sweep ended before it was killed:\n{(tmp_path / 'first.log').read_text()}"
            assert time.monotonic() < deadline, "sweep too slow to reach 2 completed runs"
            snap = _snapshot(db) if db.exists() else {}
            done = [k for k, v in snap.items() if v["status"] == "completed"]
            if len(done) >= 2:
                enough_at = enough_at or time.monotonic()
                # prefer to kill while the next run is mid-training with a checkpoint on disk (a real resume)
                running = [v for v in snap.values() if v["status"] == "running"]
                if any(_has_checkpoint(v["run_dir"]) for v in running) or time.monotonic() - enough_at > 3:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL

    killed = {r["id"]: {k: r[k] for k in ("status", "started", "finished", "run_dir")} for r in SweepStore(db).runs()}
    completed = {k: v for k, v in killed.items() if v["status"] == "completed"}
    interrupted = [k for k, v in killed.items() if v["status"] == "running"]
    checkpointed = {k for k in interrupted if _has_checkpoint(killed[k]["run_dir"])}
    assert len(killed) == 6 and 2 <= len(completed) < 6
    assert all(v["finished"] is not None for v in completed.values())
    jsonl_before = {k: (Path(v["run_dir"]) / "metrics.jsonl").read_text() for k, v in completed.items()}

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{len(completed)} runs already finished" in second.stdout and "skipped" in second.stdout

    store = SweepStore(db)
    after = {r["id"]: r for r in store.runs()}
    assert set(after) == set(killed) and store.counts() == {"completed": 6}
    for run_id, before in completed.items():  # skipped, not retrained
        assert after[run_id]["finished"] == before["finished"]
        assert after[run_id]["started"] == before["started"]
        assert (Path(before["run_dir"]) / "metrics.jsonl").read_text() == jsonl_before[run_id]
    for run_id in interrupted:  # resumed to the end
        assert after[run_id]["started"] == killed[run_id]["started"]
        summary = json.loads((Path(after[run_id]["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == steps
        resumed_from = json.loads((Path(after[run_id]["run_dir"]) / "config.json").read_text())["resumed_from"]
        if run_id in checkpointed:  # continued from its checkpoint, not restarted
            assert resumed_from and resumed_from % 10 == 0 and resumed_from < steps

    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM runs").fetchone() == (6, 6)
        dupes = con.execute("SELECT run_id, step, key, COUNT(*) FROM metrics GROUP BY run_id, step, key "
                            "HAVING COUNT(*) > 1").fetchall()
        assert dupes == []
        counts = dict(con.execute("SELECT run_id, COUNT(*) FROM metrics GROUP BY run_id").fetchall())
    for run_id, run in after.items():
        records = [json.loads(line) for line in (Path(run["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == list(range(10, steps + 1, 10)), run_id  # no duplicated records
        expected = sum(1 for r in records for k, v in r.items() if k != "step" and isinstance(v, (int, float)))
        assert counts[run_id] == expected, run_id
        assert json.loads((Path(run["run_dir"]) / "summary.json").read_text())["steps"] == steps


# --------------------------------------------------------------------------------------------------------------------
# 4. command line
# --------------------------------------------------------------------------------------------------------------------


def _table_rows(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines
             if line.startswith("|") and not line.startswith("|---")]
    return cells[0], cells[1:]


def test_cli_dry_run_sweep_and_report(tiny_experiment, tmp_path, capsys, inline_reference):
    workdir = tmp_path / "cli"

    assert main(["sweep", str(tiny_experiment), "--workdir", str(workdir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sweep tiny: 8 runs in 2 groups" in out
    assert "mlp/cross_entropy" in out and "perceptron/cross_entropy" in out and "probe decides" in out
    assert len({g["group_id"] for g in inline_reference.values()}) == 2
    for gid in {g["group_id"] for g in inline_reference.values()}:
        assert gid in out
    for run_id, run in inline_reference.items():  # each member by its run id and the values it takes
        values = f"lr={run['swept']['optim.lr']:g} seed={run['swept']['seed']}"
        assert any(line.split()[:1] == [run_id] and line.endswith(values) for line in out.splitlines()), run_id
    assert not (workdir / "sweep.db").exists()

    # --sweep replaces the experiment's grid: the base config (MLP) × 2 lr × 2 seeds
    assert main(["sweep", str(tiny_experiment), "--workdir", str(workdir), "--fuse", "always",
                 "--sweep", "optim.lr=0.01,0.02 seed=0:2"]) == 0
    out = capsys.readouterr().out
    assert "sweep tiny: 4 runs in 1 groups" in out
    store = SweepStore(workdir / "sweep.db")
    runs = store.runs()
    assert store.counts() == {"completed": 4}
    assert sorted((float(r["config"]["optim"]["lr"]), r["config"]["seed"]) for r in runs) == [
        (0.01, 0), (0.01, 1), (0.02, 0), (0.02, 1)]
    assert {r["config"]["model"]["name"] for r in runs} == {"mlp"}
    # the swept values are recorded as numbers (not the strings of the command line), so lr gets a line plot
    assert sorted((r["swept"]["optim.lr"], r["swept"]["seed"]) for r in runs) == [
        (0.01, 0), (0.01, 1), (0.02, 0), (0.02, 1)]
    assert (workdir / "plots" / "val_accuracy_vs_optim_lr.png").is_file()
    # ranked by validation accuracy; test accuracy (same variables) shown beside it
    accuracy = {r["id"]: r["val"]["accuracy"] for r in runs}
    test_accuracy = {r["id"]: r["test"]["accuracy"] for r in runs}
    ranked = sorted(accuracy, key=accuracy.get, reverse=True)

    assert main(["report", str(workdir), "--format", "md", "--no-plots"]) == 0
    out = capsys.readouterr().out
    header, rows = _table_rows(out.splitlines())
    rows = rows[:4]  # the ranked runs (the per-configuration table follows)
    assert header[:4] == ["rank", "run", "status", "model"] and "val/accuracy" in header
    col = header.index("val/accuracy")
    assert [r[header.index("run")] for r in rows] == ranked
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    shown = [float(r[col]) for r in rows]
    assert shown == sorted(shown, reverse=True)
    np.testing.assert_allclose(shown, [accuracy[k] for k in ranked], atol=5e-4)
    np.testing.assert_allclose([float(r[header.index("test/accuracy")]) for r in rows],
                               [test_accuracy[k] for k in ranked], atol=5e-4)
    assert (workdir / "report.md").is_file()
    assert _table_rows((workdir / "report.md").read_text().splitlines())[1][:4] == rows

    assert main(["report", str(workdir), "--format", "csv", "--no-plots"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("rank,run,"))
    table = list(csv.DictReader(lines[start:start + 5]))
    assert [r["run"] for r in table] == ranked and [r["rank"] for r in table] == ["1", "2", "3", "4"]
    np.testing.assert_allclose([float(r["val/accuracy"]) for r in table], [accuracy[k] for k in ranked],
                               rtol=1e-6)
    with (workdir / "report.csv").open() as f:
        assert [r["run"] for r in csv.DictReader(f)] == ranked


def test_a_group_failing_in_its_worker_is_recorded_and_the_sweep_goes_on(shared, write_tiny_experiment, tmp_path,
                                                                          monkeypatch, capsys):
    """A group whose setup fails only in the worker (before its run directories exist): its runs are recorded as
    failed (database and error.txt), the other group trains, and ``jaxdl sweep`` exits 1 naming the failed runs."""
    from jaxdl.experiment import plan

    # the planner would load each group's data to estimate its memory and catch the bad batch size up front;
    # without that, the error first surfaces in the worker, as a setup error of a real sweep may
    monkeypatch.setattr(plan, "member_bytes", lambda cfg: 1 << 20)
    exp = write_tiny_experiment(tmp_path / "experiments", "failing", steps=10, two_models=False)
    workdir = tmp_path / "sweep"
    code = main(["sweep", str(exp), "--workdir", str(workdir), "--executor", "processes", "--workers", "2",
                 "--fuse", "always", "--sweep", "train.batch_size=32,100000 seed=0:2"])
    out = capsys.readouterr().out
    assert code == 1, out
    store = SweepStore(workdir / "sweep.db")
    runs = store.runs()
    assert store.counts() == {"completed": 2, "failed": 2}
    failed = [r for r in runs if r["status"] == "failed"]
    assert {r["config"]["train"]["batch_size"] for r in failed} == {100000}
    for r in failed:
        assert "train.batch_size=100000 exceeds" in r["error"]
        assert "ConfigError" in (Path(r["run_dir"]) / "error.txt").read_text()
        assert r["id"] in out and "error.txt" in out
    assert "2 of 4 runs failed" in out
    assert (workdir / "report.md").is_file()  # the report still covers the runs that finished


def test_cli_errors_exit_2_naming_the_problem(tiny_experiment, tmp_path, capsys):
    workdir = tmp_path / "bad"
    missing = tmp_path / "no_such_experiment.py"
    assert main(["sweep", str(missing), "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "no_such_experiment.py" in err and "does not exist" in err

    assert main(["sweep", str(tiny_experiment), "--workdir", str(workdir), "--sweep", "optim.lr seed=0:2"]) == 2
    err = capsys.readouterr().err
    assert "'optim.lr'" in err and "key=v1,v2" in err

    assert main(["sweep", str(tiny_experiment), "--workdir", str(workdir), "--sweep", "optim.lrr=0.1,0.2"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err

    assert main(["sweep", str(tiny_experiment), "--workdir", str(workdir), "--sweep", "seed=3:1"]) == 2
    assert "empty range" in capsys.readouterr().err

    assert main(["sweep", str(tiny_experiment), "--workdir", str(workdir), "--sweep", "optim.lr=1e-3,,3e-3"]) == 2
    assert capsys.readouterr().err == "error: --sweep item 'optim.lr=1e-3,,3e-3': value 2 is empty\n"

    assert main(["report", str(workdir)]) == 2
    assert "no sweep.db" in capsys.readouterr().err
    assert not (workdir / "sweep.db").exists()
