"""Rosenblatt's perceptron on the 8×8 digits: one threshold unit per class, step outputs trained with MSE on one-hot
targets through a straight-through gradient (the perceptron learning rule), plain SGD.

Run:    jaxdl train configs/digits_perceptron.py
Smoke:  jaxdl train configs/digits_perceptron.py:smoke
"""

from jaxdl.config import Config, DataConfig, LossConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="digits_perceptron",
        model=model_config("perceptron", output="step"),
        data=DataConfig(name="digits"),
        loss=LossConfig(name="mse"),
        optim=OptimConfig(name="sgd", lr=0.01),
        train=TrainConfig(batch_size=32, epochs=20, driver="scan"),
    )
    return variant(cfg, name, smoke={"train.steps": 10, "train.progress": False})
