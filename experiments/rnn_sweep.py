"""Recurrent forecasters swept as populations: which cell, width, dropout and learning rate forecast weekly CO2 best?

LSTM and GRU `rnn_forecaster`s (configs/co2_lstm.py: the past 52 weeks -> the next 12, forecasting the change from
each window's last value) × hidden size 32 / 64 × dropout 0 / 0.2 × lr 1e-3 / 3e-3 × 2 seeds = 32 runs. Runs that
share their structure (a cell and a hidden size) differ only in numbers — dropout, learning rate, seed — so each of
the four groups can train as one vmapped program; a timed probe decides per group whether that is faster here. Runs
stop early on val/loss (patience 8 evaluations of 50 steps) and report test RMSE/MAE/MAPE/MASE in ppm; the report
lists the naive, seasonal-naive and drift forecasts of the same test windows beside them.

Run:     jaxdl sweep experiments/rnn_sweep.py --workdir runs/sweeps/rnn_sweep
Report:  jaxdl report runs/sweeps/rnn_sweep       (results: experiments/rnn_sweep.md)
"""

from jaxdl.config import load_config
from jaxdl.experiment import grid


def get_config():
    return load_config("co2_lstm", ["name=rnn_sweep", "train.progress=false", "train.checkpoint_every=500",
                                    "train.keep_checkpoints=1"])


def get_sweep():
    return grid(**{"model.cell": ["lstm", "gru"], "model.hidden_size": [32, 64], "model.dropout": [0.0, 0.2],
                   "optim.lr": [1e-3, 3e-3], "seed": [0, 1]})
