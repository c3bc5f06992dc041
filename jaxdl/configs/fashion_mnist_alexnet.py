"""AlexNet on Fashion-MNIST resized to 64×64 (AlexNet's 11×11 stride-4 stem and three max-pools need at least 63
pixels), dropout in the classifier, SGD with momentum.

Run:    jaxdl train configs/fashion_mnist_alexnet.py
Smoke:  jaxdl train configs/fashion_mnist_alexnet.py:smoke
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="fashion_mnist_alexnet",
        model=model_config("alexnet", dropout=0.5),
        data=DataConfig(name="fashion_mnist", val_fraction=0.1, resize=(64, 64)),
        optim=OptimConfig(name="sgd", lr=0.01, momentum=0.9, l2=5e-4, schedule="cosine"),
        train=TrainConfig(batch_size=128, epochs=15, driver="host", eval_batch_size=500),
    )
    return variant(cfg, name, smoke={"data.train_limit": 64, "data.eval_limit": 32, "train.batch_size": 16,
                                     "train.steps": 2, "train.progress": False})
