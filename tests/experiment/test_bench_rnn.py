"""The recurrent benchmark: its bookkeeping (medians, ratios, the table) and one --quick run end to end in a
subprocess (structure only; no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_rnn.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_rnn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_member_lrs_are_log_spaced(bench):
    lrs = bench.member_lrs(16)
    assert len(lrs) == 16 and lrs[0] == pytest.approx(3e-4) and lrs[-1] == pytest.approx(3e-3)
    assert lrs[1] / lrs[0] == pytest.approx(lrs[-1] / lrs[-2])
    assert bench.member_lrs(1) == [1e-3]


def test_summarize_train_ratios_per_torch_side(bench):
    raw = {"jaxdl": [{"steps_per_s": 2.0, "compile_s": 3.0, "first_call_s": 3.5},
                     {"steps_per_s": 4.0, "compile_s": 5.0, "first_call_s": 5.2},
                     {"steps_per_s": 3.0, "compile_s": 4.0, "first_call_s": 4.4}],
           "torch@2": [{"steps_per_s": 1.0}, {"steps_per_s": 2.0}, {"steps_per_s": 0.5}],
           "torch@1": [{"steps_per_s": 6.0}, {"steps_per_s": 6.0}, {"steps_per_s": 6.0}]}
    c = bench.summarize_train("lstm", raw)
    assert c["median"]["steps_per_s"] == {"jaxdl": 3.0, "torch@2": 1.0, "torch@1": 6.0}
    assert c["median"]["jaxdl_compile_s"] == 4.0
    assert c["ratios"]["jaxdl_over_torch"] == {"torch@2": 3.0, "torch@1": 0.5}  # ratio of medians, losses kept
    assert c["ratios"]["jaxdl_over_torch_per_repeat"]["torch@2"] == [2.0, 2.0, 6.0]
    assert c["ratios"]["compile_s_in_torch_steps"] == {"torch@2": 4.0, "torch@1": 24.0}
    assert c["repeats"] == {"jaxdl": 3, "torch@2": 3, "torch@1": 3}


def test_summarize_population_ratios(bench):
    raw = {"fused": [{"round_s": 0.010, "compile_s": 2.0}, {"round_s": 0.012, "compile_s": 2.2}],
           "one_by_one": [{"round_s": 0.030, "compile_s": 1.0}, {"round_s": 0.024, "compile_s": 1.2}],
           "torch@1": [{"round_s": 0.066}, {"round_s": 0.066}]}
    c = bench.summarize_population(16, raw)
    assert c["median_round_s"]["fused"] == pytest.approx(0.011)
    assert c["ratios"]["one_by_one_over_fused"] == pytest.approx(0.027 / 0.011)
    assert c["ratios"]["one_by_one_over_fused_per_repeat"] == pytest.approx([3.0, 2.0])
    assert c["ratios"]["torch_over_fused"]["torch@1"] == pytest.approx(6.0)
    assert c["ratios"]["torch_over_one_by_one"]["torch@1"] == pytest.approx(0.066 / 0.027)
    assert c["median_compile_s"] == pytest.approx({"fused": 2.1, "one_by_one": 1.1})
    assert len(c["lrs"]) == 16


def test_ratio_handles_missing_values(bench):
    assert bench.ratio(None, 1.0) is None and bench.ratio(1.0, 0) is None and bench.ratio(3.0, 2.0) == 1.5


def test_quick_run_writes_json_and_markdown(tmp_path):
    out = tmp_path / "rnn"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--torch-threads", "1", "--cells", "lstm",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=240, cwd=SCRIPT.parents[1])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads((tmp_path / "rnn.json").read_text())
    machine = data["machine"]
    for key in ("jax", "torch", "torch_threads", "cpu_count", "command", "loadavg_start", "loadavg_end"):
        assert key in machine
    assert machine["torch_threads"] == [1] and len(machine["loadavg_start"]) == 3 and "--quick" in machine["command"]
    assert [c["cell"] for c in data["train"]] == ["lstm"]  # one cell keeps the run short (gru: same code path)
    for c in data["train"]:
        assert set(c["raw"]) == {"jaxdl", "torch@1"}
        jx, th = c["raw"]["jaxdl"][0], c["raw"]["torch@1"][0]
        assert jx["steps_per_s"] > 0 and th["steps_per_s"] > 0 and jx["first_call_s"] > 0
        assert len(jx["step_s"]) == data["args"]["steps"]
        assert jx["first_loss"] == pytest.approx(th["first_loss"], rel=1e-4)  # same weights, same batch
        assert c["ratios"]["jaxdl_over_torch"]["torch@1"] > 0
    [pop] = data["population"]
    assert pop["members"] == 4 and set(pop["raw"]) == {"fused", "one_by_one", "torch@1"}
    assert pop["ratios"]["one_by_one_over_fused"] > 0
    assert data["loadavg_per_repeat"]
    table = (tmp_path / "rnn.md").read_text()
    assert "shared with other work" in table and "| lstm |" in table
    assert "| 4 |" in table and "one-by-one / fused" in table and "not a measurement" in table
