"""Quickstart study: which architecture, loss and regulariser work best on the 8×8 digits?

Perceptron, MLP and LeNet-5 × cross-entropy and MSE (on one-hot targets) × no regularisation, dropout, L2 and batch
norm × 3 seeds (66 runs; a perceptron has no dropout or batch norm, so those points are skipped). Runs that share
their structure (e.g. an MLP's "none", "dropout" and "L2" variants over all seeds) train as one vmapped program when a
timed probe finds that faster.

Run:     jaxdl sweep experiments/quickstart.py
Report:  jaxdl report runs/sweeps/quickstart
"""

from jaxdl.config import Config, DataConfig, LossConfig, OptimConfig, TrainConfig, model_config
from jaxdl.experiment import grid


def get_config() -> Config:
    return Config(
        name="quickstart",
        model=model_config("mlp", widths=(128,)),
        data=DataConfig(name="digits"),
        loss=LossConfig(name="cross_entropy"),
        optim=OptimConfig(name="adam", lr=3e-3),
        # 19 steps per epoch; checkpoints every 3 epochs keep a killed sweep resumable without slowing it down
        train=TrainConfig(batch_size=64, epochs=12, driver="auto", checkpoint_every=57, keep_checkpoints=1,
                          progress=False),
    )


def get_sweep():
    return grid(
        model=[{"name": "perceptron", "output": "logits"},
               {"name": "mlp", "widths": (128,)},
               {"name": "lenet5", "activation": "relu", "pool": "max"}],
        **{"loss.name": ["cross_entropy", "mse"]},
        reg=[{"label": "none"},
             {"label": "dropout", "model.dropout": 0.3},
             {"label": "l2", "optim.l2": 1e-3},
             {"label": "batch_norm", "model.batch_norm": True}],
        seed=[0, 1, 2],
    )
