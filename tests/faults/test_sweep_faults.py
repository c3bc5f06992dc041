"""Sweep drivers under faults: several drivers on one sweep directory split it (atomic claims, heartbeats, stale claims
taken over), a SIGKILLed driver leaves no worker behind, a SIGTERMed one leaves a consistent database that a rerun
completes, and oversized sweeps or ``--workers 0`` are clean errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep_testing import env, write_experiment

FOUR_GROUPS = "train.steps=17,18,19,20 seed=0,1"  # 8 runs; the step count is part of a group's signature


def sweep_cmd(exp: Path, workdir: Path, sweep: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "jaxdl.cli", "sweep", str(exp), "--workdir", str(workdir), "--sweep", sweep,
            "--fuse", "always", *args]


def start(cmd, cwd: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def db_rows(sweep: Path) -> list[dict]:
    db = sqlite3.connect(sweep / "sweep.db", timeout=60)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT id, status, owner, heartbeat FROM runs")]
    finally:
        db.close()


def assert_trained_once(sweep: Path, n: int) -> dict[str, str]:
    """Every run completed, its metrics.jsonl has each step once and ends at its config's steps, and its
    config.json names the owner the database records. Returns {run id: owner}."""
    rows = db_rows(sweep)
    assert len(rows) == n and {r["status"] for r in rows} == {"completed"}, rows
    owners = {}
    for r in rows:
        run = sweep / "runs" / r["id"]
        steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
        config = json.loads((run / "config.json").read_text())
        assert len(steps) == len(set(steps)), (r["id"], steps)  # trained once: no step twice
        assert steps[-1] == config["config"]["train"]["steps"]
        assert config.get("sweep_owner") == r["owner"], (config.get("sweep_owner"), r["owner"])
        owners[r["id"]] = r["owner"]
    return owners


def wait_until(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def running(sweep: Path):
    try:
        return [r for r in db_rows(sweep) if r["status"] == "running"]
    except sqlite3.Error:
        return []


# --------------------------------------------------------------------------------------------------------------------
# Several drivers, one sweep
# --------------------------------------------------------------------------------------------------------------------


def test_two_drivers_train_every_run_once(tmp_path):
    exp = write_experiment(tmp_path / "exp")
    sweep = tmp_path / "sweep"
    procs = [start(sweep_cmd(exp, sweep, FOUR_GROUPS), tmp_path, tmp_path / "cache") for _ in range(2)]
    results = [finish(p) for p in procs]
    for rc, out, err in results:
        assert rc == 0, err[-3000:]
        assert "Traceback" not in err
    owners = assert_trained_once(sweep, 8)
    print("runs per driver:", {o: list(owners.values()).count(o) for o in set(owners.values())})
    assert all(o.count(":") >= 2 and o.split(":")[0] == socket.gethostname() for o in owners.values())


def test_three_drivers_split_24_runs(tmp_path):
    exp = write_experiment(tmp_path / "exp")
    grid = "train.steps=15:21 optim.lr=1e-3,3e-3 seed=0,1"  # 24 runs in 6 groups
    one = float("nan")
    if os.environ.get("JAXDL_SWEEP_TIMING"):  # the one-driver reference (about a minute on 2 cores): on request
        t0 = time.perf_counter()
        rc, _, err = finish(start(sweep_cmd(exp, tmp_path / "one", grid), tmp_path, tmp_path / "cache"))
        one = time.perf_counter() - t0
        assert rc == 0, err[-3000:]
    sweep = tmp_path / "three"
    t0 = time.perf_counter()
    procs = [start(sweep_cmd(exp, sweep, grid), tmp_path, tmp_path / "cache") for _ in range(3)]
    results = [finish(p) for p in procs]
    three = time.perf_counter() - t0
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    owners = assert_trained_once(sweep, 24)
    print(f"24 runs: one driver {one:.1f} s, three drivers {three:.1f} s; runs per driver: "
          f"{sorted(list(owners.values()).count(o) for o in set(owners.values()))}")


def test_stale_claims_are_taken_over_live_and_finished_ones_are_not(tmp_path):
    from jaxdl.experiment.store import SweepStore

    store = SweepStore(tmp_path / "sweep.db")
    for i in range(5):
        store.add_run(f"r{i}", name=f"r{i}", group_id="g", config={}, config_hash=f"r{i}", labels={}, swept={},
                      run_dir=str(tmp_path / "runs" / f"r{i}"))
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = f"{host}:{os.getpid()}:mine"
    other_live = f"{host}:{os.getppid()}:live"         # a process that exists, fresh heartbeat
    other_dead = f"{host}:{dead.pid}:dead"              # the process is gone (heartbeat fresh)
    far_old = "elsewhere:123:old"                       # another host: only the heartbeat can tell
    assert store.claim(["r0"], other_live, 60.0)[0] == ["r0"]
    assert store.claim(["r1"], other_dead, 60.0)[0] == ["r1"]
    assert store.claim(["r2"], far_old, 60.0)[0] == ["r2"]
    assert store.claim(["r4"], other_live, 60.0)[0] == ["r4"]
    store.set_running("r2")
    store.finish("r4", {"status": "completed"}, [])
    with sqlite3.connect(tmp_path / "sweep.db") as db:
        db.execute("UPDATE runs SET heartbeat=heartbeat-3600 WHERE id='r2'")
    claimed, still_open = store.claim([f"r{i}" for i in range(5)], me, 60.0)
    assert claimed == ["r1", "r2", "r3"]          # dead pid, old heartbeat, unclaimed
    assert still_open == ["r0", "r1", "r2", "r3"]  # r4 finished: never claimed again
    assert store.claim(["r0"], me, 60.0)[0] == []  # live owner, fresh heartbeat
    time.sleep(0.3)
    assert store.claim(["r0"], me, 0.2)[0] == ["r0"]  # the same claim, now older than the timeout
    store.release(me)
    rows = {r["id"]: r for r in store.runs()}
    assert rows["r2"]["status"] == "preempted" and rows["r2"]["owner"] is None  # was running: resumed next time
    assert rows["r4"]["owner"] == other_live and rows["r4"]["status"] == "completed"


# --------------------------------------------------------------------------------------------------------------------
# Signals and process hygiene
# --------------------------------------------------------------------------------------------------------------------


def _alive(pids: list[int]) -> list[int]:
    try:
        import psutil
    except ImportError:
        return [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in
                Path(f"/proc/{p}/stat").read_text().split(")")[-1].split()[:1]]
    out = []
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _descendants(pid: int) -> list[int]:
    psutil = pytest.importorskip("psutil")
    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


def test_sigkilled_driver_leaves_no_workers_and_a_rerun_completes(tmp_path):
    exp = write_experiment(tmp_path / "exp")
    sweep = tmp_path / "sweep"
    cmd = sweep_cmd(exp, sweep, FOUR_GROUPS, "--executor", "processes", "--workers", "2")
    proc = start(cmd, tmp_path, tmp_path / "cache")
    wait_until(lambda: running(sweep), 180, "a run in a worker", proc)
    workers = wait_until(lambda: _descendants(proc.pid), 30, "worker processes", proc)
    proc.kill()
    proc.wait()
    t0 = time.time()
    while _alive(workers) and time.time() - t0 < 10:
        time.sleep(0.1)
    assert not _alive(workers), f"workers still alive {time.time() - t0:.1f} s after the driver was SIGKILLed"
    print(f"{len(workers)} worker processes gone {time.time() - t0:.1f} s after SIGKILL")
    # the dead driver's claims are stale at once (its pid is gone): the rerun does not wait for them
    rc, out, err = finish(start(sweep_cmd(exp, sweep, FOUR_GROUPS), tmp_path, tmp_path / "cache"))
    assert rc == 0, err[-3000:]
    assert "waiting for" not in out
    assert_trained_once(sweep, 8)


def test_sigterm_stops_the_sweep_consistently_and_a_rerun_completes(tmp_path):
    exp = write_experiment(tmp_path / "exp")
    sweep = tmp_path / "sweep"
    cmd = sweep_cmd(exp, sweep, FOUR_GROUPS, "--executor", "processes", "--workers", "2")
    proc = start(cmd, tmp_path, tmp_path / "cache")
    wait_until(lambda: running(sweep), 180, "a run in a worker", proc)
    workers = _descendants(proc.pid)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    rc, out, err = finish(proc, timeout=90)
    print(f"SIGTERM: driver exited {rc} after {time.time() - t0:.1f} s")
    assert rc == 4, err[-3000:]
    assert "preempted" in err and "rerun" in err
    rows = db_rows(sweep)
    assert not [r for r in rows if r["status"] == "running"], rows
    assert not [r for r in rows if r["status"] != "completed" and r["owner"]], rows  # claims released
    time.sleep(1.0)
    assert not _alive(workers)
    rc, out, err = finish(start(sweep_cmd(exp, sweep, FOUR_GROUPS), tmp_path, tmp_path / "cache"))
    assert rc == 0, err[-3000:]
    assert_trained_once(sweep, 8)


# --------------------------------------------------------------------------------------------------------------------
# Caps and arguments
# --------------------------------------------------------------------------------------------------------------------


def test_sweep_over_max_runs_needs_force_and_workers_zero_is_an_error(tmp_path, capsys, monkeypatch):
    from jaxdl.cli import main
    from jaxdl.errors import ConfigError
    from jaxdl.experiment.runner import run_sweep

    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path / "cache"))
    exp = write_experiment(tmp_path / "exp")
    base = ["sweep", str(exp), "--workdir", str(tmp_path / "sweep"), "--sweep", FOUR_GROUPS]
    assert main([*base, "--max-runs", "5"]) == 2
    err = capsys.readouterr().err
    assert "error: sweep 'faulty' has 8 runs, more than --max-runs 5" in err and "--force" in err
    assert not (tmp_path / "sweep" / "sweep.db").exists()  # nothing ran
    assert main([*base, "--max-runs", "5", "--force", "--dry-run"]) == 0
    assert main([*base, "--max-runs", "5", "--dry-run"]) == 0
    assert "needs --force" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="more than --max-runs 3"):
        run_sweep(exp, sweep=FOUR_GROUPS, workdir=tmp_path / "sweep", max_runs=3)
    run_sweep(exp, sweep=FOUR_GROUPS, workdir=tmp_path / "sweep", max_runs=3, force=True, dry_run=True)
    assert main([*base, "--executor", "processes", "--workers", "0"]) == 2
    assert "error: --workers: expected a positive number of workers, got 0" in capsys.readouterr().err
