"""The sweep benchmark's bookkeeping (pooling earlier runs, mode selection) — no timing runs here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_sweep.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _auto(seconds: float, fused: bool) -> dict:
    return {"seconds": seconds, "probe_s": 1.0, "train_s": seconds - 1.0,
            "decision": {"fused": fused, "reason": "probe", "fused_s_per_step": 1.0, "one_by_one_s_per_step": 2.0}}


def _write(path: Path, cases: list[dict]) -> str:
    path.write_text(json.dumps({"machine": {"command": f"python bench {path.name}", "started": "then",
                                            "jax": "0", "device": "cpu:cpu", "torch": "0", "torch_threads": 1,
                                            "affinity_cpus": 2},
                                "cases": cases}))
    return str(path)


def test_combine_pools_repeats_of_the_same_case(bench, tmp_path):
    full = _write(tmp_path / "full.json", [
        {"model": "mlp", "members": 16, "steps": 100, "batch_size": bench.BATCH,
         "raw": {"auto": [_auto(12.0, True)], "fused_cold": [{"seconds": 10.0}], "one_by_one_cold": [{"seconds": 20.0}],
                 "fused": [{"seconds": 9.0}], "one_by_one": [{"seconds": 18.0}]}},
        {"model": "mlp", "members": 64, "steps": 100, "batch_size": bench.BATCH,
         "raw": {"auto": [_auto(30.0, True)], "fused_cold": [{"seconds": 31.0}]}}])
    more = _write(tmp_path / "more.json", [
        {"model": "mlp", "members": 16, "steps": 100, "batch_size": bench.BATCH,
         "raw": {"auto": [_auto(10.5, True), _auto(10.7, True)], "fused_cold": [{"seconds": 10.2}, {"seconds": 9.8}]}}])

    cases, notes = bench.combine([full, more])

    by_members = {c["members"]: c for c in cases}
    small = by_members[16]
    assert small["repeats"] == {"auto": 3, "fused_cold": 3, "one_by_one_cold": 1, "fused": 1, "one_by_one": 1}
    assert small["median_s"]["auto"] == pytest.approx(10.7)
    assert small["median_s"]["fused_cold"] == pytest.approx(10.0)
    assert small["ratios"]["auto_over_best_cold"] == pytest.approx(1.07)
    assert small["ratios"]["one_by_one_over_fused"] == pytest.approx(2.0)
    assert small["auto"]["chose"] == "fused"
    assert by_members[64]["ratios"]["auto_over_best"] is None  # no warm modes in that case
    assert len(notes) == 2 and "full.json" in notes[0] and "more.json" in notes[1]
    table = bench.markdown(cases, {"command": "x", "started": "now", "jax": "0", "device": "cpu", "torch": "0",
                                   "torch_threads": 1, "affinity_cpus": 2}, notes)
    assert "auto 3, fused_cold 3, others 1" in table


def test_combine_takes_only_the_named_models_of_a_file(bench, tmp_path):
    both = _write(tmp_path / "both.json", [
        {"model": "mlp", "members": 16, "steps": 100, "batch_size": bench.BATCH, "raw": {"auto": [_auto(9.0, True)]}},
        {"model": "lenet5", "members": 16, "steps": 50, "batch_size": bench.BATCH,
         "raw": {"auto": [_auto(30.0, False)]}}])
    cases, notes = bench.combine([f"{both}:lenet5"])
    assert [c["model"] for c in cases] == ["lenet5"] and "lenet5 cases only" in notes[0]
    with pytest.raises(SystemExit, match="no vgg cases"):
        bench.combine([f"{both}:lenet5,vgg"])


def test_combine_rejects_another_batch_size(bench, tmp_path):
    other = _write(tmp_path / "other.json", [{"model": "mlp", "members": 4, "steps": 10, "batch_size": 32,
                                              "raw": {"auto": [_auto(1.0, False)]}}])
    with pytest.raises(SystemExit, match="batch size 32"):
        bench.combine([other])


def test_warm_modes_need_auto(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--modes", "fused", "one_by_one_cold"])
    assert "--modes: fused need auto" in capsys.readouterr().err
