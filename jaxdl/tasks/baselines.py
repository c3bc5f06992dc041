r"""Baselines the library computes next to a trained model, on the same data, split and horizon.

Forecasting (original units, after undoing standardisation): for a window whose first target step is :math:`o`
and horizon step :math:`h = 1 \dots H`, with the whole series :math:`y_0 \dots y_{o-1}` known at the origin,

- **naive**: :math:`\hat y_{o+h-1} = y_{o-1}` (the last value);
- **seasonal naive**: :math:`\hat y_{o+h-1} = y_{o-m+((h-1) \bmod m)}`, the value one season ``m`` before
  (:math:`m = 1` is the naive forecast);
- **drift**: :math:`\hat y_{o+h-1} = y_{o-1} + h\,(y_{o-1} - y_0)/(o-1)`, the line through the first and last
  observations.

Errors: RMSE, MAE, MAPE (percent, over non-zero actual values) and MASE (the MAE divided by the in-sample MAE of
the one-season-back forecast on the training span, per target column; Hyndman & Koehler 2006).

Language modelling: the plug-in unigram entropy :math:`H(X)` and bigram conditional entropy
:math:`H(X_t \mid X_{t-1})` of the whole text in bits per character, and the held-out bits per character of add-one
smoothed unigram and bigram models fitted on the training span and measured on the test span.
"""

from __future__ import annotations

import math

import numpy as np

from jaxdl.errors import DataError

FORECAST_BASELINES = ("naive", "seasonal_naive", "drift")


# --------------------------------------------------------------------------------------------------------------------
# Forecasting
# --------------------------------------------------------------------------------------------------------------------


def _windows(split):
    view = getattr(split, "view", None)
    if view is None or not hasattr(view, "series"):
        raise DataError("forecast baselines need a series data set (windows over one series)")
    return view


def original_series(ds) -> np.ndarray:
    """The data set's whole ``(T, K)`` target series in original units (float64)."""
    view = _windows(ds.train)
    cols = list(view.target_columns)
    series = np.asarray(view.series, np.float64)[:, cols]
    if ds.mean is not None:
        series = series * np.asarray(ds.std, np.float64)[cols] + np.asarray(ds.mean, np.float64)[cols]
    return series


def season_of(ds) -> int:
    return int(ds.info.get("season", 1) or 1)


def mase_scale(ds) -> np.ndarray:
    """Per target column: the mean absolute ``m``-step-back error over the training span (original units)."""
    series, m = original_series(ds), season_of(ds)
    start, stop = ds.info["spans"]["train"]["steps"]
    train = series[start:stop]
    if len(train) <= m:
        raise DataError(f"data set {ds.name!r}: the training span has {len(train)} steps, too few for the MASE "
                        f"scale with season {m} (data.season)")
    scale = np.mean(np.abs(train[m:] - train[:-m]), axis=0)
    return np.where(scale > 0, scale, 1.0)


def forecast_errors(pred: np.ndarray, actual: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, MAPE (%) and MASE of ``pred`` against ``actual`` (``(N, H, K)``, original units)."""
    err = np.asarray(pred, np.float64) - np.asarray(actual, np.float64)
    nz = actual != 0
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))),
            "mape": float(100 * np.mean(np.abs(err[nz] / actual[nz]))) if nz.any() else math.nan,
            "mase": float(np.mean(np.abs(err) / scale))}


def forecast_baseline_predictions(ds, split) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({baseline: (N, H, K) forecasts}, actual (N, H, K))`` for every window of ``split``, original units."""
    view = _windows(split)
    series, m = original_series(ds), season_of(ds)
    origin = view.starts.astype(np.int64) + view.context  # (N,) first target step
    h = np.arange(1, view.horizon + 1)  # (H,)
    actual = series[origin[:, None] + h[None, :] - 1]  # (N, H, K)
    last = series[origin - 1]  # (N, K)
    if (origin < m).any():
        raise DataError(f"data set {ds.name!r}: a window starts {int(origin.min())} steps into the series, before "
                        f"one season ({m} steps, data.season) of history")
    seasonal = series[origin[:, None] - m + (h[None, :] - 1) % m]  # (N, H, K)
    slope = (last - series[0]) / np.maximum(origin - 1, 1)[:, None]  # (N, K)
    preds = {"naive": np.broadcast_to(last[:, None, :], actual.shape),
             "seasonal_naive": seasonal,
             "drift": last[:, None, :] + h[None, :, None] * slope[:, None, :]}
    return preds, actual


def forecast_baselines(ds, split_name: str = "test") -> dict[str, dict[str, float]]:
    """``{naive|seasonal_naive|drift: {rmse, mae, mape, mase}}`` on ``ds``'s ``split_name`` windows."""
    preds, actual = forecast_baseline_predictions(ds, getattr(ds, split_name))
    scale = mase_scale(ds)
    return {name: forecast_errors(p, actual, scale) for name, p in preds.items()}


# --------------------------------------------------------------------------------------------------------------------
# Character n-grams
# --------------------------------------------------------------------------------------------------------------------


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def ngram_baselines(tokens: np.ndarray, vocab_size: int, train: tuple[int, int], test: tuple[int, int]
                    ) -> dict[str, dict[str, float]]:
    """Unigram and bigram baselines of a token stream, in bits per token.

    Returns ``{"unigram": {"entropy": H(X), "heldout_bpc": ...}, "bigram": {"entropy": H(X_t | X_{t-1}),
    "heldout_bpc": ...}}``: plug-in entropies of the whole stream, and the cross-entropy on ``tokens[test]`` of
    add-one smoothed models fitted on ``tokens[train]``.
    """
    tokens = np.asarray(tokens, np.int64)
    v = int(vocab_size)
    uni = np.bincount(tokens, minlength=v).astype(np.float64)
    pairs = np.bincount(tokens[:-1] * v + tokens[1:], minlength=v * v).astype(np.float64).reshape(v, v)
    h_uni = _entropy_bits(uni)
    h_bi = _entropy_bits(pairs.reshape(-1)) - _entropy_bits(pairs.sum(axis=1))  # H(X_{t-1}, X_t) - H(X_{t-1})

    tr, te = tokens[train[0]:train[1]], tokens[test[0]:test[1]]
    if len(tr) < 2 or len(te) < 2:
        raise DataError("n-gram baselines need at least two tokens in the training and test spans")
    p_uni = (np.bincount(tr, minlength=v) + 1.0) / (len(tr) + v)
    c_bi = np.bincount(tr[:-1] * v + tr[1:], minlength=v * v).reshape(v, v) + 1.0
    p_bi = c_bi / c_bi.sum(axis=1, keepdims=True)
    return {"unigram": {"entropy": h_uni, "heldout_bpc": float(-np.log2(p_uni[te]).mean())},
            "bigram": {"entropy": h_bi, "heldout_bpc": float(-np.log2(p_bi[te[:-1], te[1:]]).mean())}}


__all__ = ["FORECAST_BASELINES", "forecast_baseline_predictions", "forecast_baselines", "forecast_errors",
           "mase_scale", "ngram_baselines", "original_series", "season_of"]
