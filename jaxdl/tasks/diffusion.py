r"""Denoising diffusion (DDPM, Ho et al. 2020) on images: training, evaluation and the DDPM / DDIM samplers.

Pixels ``p`` in [0, 1] are modelled as ``x0 = 2p − 1`` in [−1, 1] (so the task needs ``data.standardize=False``);
samples are returned as ``(x0 + 1) / 2``. With ``T = loss.timesteps`` steps, indices ``t = 0 … T−1``,

**Forward process.** ``q(x_t | x0) = N(sqrt(ᾱ_t) x0, (1 − ᾱ_t) I)``, ``ᾱ_t = Π_{s≤t} (1 − β_s)``::

    x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε,   ε ~ N(0, I)

Noise schedules (``loss.noise_schedule``):

- ``linear`` (Ho et al.): ``β_t`` evenly spaced from ``1e-4·1000/T`` to ``0.02·1000/T`` (the 1000-step schedule
  rescaled, as Nichol & Dhariwal do, so any ``T`` spans a similar range of noise; at most 0.999, which only
  ``T < 20`` reaches);
- ``cosine`` (Nichol & Dhariwal 2021): ``ᾱ(t) = f(t) / f(0)``, ``f(t) = cos²(π/2 · (t/T + s) / (1 + s))``,
  ``s = 0.008``; ``β_t = min(1 − ᾱ(t+1)/ᾱ(t), 0.999)`` and ``ᾱ_t = Π (1 − β)`` (equal to ``f(t+1)/f(0)`` except
  at the very end, where the clipping keeps ``ᾱ`` above 0).

**Loss** (``loss.prediction``): the network ``F(x_t, t, y)`` predicts ``ε`` (``eps``) or the velocity
``v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0`` (``v``, Salimans & Ho 2022); the loss is the mean squared error of that
target over pixels, averaged over images::

    loss = E_{x0, t ~ U{0..T−1}, ε} [ mean_pixels (F(x_t, t, y) − target)² ]

Both give ``x0`` and ``ε`` back exactly: ``x0 = (x_t − sqrt(1−ᾱ) ε)/sqrt(ᾱ)``; ``x0 = sqrt(ᾱ) x_t − sqrt(1−ᾱ) v``,
``ε = sqrt(1−ᾱ) x_t + sqrt(ᾱ) v``. The metric ``eps_mse`` is the error of the implied ``ε`` (``= loss`` for
``eps``, ``ᾱ_t · (v error)²`` for ``v``), comparable across parameterisations.

Training draws ``t`` from the step's ``timestep`` RNG stream and ``ε`` from ``noise``. A class-conditional model
(``model.label_classes = K``) sees the null class ``K`` instead of the label with probability
``loss.label_dropout`` (stream ``label_dropout``; the dynamic number ``hp["label_dropout"]``) so it also learns the
unconditional model that classifier-free guidance needs; an unconditional model ignores it. Evaluation draws ``t``
and ``ε`` per image from a key folded with a hash of the image's pixels, so ``val/loss`` repeats exactly whatever
the batch size or order. ``val/loss`` (monitored) and every evaluation use the **EMA weights**, the ones that
sample; ``train`` metrics are the online weights'.

**EMA.** After each optimizer update (:meth:`Diffusion.after_update`) the model state's copy of the weights moves
``ema ← d_n · ema + (1 − d_n) · θ`` with ``d_n = min(loss.ema_decay, (1 + n) / (10 + n))`` at update ``n = 0, 1 …``
(the warm-up of TensorFlow's ``ExponentialMovingAverage``: early weights are forgotten quickly, so a short run's
average is not dominated by its initialisation). ``loss.ema_decay`` is the dynamic number ``hp["ema_decay"]``.

**Samplers** (compiled ``lax.scan`` loops over ``S = loss.sample_steps`` timesteps ``τ_S > … > τ_1`` evenly spaced
in ``[0, T−1]``, with ``ᾱ_{τ_0} := 1``). At each step the prediction gives ``x̂0`` (clipped to [−1, 1]) and
``ε̂ = (x_t − sqrt(ᾱ_t) x̂0) / sqrt(1 − ᾱ_t)``; with ``t = τ_k``, ``s = τ_{k−1}``:

- ``ddpm`` (ancestral): ``x_s = μ̃ + sqrt(β̃) z``, ``z ~ N(0, I)``, the posterior ``q(x_s | x_t, x̂0)`` of the chain
  respaced to the ``τ`` (``β = 1 − ᾱ_t/ᾱ_s``; with ``S = T`` the original chain)::

      μ̃ = sqrt(ᾱ_s) β / (1 − ᾱ_t) · x̂0 + sqrt(1 − β) (1 − ᾱ_s) / (1 − ᾱ_t) · x_t,   β̃ = (1 − ᾱ_s) / (1 − ᾱ_t) · β

- ``ddim`` (Song et al. 2021), ``η = loss.ddim_eta`` (0: deterministic; 1: the ``ddpm`` step)::

      σ = η sqrt((1 − ᾱ_s) / (1 − ᾱ_t)) sqrt(1 − ᾱ_t/ᾱ_s),   x_s = sqrt(ᾱ_s) x̂0 + sqrt(1 − ᾱ_s − σ²) ε̂ + σ z

**Classifier-free guidance** (Ho & Salimans 2022), scale ``w = loss.guidance_scale``:
``F̃ = F(x_t, t, ∅) + w (F(x_t, t, y) − F(x_t, t, ∅))`` (``w = 1``: the conditional model alone, one network call;
``w = 0``: unconditional). ``w`` is the dynamic number ``hp["guidance_scale"]``: every step writes it into the
model state (``model_state["guidance_scale"]``), which the sampler reads as an array, so each member of a fused
group samples with its own scale and no scale recompiles the sampler; :meth:`Diffusion.sample` takes another scale
for a trained model.

After training (:meth:`Diffusion.artifacts`): the sampler's settings and seconds per image, the scores of
``loss.score_samples`` samples (:mod:`jaxdl.tasks.generative`) and, with plots, ``diffusion_samples.png``; at every
evaluation an 8 × 8 grid of samples goes to ``samples/``.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.config import Config
from jaxdl.errors import ConfigError, DataError
from jaxdl.models import Model
from jaxdl.tasks.base import register
from jaxdl.tasks.generative import GRID_SEED, GRID_SIZE, GenerativeImageTask, save_grid

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
SAMPLERS = ("ddim", "ddpm")
EVAL_SEED = 0xD1F  # evaluation noise: fold_in(PRNGKey(EVAL_SEED), hash of the image)
COSINE_OFFSET = 0.008
MAX_BETA = 0.999


# --------------------------------------------------------------------------------------------------------------------
# Schedules and the forward process (numpy float64 for the schedules; jnp for traced arrays)
# --------------------------------------------------------------------------------------------------------------------


def cosine_alpha_bar(t: np.ndarray, T: int, s: float = COSINE_OFFSET) -> np.ndarray:
    """``f(t) / f(0)`` with ``f(t) = cos²(π/2 · (t/T + s)/(1 + s))`` (Nichol & Dhariwal, eq. 17)."""
    f = lambda u: np.cos((np.asarray(u, np.float64) / T + s) / (1.0 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(t) / f(0.0)


def betas(schedule: str, T: int) -> np.ndarray:
    """``β_t``, ``t = 0 … T−1``, float64 ``(T,)`` (see the module docstring)."""
    if schedule == "linear":
        scale = 1000.0 / T
        return np.minimum(np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64), MAX_BETA)
    if schedule == "cosine":
        i = np.arange(T, dtype=np.float64)
        return np.minimum(1.0 - cosine_alpha_bar(i + 1, T) / cosine_alpha_bar(i, T), MAX_BETA)
    raise ConfigError(f"loss.noise_schedule: unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")


def alpha_bar(schedule: str, T: int) -> np.ndarray:
    """``ᾱ_t = Π_{s≤t} (1 − β_s)``, float64 ``(T,)``."""
    return np.cumprod(1.0 - betas(schedule, T))


def _b(a: jax.Array) -> jax.Array:
    """Per-image scalars ``(B,)`` broadcast over ``(B, H, W, C)``."""
    return jnp.reshape(a, (-1, 1, 1, 1))


def q_sample(x0: jax.Array, eps: jax.Array, ab: jax.Array) -> jax.Array:
    """``x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε``; ``x0``, ``eps`` ``(B, H, W, C)``, ``ab`` ``(B,)``."""
    return _b(jnp.sqrt(ab)) * x0 + _b(jnp.sqrt(1.0 - ab)) * eps


def velocity(x0: jax.Array, eps: jax.Array, ab: jax.Array) -> jax.Array:
    """``v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x0``."""
    return _b(jnp.sqrt(ab)) * eps - _b(jnp.sqrt(1.0 - ab)) * x0


def to_x0_eps(pred: jax.Array, xt: jax.Array, ab: jax.Array, prediction: str) -> tuple[jax.Array, jax.Array]:
    """``(x0, ε)`` implied by a prediction of ``ε`` or ``v`` at ``x_t`` (exact inverses of the forward process)."""
    sa, so = _b(jnp.sqrt(ab)), _b(jnp.sqrt(1.0 - ab))
    if prediction == "eps":
        return (xt - so * pred) / sa, pred
    return sa * xt - so * pred, so * xt + sa * pred


def posterior(x0: jax.Array, xt: jax.Array, ab_t: jax.Array, ab_s: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean ``μ̃`` ``(B, H, W, C)`` and variance ``β̃`` ``(B,)`` of ``q(x_s | x_t, x0)`` for ``s < t`` with
    ``β = 1 − ᾱ_t/ᾱ_s`` (``s = t − 1``: Ho et al., eq. 7)."""
    beta = 1.0 - ab_t / ab_s
    mean = (_b(jnp.sqrt(ab_s) * beta / (1.0 - ab_t)) * x0
            + _b(jnp.sqrt(1.0 - beta) * (1.0 - ab_s) / (1.0 - ab_t)) * xt)
    return mean, (1.0 - ab_s) / (1.0 - ab_t) * beta


