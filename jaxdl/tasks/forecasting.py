r"""Forecasting: windows of a series (``inputs`` ``(context, F)``) → the next ``horizon`` steps of the target
columns (``targets`` ``(horizon, K)``), predicted all at once (direct multi-step).

The model trains on standardised values (the loss — MSE, MAE or Huber — is in standardised units); every other
metric is on the **original scale**, after undoing the training span's standardisation: ``rmse``, ``mse``, ``mae``,
``mape`` (percent, over non-zero actual values) and ``mase`` (absolute error divided by the in-sample MAE of the
seasonal-naive forecast on the training span, per target column, averaged: below 1 beats that forecast's in-sample
error). After training, the naive, seasonal-naive and drift forecasts of the same windows
(:mod:`jaxdl.tasks.baselines`) are scored with the same metrics and written to ``summary.json`` under
``baselines``, and ``forecast.png`` plots the model's forecasts against the actual test span.

``data.level=last`` makes the model read each window minus its last value and forecast the change from it (added back
before the loss): a model can then follow a level or trend beyond the range of the training span, as a network that
forecasts absolute standardised values through saturating units cannot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.config import Config
from jaxdl.errors import DataError
from jaxdl.models import Model
from jaxdl.tasks import baselines
from jaxdl.tasks.base import Derived, register
from jaxdl.tasks.regression import Regression

FORECAST_PLOT = "forecast.png"


@register("forecast")
class Forecast(Regression):
    """Direct multi-step forecasting of a series; metrics in original units (see the module docstring)."""

    derived = (Derived("rmse", "mse", math.sqrt),)
    # reports rank forecasters by validation RMSE in original units, comparable with the baselines' RMSE
    monitor = "val/rmse"

    def __init__(self, model: Model, inputs, targets, loss: str, offset: np.ndarray, scale: np.ndarray,
                 mase_scale: np.ndarray, level: str = "none", target_columns=(0,), **kw):
        super().__init__(model, inputs, targets, loss, **kw)
        self.level, self.target_columns = level, np.asarray(target_columns, np.int32)
        self.offset = np.asarray(offset, np.float32)  # (K,) per target column
        self.scale = np.asarray(scale, np.float32)
        self.mase_scale = np.asarray(mase_scale, np.float32)

    @classmethod
    def build(cls, cfg: Config, dataset, model: Model, *, dropout: bool = True) -> Forecast:
        if dataset.kind != "series":
            raise DataError(f"task=forecast needs a series data set (windows of a time series); {dataset.name!r} "
                            f"is {dataset.kind} data (use task=regression)")
        cols = list(dataset.train.view.target_columns)
        k = len(cols)
        offset = np.zeros(k) if dataset.mean is None else np.asarray(dataset.mean)[cols]
        scale = np.ones(k) if dataset.std is None else np.asarray(dataset.std)[cols]
        name = "mse" if cfg.loss.name == "auto" else cfg.loss.name
        return cls(model, dataset.inputs, dataset.targets, name, offset, scale, baselines.mase_scale(dataset),
                   level=cfg.data.level, target_columns=cols, train_mode=cfg.train.batch_stats == "update",
                   dropout=dropout)

    def model_inputs(self, batch):
        x = batch[self.inputs[0]]
        return x - x[:, -1:, :] if self.level == "last" else x

    def _level(self, x: jax.Array) -> jax.Array:
        """What the model's outputs are relative to: ``(B, 1, K)`` last target values, or 0."""
        if self.level != "last":
            return jnp.zeros((), jnp.float32)
        return x[:, -1:, :][..., self.target_columns].astype(jnp.float32)

    def forward(self, player, params, model_state, batch, rngs, hp, train):
        pred, target, m, weight, new_state = super().forward(player, params, model_state, batch, rngs, hp, train)
        return pred + self._level(batch[self.inputs[0]]), target, m, weight, new_state

    def original(self, values: jax.Array) -> jax.Array:
        """Standardised ``(..., K)`` values in original units."""
        return values * self.scale + self.offset

    def loss(self, player, params, model_state, batch, rngs, hp, train):
        pred, target, m, weight, new_state = self.forward(player, params, model_state, batch, rngs, hp, train)
        value, loss_stat = self.objective(pred, target, m, weight)
        actual, forecast = self.original(target), self.original(pred)
        err = forecast - actual
        nonzero = (actual != 0) * m
        stats = {"loss": loss_stat,
                 "mse": (jnp.sum(err ** 2 * m), weight),
                 "mae": (jnp.sum(jnp.abs(err) * m), weight),
                 "mape": (100 * jnp.sum(jnp.abs(err) / jnp.where(actual != 0, jnp.abs(actual), 1.0) * nonzero),
                          jnp.sum(nonzero)),
                 "mase": (jnp.sum(jnp.abs(err) / self.mase_scale * m), weight)}
        return value, (stats, new_state)

    def metric_names(self) -> list[str]:
        return ["loss", "mse", "mae", "mape", "mase", "rmse"]

    def predict(self, params, model_state, inputs):
        """Forecasts ``(batch, horizon, K)`` in original units (inputs standardised as the training data were)."""
        out = super().predict(params, model_state, self.model_inputs({self.inputs[0]: inputs}))
        k = len(self.offset)
        return self.original(out.reshape(out.shape[0], -1, k).astype(jnp.float32) + self._level(inputs))

    # ---------------------------------------------------------------------------------------------------------------
    def artifacts(self, params: dict[str, Any], model_state: dict[str, Any], dataset, run_dir: Path,
                  plots: bool = True) -> dict[str, Any]:
        """Baselines on the validation and test windows, and the forecast plot of the test span."""
        out: dict[str, Any] = {"baselines": {}}
        fn = jax.jit(self.predict)
        for name in ("val", "test"):
            split = getattr(dataset, name)
            if len(split):
                out["baselines"][name] = baselines.forecast_baselines(dataset, name)
        if plots and len(dataset.test):
            inputs = dataset.test.batch(np.arange(len(dataset.test)))[self.inputs[0]]
            pred = np.concatenate([np.asarray(fn(params, model_state, inputs[i:i + 1024]))
                                   for i in range(0, len(inputs), 1024)])
            plot_forecast(dataset, pred, Path(run_dir) / FORECAST_PLOT)
            out["forecast_plot"] = FORECAST_PLOT
        return out


