"""Run logs survive a crash: a torn last line of metrics.jsonl is dropped with a warning and the run resumes with one
record per step; a garbled line before it is an error naming the file and line; a run whose final evaluation loss
is not finite is recorded ``diverged``."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxdl.config import Config, DataConfig, TrainConfig, model_config
from jaxdl.data import Split, load
from jaxdl.errors import RunLogError
from jaxdl.train import fit
from jaxdl.train.rundir import MetricsLog, RunLogWarning


def small_cfg(**train) -> Config:
    t = dict(batch_size=32, steps=30, checkpoint_every=10, eval_every=10, keep_checkpoints=3, progress=False,
             plots=False, driver="scan")
    t.update(train)
    return Config(name="logs", model=model_config("mlp", widths=(16,)), data=DataConfig(name="digits"),
                  train=TrainConfig(**t))


def test_torn_last_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "val/loss": 1.0}\n{"step": 20, "val/loss": 0.9}\n{"step": 30, "val/lo')
    with pytest.warns(RunLogWarning, match=r"metrics.jsonl: dropped a torn last line 3"):
        assert [r["step"] for r in MetricsLog(path).read()] == [10, 20]


def test_garbled_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10}\n{"step": 2\x00\x00garbage\n{"step": 30}\n')
    with pytest.raises(RunLogError, match=r"metrics.jsonl, line 2: not a JSON record"):
        MetricsLog(path).read()


def test_append_after_a_line_missing_its_newline_starts_a_new_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10}\n{"step": 20}')  # torn just before its newline: the record itself is whole
    log = MetricsLog(path)
    log.append({"step": 30, "val/loss": np.float32(0.5)})
    assert log.read() == [{"step": 10}, {"step": 20}, {"step": 30, "val/loss": 0.5}]


def test_truncate_after_drops_later_records_and_repeated_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "v": i}) + "\n" for i, s in enumerate([10, 20, 20, 30, 40])))
    log = MetricsLog(path)
    log.truncate_after(20)
    assert log.read() == [{"step": 10, "v": 0}, {"step": 20, "v": 2}]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    return run_dir, fit(small_cfg(), workdir=run_dir)


def test_resume_after_a_torn_append_leaves_unique_increasing_steps(reference, tmp_path):
    # killed while appending the step-30 record (after a complete step-20 checkpoint, a stray repeated record and a
    # record of step 30 whose checkpoint never finished): the log ends in half a JSON line
    d = tmp_path / "run"
    shutil.copytree(reference[0], d)
    (d / "summary.json").unlink()
    shutil.rmtree(d / "checkpoints" / "30")
    lines = (d / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30]
    torn = lines[:2] + [lines[1], lines[2], lines[2][: len(lines[2]) // 2]]
    (d / "metrics.jsonl").write_text("\n".join(torn))
    with pytest.warns(RunLogWarning, match="torn last line"):
        result = fit(small_cfg(), workdir=d, resume=True)
    assert json.loads((d / "config.json").read_text())["resumed_from"] == 20
    records = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)) == [10, 20, 30]
    expected = [json.loads(line) for line in (reference[0] / "metrics.jsonl").read_text().splitlines()]
    for got, want in zip(records, expected):
        assert np.allclose(got["val/loss"], want["val/loss"]) and np.allclose(got["train/loss"], want["train/loss"])
    assert result.summary["status"] == "completed"


def test_non_finite_final_evaluation_loss_is_diverged(tmp_path):
    digits = load(DataConfig(name="digits"))
    x = digits.test.x.copy()
    x[0] = np.nan  # one test example: training and validation stay finite, the final test loss does not
    bad = dataclasses.replace(digits, test=Split(x, digits.test.y))
    result = fit(small_cfg(steps=10, checkpoints=False), workdir=tmp_path / "run", dataset=bad)
    assert not np.isfinite(result.summary["test"]["loss"])
    assert result.summary["status"] == "diverged"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"