def ddim_step(x0: jax.Array, eps: jax.Array, ab_t: jax.Array, ab_s: jax.Array, eta: float, z: jax.Array
              ) -> jax.Array:
    """``x_s = sqrt(ᾱ_s) x0 + sqrt(1 − ᾱ_s − σ²) ε + σ z`` with ``σ = η sqrt((1−ᾱ_s)/(1−ᾱ_t)) sqrt(1 − ᾱ_t/ᾱ_s)``."""
    sigma = eta * jnp.sqrt((1.0 - ab_s) / (1.0 - ab_t)) * jnp.sqrt(1.0 - ab_t / ab_s)
    return (_b(jnp.sqrt(ab_s)) * x0 + _b(jnp.sqrt(jnp.maximum(1.0 - ab_s - sigma**2, 0.0))) * eps
            + _b(sigma) * z)


def sampling_timesteps(T: int, steps: int) -> np.ndarray:
    """``τ_S > … > τ_1``: ``steps`` distinct indices evenly spaced from ``T − 1`` down to 0 (int32 ``(steps,)``)."""
    return np.round(np.linspace(T - 1, 0, steps)).astype(np.int32) if steps > 1 else np.asarray([T - 1], np.int32)


def image_keys(images: jax.Array, seed: int = EVAL_SEED) -> jax.Array:
    """One key per image ``(B, H, W, C)``, folded from ``PRNGKey(seed)`` with a hash of its float32 pixels (the same
    image gets the same key in any batch)."""
    bits = jax.lax.bitcast_convert_type(images.astype(jnp.float32), jnp.uint32).reshape(images.shape[0], -1)
    mult = (2 * jnp.arange(bits.shape[1], dtype=jnp.uint32) + 1) * jnp.uint32(0x9E3779B1)  # odd multipliers
    h = jnp.sum(bits * mult, axis=1, dtype=jnp.uint32)  # (B,), wraps modulo 2**32
    return jax.vmap(lambda v: jax.random.fold_in(jax.random.PRNGKey(seed), v))(h)


