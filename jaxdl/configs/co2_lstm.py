"""LSTM forecaster of the weekly atmospheric CO2 at Mauna Loa (statsmodels, 1958-2001; its 59 missing weeks are
linearly interpolated): the past 52 weeks -> the next 12, chronological train/val/test spans (the test span is the
last 15% of the series, 1995-2001), forecasting the change from each window's last value (data.level=last). Test
RMSE, MAE, MAPE and MASE in ppm beside the naive, seasonal-naive (52 weeks back) and drift forecasts of the same
windows (summary.json "baselines"), and forecast.png.

Run:    jaxdl train configs/co2_lstm.py
GRU:    jaxdl train configs/co2_lstm.py:gru
Smoke:  jaxdl train configs/co2_lstm.py:smoke
Your own series (a CSV with a date column), e.g. monthly:
        jaxdl train configs/co2_lstm.py data.name=csv data.root=sales.csv data.time_column=month \
            data.targets=units data.season=12 data.context=24
"""

from jaxdl.config import Config, DataConfig, EarlyStoppingConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="co2_lstm",
        seed=0,
        model=model_config("rnn_forecaster", cell="lstm", hidden_size=64, num_layers=1, dropout=0.1),
        data=DataConfig(name="co2", context=52, horizon=12, level="last", val_fraction=0.15, test_fraction=0.15),
        optim=OptimConfig(name="adam", lr=3e-3, weight_decay=1e-4),
        train=TrainConfig(batch_size=32, steps=1500, eval_every=50, driver="scan", chunk_steps=50,
                          early_stopping=EarlyStoppingConfig(enabled=True, patience=8, monitor="val/loss")),
    )
    return variant(cfg, name, gru={"model.cell": "gru"},
                   smoke={"train.steps": 20, "train.eval_every": 10, "train.progress": False})
