"""LeNet-5 on Fashion-MNIST (60,000 training / 10,000 test images; 10% of training held out for validation).

Needs:  apt-get install dataset-fashion-mnist   (IDX files in /usr/share/datasets/fashion-mnist), or data.root=DIR
Run:    jaxdl train configs/fashion_mnist_lenet.py
Smoke:  jaxdl train configs/fashion_mnist_lenet.py:smoke
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="fashion_mnist_lenet",
        model=model_config("lenet5", activation="relu", pool="max"),
        data=DataConfig(name="fashion_mnist", val_fraction=0.1),
        optim=OptimConfig(name="adam", lr=2e-3, schedule="cosine"),
        train=TrainConfig(batch_size=128, epochs=10, driver="auto"),
    )
    return variant(cfg, name, smoke={"data.train_limit": 2000, "train.steps": 10, "train.progress": False})