# --------------------------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------------------------


@register("diffusion")
class Diffusion(GenerativeImageTask):
    """DDPM training with ε- or v-prediction, EMA weights, DDPM/DDIM sampling with classifier-free guidance."""

    monitor = "val/loss"

    def __init__(self, model: Model, *, inputs=("image",), image_shape=(28, 28, 1), label_classes: int = 0,
                 noise_schedule: str = "linear", timesteps: int = 1000, prediction: str = "eps",
                 sampler: str = "ddim", sample_steps: int = 50, ddim_eta: float = 0.0, guidance_scale: float = 1.0,
                 score_samples: int = 0, dropout: bool = False):
        targets = ("label",) if label_classes else ()
        super().__init__({"model": model}, inputs, targets)
        self.image_shape, self.num_classes = tuple(image_shape), int(label_classes)
        self.noise_schedule, self.timesteps, self.prediction = noise_schedule, int(timesteps), prediction
        self.sampler, self.sample_steps, self.eta = sampler, int(sample_steps), float(ddim_eta)
        self.guidance_scale, self.score_samples, self.dropout = float(guidance_scale), int(score_samples), dropout
        self.alpha_bar = alpha_bar(noise_schedule, self.timesteps)  # float64 (T,)
        self.rng_streams = (("dropout",) if dropout else ()) + ("noise", "timestep", "label_dropout")
        self.sample_times: list[tuple[int, float]] = []  # (images, seconds) of the batches of the last sample()

    @classmethod
    def outputs_needed(cls, ds) -> int:
        """The channels of one image (the network predicts ``ε`` or ``v`` per pixel)."""
        shape, _ = ds.train.example_spec()[ds.inputs[0]]
        return int(shape[-1])

    @classmethod
    def build(cls, cfg: Config, dataset, model: Model, *, dropout: bool = True) -> Diffusion:
        loss = cfg.loss
        if loss.name != "auto":
            raise ConfigError(f"loss.name={loss.name} is not used by task=diffusion (its loss is the mean squared "
                              "error of the predicted noise or velocity; choose it with loss.prediction); leave it "
                              "at auto")
        for key, value, known in (("noise_schedule", loss.noise_schedule, SCHEDULES),
                                  ("prediction", loss.prediction, PREDICTIONS), ("sampler", loss.sampler, SAMPLERS)):
            if value not in known:
                raise ConfigError(f"loss.{key}: unknown {key.replace('_', ' ')} {value!r}; expected one of "
                                  f"{', '.join(known)}")
        if dataset.mean is not None or dataset.std is not None:
            raise ConfigError(f"task=diffusion models pixels in [0, 1] (as [-1, 1]), but data set {dataset.name!r} "
                              "is standardised; set data.standardize=False")
        if len(dataset.inputs) != 1:
            raise DataError(f"task=diffusion reads one image array; data set {dataset.name!r} has inputs "
                            f"{', '.join(dataset.inputs)}")
        shape, _ = dataset.train.example_spec()[dataset.inputs[0]]
        if len(shape) != 3:
            raise DataError(f"task=diffusion reads images (H, W, C); data set {dataset.name!r} has "
                            f"{dataset.inputs[0]!r} of per-example shape {tuple(shape)}")
        classes = int(getattr(model.config, "label_classes", 0) or 0)
        if classes:
            have = dataset.num_classes if "label" in dataset.train.example_spec() else None
            if have != classes:
                raise ConfigError(f"model.label_classes={classes} but data set {dataset.name!r} has "
                                  + (f"{have} classes" if have else "no class labels")
                                  + " (set model.label_classes=0 for an unconditional model)")
        elif loss.guidance_scale != 1.0:
            raise ConfigError(f"loss.guidance_scale={loss.guidance_scale} needs a class-conditional model "
                              "(model.label_classes > 0); an unconditional model samples with scale 1")
        if classes and loss.guidance_scale != 1.0 and loss.label_dropout == 0.0:
            raise ConfigError(f"loss.guidance_scale={loss.guidance_scale} mixes in the unconditional prediction, "
                              "but loss.label_dropout=0 never trains it; set loss.label_dropout > 0 (e.g. 0.1)")
        if loss.sample_steps > loss.timesteps:
            raise ConfigError(f"loss.sample_steps={loss.sample_steps} exceeds loss.timesteps={loss.timesteps} (the "
                              "sampler visits a subsequence of the training timesteps)")
        return cls(model, inputs=tuple(dataset.inputs), image_shape=tuple(shape), label_classes=classes,
                   noise_schedule=loss.noise_schedule, timesteps=loss.timesteps, prediction=loss.prediction,
                   sampler=loss.sampler, sample_steps=loss.sample_steps, ddim_eta=loss.ddim_eta,
                   guidance_scale=loss.guidance_scale, score_samples=loss.score_samples,
                   dropout=dropout and getattr(model.config, "dropout", None) is not None)

    # ---------------------------------------------------------------------------------------------------------------
    def net_inputs(self, xt: jax.Array, t: jax.Array, labels: jax.Array | None) -> dict[str, jax.Array]:
        inputs = {"x": xt, "t": t.astype(jnp.int32)}
        if self.conditional:
            inputs["label"] = labels.astype(jnp.int32)
        return inputs

    def example(self, batch):
        x = batch[self.inputs[0]][:1].astype(jnp.float32)
        return self.net_inputs(x, jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32))

    def init(self, key, example_batch):
        """The network's variables plus the model state's EMA copy of the weights and the guidance scale."""
        variables = super().init(key, example_batch)
        v = variables["model"]
        v = {**v, "ema": jax.tree.map(jnp.array, v["params"]),
             "guidance_scale": jnp.asarray(self.guidance_scale, jnp.float32)}
        return {"model": v}

    def apply(self, weights, model_state, inputs, *, rngs=None, hp=None, train=False) -> jax.Array:
        """The network's prediction with ``weights`` (the model state's own collections, if any, alongside)."""
        extra = {k: v for k, v in model_state.items() if k not in ("ema", "guidance_scale")}
        kw = {}
        if train and self.dropout:
            kw = {"rng": rngs["dropout"], "dropout_rate": hp["dropout"]}
        out, _ = self.models["model"].apply({"params": weights, **extra}, inputs, train=train, **kw)
        return out.astype(jnp.float32)

    def after_update(self, player, params, model_state, hp, step):
        """``ema ← d·ema + (1 − d)·θ``, ``d = min(hp["ema_decay"], (1 + step)/(10 + step))``; records the member's
        guidance scale for its sampler."""
        n = step.astype(jnp.float32)
        d = jnp.minimum(hp["ema_decay"], (1.0 + n) / (10.0 + n))
        ms = model_state[player]
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ms["ema"], params[player])
        return {**model_state, player: {**ms, "ema": ema, "guidance_scale": hp["guidance_scale"]}}

    def noised(self, batch, rngs, hp):
        """``(x0, t, ε, labels)`` of a batch: training draws from the step's streams (and drops labels), evaluation
        from the images' own keys."""
        x0 = 2.0 * batch[self.inputs[0]].astype(jnp.float32) - 1.0  # (B, H, W, C) in [-1, 1]
        B = x0.shape[0]
        if rngs is None:
            keys = image_keys(batch[self.inputs[0]])
            t = jax.vmap(lambda k: jax.random.randint(k, (), 0, self.timesteps))(keys)  # (B,)
            eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x0.shape[1:]))(keys)
        else:
            t = jax.random.randint(rngs["timestep"], (B,), 0, self.timesteps)
            eps = jax.random.normal(rngs["noise"], x0.shape)
        labels = None
        if self.conditional:
            labels = batch["label"].astype(jnp.int32)
            if rngs is not None:
                drop = jax.random.bernoulli(rngs["label_dropout"], hp["label_dropout"], (B,))
                labels = jnp.where(drop, self.num_classes, labels)  # the null class
        return x0, t, eps, labels

    def loss(self, player, params, model_state, batch, rngs, hp, train):
        x0, t, eps, labels = self.noised(batch, rngs, hp)
        ab = jnp.asarray(self.alpha_bar, jnp.float32)[t]  # (B,)
        xt = q_sample(x0, eps, ab)
        target = eps if self.prediction == "eps" else velocity(x0, eps, ab)
        pred = self.apply(params[player], model_state[player], self.net_inputs(xt, t, labels), rngs=rngs, hp=hp,
                          train=train)
        err = jnp.mean(jnp.square(pred - target), axis=(1, 2, 3))  # (B,)
        _, eps_hat = to_x0_eps(pred, xt, ab, self.prediction)
        eps_err = jnp.mean(jnp.square(eps_hat - eps), axis=(1, 2, 3))  # (B,)
        m = batch.get("mask")
        m = jnp.ones(x0.shape[0], jnp.float32) if m is None else m.astype(jnp.float32)
        count = jnp.sum(m)
        stats = {"loss": (jnp.sum(err * m), count), "eps_mse": (jnp.sum(eps_err * m), count)}
        return jnp.sum(err * m) / jnp.maximum(count, 1.0), (stats, model_state)

    def eval_stats(self, params, model_state, batch, hp):
        """The loss statistics of the EMA weights (the weights that sample)."""
        ema = {p: model_state[p]["ema"] for p in self.players}
        _, (stats, _) = self.loss("model", ema, model_state, batch, None, hp, False)
        return stats

    def metric_names(self) -> list[str]:
        return ["loss", "eps_mse"]

    def predict(self, params, model_state, inputs):
        """The EMA network's prediction (``ε`` or ``v``) for ``{"x", "t"[, "label"]}``."""
        ms = model_state["model"]
        return self.apply(ms["ema"], ms, inputs)

    # ---------------------------------------------------------------------------------------------------------------
    def guided(self, weights, model_state, xt, t, labels, scale) -> jax.Array:
        """The (guided) prediction at ``x_t`` ``(n, H, W, C)``: ``F(∅) + w (F(y) − F(∅))``; one call when
        ``w = 1`` or the model is unconditional."""
        if not self.conditional:
            return self.apply(weights, model_state, self.net_inputs(xt, t, None))

        def plain(_):
            return self.apply(weights, model_state, self.net_inputs(xt, t, labels))

        def mixed(_):
            null = jnp.full_like(labels, self.num_classes)
            both = self.apply(weights, model_state, self.net_inputs(jnp.concatenate([xt, xt]),
                                                                    jnp.concatenate([t, t]),
                                                                    jnp.concatenate([labels, null])))
            cond, uncond = jnp.split(both, 2)
            return uncond + scale * (cond - uncond)

        return jax.lax.cond(scale == 1.0, plain, mixed, None)

    def sample_images(self, weights, model_state, key, labels, scale) -> jax.Array:
        """Run the sampler (module docstring) from ``x_T ~ N(0, I)`` with network ``weights``; ``labels`` ``(n,)``,
        ``scale`` a scalar array. Returns images ``(n, H, W, C)`` in [0, 1]."""
        n = labels.shape[0]
        taus = sampling_timesteps(self.timesteps, self.sample_steps)  # (S,) descending
        ab = self.alpha_bar
        ab_t = ab[taus].astype(np.float32)
        ab_s = np.concatenate([ab[taus[1:]], [1.0]]).astype(np.float32)  # the next (less noisy) step; 1 at the end
        init_key, step_key = jax.random.split(key)
        x = jax.random.normal(init_key, (n, *self.image_shape), jnp.float32)  # x_T

        def step(x, xs):
            k, t, a_t, a_s = xs
            tt = jnp.full((n,), t, jnp.int32)
            pred = self.guided(weights, model_state, x, tt, labels, scale)
            at, as_ = jnp.full((n,), a_t), jnp.full((n,), a_s)
            x0, _ = to_x0_eps(pred, x, at, self.prediction)
            x0 = jnp.clip(x0, -1.0, 1.0)
            z = jax.random.normal(jax.random.fold_in(step_key, k), x.shape, jnp.float32)
            if self.sampler == "ddpm":
                mean, var = posterior(x0, x, at, as_)
                return mean + _b(jnp.sqrt(var)) * z, None
            eps = (x - _b(jnp.sqrt(at)) * x0) / _b(jnp.sqrt(1.0 - at))
            return ddim_step(x0, eps, at, as_, self.eta, z), None

        x, _ = jax.lax.scan(step, x, (jnp.arange(len(taus)), jnp.asarray(taus), jnp.asarray(ab_t),
                                      jnp.asarray(ab_s)))
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

    def generate(self, params, model_state, key, labels):
        """Samples of the EMA weights with the guidance scale the model state holds."""
        ms = model_state["model"]
        return self.sample_images(ms["ema"], ms, key, labels, ms["guidance_scale"])

    def with_guidance(self, model_state: dict[str, Any], scale: float) -> dict[str, Any]:
        """``model_state`` whose sampler uses guidance scale ``scale``."""
        ms = model_state["model"]
        return {**model_state, "model": {**ms, "guidance_scale": jnp.asarray(scale, jnp.float32)}}

    @functools.cached_property
    def _jit_generate(self):
        return jax.jit(self.generate)

    @property
    def _generate(self):
        """The jitted :meth:`generate`, timing each call into ``sample_times`` (what :meth:`sample` calls)."""
        def timed(*args):
            t0 = time.perf_counter()
            out = jax.block_until_ready(self._jit_generate(*args))
            self.sample_times.append((int(args[-1].shape[0]), time.perf_counter() - t0))
            return out

        return timed

    def sample(self, params, model_state, n, seed=None, guidance: float | None = None):
        """``n`` images (and their labels), as :meth:`GenerativeImageTask.sample`; ``guidance`` overrides the
        scale (no recompilation). Records ``(images, seconds)`` per batch in ``sample_times``."""
        if guidance is not None:
            model_state = self.with_guidance(model_state, guidance)
        self.sample_times = []
        return super().sample(params, model_state, n, **({} if seed is None else {"seed": seed}))

    def seconds_per_image(self) -> float | None:
        """Sampling time per image of the last :meth:`sample`, leaving out its first batch (which compiles) when
        there were more."""
        times = self.sample_times[1:] or self.sample_times
        images = sum(n for n, _ in times)
        return sum(s for _, s in times) / images if images else None

    def artifacts(self, params, model_state, dataset, run_dir, plots: bool = True) -> dict[str, Any]:
        """The sampler's settings and speed, the scores of ``loss.score_samples`` samples and, with plots,
        ``diffusion_samples.png`` (an 8 × 8 grid; class-conditional: one class per column)."""
        out: dict[str, Any] = {}
        self.sample_times = []  # only the scored samples' times (not the last evaluation grid's)
        out.update(self.scores(params, model_state, dataset))
        sampler = {"sampler": self.sampler, "steps": self.sample_steps, "timesteps": self.timesteps,
                   "guidance_scale": float(model_state["model"]["guidance_scale"])}
        if self.sampler == "ddim":
            sampler["eta"] = self.eta
        if self.sample_times:
            sampler["seconds_per_image"] = self.seconds_per_image()
            sampler["timed_images"] = sum(n for n, _ in (self.sample_times[1:] or self.sample_times))
            sampler["includes_compilation"] = len(self.sample_times) == 1  # one batch: its time includes compiling
        out["sampling"] = sampler
        if plots and run_dir is not None:
            images, _ = self.sample(params, model_state, GRID_SIZE * GRID_SIZE, seed=GRID_SEED + 1)
            save_grid(images, GRID_SIZE, Path(run_dir) / "diffusion_samples.png",
                      title=f"{self.sampler}, {self.sample_steps} steps")
            out["figures"] = ["diffusion_samples.png"]
        return out
