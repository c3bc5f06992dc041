"""Sweeps defined and run from Python: a base Config and a spec, in-memory arrays (``from_arrays``) and a user's
Linen module, with the inline, process and Ray executors. Tiny: iris / diabetes rows, 20 steps of batch 16."""

from __future__ import annotations

import io
import json
from pathlib import Path

import flax.linen as nn
import numpy as np
import pytest

import jaxdl
from jaxdl.config import Config, LossConfig, OptimConfig, TrainConfig, model_config
from jaxdl.errors import ConfigError
from jaxdl.experiment import SweepResult, grid, make_report, run_sweep

pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")


class TinyNet(nn.Module):
    """A user's model, at module level so worker processes can import it from its pickle."""

    width: int = 8

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3)(nn.relu(nn.Dense(self.width)(x)))


def quiet():
    from rich.console import Console

    return Console(file=io.StringIO(), width=200)


def base(loss: str = "cross_entropy", name: str = "pystudy") -> Config:
    return Config(name=name, model=model_config("mlp", widths=(8,)), loss=LossConfig(name=loss),
                  optim=OptimConfig(name="adam", lr=1e-2),
                  train=TrainConfig(batch_size=16, steps=20, eval_every=10, checkpoint_every=10, keep_checkpoints=1,
                                    driver="scan", chunk_steps=10, progress=False, plots=False))


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


def summaries(result: SweepResult) -> list[dict]:
    return [json.loads((result.sweep_dir / "runs" / r.run_id / "summary.json").read_text()) for r in result.plan.runs]


def test_classification_sweep_with_processes(iris, tmp_path):
    x, y = iris
    source = jaxdl.data.from_arrays(x=x, y=y, name="iris_mem")
    result = run_sweep(base(), {"optim.lr": [3e-3, 1e-2], "seed": [0, 1]}, data=source, name="iris_study",
                       workdir=tmp_path / "sweep", executor="processes", workers=2, fuse="always", console=quiet())
    assert not result.failed and len(result.plan.runs) == 4
    sums = summaries(result)
    assert {s["data"] for s in sums} == {"iris_mem"} and {s["status"] for s in sums} == {"completed"}
    data_files = list((tmp_path / "sweep" / "data").glob("*.npz"))
    assert [p.name for p in data_files] == [source.fingerprint()[:16] + ".npz"]
    for r in result.plan.runs:  # every run reads the file the sweep wrote
        assert r.config.data.name == "arrays" and Path(r.config.data.root) == data_files[0].resolve()
        assert r.config.name.startswith("iris_study-")
    rep = make_report(result.sweep_dir, console=quiet(), plots=False)
    assert rep.metric == "val/accuracy" and rep.mode == "max"
    scores = [row["val/accuracy"] for row in rep.rows]
    assert scores == sorted(scores, reverse=True)


def test_regression_sweep_inline(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4)).astype(np.float32)
    target = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=160)).astype(np.float32)
    source = jaxdl.data.from_arrays(x=x, target=target, name="linear_rows")
    result = run_sweep(base("mse", "reg_study"), grid(**{"optim.lr": [1e-2, 3e-2]}), data=source,
                       workdir=tmp_path / "sweep", fuse="never", console=quiet(), report=False)
    assert not result.failed
    assert {s["data"] for s in summaries(result)} == {"linear_rows"}
    rep = make_report(result.sweep_dir, console=quiet(), plots=False)
    assert rep.metric in ("val/rmse", "val/loss")
    assert any(c in rep.columns for c in ("val/rmse", "val/loss"))
    assert not any("accuracy" in c for c in rep.columns)


def test_user_linen_model_with_processes(iris, tmp_path):
    x, y = iris
    source = jaxdl.data.from_arrays(x=x, y=y, name="iris_mem")
    result = run_sweep(base(), {"seed": [0, 1]}, data=source, model=TinyNet(width=6), workdir=tmp_path / "sweep",
                       executor="processes", workers=1, fuse="auto", console=quiet(), report=False)
    assert not result.failed
    assert (tmp_path / "sweep" / "model.pkl").is_file()
    assert {s["model"] for s in summaries(result)} == {"tinynet"}  # trained the pickled model, not cfg.model (mlp)
    assert {s["params"] for s in summaries(result)} == {4 * 6 + 6 + 6 * 3 + 3}
    assert all(g.title.startswith("tinynet/") for g in result.plan.groups)
    rep = make_report(result.sweep_dir, console=quiet(), plots=False)
    assert {row["model"] for row in rep.rows} == {"tinynet"}
    # another model (other fields) -> other run ids: nothing is reused from the first model's runs
    other = run_sweep(base(), {"seed": [0, 1]}, data=source, model=TinyNet(width=4), workdir=tmp_path / "sweep",
                      dry_run=True, console=quiet())
    assert not {r.run_id for r in other.plan.runs} & {r.run_id for r in result.plan.runs}