def plot_forecast(dataset, pred: np.ndarray, path: Path, title: str | None = None) -> Path:
    """The test span's actual values (first target column) with the model's and the seasonal-naive forecasts from
    non-overlapping origins (every ``horizon`` steps)."""
    from matplotlib.figure import Figure

    split = dataset.test
    view = split.view
    series = baselines.original_series(dataset)[:, 0]
    preds, _ = baselines.forecast_baseline_predictions(dataset, split)
    t_all = np.arange(len(series)) if split.time is None else _time_axis(view.time)
    origin = view.starts.astype(np.int64) + view.context
    first, last = int(origin.min()), int(origin.max()) + view.horizon
    fig = Figure(figsize=(9, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    lo = max(0, first - 3 * view.horizon)
    ax.plot(t_all[lo:last], series[lo:last], color="black", lw=1.4, label="actual")
    picks = np.arange(0, len(origin), view.horizon)
    for j, i in enumerate(picks):
        steps = origin[i] + np.arange(view.horizon)
        ax.plot(t_all[steps], pred[i, :, 0], color="tab:blue", lw=1.2, label="model" if j == 0 else None)
        ax.plot(t_all[steps], preds["seasonal_naive"][i, :, 0], color="tab:orange", lw=1, ls="--",
                label="seasonal naive" if j == 0 else None)
    ax.axvline(t_all[first], color="grey", lw=0.8, ls=":")
    col = dataset.info.get("target_columns", ["value"])[0]
    ax.set_title(title or f"{dataset.name}: {view.horizon}-step forecasts from every {view.horizon}th test origin")
    ax.set_ylabel(f"{col} (original units)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _time_axis(time: np.ndarray) -> np.ndarray:
    time = np.asarray(time)
    if np.issubdtype(time.dtype, np.datetime64) or np.issubdtype(time.dtype, np.number):
        return time
    return np.arange(len(time))
