"""Bring your own data and model from Python: in-memory arrays, regression, a user's Linen and NNX modules."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import nnx
from sklearn.datasets import load_diabetes

from jaxdl import data as data_lib
from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, load_config
from jaxdl.errors import ConfigError
from jaxdl.train import fit

TRAIN = TrainConfig(batch_size=32, steps=60, eval_every=30, driver="host", progress=False, plots=False,
                    checkpoints=False)


@pytest.fixture(scope="module")
def diabetes():
    x, y = load_diabetes(return_X_y=True)
    return data_lib.from_arrays(x=x.astype(np.float32), y=y.astype(np.float32)[:, None], name="diabetes",
                                description="scikit-learn diabetes progression")


def test_regression_summary_has_errors_and_no_accuracy(tmp_path, diabetes):
    cfg = Config(name="diabetes", model=Config().model.__class__(widths=(32,)),
                 optim=OptimConfig(lr=1e-2), train=TRAIN)
    result = fit(cfg, data=diabetes, workdir=tmp_path)
    s = result.summary
    assert s["task"] == "regression" and s["data"] == "diabetes"
    assert set(s["test"]) == {"loss", "mse", "mae", "rmse"}
    assert np.isclose(s["test"]["rmse"], np.sqrt(s["test"]["mse"]))
    assert not any("accuracy" in k for k in json.dumps(s).split('"'))
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["config"]["data"]["name"] == "diabetes" and "diabetes" in recorded["data"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"train/loss", "train/rmse", "val/mse", "val/mae", "val/rmse"} <= set(records[-1])
    # better than predicting the training mean
    pred = result.predict(np.asarray(diabetes.arrays["x"][:50]))
    assert pred.shape == (50, 1)


def test_classification_from_arrays_and_predict(tmp_path):
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    source = data_lib.from_arrays(x=x.astype(np.float32), y=y.astype(np.int32), name="iris",
                                  class_names=("setosa", "versicolor", "virginica"))
    cfg = Config(name="iris", optim=OptimConfig(lr=1e-2), train=TRAIN)
    result = fit(cfg, data=source, workdir=tmp_path)
    assert result.summary["data"] == "iris" and result.summary["test"]["accuracy"] > 0.8
    probs = result.predict(x[:10].astype(np.float32))
    assert probs.shape == (10, 3) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)


class UserMLP(nn.Module):
    """A user's module with no ``train`` argument."""

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


class UserNNX(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.out(self.drop(nnx.relu(self.hidden(x))))


@pytest.mark.parametrize("kind", ["linen", "nnx_constructor", "nnx_instance"])
def test_user_modules_train_through_fit(tmp_path, kind):
    model = {"linen": UserMLP(), "nnx_constructor": lambda rngs: UserNNX(rngs),
             "nnx_instance": UserNNX(nnx.Rngs(0))}[kind]
    cfg = Config(name=kind, data=DataConfig(name="digits"), optim=OptimConfig(lr=3e-3), train=TRAIN)
    result = fit(cfg, model=model, workdir=tmp_path)
    assert result.summary["test"]["accuracy"] > 0.7, result.summary
    assert result.summary["model"] != "mlp"
    assert result.predict(np.zeros((3, 8, 8, 1), np.float32)).shape == (3, 10)


def test_nnx_constructor_initialises_per_seed(tmp_path):
    cfgs = [Config(name=f"s{i}", seed=i, optim=OptimConfig(lr=3e-3),
                   train=TrainConfig(batch_size=32, steps=1, progress=False, plots=False, checkpoints=False,
                                     driver="host")) for i in range(2)]
    a, b = (fit(c, model=lambda rngs: UserNNX(rngs), workdir=tmp_path / c.name) for c in cfgs)
    assert not np.allclose(jax.tree.leaves(a.state.params)[0], jax.tree.leaves(b.state.params)[0])


def test_not_a_model_names_the_type(tmp_path):
    from jaxdl.errors import JaxdlError

    with pytest.raises(JaxdlError, match="cannot use int as a model"):
        fit(Config(train=TRAIN), model=3, workdir=tmp_path)


def test_task_and_monitor_errors_name_the_key(tmp_path, diabetes):
    with pytest.raises(ConfigError, match=r"unknown task 'regresion'.*regression"):
        fit(Config(task="regresion", train=TRAIN), data=diabetes, workdir=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"task=classification needs class labels; data set 'diabetes'"):
        fit(Config(task="classification", train=TRAIN), data=diabetes, workdir=tmp_path / "b")
    with pytest.raises(ConfigError, match=r"monitor: 'val/accuracy' is not a metric of task 'regression'"):
        fit(load_config("digits_mlp", ["train.early_stopping.monitor=val/accuracy"]), data=diabetes,
            workdir=tmp_path / "c")
    with pytest.raises(ConfigError, match=r"loss.name=cross_entropy is not a regression loss"):
        fit(Config(loss=Config().loss.__class__(name="cross_entropy"), train=TRAIN), data=diabetes,
            workdir=tmp_path / "d")


def test_regression_output_size_errors_name_model_and_target(tmp_path, diabetes):
    with pytest.raises(ConfigError, match=r"model.num_classes=3 but each target of 'diabetes' has 1 values"):
        fit(Config(model=Config().model.__class__(num_classes=3), train=TRAIN), data=diabetes, workdir=tmp_path / "a")

    class Wide(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x)

    from jaxdl.errors import DataError

    with pytest.raises(DataError, match=r"model 'wide' returns \(2,\) per example but target 'y' has shape \(1,\)"):
        fit(Config(train=TRAIN), model=Wide(), data=diabetes, workdir=tmp_path / "b")