def test_rerun_skips_and_changed_data_trains_anew(iris, tmp_path):
    x, y = iris
    spec = {"optim.lr": [1e-2], "seed": [0, 1]}
    source = jaxdl.data.from_arrays(x=x, y=y, name="iris_mem")
    # inline with a user's model: the object itself is passed (nothing pickled); its identity is stable across calls
    kw = dict(data=source, model=TinyNet(), workdir=tmp_path / "sweep", fuse="always", console=quiet(),
              report=False)
    first = run_sweep(base(), spec, **kw)
    assert not first.failed and len(first.groups) == 1
    assert not (tmp_path / "sweep" / "model.pkl").exists()
    assert {s["model"] for s in summaries(first)} == {"tinynet"}
    again = run_sweep(base(), spec, **kw)  # same arrays, same sweep: every run is skipped
    assert again.groups == [] and {r.run_id for r in again.plan.runs} == {r.run_id for r in first.plan.runs}
    assert len(list((tmp_path / "sweep" / "data").glob("*.npz"))) == 1  # written once
    x2 = x.copy()
    x2[0, 0] += 1.0
    changed = run_sweep(base(), spec, **{**kw, "data": jaxdl.data.from_arrays(x=x2, y=y, name="iris_mem"),
                                         "dry_run": True})
    assert not {r.run_id for r in changed.plan.runs} & {r.run_id for r in first.plan.runs}
    assert len(list((tmp_path / "sweep" / "data").glob("*.npz"))) == 2


def test_python_sweep_refusals(iris, tmp_path):
    x, y = iris
    source = jaxdl.data.from_arrays(x=x, y=y, name="iris_mem")
    split = jaxdl.data.load(base().data, source=source)
    with pytest.raises(ConfigError, match="from_arrays"):
        run_sweep(base(), {"seed": [0]}, data=split, workdir=tmp_path / "a", executor="processes", console=quiet())
    with pytest.raises(ConfigError, match="cannot be pickled"):
        run_sweep(base(), {"seed": [0]}, data=source, model=Unpicklable(), workdir=tmp_path / "b",
                  executor="processes", console=quiet())
    with pytest.raises(ConfigError, match="model.widths"):
        run_sweep(base(), {"model.widths": [(4,), (8,)]}, data=source, model=TinyNet(), workdir=tmp_path / "c",
                  dry_run=True, console=quiet())


def test_file_form_keeps_positional_overrides_and_takes_a_spec(write_tiny_experiment, tmp_path):
    exp = write_tiny_experiment(tmp_path / "experiments", two_models=False)
    legacy = run_sweep(exp, ["train.steps=10"], workdir=tmp_path / "a", dry_run=True, console=quiet())
    assert legacy.sweep_dir == tmp_path / "a" and len(legacy.plan.runs) == 4  # the file's own sweep
    assert {r.config.train.steps for r in legacy.plan.runs} == {10}
    replaced = run_sweep(exp, {"seed": [0, 1, 2]}, overrides=["train.steps=10"], name="other", dry_run=True,
                         console=quiet())
    assert replaced.sweep_dir == Path("runs") / "sweeps" / "other" and len(replaced.plan.runs) == 3
    assert replaced.plan.name == "other"
    cfg = run_sweep(base(name="cfgname"), None, dry_run=True, console=quiet(), data=jaxdl.data.from_arrays(
        x=np.zeros((64, 2), np.float32), y=np.arange(64) % 2, name="z"), workdir=tmp_path / "c")
    assert len(cfg.plan.runs) == 1 and cfg.plan.name == "cfgname"
    with pytest.raises(ConfigError, match="not both"):
        run_sweep(exp, {"seed": [0]}, sweep="seed=0:2", dry_run=True, console=quiet())


class Unpicklable(TinyNet):
    def __reduce__(self):
        raise TypeError("holds a lock")


def test_python_sweep_with_ray(iris, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    x, y = iris
    source = jaxdl.data.from_arrays(x=x, y=y, name="iris_mem")
    result = run_sweep(base(), {"seed": [0, 1]}, data=source, model=TinyNet(), workdir=tmp_path / "sweep",
                       executor="ray", workers=1, fuse="always", console=quiet(), report=False)
    assert not result.failed
    assert {(s["data"], s["model"]) for s in summaries(result)} == {("iris_mem", "tinynet")}
