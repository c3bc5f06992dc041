"""Recurrent forecasters on a short, strongly seasonal series: do they beat one-season-back on elec_equip?

statsmodels' monthly euro-area electrical equipment orders (257 months, 1995-2016): the past 12 months -> the next
12, validation and test each the last 20% of what precedes them (18 and 28 windows; 141 training windows), the
co2_lstm settings otherwise (hidden 64, dropout 0.1, forecasting the change from the window's last value). LSTM and
GRU × 3 seeds; the report lists the naive, seasonal-naive (12 months back) and drift forecasts of the same windows.

Run:     jaxdl sweep experiments/elec_equip_rnn.py --workdir runs/sweeps/elec_equip_rnn
Report:  jaxdl report runs/sweeps/elec_equip_rnn       (results: experiments/recurrent.md)
"""

from jaxdl.config import load_config
from jaxdl.experiment import grid


def get_config():
    return load_config("co2_lstm", ["name=elec_equip_rnn", "data.name=elec_equip", "data.context=12",
                                    "data.season=12", "data.val_fraction=0.2", "data.test_fraction=0.2",
                                    "train.batch_size=16", "train.progress=false", "train.checkpoint_every=500",
                                    "train.keep_checkpoints=1"])


def get_sweep():
    return grid(**{"model.cell": ["lstm", "gru"], "seed": [0, 1, 2]})
