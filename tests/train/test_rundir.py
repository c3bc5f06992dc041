"""Run-directory files are metric-agnostic, and plotting never touches the user's matplotlib backend."""

import math
import sys
import types

import matplotlib
import numpy as np
import pytest

from jaxdl.train import rundir

REGRESSION = [{"step": s, "epoch": s / 10, "train/loss": 1.0 / s, "lr": 1e-3, "val/loss": 1.2 / s,
               "val/mse": 1.2 / s, "val/mae": 0.9 / s, "val/rmse": math.sqrt(1.2 / s), "time": 0.1 * s}
              for s in (10, 20, 30)]
CLASSIFICATION = [{"step": s, "train/loss": 1.0 / s, "train/accuracy": 0.5, "val/loss": 1.1 / s,
                   "val/accuracy": 0.6} for s in (5, 10)]


def test_curve_panels_follow_the_records_not_a_fixed_metric_list():
    assert rundir.curve_panels(REGRESSION) == [("loss", ["train/loss", "val/loss"]), ("mse", ["val/mse"]),
                                               ("mae", ["val/mae"]), ("rmse", ["val/rmse"])]
    assert rundir.curve_panels(CLASSIFICATION) == [("loss", ["train/loss", "val/loss"]),
                                                   ("accuracy", ["train/accuracy", "val/accuracy"])]
    lm = [{"step": 1, "train/loss": 3.0, "val/loss": "nan", "val/perplexity": 20.0, "val/bits_per_char": 1.5}]
    assert rundir.curve_panels(lm) == [("loss", ["train/loss"]), ("perplexity", ["val/perplexity"]),
                                       ("bits_per_char", ["val/bits_per_char"])]
    assert rundir.curve_panels([{"step": 1, "lr": 0.1}]) == []


@pytest.mark.parametrize("records", [REGRESSION, CLASSIFICATION], ids=["regression", "classification"])
def test_plot_curves_keeps_the_users_backend_and_never_uses_pyplot(records, tmp_path, monkeypatch):
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # any `import matplotlib.pyplot` would fail
    try:
        out = rundir.plot_curves(records, tmp_path / "curves.png", title="t")
        assert matplotlib.get_backend() == "svg"
    finally:
        monkeypatch.undo()
        matplotlib.use(before)
    assert out == tmp_path / "curves.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rundir.plot_curves([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_metrics_log_stores_any_metric_numpy_and_non_finite(tmp_path):
    log = rundir.MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 1, "train/loss": np.float32(0.5), "val/rmse": np.float64(0.25), "val/perplexity": 12,
                "val/mae": float("nan")})
    log.append({"step": 2, "train/loss": 0.4, "val/rmse": float("inf")})
    records = log.read()
    assert records[0] == {"step": 1, "train/loss": 0.5, "val/rmse": 0.25, "val/perplexity": 12, "val/mae": "nan"}
    assert records[1]["val/rmse"] == "inf"
    log.truncate_after(1)
    assert [r["step"] for r in log.read()] == [1]


def test_write_tensorboard_logs_every_numeric_metric(tmp_path, monkeypatch):
    written = []

    class Writer:
        def __init__(self, logdir):
            self.logdir = logdir

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=Writer))
    records = [dict(r) for r in REGRESSION]
    records[0]["val/rmse"] = "nan"  # what MetricsLog stores for a non-finite value
    records[1]["val/mae"] = np.float32(0.5)
    assert rundir.write_tensorboard(tmp_path, records) == tmp_path / "tb"
    tags = {t for t, _, _ in written}
    assert tags == {"train/loss", "lr", "val/loss", "val/mse", "val/mae", "val/rmse"}
    assert ("val/mae", 0.5, 20) in written
    assert [s for t, _, s in written if t == "val/rmse"] == [20, 30]
