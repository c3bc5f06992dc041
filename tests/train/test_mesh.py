"""The ("pop", "data") mesh on 1, 2, 4 and 8 fake CPU devices: a run's batch split over the data axis, a fused
population over the pop axis, both at once, and checkpoints restored across topologies — each equal to the
one-device run (up to the order of float additions). One subprocess (the device count is fixed when JAX starts)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ATOL = 2e-6  # SGD with momentum, 12 steps: float32 reassociation of the sharded sums only


@pytest.fixture(scope="module")
def cases():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, str(ROOT / "tests/train/mesh_worker.py"), "compiled", "single_runs",
                          "populations", "topologies", "errors"], capture_output=True, text=True, env=env,
                         timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    by_case: dict[str, list] = {}
    for r in records:
        by_case.setdefault(r["case"], []).append(r)
    return by_case


def check_the_data_axis_splits_the_batch(cases):
    (c,) = cases["compiled"]
    assert c["rows"] == [8, 8, 8, 8] and c["all_reduce"] and c["share"] == [0, 1]


def check_single_run_equals_one_device_on_2_4_8_devices(cases):
    runs = {r["mesh"]: r for r in cases["single"]}
    assert set(runs) == {"1x1", "1x2", "1x4", "auto", "1x8"}
    for mesh, r in runs.items():
        assert r["diff"] < ATOL, (mesh, r["diff"])
        assert abs(r["val_loss"][0] - r["val_loss"][1]) < 1e-5
        assert abs(r["train_loss"][0] - r["train_loss"][1]) < 1e-5
    # train.mesh as requested and as resolved is recorded in config.json
    assert runs["1x1"]["placement"]["devices"] == 1 and not runs["1x1"]["placement"]["sharded"]
    assert runs["1x4"]["placement"]["shape"] == {"pop": 1, "data": 4}
    auto = runs["auto"]["placement"]
    assert (auto["mesh"], auto["devices"], auto["shape"]) == ("auto", 8, {"pop": 1, "data": 8})


def check_population_over_pop_data_and_both_equals_one_device(cases):
    runs = {r["mesh"]: r for r in cases["population"]}
    assert set(runs) == {"1x1", "1x2", "4x1", "2x4", "auto"}
    for mesh, r in runs.items():
        assert r["diff"] < ATOL, (mesh, r["diff"])
        for a, b in r["val_loss"]:
            assert abs(a - b) < 1e-5
    # auto: 4 members on 8 devices -> 4 member shards of 2 devices each
    assert runs["auto"]["placement"]["shape"] == {"pop": 4, "data": 2}
    assert runs["2x4"]["placement"]["devices"] == 8


def check_checkpoints_restore_across_topologies(cases):
    runs = {(r["saved"], r["resumed"]): r for r in cases["topology"]}
    assert set(runs) == {("1x4", "1x1"), ("1x4", "1x2"), ("1x1", "1x4")}
    for key, r in runs.items():
        assert r["resumed_from"] == 6 and r["diff"] < ATOL, (key, r)
    # each array is placed for the new mesh, not the saved one
    assert runs[("1x4", "1x1")]["shardings"] == ["single"]
    assert "('data', 2)" in runs[("1x4", "1x2")]["shardings"][0]
    assert "('data', 4)" in runs[("1x1", "1x4")]["shardings"][0]
    pops = {(r["saved"], r["resumed"]): r for r in cases["population-topology"]}
    assert set(pops) == {("4x2", "1x1"), ("1x1", "2x2")}
    assert all(r["diff"] < ATOL for r in pops.values()), pops
    assert pops[("1x1", "2x2")]["placement"]["shape"] == {"pop": 2, "data": 2}


def check_mesh_errors_name_the_key_and_the_numbers(cases):
    messages = {r["mesh"]: r["message"] for r in cases["error"]}
    assert messages["4x4"] == "train.mesh=4x4: a 4 x 4 mesh needs 16 devices, 8 are available"
    assert "pop axis (3) must divide the group's members (4" in messages["3x1"]
    assert "data axis (5) must divide the batch of 32" in messages["1x5"]


def test_mesh_on_fake_devices(cases):
    """One test for the subprocess's cases: pytest-xdist would otherwise run the module fixture once per worker."""
    check_the_data_axis_splits_the_batch(cases)
    check_single_run_equals_one_device_on_2_4_8_devices(cases)
    check_population_over_pop_data_and_both_equals_one_device(cases)
    check_checkpoints_restore_across_topologies(cases)
    check_mesh_errors_name_the_key_and_the_numbers(cases)


def test_mesh_spec_is_checked_before_anything_loads():
    from jaxdl import config as C
    from jaxdl.errors import ConfigError
    from jaxdl.train.setup import validate

    with pytest.raises(ConfigError, match=r"train.mesh: expected auto or POPxDATA .* got '8'"):
        validate(C.apply_overrides(C.Config(), {"train.mesh": "8"}))
