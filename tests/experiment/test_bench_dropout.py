"""The dropout-mask benchmark runs end to end on a tiny setting and reports both builds (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_bench_dropout_reports_both_builds(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("bench_dropout", SCRIPTS / "bench_dropout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["bench_dropout.py"])
    out = module.main(["--models", "mlp", "--members", "1", "2", "--repeats", "1", "--step-seconds", "0.001",
                       "--out", str(tmp_path / "drop")])
    assert [(r["model"], r["members"]) for r in out["rows"]] == [("mlp", 1), ("mlp", 2)]
    for row in out["rows"]:
        for build in ("with_masks", "without_masks"):
            assert row[build]["compile_s"] > 0 and row[build]["step_s"] > 0
        assert row["step_ratio"] == row["without_masks"]["step_s"] / row["with_masks"]["step_s"]
    saved = json.loads((tmp_path / "drop.json").read_text())
    assert saved["rows"][1]["members"] == 2
    table = (tmp_path / "drop.md").read_text()
    assert "| mlp | 2 |" in table and "without" in table
