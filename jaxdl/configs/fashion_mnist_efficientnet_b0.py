"""EfficientNet-B0 (MBConv, squeeze-excitation, swish, stochastic depth) from scratch on Fashion-MNIST resized to
64×64, with mixup and label smoothing.

Run:    jaxdl train configs/fashion_mnist_efficientnet_b0.py
Smoke:  jaxdl train configs/fashion_mnist_efficientnet_b0.py:smoke
"""

from jaxdl.config import (AugmentConfig, Config, DataConfig, LossConfig, OptimConfig, TrainConfig, model_config,
                          variant)


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="fashion_mnist_efficientnet_b0",
        model=model_config("efficientnet_b0"),
        data=DataConfig(name="fashion_mnist", val_fraction=0.1, resize=(64, 64)),
        loss=LossConfig(label_smoothing=0.1),
        optim=OptimConfig(name="adamw", lr=2e-3, schedule="warmup_cosine", warmup_steps=500, weight_decay=0.05),
        augment=AugmentConfig(ops=("flip", "mixup"), mixup=0.2),
        train=TrainConfig(batch_size=128, epochs=20, driver="host", eval_batch_size=500),
    )
    return variant(cfg, name, smoke={"data.resize": (32, 32), "data.train_limit": 64, "data.eval_limit": 32,
                                     "train.batch_size": 16, "train.steps": 2, "train.progress": False})
