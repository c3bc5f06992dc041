r"""Variational autoencoder objective: the negative evidence lower bound (ELBO) of images, in nats per image.

For an image ``x`` of ``D`` pixels in ``[0, 1]`` and the model's encoder ``q(z|x) = N(mu, diag(exp(logvar)))``::

    z = mu + exp(logvar / 2) ⊙ eps,   eps ~ N(0, I)            (one sample; the "latent" RNG stream)
    recon = -log p(x|z)
    kl    = KL(q(z|x) ‖ N(0, I)) = ½ Σ_j (mu_j² + exp(logvar_j) − 1 − logvar_j)
    loss  = recon + β · kl          (β = ``loss.kl_weight``, the dynamic number ``hp["kl_weight"]``)
    nelbo = recon + kl              (β = 1: the bound itself)

Reconstruction terms (``model.likelihood``):

- ``bernoulli``: the decoder gives logits ``l``; ``-log p(x|z) = Σ_d softplus(l_d) − x_d l_d`` (binary
  cross-entropy summed over pixels; grey levels act as soft targets, the usual practice on (Fashion-)MNIST, so the
  value is a cross-entropy, not the log-likelihood of a discrete image);
- ``gaussian``: the decoder gives means ``m`` and the scale is the fixed ``σ = model.sigma``;
  ``-log p(x|z) = Σ_d (x_d − m_d)² / (2σ²) + D (log σ + ½ log 2π)`` (a density, so it can be negative).

Pixels must lie in ``[0, 1]``: image data sets are standardised by default, so this task needs
``data.standardize=False`` and says so when it is not.

Metrics, each ``(sum over images, number of images)``: ``loss``, ``nelbo``, ``recon``, ``kl``; ``val/nelbo`` is
monitored. Training draws ``eps`` from the step's ``latent`` stream; evaluation uses the fixed key
``PRNGKey(EVAL_SEED)`` per batch, so validation numbers are repeatable.

After training (:meth:`VAE.artifacts`), the test split's importance-weighted bound (Burda et al. 2016) with
``k = loss.iw_samples`` samples per image, reported as ``iw_nll`` (nats per image, an upper bound on ``−log p(x)``
that tightens as ``k`` grows and equals the ELBO's expectation at ``k = 1``)::

    iw_nll = −E_x[ log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x) ],   z_i ~ q(z|x)

and, with ``plots``, three PNG grids: ``vae_reconstructions.png`` (test inputs over their reconstructions),
``vae_samples.png`` (decoded draws from the prior) and ``vae_interpolation.png`` (decoded codes on the line
between the means of two test images), and the scores of ``loss.score_samples`` prior samples
(:mod:`jaxdl.tasks.generative`); at every evaluation an 8 × 8 grid of prior samples goes to ``samples/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.config import Config
from jaxdl.errors import ConfigError, DataError
from jaxdl.models import Model
from jaxdl.tasks.base import register
from jaxdl.tasks.generative import GenerativeImageTask, save_grid

EVAL_SEED = 0x5AE  # evaluation noise: PRNGKey(EVAL_SEED) for every batch
ARTIFACT_SEED = 0xA27  # importance samples, prior samples
LOG_2PI = math.log(2.0 * math.pi)


def kl_standard_normal(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """``KL(N(mu, diag(exp(logvar))) ‖ N(0, I))`` per example: ``½ Σ_j (mu² + exp(logvar) − 1 − logvar)``.

    Args:
      mu, logvar: ``(B, L)``.
    Returns:
      ``(B,)`` nats.
    """
    return 0.5 * jnp.sum(mu**2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def log_likelihood(out: jax.Array, x: jax.Array, likelihood: str, sigma: float) -> jax.Array:
    """``log p(x|z)`` per example from the decoder outputs ``out`` ``(..., D)`` and pixels ``x`` ``(..., D)``.

    Returns:
      ``(...)`` nats (see the module docstring for both likelihoods).
    """
    if likelihood == "bernoulli":
        return -jnp.sum(jax.nn.softplus(out) - x * out, axis=-1)
    d = x.shape[-1]
    return -jnp.sum((x - out) ** 2, axis=-1) / (2.0 * sigma**2) - d * (math.log(sigma) + 0.5 * LOG_2PI)


def log_normal(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """``log N(z; mu, diag(exp(logvar)))`` summed over the last axis."""
    return -0.5 * jnp.sum((z - mu) ** 2 * jnp.exp(-logvar) + logvar + LOG_2PI, axis=-1)


@register("vae")
class VAE(GenerativeImageTask):
    """Negative ELBO of images with a β-weighted KL term (see the module docstring)."""

    rng_streams = ("latent",)
    monitor = "val/nelbo"

    def __init__(self, model: Model, *, inputs=("image",), likelihood: str = "bernoulli", sigma: float = 0.1,
                 iw_samples: int = 64, image_shape: tuple[int, ...] = (28, 28, 1), score_samples: int = 0):
        super().__init__({"model": model}, inputs, ())
        self.likelihood, self.sigma = likelihood, float(sigma)
        self.iw_samples, self.image_shape = int(iw_samples), tuple(image_shape)
        self.score_samples = int(score_samples)

    @classmethod
    def outputs_needed(cls, ds) -> int:
        """The pixels of one image (the decoder's outputs)."""
        shape, _ = ds.train.example_spec()[ds.inputs[0]]
        return int(math.prod(shape))

    @classmethod
    def build(cls, cfg: Config, dataset, model: Model, *, dropout: bool = True) -> VAE:
        del dropout
        if cfg.loss.name not in ("auto",):
            raise ConfigError(f"loss.name={cfg.loss.name} is not used by task=vae (its loss is the negative ELBO); "
                              "leave it at auto")
        if dataset.mean is not None or dataset.std is not None:
            raise ConfigError(f"task=vae models pixels in [0, 1], but data set {dataset.name!r} is standardised; set "
                              "data.standardize=False")
        if len(dataset.inputs) != 1:
            raise DataError(f"task=vae reads one image array; data set {dataset.name!r} has inputs "
                            f"{', '.join(dataset.inputs)}")
        shape, _ = dataset.train.example_spec()[dataset.inputs[0]]
        mc = model.config
        return cls(model, inputs=tuple(dataset.inputs), likelihood=getattr(mc, "likelihood", "bernoulli"),
                   sigma=getattr(mc, "sigma", 0.1), iw_samples=cfg.loss.iw_samples, image_shape=tuple(shape),
                   score_samples=cfg.loss.score_samples)

    # ---------------------------------------------------------------------------------------------------------------
    def terms(self, params, model_state, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(recon, kl)``, each ``(B,)`` nats, of images ``x`` with the noise of ``key``."""
        model = self.models["model"]
        (out, mu, logvar), _ = model.apply({"params": params, **model_state}, x, rngs={"latent": key})
        flat = x.reshape(x.shape[0], -1).astype(jnp.float32)  # (B, D)
        recon = -log_likelihood(out.astype(jnp.float32), flat, self.likelihood, self.sigma)
        return recon, kl_standard_normal(mu.astype(jnp.float32), logvar.astype(jnp.float32))

    def loss(self, player, params, model_state, batch, rngs, hp, train):
        x = batch[self.inputs[0]]
        key = rngs["latent"] if rngs is not None else jax.random.PRNGKey(EVAL_SEED)
        recon, kl = self.terms(params[player], model_state[player], x, key)
        m = batch.get("mask")
        m = jnp.ones(x.shape[0], jnp.float32) if m is None else m.astype(jnp.float32)  # (B,)
        count = jnp.sum(m)
        objective = recon + hp["kl_weight"] * kl  # (B,)
        stats = {"loss": (jnp.sum(objective * m), count), "nelbo": (jnp.sum((recon + kl) * m), count),
                 "recon": (jnp.sum(recon * m), count), "kl": (jnp.sum(kl * m), count)}
        return jnp.sum(objective * m) / jnp.maximum(count, 1.0), (stats, model_state)

    def metric_names(self) -> list[str]:
        return ["loss", "nelbo", "recon", "kl"]

    def predict(self, params, model_state, inputs):
        """Reconstructions of images ``inputs`` from their mean codes, in the images' shape (pixel means)."""
        (out, _, _), _ = self.model.apply({"params": params["model"], **model_state["model"]}, inputs)
        return self.pixels(out).reshape(inputs.shape)

    def pixels(self, out: jax.Array) -> jax.Array:
        """Pixel means of decoder outputs: ``sigmoid(logits)`` (Bernoulli) or the means clipped to [0, 1]."""
        return jax.nn.sigmoid(out) if self.likelihood == "bernoulli" else jnp.clip(out, 0.0, 1.0)

    def generate(self, params, model_state, key, labels):
        """Decoded draws from the prior ``z ~ N(0, I)``: the decoder's pixel means ``(n, *image_shape)``."""
        model = self.models["model"]
        variables = {"params": params["model"], **model_state["model"]}
        latent = model.config.latent
        z = jax.random.normal(key, (labels.shape[0], latent), jnp.float32)  # (n, L)
        out, _ = model.apply(variables, z, method="decode")
        return self.pixels(out).reshape(labels.shape[0], *self.image_shape)

    # ---------------------------------------------------------------------------------------------------------------
    def iw_log_weights(self, params, model_state, x: jax.Array, key: jax.Array, k: int) -> jax.Array:
        """``log w_i = log p(x|z_i) + log p(z_i) − log q(z_i|x)`` ``(B, k)`` for ``k`` draws ``z_i ~ q(z|x)``."""
        model = self.models["model"]
        variables = {"params": params, **model_state}
        (mu, logvar), _ = model.apply(variables, x, method="encode")  # (B, L) each
        eps = jax.random.normal(key, (x.shape[0], k, mu.shape[-1]), jnp.float32)  # (B, k, L)
        z = mu[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps  # (B, k, L)
        out, _ = model.apply(variables, z.reshape(-1, z.shape[-1]), method="decode")  # (B*k, D)
        out = out.reshape(x.shape[0], k, -1).astype(jnp.float32)  # (B, k, D)
        flat = x.reshape(x.shape[0], 1, -1).astype(jnp.float32)  # (B, 1, D)
        zeros = jnp.zeros_like(z)
        return (log_likelihood(out, flat, self.likelihood, self.sigma) + log_normal(z, zeros, zeros)
                - log_normal(z, mu[:, None], logvar[:, None]))

    def iw_nll(self, params, model_state, images: np.ndarray, k: int, batch_size: int = 100, seed: int = ARTIFACT_SEED
               ) -> float:
        """The importance-weighted bound ``−log (1/k) Σ_i w_i`` averaged over ``images``, in nats per image.

        Batch ``j`` draws its noise from ``fold_in(PRNGKey(seed), j)``; the last batch is padded and masked."""
        fn = jax.jit(lambda p, s, x, key: jax.nn.logsumexp(self.iw_log_weights(p, s, x, key, k), axis=1)
                     - math.log(k))  # (B,)
        total, n = 0.0, len(images)
        for j, start in enumerate(range(0, n, batch_size)):
            chunk = images[start:start + batch_size]
            pad = batch_size - len(chunk)
            x = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
            bound = fn(params, model_state, jnp.asarray(x), jax.random.fold_in(jax.random.PRNGKey(seed), j))
            total += float(jnp.sum(bound[:len(chunk)]))
        return -total / max(n, 1)

    def artifacts(self, params: dict[str, Any], model_state: dict[str, Any], dataset, run_dir, plots: bool = True
                  ) -> dict[str, Any]:
        """The test split's importance-weighted bound (``iw_nll``, nats per image) and, with ``plots``, the image
        grids (see the module docstring)."""
        p, s = params["model"], model_state["model"]
        images = np.asarray(dataset.test.x, np.float32)
        out = {"iw_nll": {"test": self.iw_nll(p, s, images, self.iw_samples), "samples": self.iw_samples,
                          "images": int(len(images))}}
        out.update(self.scores(params, model_state, dataset))
        if plots and run_dir is not None:
            out["figures"] = self.write_figures(p, s, images, Path(run_dir))
        return out

    def write_figures(self, params, model_state, images: np.ndarray, run_dir: Path, n: int = 8) -> list[str]:
        """Reconstructions, prior samples and an interpolation as PNG grids in ``run_dir``; returns the names."""
        model = self.models["model"]
        variables = {"params": params, **model_state}
        shape = images.shape[1:]
        x = jnp.asarray(images[:n])
        (rec, _, _), _ = model.apply(variables, x)  # mean codes: z = mu
        (mu, _), _ = model.apply(variables, x, method="encode")
        latent = mu.shape[-1]
        z = jax.random.normal(jax.random.PRNGKey(ARTIFACT_SEED), (n * n, latent))  # (n², L)
        samples, _ = model.apply(variables, z, method="decode")
        t = jnp.linspace(0.0, 1.0, 2 * n)[:, None]  # (2n, 1)
        line = (1.0 - t) * mu[0] + t * mu[min(1, len(mu) - 1)]  # (2n, L)
        interp, _ = model.apply(variables, line, method="decode")
        grids = {"vae_reconstructions.png": (np.concatenate([np.asarray(x).reshape(-1, *shape),
                                                             np.asarray(self.pixels(rec)).reshape(-1, *shape)]), 2),
                 "vae_samples.png": (np.asarray(self.pixels(samples)).reshape(-1, *shape), n),
                 "vae_interpolation.png": (np.asarray(self.pixels(interp)).reshape(-1, *shape), 1)}
        for name, (imgs, rows) in grids.items():
            save_grid(imgs, rows, run_dir / name)
        return sorted(grids)
