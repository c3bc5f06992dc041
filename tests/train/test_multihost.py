"""Two local processes with two fake CPU devices each train one run over a 1x4 global mesh (coordinator on
127.0.0.1): each feeds its own half of every batch, process 0 alone writes the run's files, checkpoints are written
jointly — and the result equals a single-process run's."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdl import config as C
from jaxdl.errors import ConfigError
from jaxdl.train import fit, restore

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["train.steps=12", "train.eval_every=6", "train.checkpoint_every=6", "train.batch_size=32",
             "train.progress=false", "train.plots=false", "optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9",
             "optim.weight_decay=0.0", "train.driver=auto"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    work = tmp_path_factory.mktemp("multihost")
    run_dir = work / "run"
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAXDL_CACHE_DIR": str(work / "cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "jaxdl.cli", "train", "configs/digits_mlp.py", *OVERRIDES,
                               "--workdir", str(run_dir), "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", "2", "--process-id", str(i)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=600))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    return run_dir, outs


def check_two_processes_equal_one(two_processes, tmp_path):
    run_dir, outs = two_processes
    cfg = C.load_config("configs/digits_mlp.py", OVERRIDES)
    alone = fit(cfg, workdir=tmp_path / "alone")
    summary = json.loads((run_dir / "summary.json").read_text())
    for split in ("val", "test"):
        for k in ("loss", "accuracy"):
            np.testing.assert_allclose(summary[split][k], alone.summary[split][k], rtol=1e-5, atol=1e-6)
    # the jointly written checkpoint holds the same parameters
    _, variables = restore(run_dir, "latest")
    for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(alone.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)


def check_process_zero_alone_writes_the_run(two_processes):
    run_dir, outs = two_processes
    placement = json.loads((run_dir / "config.json").read_text())["placement"]
    assert placement["processes"] == 2 and placement["devices"] == 4 and placement["shape"] == {"pop": 1, "data": 4}
    driver = json.loads((run_dir / "config.json").read_text())["driver"]
    assert driver["chosen"] == "host" and "own rows" in driver["how"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [6, 12]  # one writer: no duplicated records
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == ["12", "6"]
    assert str(run_dir) in outs[0][0] and str(run_dir) not in outs[1][0]  # process 1 prints no summary


def test_two_processes(two_processes, tmp_path):
    """One test for the processes' run (pytest-xdist would otherwise start them once per worker)."""
    check_two_processes_equal_one(two_processes, tmp_path)
    check_process_zero_alone_writes_the_run(two_processes)


def test_bad_distributed_flags_are_named():
    from jaxdl import distributed

    with pytest.raises(ConfigError, match=r"--coordinator: expected HOST:PORT \(e.g. 10.0.0.1:8476\), got 'localhost'"):
        distributed._checked("localhost", 2, 0)
    with pytest.raises(ConfigError, match=r"--process-id: expected 0 … 1 for 2 processes, got 2"):
        distributed._checked("127.0.0.1:1234", 2, 2)
    with pytest.raises(ConfigError, match=r"--num-processes missing"):
        distributed._checked("127.0.0.1:1234", None, 0)
