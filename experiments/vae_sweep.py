"""β-VAEs swept as populations: how do the KL weight β and the latent size trade reconstruction against the prior?

MLP VAEs (configs/fashion_mnist_vae.py: 512-256 encoder/decoder, Bernoulli pixels) on Fashion-MNIST with
β ∈ {0.5, 1, 2, 4} × latent size 8 / 32 × 2 seeds = 16 runs of 8 epochs. β is a dynamic number (``loss.kl_weight``),
so the runs of one latent size differ only in numbers — β and seed — and each latent size's 8 runs can train as one
vmapped program; a timed probe decides per group whether that is faster here. Every run is ranked by its validation
negative ELBO at β = 1 (``val/nelbo``, the bound itself, comparable across β) and reports the test bound, its
reconstruction and KL parts, the importance-weighted bound (64 samples per image) and the scores of 5,000 prior
samples (jaxdl.gen_metrics).

Run:     jaxdl sweep experiments/vae_sweep.py --workdir runs/sweeps/vae_sweep
Report:  jaxdl report runs/sweeps/vae_sweep       (results: experiments/generative.md)
"""

from jaxdl.config import load_config
from jaxdl.experiment import grid


def get_config():
    return load_config("fashion_mnist_vae", ["name=vae_sweep", "train.epochs=8", "train.progress=false",
                                             "train.keep_checkpoints=1"])


def get_sweep():
    return grid(**{"loss.kl_weight": [0.5, 1.0, 2.0, 4.0], "model.latent": [8, 32], "seed": [0, 1]})
