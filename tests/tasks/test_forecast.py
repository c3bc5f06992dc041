"""Forecasting task: original-scale metrics, MASE, and the naive / seasonal-naive / drift baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxdl import data as data_lib
from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config
from jaxdl.errors import DataError
from jaxdl.tasks import baselines
from jaxdl.train import fit

TRAIN = TrainConfig(batch_size=16, steps=40, eval_every=20, driver="host", progress=False, checkpoints=False)


def seasonal_series(n=240, m=12, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 100 + 0.05 * t + 10 * np.sin(2 * np.pi * t / m) + rng.normal(0, 0.5, n)
    return t, y.astype(np.float64)


@pytest.fixture(scope="module")
def series_ds():
    t, y = seasonal_series()
    source = data_lib.from_arrays(y=y, time=t.astype(np.float64), name="toy_series", kind="series")
    return data_lib.load(DataConfig(kind="series", context=12, horizon=6, season=12), source=source), y


def test_baselines_match_hand_computed_forecasts(series_ds):
    ds, y = series_ds
    preds, actual = baselines.forecast_baseline_predictions(ds, ds.test)
    view = ds.test.view
    o = int(view.starts[3]) + view.context  # a window's first target step
    assert np.allclose(actual[3, :, 0], y[o:o + 6], atol=1e-3)
    assert np.allclose(preds["naive"][3, :, 0], y[o - 1], atol=1e-3)
    assert np.allclose(preds["seasonal_naive"][3, :, 0], y[o - 12:o - 6], atol=1e-3)
    slope = (y[o - 1] - y[0]) / (o - 1)
    assert np.allclose(preds["drift"][3, :, 0], y[o - 1] + slope * np.arange(1, 7), atol=1e-3)
    start, stop = ds.info["spans"]["train"]["steps"]
    train = y[start:stop]
    assert np.allclose(baselines.mase_scale(ds), np.mean(np.abs(train[12:] - train[:-12])), rtol=1e-4)
    scores = baselines.forecast_baselines(ds, "test")
    # on a strongly seasonal series, one season back is far better than the last value
    assert scores["seasonal_naive"]["mae"] < 0.5 * scores["naive"]["mae"]
    err = preds["naive"] - actual
    assert np.isclose(scores["naive"]["rmse"], np.sqrt(np.mean(err ** 2)))
    assert np.isclose(scores["naive"]["mape"], 100 * np.mean(np.abs(err / actual)))


def test_forecast_metrics_are_in_original_units(tmp_path, series_ds):
    ds, _ = series_ds
    cfg = Config(name="toy", model=model_config("mlp", widths=(32,)), optim=OptimConfig(lr=3e-3), train=TRAIN)
    result = fit(cfg, dataset=ds, workdir=tmp_path)
    s = result.summary
    assert s["task"] == "forecast"
    assert set(s["test"]) == {"loss", "mse", "mae", "mape", "mase", "rmse"}
    # metrics recomputed by hand from the de-standardised predictions
    inputs = ds.test.batch(np.arange(len(ds.test)))["inputs"]
    pred = result.predict(inputs, standardize=False)
    _, actual = baselines.forecast_baseline_predictions(ds, ds.test)
    assert pred.shape == actual.shape == (len(ds.test), 6, 1)
    mine = baselines.forecast_errors(pred, actual, baselines.mase_scale(ds))
    for k in ("rmse", "mae", "mape", "mase"):
        assert np.isclose(s["test"][k], mine[k], rtol=1e-4), k
    # the loss is the standardised objective: the same errors divided by the training std
    assert np.isclose(s["test"]["loss"], s["test"]["mse"] / float(ds.std[0]) ** 2, rtol=1e-3)
    assert set(s["baselines"]["test"]) == {"naive", "seasonal_naive", "drift"}
    assert (tmp_path / "forecast.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "summary.json").read_text())["baselines"] == s["baselines"]


def test_forecast_needs_series_and_enough_history():
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    ds = data_lib.load(DataConfig(kind="regression"), source=data_lib.from_arrays(x=x, y=x[:, :1]))
    cfg = Config(name="tab", task="forecast", train=TRAIN)
    with pytest.raises(DataError, match="task=forecast needs a series data set .* is regression data"):
        fit(cfg, dataset=ds)
    t, y = seasonal_series(n=60)
    short = data_lib.load(DataConfig(kind="series", context=4, season=40, val_fraction=0.2, test_fraction=0.2),
                          source=data_lib.from_arrays(y=y, time=t.astype(np.float64), kind="series"))
    with pytest.raises(DataError, match=r"too few for the MASE scale with season 40 \(data.season\)"):
        baselines.mase_scale(short)


def test_season_defaults_and_check():
    from jaxdl.errors import ConfigError

    assert data_lib.load(DataConfig(name="elec_equip")).info["season"] == 12
    with pytest.raises(ConfigError, match=r"data.season: expected an int >= 1 or None, got 0"):
        data_lib.load(DataConfig(name="elec_equip", season=0))


def test_level_last_forecasts_the_change_from_the_last_value(tmp_path):
    """A model that outputs zeros forecasts 'no change': with data.level=last that is exactly the naive forecast."""
    import flax.linen as nn

    class Zero(nn.Module):
        @nn.compact
        def __call__(self, x):
            return 0.0 * nn.Dense(6)(x.reshape(x.shape[0], -1))

    t, y = seasonal_series()
    source = data_lib.from_arrays(y=y + 0.5 * t, time=t.astype(np.float64), kind="series")
    cfg = Config(name="zero", data=DataConfig(kind="series", context=12, horizon=6, season=12, level="last"),
                 train=TrainConfig(batch_size=8, steps=1, progress=False, checkpoints=False, plots=False))
    result = fit(cfg, data=source, model=Zero(), workdir=tmp_path)
    naive = result.summary["baselines"]["test"]["naive"]
    for k in ("rmse", "mae", "mape", "mase"):
        assert np.isclose(result.summary["test"][k], naive[k], rtol=1e-4), k
    ds = result.setup.dataset
    window = ds.test.batch([0])["inputs"]
    last = window[0, -1, 0] * ds.std[0] + ds.mean[0]
    assert np.allclose(result.predict(window, standardize=False), last, rtol=1e-5)
    with pytest.raises(Exception, match=r"data.level: expected 'none' or 'last', got 'first'"):
        data_lib.load(DataConfig(kind="series", context=12, level="first"), source=source)


def test_own_csv_series_runs_through_the_co2_config(tmp_path):
    """The forecasting config takes a user's CSV series with data.root= and column names."""
    t, y = seasonal_series(n=240)
    months = np.arange("2000-01", "2020-01", dtype="datetime64[M]")
    rows = ["month,units,price"] + [f"{m},{v:.3f},{1 + 0.01 * i:.3f}" for i, (m, v) in enumerate(zip(months, y))]
    path = tmp_path / "sales.csv"
    path.write_text("\n".join(rows) + "\n")
    from jaxdl.config import load_config

    cfg = load_config("co2_lstm:smoke", [f"data.root={path}", "data.name=csv", "data.time_column=month",
                                         "data.targets=units", "data.season=12", "data.context=24",
                                         "data.horizon=6", "data.val_fraction=0.2", "data.test_fraction=0.2",
                                         "train.batch_size=8", "train.plots=false"])
    result = fit(cfg, workdir=tmp_path / "run")
    s = result.summary
    assert s["task"] == "forecast" and s["model"] == "rnn_forecaster" and s["data"] == "sales"
    assert sorted(result.setup.dataset.info["columns"]) == ["price", "units"]
    assert set(s["baselines"]["test"]) == {"naive", "seasonal_naive", "drift"}
    assert np.isfinite(s["test"]["mase"])
