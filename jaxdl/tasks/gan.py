r"""Generative adversarial networks: a generator ``G`` and a discriminator ``D`` trained against each other.

Players ``("generator", "discriminator")``: the generator's optimizer is ``optim``, the discriminator's ``optim2``
(its numbers enter the step as ``hp["optim2.lr"]`` …). Each step updates the discriminator, then the generator
(``schedule``), on one batch of real images ``x`` with pixels in [0, 1] (a standardised data set is refused: set
``data.standardize=False``). With ``s = D(·)`` the discriminator's raw score (logit) of an image, ``z ~ N(0, I)``
and, for the class-conditional model, ``y`` the real batch's labels (fakes are generated for the same classes)::

    non_saturating (loss.name=auto, the default):
        d_loss = −log σ(D(x)) − log(1 − σ(D(G(z))))  = softplus(−D(x)) + softplus(D(G(z)))
        g_loss = −log σ(D(G(z)))                       = softplus(−D(G(z)))
    hinge:
        d_loss = max(0, 1 − D(x)) + max(0, 1 + D(G(z)))
        g_loss = −D(G(z))
    wgan_gp (Gulrajani et al. 2017):
        d_loss = D(G(z)) − D(x) + λ (‖∇ₓ̂ D(x̂)‖₂ − 1)²,   x̂ = ε x + (1 − ε) G(z),  ε ~ U[0, 1] per image
        g_loss = −D(G(z))

per image (the fake paired with each real image), averaged over the batch. ``λ = loss.gp_weight`` is the dynamic
number ``hp["gp_weight"]`` (sweeping it never recompiles); whether the penalty is computed at all is the loss kind,
structure. The penalty's input gradient is taken inside the loss, so the discriminator's update differentiates a
gradient (a second derivative); the discriminator has no batch norm, so each image's gradient is its own.

Noise: every draw comes from the step's ``latent`` stream — ``z`` of the discriminator's update from ``fold_in(k,
0)``, of the generator's update from ``fold_in(k, 1)``, the interpolation weights ``ε`` from ``fold_in(k, 2)``.
Evaluation uses ``k = PRNGKey(EVAL_SEED)`` for every batch, so validation numbers repeat (every evaluation batch
meets the same noise; a split's ``g_loss`` reads the split only through its size and, conditional, its labels).

Model state: the generator's batch-norm statistics change only in the generator's update, the discriminator's
spectral-norm power iteration only in the discriminator's. Elsewhere the states are read, not written: the fakes
of the discriminator's update are drawn in training mode (batch statistics), and the generator's update scores its
fakes with the discriminator in evaluation mode (the stored spectral-norm estimates; the penalty's inner call too).

Metrics, each ``(sum, count)`` over images: ``d_loss``, ``g_loss`` and ``loss`` (= ``d_loss``, the loss of the
step's first update, as the step's ``loss`` metric; GAN losses do not rank models — the scores after training do);
``d_real`` and ``d_fake``: the mean of ``σ(D(x))`` and ``σ(D(G(z)))`` (non_saturating: the discriminator's
probability that an image is real) or of the raw scores ``D(x)``, ``D(G(z))`` (hinge, wgan_gp: for wgan_gp,
``d_real − d_fake`` is the critic's estimate of the Wasserstein-1 distance); ``d_accuracy``: the fraction of the real and fake
images the discriminator puts on the right side of 0 (``D(x) > 0``, ``D(G(z)) < 0``; over ``2 × count``); and for
wgan_gp ``gp``, the mean penalty ``(‖∇D(x̂)‖ − 1)²`` before λ.

After training (:meth:`GAN.artifacts`): the scores of ``loss.score_samples`` samples (:mod:`jaxdl.tasks.generative`:
Fréchet distance, precision/recall and, for a conditional model, the shipped classifier's accuracy on the classes
asked for) and, with plots, ``gan_samples.png`` (a class-conditional model: one class per column); every
evaluation writes a grid of samples from fixed noise to ``samples/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl.config import Config
from jaxdl.errors import ConfigError, DataError
from jaxdl.models import Model
from jaxdl.models.gan import DCGANConfig, build_players
from jaxdl.tasks.base import register
from jaxdl.tasks.generative import GRID_SEED, GRID_SIZE, GenerativeImageTask, save_grid

LOSSES = ("non_saturating", "hinge", "wgan_gp")
EVAL_SEED = 0x6A4  # evaluation noise: PRNGKey(EVAL_SEED) for every batch
# fold_in data of the latent stream: the discriminator's fakes, the generator's fakes, the interpolation weights
D_NOISE, G_NOISE, GP_NOISE = 0, 1, 2


def d_terms(kind: str, real: jax.Array, fake: jax.Array) -> jax.Array:
    """The discriminator's loss per image, without the gradient penalty, from the scores of real and fake images
    ``(B,)`` each (see the module docstring)."""
    if kind == "non_saturating":
        return jax.nn.softplus(-real) + jax.nn.softplus(fake)
    if kind == "hinge":
        return jax.nn.relu(1.0 - real) + jax.nn.relu(1.0 + fake)
    return fake - real


def g_terms(kind: str, fake: jax.Array) -> jax.Array:
    """The generator's loss per image from the discriminator's scores of its images ``(B,)``."""
    return jax.nn.softplus(-fake) if kind == "non_saturating" else -fake


@register("gan")
class GAN(GenerativeImageTask):
    """A generator and a discriminator with the non-saturating, hinge or WGAN-GP losses (see the module docstring)."""

    players = ("generator", "discriminator")
    schedule = ("discriminator", "generator")
    rng_streams = ("latent",)
    monitor = "val/loss"

    def __init__(self, models: dict[str, Model], *, inputs=("image",), targets=(), kind: str = "non_saturating",
                 latent: int = 64, image_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 0,
                 score_samples: int = 0):
        super().__init__(models, inputs, targets)
        if kind not in LOSSES:
            raise ConfigError(f"loss.name: {kind!r} is not a GAN loss; expected auto or one of {', '.join(LOSSES)}")
        self.kind, self.latent = kind, int(latent)
        self.image_shape, self.num_classes = tuple(image_shape), int(num_classes)
        self.score_samples = int(score_samples)

    @classmethod
    def outputs_needed(cls, ds) -> int:
        """The data's number of classes (used by the class-conditional model), 1 for unlabelled images."""
        return int(ds.num_classes) if getattr(ds, "num_classes", None) else 1

    @classmethod
    def build(cls, cfg: Config, dataset, model: Model, *, dropout: bool = True) -> GAN:
        del dropout
        kind = "non_saturating" if cfg.loss.name == "auto" else cfg.loss.name
        if kind not in LOSSES:
            raise ConfigError(f"loss.name={cfg.loss.name} is not a loss of task=gan; expected auto (non_saturating), "
                              f"{', '.join(LOSSES)}")
        mc = model.config
        if not isinstance(mc, DCGANConfig):
            got = f"model.name={mc.name}" if mc is not None else f"a user model ({model.name})"
            raise ConfigError(f"task=gan trains model dcgan (a generator and a discriminator built from model.*), "
                              f"got {got}")
        if dataset.mean is not None or dataset.std is not None:
            raise ConfigError(f"task=gan generates pixels in [0, 1], but data set {dataset.name!r} is standardised; "
                              "set data.standardize=False")
        if len(dataset.inputs) != 1:
            raise DataError(f"task=gan reads one image array; data set {dataset.name!r} has inputs "
                            f"{', '.join(dataset.inputs)}")
        shape, _ = dataset.train.example_spec()[dataset.inputs[0]]
        classes = 0
        if mc.conditional:
            if not getattr(dataset, "num_classes", None) or not dataset.targets or dataset.kind != "classification":
                raise DataError(f"model.conditional=True needs class labels, but data set {dataset.name!r} has "
                                f"{getattr(dataset, 'kind', 'no')} targets")
            classes = int(dataset.num_classes)
        players = build_players(mc, tuple(shape), classes)
        return cls(players, inputs=tuple(dataset.inputs), targets=tuple(dataset.targets[:1]) if classes else (),
                   kind=kind, latent=mc.latent, image_shape=tuple(shape), num_classes=classes,
                   score_samples=cfg.loss.score_samples)

    # ---------------------------------------------------------------------------------------------------------------
    def g_inputs(self, z: jax.Array, labels: jax.Array | None) -> Any:
        return {"z": z, "label": labels} if self.conditional else z

    def d_inputs(self, x: jax.Array, labels: jax.Array | None) -> Any:
        return {"x": x, "label": labels} if self.conditional else x

    def init(self, key: jax.Array, example_batch) -> dict[str, Any]:
        """The generator's variables from ``key``, the discriminator's from ``fold_in(key, 1)``."""
        x = jnp.zeros((1, *self.image_shape), jnp.float32)
        labels = jnp.zeros((1,), jnp.int32)
        z = jnp.zeros((1, self.latent), jnp.float32)
        return {"generator": self.models["generator"].init(key, self.g_inputs(z, labels)),
                "discriminator": self.models["discriminator"].init(jax.random.fold_in(key, 1),
                                                                   self.d_inputs(x, labels))}

    def fakes(self, params, model_state, key: jax.Array, labels: jax.Array | None, n: int, train: bool):
        """``(images (n, H, W, C), generator state)`` from noise ``z ~ N(0, I)`` drawn with ``key``."""
        z = jax.random.normal(key, (n, self.latent), jnp.float32)  # (n, L)
        variables = {"params": params["generator"], **model_state["generator"]}
        return self.models["generator"].apply(variables, self.g_inputs(z, labels), train=train)

    def scores_of(self, params, model_state, x: jax.Array, labels: jax.Array | None, train: bool):
        """``(scores (B,), discriminator state)`` of images ``x``."""
        variables = {"params": params["discriminator"], **model_state["discriminator"]}
        return self.models["discriminator"].apply(variables, self.d_inputs(x, labels), train=train)

    def penalty(self, params, model_state, x_hat: jax.Array, labels: jax.Array | None) -> jax.Array:
        """``(‖∇ D(x̂)‖₂ − 1)²`` per image ``(B,)``, the gradient taken w.r.t. the images ``x̂`` (eval-mode
        discriminator: its state is read, not advanced)."""
        def total(images):
            return jnp.sum(self.scores_of(params, model_state, images, labels, False)[0])

        grad = jax.grad(total)(x_hat)  # (B, H, W, C)
        norm = jnp.sqrt(jnp.sum(jnp.square(grad), axis=(1, 2, 3)) + 1e-12)  # (B,); the epsilon keeps d/dg finite at 0
        return jnp.square(norm - 1.0)

    def loss(self, player, params, model_state, batch, rngs, hp, train):
        x = batch[self.inputs[0]].astype(jnp.float32)  # (B, H, W, C)
        n = x.shape[0]
        labels = batch[self.targets[0]].astype(jnp.int32) if self.conditional else None  # (B,)
        key = rngs["latent"] if rngs is not None else jax.random.PRNGKey(EVAL_SEED)
        m = batch.get("mask")
        m = jnp.ones((n,), jnp.float32) if m is None else m.astype(jnp.float32)  # (B,)
        count = jnp.sum(m)

        def stat(values, weight=count):
            return jnp.sum(values * m), weight

        if player == "discriminator":
            # the generator's fakes with its batch statistics; its state is not written here
            fake, _ = self.fakes(params, model_state, jax.random.fold_in(key, D_NOISE), labels, n, train)
            fake = jax.lax.stop_gradient(fake)
            both = jnp.concatenate([x, fake])  # (2B, H, W, C): one call, one power iteration
            both_labels = None if labels is None else jnp.concatenate([labels, labels])
            scores, d_state = self.scores_of(params, model_state, both, both_labels, train)
            real_s, fake_s = scores[:n], scores[n:]  # (B,) each
            per = d_terms(self.kind, real_s, fake_s)  # (B,)
            prob = self.kind == "non_saturating"
            stats = {"d_real": stat(jax.nn.sigmoid(real_s) if prob else real_s),
                     "d_fake": stat(jax.nn.sigmoid(fake_s) if prob else fake_s),
                     "d_accuracy": stat((real_s > 0).astype(jnp.float32) + (fake_s < 0).astype(jnp.float32),
                                        2.0 * count)}
            if self.kind == "wgan_gp":
                eps = jax.random.uniform(jax.random.fold_in(key, GP_NOISE), (n, 1, 1, 1))  # (B, 1, 1, 1)
                gp = self.penalty(params, model_state, eps * x + (1.0 - eps) * fake, labels)  # (B,)
                per = per + hp["gp_weight"] * gp
                stats["gp"] = stat(gp)
            stats["d_loss"] = stats["loss"] = stat(per)
            new_state = {**model_state, "discriminator": d_state}
        else:
            fake, g_state = self.fakes(params, model_state, jax.random.fold_in(key, G_NOISE), labels, n, train)
            fake_s, _ = self.scores_of(params, model_state, fake, labels, False)  # (B,)
            per = g_terms(self.kind, fake_s)
            stats = {"g_loss": stat(per)}
            new_state = {**model_state, "generator": g_state}
        return jnp.sum(per * m) / jnp.maximum(count, 1.0), (stats, new_state)

    def metric_names(self) -> list[str]:
        return ["loss", "g_loss", "d_loss", "d_real", "d_fake", "d_accuracy"] + (["gp"] if self.kind == "wgan_gp"
                                                                                  else [])

    def predict(self, params, model_state, inputs):
        """The discriminator's raw scores ``(B,)`` of images ``inputs`` (a conditional model: ``{"x", "label"}``)."""
        variables = {"params": params["discriminator"], **model_state["discriminator"]}
        return self.models["discriminator"].apply(variables, inputs)[0]

    def generate(self, params, model_state, key, labels):
        """Generator images ``(n, *image_shape)`` in [0, 1] from ``z ~ N(0, I)`` drawn with ``key`` (eval mode)."""
        images, _ = self.fakes(params, model_state, key, labels if self.conditional else None, labels.shape[0],
                               False)
        return images

    # ---------------------------------------------------------------------------------------------------------------
    def artifacts(self, params: dict[str, Any], model_state: dict[str, Any], dataset, run_dir, plots: bool = True
                  ) -> dict[str, Any]:
        """The scores of ``loss.score_samples`` samples and, with ``plots``, ``gan_samples.png``."""
        out = dict(self.scores(params, model_state, dataset))
        if plots and run_dir is not None:
            cols = self.num_classes if self.conditional else GRID_SIZE
            images, _ = self.sample(params, model_state, GRID_SIZE * cols, seed=GRID_SEED)
            title = "one class per column" if self.conditional else None
            save_grid(images, GRID_SIZE, Path(run_dir) / "gan_samples.png", title=title)
            out["figures"] = ["gan_samples.png"]
        return out


__all__ = ["D_NOISE", "EVAL_SEED", "G_NOISE", "GAN", "GP_NOISE", "LOSSES", "d_terms", "g_terms"]
