"""VGG-11 with batch norm on Fashion-MNIST resized to 32×32 (VGG's five 2×2 max-pools need at least 32 pixels),
with flip augmentation and AdamW.

Run:    jaxdl train configs/fashion_mnist_vgg11.py
Smoke:  jaxdl train configs/fashion_mnist_vgg11.py:smoke
"""

from jaxdl.config import AugmentConfig, Config, DataConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="fashion_mnist_vgg11",
        model=model_config("vgg11_bn", dropout=0.5),
        data=DataConfig(name="fashion_mnist", val_fraction=0.1, resize=(32, 32)),
        optim=OptimConfig(name="adamw", lr=1e-3, schedule="cosine", weight_decay=5e-4),
        augment=AugmentConfig(ops=("flip",)),
        train=TrainConfig(batch_size=128, epochs=15, driver="host", eval_batch_size=1000),
    )
    return variant(cfg, name, smoke={"data.train_limit": 128, "data.eval_limit": 64, "train.batch_size": 16,
                                     "train.steps": 2, "train.progress": False})
