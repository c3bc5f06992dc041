"""DCGANs swept as populations: which generator and discriminator learning rates train a GAN best, over seeds?

The DCGAN of configs/fashion_mnist_gan.py (non-saturating loss, Adam b1 0.5, batch 64) with its smaller generator
(channels 64/32, as the sweep was run) on Fashion-MNIST for 1,000 steps, with generator lr (``optim.lr``) 2e-4 / 8e-4 × discriminator lr (``optim2.lr``) 2e-4 / 8e-4 × 2 seeds = 8
runs. Both learning rates are dynamic numbers (the second player's optimizer reads ``optim2.*``), so all 8 runs
share one structure and can train as one vmapped program of 8 two-player members; a timed probe decides whether
that is faster here, and the sweep's database records the decision. After training each run scores 2,000 samples
(jaxdl.gen_metrics): configurations are ranked by the Fréchet distance against the validation split, with the test
split's distance, precision and recall beside it, and the report shows each configuration's val-best seed's samples.

Run:     jaxdl sweep experiments/gan_sweep.py --workdir runs/sweeps/gan_sweep
Report:  jaxdl report runs/sweeps/gan_sweep --metric val/frechet_distance   (results: experiments/generative.md)
"""

from jaxdl.config import load_config
from jaxdl.experiment import grid


def get_config():
    return load_config("fashion_mnist_gan", ["name=gan_sweep", "model.g_channels=(64,32)", "model.d_channels=(32,64)",
                                             "train.steps=1000", "train.eval_every=250",
                                             "loss.score_samples=2000", "train.progress=false",
                                             "train.keep_checkpoints=1"])


def get_sweep():
    return grid(**{"optim.lr": [2e-4, 8e-4], "optim2.lr": [2e-4, 8e-4], "seed": [0, 1]})
