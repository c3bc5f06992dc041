"""The Transformer benchmark: its bookkeeping (medians, ratios, MFU, peaks) and one --quick run end to end in a
subprocess (structure, the parity check and positive numbers; no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_transformer.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_transformer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "transformer"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True, text=True,
                          timeout=300, cwd=SCRIPT.parents[1])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.with_suffix(".json").read_text()), out.with_suffix(".md").read_text()


def test_summarize_medians_and_ratios_to_the_base_side(bench):
    raw = {"jaxdl": [{"tokens_per_s": 100.0}, {"tokens_per_s": 300.0}, {"tokens_per_s": 200.0}],
           "torch@2": [{"tokens_per_s": 50.0}, {"tokens_per_s": 150.0}, {"tokens_per_s": 400.0}]}
    s = bench.summarize(raw, "tokens_per_s", "jaxdl")
    assert s["median"] == {"jaxdl": 200.0, "torch@2": 150.0}
    assert s["over_jaxdl"] == {"torch@2": pytest.approx(0.75)}  # a ratio of medians
    assert s["over_jaxdl_per_round"]["torch@2"] == pytest.approx([0.5, 0.5, 2.0])
    assert bench.ratio(None, 1.0) is None and bench.ratio(1.0, 0) is None


def test_peak_and_mfu(bench):
    assert bench.peak_tflops_for("NVIDIA H200") == bench.PEAK_TFLOPS["H200"]
    assert bench.peak_tflops_for("NVIDIA A100-SXM4-80GB") == bench.PEAK_TFLOPS["A100"]
    assert bench.peak_tflops_for("cpu") is None
    assert bench.mfu(1_000_000, 1e6, 12.0) == pytest.approx(0.5)  # 6 · 1e6 · 1e6 = 6e12 of 12e12 FLOP/s
    assert bench.mfu(1_000_000, 1e6, None) is None and bench.mfu(10, None, 1.0) is None
    lrs = bench.member_lrs(4)
    assert lrs[0] == pytest.approx(3e-4) and lrs[-1] == pytest.approx(3e-3) and bench.member_lrs(1) == [1e-3]


def test_quick_run_has_every_section_with_positive_numbers(quick):
    data, table = quick
    machine = data["machine"]
    for key in ("jax", "torch", "cpu_count", "command", "loadavg_start", "loadavg_end"):
        assert key in machine
    assert "--quick" in machine["command"] and len(machine["loadavg_start"]) == 3
    parity = data["parity"]
    assert parity["ok"] and parity["max_abs_logit_diff"] <= 1e-4  # same weights -> the same function
    assert parity["first_loss_jaxdl"] == pytest.approx(parity["first_loss_torch"], rel=1e-5)
    train = data["train"]
    assert set(train["median"]) == {"jaxdl", "torch@1"} and all(v > 0 for v in train["median"].values())
    assert train["over_jaxdl"]["torch@1"] > 0
    [gen] = data["generate"]["cases"]
    assert set(gen["median"]) == {"jaxdl", "torch_cache@1", "torch_no_cache@1"}
    assert all(v > 0 for v in gen["median"].values()) and gen["jaxdl_first_call_s"] > 0
    assert 0.0 <= gen["greedy_agree_jaxdl_torch_cache"] <= 1.0
    comp = data["compile"]["median"]
    assert set(comp) == {"train", "generate"}
    assert all(comp[p]["cold"][k] > 0 for p in comp for k in ("lower_s", "compile_s"))
    [pop] = data["population"]["cases"]
    assert pop["members"] == 2 and all(v > 0 for v in pop["median"].values())
    assert pop["over_one_by_one"]["fused"] > 0 and pop["compile"]["fused"]["first_segment_s"] > 0
    assert data["mfu"]["applicable"] is False and "GPU only" in data["mfu"]["reason"]
    assert "not a measurement" in table and "shared with other work" in table
    for heading in ("Parity", "Training", "Generation", "Compile times", "Population", "MFU"):
        assert heading in table
