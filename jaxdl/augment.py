"""Data augmentation as jittable functions inside the training step.

Per-example transforms take one NHWC image ``(H, W, C)``, a key and a strength, and are vmapped over the batch;
mixing transforms (mixup, cutmix) act on the whole batch and turn labels into class probabilities. Every strength is
an array (it arrives in the step's ``hparams``), so a sweep can vary it without recompiling; only which transforms
exist and the crop padding are structure.

=================  ===========================  ====================================================================
transform          strength (hparams key)       effect
=================  ===========================  ====================================================================
random crop        ``augment.crop_padding``     zero-pad by p pixels, crop back to H×W at a random offset (static p)
horizontal flip    ``aug_flip`` (probability)   mirror the image left-right with that probability
cutout             ``aug_cutout`` (pixels)      zero a square of that side at a random centre (DeVries & Taylor 2017)
resized crop       ``aug_crop_scale`` (min)     crop a random area in [scale, 1] of the image with aspect ratio in
                                                [3/4, 4/3], resize back to H×W (bilinear)
colour jitter      ``aug_jitter``               brightness, contrast and saturation factors in [1-s, 1+s]
mixup              ``aug_mixup`` (alpha)        x = λx + (1-λ)x', y likewise, λ ~ Beta(α, α) (Zhang et al. 2018)
cutmix             ``aug_cutmix`` (alpha)       paste a box of x' covering 1-λ of the area, y mixed by area
=================  ===========================  ====================================================================

With both mixup and cutmix enabled, each batch gets one of the two (even odds).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdl.config import AugmentConfig
from jaxdl.errors import ConfigError

OPS = ("crop", "flip", "cutout", "resized_crop", "jitter", "mixup", "cutmix")
# hparams keys of the dynamic strengths, with the AugmentConfig field each comes from
STRENGTHS = {"aug_flip": "flip", "aug_cutout": "cutout", "aug_crop_scale": "crop_scale", "aug_jitter": "jitter",
             "aug_mixup": "mixup", "aug_cutmix": "cutmix"}


def random_crop(x: jax.Array, key: jax.Array, padding: int) -> jax.Array:
    """Zero-pad ``x`` (H, W, C) by ``padding`` and crop an H×W window at a uniform random offset."""
    if padding <= 0:
        return x
    h, w, _ = x.shape
    padded = jnp.pad(x, ((padding, padding), (padding, padding), (0, 0)))  # (H+2p, W+2p, C)
    dy, dx = jax.random.randint(key, (2,), 0, 2 * padding + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), x.shape)


def flip(x: jax.Array, key: jax.Array, prob: jax.Array) -> jax.Array:
    """Mirror left-right with probability ``prob``."""
    return jnp.where(jax.random.uniform(key) < prob, x[:, ::-1, :], x)


def cutout(x: jax.Array, key: jax.Array, size: jax.Array) -> jax.Array:
    """Zero a ``size``×``size`` square centred at a uniform random pixel (clipped at the border)."""
    h, w, _ = x.shape
    cy, cx = jax.random.randint(key, (2,), 0, jnp.array([h, w]))
    ys = jnp.arange(h)[:, None]
    xs = jnp.arange(w)[None, :]
    half = size / 2.0
    inside = (jnp.abs(ys - cy + 0.5) < half) & (jnp.abs(xs - cx + 0.5) < half)  # (H, W)
    return jnp.where(inside[..., None], 0.0, x).astype(x.dtype)


def _bilinear(x: jax.Array, ys: jax.Array, xs: jax.Array) -> jax.Array:
    """Sample ``x`` (H, W, C) at fractional pixel coordinates ``ys`` (H',) × ``xs`` (W',) (edge-clamped)."""
    h, w, _ = x.shape
    ys = jnp.clip(ys, 0.0, h - 1.0)
    xs = jnp.clip(xs, 0.0, w - 1.0)
    y0 = jnp.floor(ys).astype(jnp.int32)
    x0 = jnp.floor(xs).astype(jnp.int32)
    y1 = jnp.minimum(y0 + 1, h - 1)
    x1 = jnp.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    top = x[y0][:, x0] * (1 - wx) + x[y0][:, x1] * wx  # (H', W', C)
    bottom = x[y1][:, x0] * (1 - wx) + x[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(x.dtype)


def random_resized_crop(x: jax.Array, key: jax.Array, scale_min: jax.Array,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> jax.Array:
    """Crop a random box with area fraction in [scale_min, 1] and aspect ratio in ``ratio`` (log-uniform), resized
    back to the input size. A box that does not fit is shrunk to fit (so the op never fails)."""
    h, w, _ = x.shape
    k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
    area = jax.random.uniform(k_area, minval=scale_min, maxval=1.0) * h * w
    log_r = jax.random.uniform(k_ratio, minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    r = jnp.exp(log_r)
    ch = jnp.clip(jnp.sqrt(area / r), 1.0, h)
    cw = jnp.clip(jnp.sqrt(area * r), 1.0, w)
    top = jax.random.uniform(k_y) * (h - ch)
    left = jax.random.uniform(k_x) * (w - cw)
    ys = top + (jnp.arange(h) + 0.5) * ch / h - 0.5
    xs = left + (jnp.arange(w) + 0.5) * cw / w - 0.5
    return _bilinear(x, ys, xs)


def color_jitter(x: jax.Array, key: jax.Array, strength: jax.Array) -> jax.Array:
    """Brightness, contrast and saturation factors drawn from [1-s, 1+s], applied in random order's usual sequence
    (brightness → contrast → saturation). Saturation needs RGB; on other channel counts it is skipped."""
    kb, kc, ks = jax.random.split(key, 3)
    draw = lambda k: 1.0 + strength * jax.random.uniform(k, minval=-1.0, maxval=1.0)  # noqa: E731
    x = x * draw(kb)
    mean = jnp.mean(x)
    x = (x - mean) * draw(kc) + mean
    if x.shape[-1] == 3:
        gray = jnp.tensordot(x, jnp.array([0.299, 0.587, 0.114], x.dtype), axes=1)[..., None]  # (H, W, 1)
        x = (x - gray) * draw(ks) + gray
    return x


def _beta(key: jax.Array, alpha: jax.Array) -> jax.Array:
    """λ ~ Beta(α, α); α <= 0 means "off" (λ = 1)."""
    safe = jnp.maximum(alpha, 1e-3)
    lam = jax.random.beta(key, safe, safe)
    return jnp.where(alpha > 0, lam, 1.0)


def mixup(x: jax.Array, y: jax.Array, key: jax.Array, alpha: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Blend the batch with a permutation of itself: ``λx + (1-λ)x[perm]``; labels ``y`` are class probabilities."""
    k_lam, k_perm = jax.random.split(key)
    lam = _beta(k_lam, alpha)
    perm = jax.random.permutation(k_perm, x.shape[0])
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix(x: jax.Array, y: jax.Array, key: jax.Array, alpha: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Paste a box from a permutation of the batch; the box covers ≈1-λ of the image and labels mix by its exact
    area."""
    k_lam, k_perm, k_y, k_x = jax.random.split(key, 4)
    lam = _beta(k_lam, alpha)
    perm = jax.random.permutation(k_perm, x.shape[0])
    _, h, w, _ = x.shape
    cut = jnp.sqrt(1.0 - lam)
    bh, bw = cut * h, cut * w
    cy = jax.random.uniform(k_y) * h
    cx = jax.random.uniform(k_x) * w
    y0, y1 = jnp.clip(cy - bh / 2, 0, h), jnp.clip(cy + bh / 2, 0, h)
    x0, x1 = jnp.clip(cx - bw / 2, 0, w), jnp.clip(cx + bw / 2, 0, w)
    ys = jnp.arange(h)[:, None] + 0.5
    xs = jnp.arange(w)[None, :] + 0.5
    box = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)  # (H, W)
    area = jnp.mean(box.astype(x.dtype))
    mixed = jnp.where(box[None, :, :, None], x[perm], x)
    return mixed, (1 - area) * y + area * y[perm]


def validate(cfg: AugmentConfig) -> None:
    for op in cfg.ops:
        if op not in OPS:
            from jaxdl.registry import unknown_message

            raise ConfigError("augment.ops: " + unknown_message("augmentation", op, OPS))
    if cfg.crop_padding < 0:
        raise ConfigError(f"augment.crop_padding: expected >= 0, got {cfg.crop_padding}")
    if not 0.0 < cfg.crop_scale <= 1.0:
        raise ConfigError(f"augment.crop_scale: expected a fraction in (0, 1], got {cfg.crop_scale}")


def make_augment(cfg: AugmentConfig, num_classes: int) -> Callable | None:
    """``augment(batch, key, hp) -> batch`` applying ``cfg.ops`` in a fixed order, or None when there are none.

    Image ops need NHWC inputs. Mixing ops replace integer labels by class probabilities (``num_classes`` wide).
    """
    validate(cfg)
    ops = set(cfg.ops)
    if not ops:
        return None
    per_example = [op for op in ("resized_crop", "crop", "flip", "jitter", "cutout") if op in ops]

    def one(x, key, hp):
        keys = jax.random.split(key, len(per_example))
        for op, k in zip(per_example, keys):
            if op == "crop":
                x = random_crop(x, k, cfg.crop_padding)
            elif op == "flip":
                x = flip(x, k, hp["aug_flip"])
            elif op == "cutout":
                x = cutout(x, k, hp["aug_cutout"])
            elif op == "resized_crop":
                x = random_resized_crop(x, k, hp["aug_crop_scale"])
            elif op == "jitter":
                x = color_jitter(x, k, hp["aug_jitter"])
        return x

    def augment(batch, key, hp):
        x, y = batch["x"], batch["y"]
        if x.ndim != 4:
            raise ConfigError(f"augment.ops {sorted(ops)} need image batches (B, H, W, C), got shape {x.shape}")
        k_each, k_mix, k_cut = jax.random.split(key, 3)
        if per_example:
            x = jax.vmap(one, in_axes=(0, 0, None))(x, jax.random.split(k_each, x.shape[0]), hp)
        if "mixup" in ops or "cutmix" in ops:
            if jnp.issubdtype(y.dtype, jnp.integer):
                y = jax.nn.one_hot(y, num_classes, dtype=x.dtype)
            if "mixup" in ops and "cutmix" in ops:  # one of the two per batch, as is customary
                xm, ym = mixup(x, y, k_mix, hp["aug_mixup"])
                xc, yc = cutmix(x, y, k_cut, hp["aug_cutmix"])
                pick = jax.random.uniform(jax.random.fold_in(k_mix, 1)) < 0.5
                x, y = jnp.where(pick, xm, xc), jnp.where(pick, ym, yc)
            elif "mixup" in ops:
                x, y = mixup(x, y, k_mix, hp["aug_mixup"])
            else:
                x, y = cutmix(x, y, k_cut, hp["aug_cutmix"])
        return {**batch, "x": x, "y": y}

    return augment


__all__ = ["OPS", "STRENGTHS", "color_jitter", "cutmix", "cutout", "flip", "make_augment", "mixup",
           "random_crop", "random_resized_crop", "validate"]
