"""Checks on config values and keys that do not need the config classes: numbers that cannot be right, and aliases
of config keys that other libraries use (suggested in errors, never applied)."""

from __future__ import annotations

from typing import Any

from jaxdl.config_types import UINT32_MAX, check_numbers
from jaxdl.errors import ConfigError

# Names other libraries use for our keys. They are suggested in the error, never applied: configs, sweeps and
# config.json keep one canonical spelling. A target under the same section is only suggested when that section's
# class has the field (``model.dropout_rate`` -> ``model.dropout`` only for families with dropout).
KEY_ALIASES: dict[str, str] = {
    "lr": "optim.lr", "learning_rate": "optim.lr", "batch_size": "train.batch_size", "epochs": "train.epochs",
    "random_seed": "seed", "rng_seed": "seed", "random_state": "seed", "seeds": "seed",
    "optimizer": "optim.name", "arch": "model.name",
    "train.seed": "seed", "optim.seed": "seed", "data.seed": "data.split_seed",
    "optim.learning_rate": "optim.lr", "optim.learningrate": "optim.lr", "optim.lr_rate": "optim.lr",
    "optim.wd": "optim.weight_decay", "optim.weight_decay_rate": "optim.weight_decay",
    "optim.decay": "optim.weight_decay",
    "optim.optimizer": "optim.name", "optim.optimiser": "optim.name", "optim.type": "optim.name",
    "optim.beta1": "optim.b1", "optim.beta2": "optim.b2", "optim.beta_1": "optim.b1", "optim.beta_2": "optim.b2",
    "optim.epsilon": "optim.eps", "optim.grad_clip": "optim.clip_norm", "optim.max_grad_norm": "optim.clip_norm",
    "optim.lr_schedule": "optim.schedule", "optim.scheduler": "optim.schedule",
    "optim.warmup": "optim.warmup_steps",
    "train.bs": "train.batch_size", "train.batch": "train.batch_size", "train.batchsize": "train.batch_size",
    "train.num_epochs": "train.epochs", "train.n_epochs": "train.epochs", "train.max_epochs": "train.epochs",
    "train.epoch": "train.epochs",
    "train.max_steps": "train.steps", "train.num_steps": "train.steps", "train.n_steps": "train.steps",
    "train.total_steps": "train.steps", "train.train_steps": "train.steps",
    "loss.smoothing": "loss.label_smoothing", "loss.type": "loss.name",
    "model.arch": "model.name", "model.architecture": "model.name", "model.type": "model.name",
    "model.dropout_rate": "model.dropout", "model.p": "model.dropout", "model.drop_rate": "model.dropout",
    "model.n_classes": "model.num_classes", "model.classes": "model.num_classes",
    "model.num_outputs": "model.num_classes",
}
# Section names other libraries use: ``optimizer.lr`` -> ``optim.lr``.
SECTION_ALIASES: dict[str, str] = {
    "optimizer": "optim", "optimiser": "optim", "opt": "optim", "training": "train", "trainer": "train",
    "dataset": "data", "datasets": "data", "net": "model", "network": "model",
    "augmentation": "augment", "aug": "augment", "criterion": "loss",
}


def alias_suggestion(key: str, valid: list[str] | None = None, prefix: str = "") -> str | None:
    """The canonical key for a known alias ``key`` (a full dotted key), or None. ``valid``: the field names of the
    section ``prefix`` that ``key`` was looked up in (a same-section target must be one of them)."""
    head, _, rest = key.partition(".")
    if key not in KEY_ALIASES and head in SECTION_ALIASES and rest:
        key = f"{SECTION_ALIASES[head]}.{rest}"
        return KEY_ALIASES.get(key, key)
    target = KEY_ALIASES.get(key)
    if target is None:
        return None
    section, _, leaf = target.rpartition(".")
    if valid is not None and section == prefix and leaf not in valid:
        return None
    return target


SEED_KEYS = frozenset({"seed", "data.split_seed"})


def _in(key: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False,
        what: str = "a value") -> None:
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        raise ConfigError(f"{key}: expected {what} in {lo}, {hi}, got {value!r}")


def check_values(cfg: Any) -> None:
    """Raise ConfigError naming the key and the value of a number that cannot be right, before anything is loaded
    or compiled: any NaN or infinite float, integers beyond int32, seeds outside 0 … 2**32-1, and the ranges of the
    loss, augmentation, training and data numbers. (``optim.*`` ranges: :func:`jaxdl.optim.validate`.)"""
    check_numbers(cfg, wide=SEED_KEYS)
    for key, value in (("seed", cfg.seed), ("data.split_seed", cfg.data.split_seed)):
        if not 0 <= value <= UINT32_MAX:
            raise ConfigError(f"{key}: expected a seed in 0 … 2**32-1 ({UINT32_MAX}), got {value}")
    loss = cfg.loss
    _in("loss.label_smoothing", loss.label_smoothing, 0.0, 1.0, high_open=True, what="a smoothing factor")
    if loss.class_weights is not None:
        if any(w < 0 for w in loss.class_weights) or not any(w > 0 for w in loss.class_weights):
            raise ConfigError(f"loss.class_weights: expected weights >= 0, not all 0, got {loss.class_weights!r}")
    if loss.pos_weight is not None and loss.pos_weight <= 0:
        raise ConfigError(f"loss.pos_weight: expected a positive weight (or none), got {loss.pos_weight!r}")
    _in("loss.mask_rate", loss.mask_rate, 0.0, 1.0, low_open=True, what="a probability")
    _in("loss.kl_weight", loss.kl_weight, 0.0, 1e6, what="a KL weight")
    _in("loss.gp_weight", loss.gp_weight, 0.0, 1e6, what="a gradient-penalty weight")
    _in("loss.iw_samples", loss.iw_samples, 1, 1 << 20, what="a number of importance samples")
    if loss.score_samples != 0:  # a Fréchet distance and k-NN precision/recall need more than a handful
        _in("loss.score_samples", loss.score_samples, 10, 1 << 20, what="0 (no scoring) or a number of samples")
    _in("loss.timesteps", loss.timesteps, 2, 100_000, what="a number of diffusion steps")
    _in("loss.sample_steps", loss.sample_steps, 1, 100_000, what="a number of sampler steps")
    _in("loss.ddim_eta", loss.ddim_eta, 0.0, 1.0, what="a DDIM eta")
    _in("loss.label_dropout", loss.label_dropout, 0.0, 1.0, high_open=True, what="a probability")
    _in("loss.ema_decay", loss.ema_decay, 0.0, 1.0, high_open=True, what="a decay")
    _in("loss.guidance_scale", loss.guidance_scale, 0.0, 1000.0, what="a guidance scale")
    aug = cfg.augment
    _in("augment.flip", aug.flip, 0.0, 1.0, what="a probability")
    _in("augment.crop_scale", aug.crop_scale, 0.0, 1.0, low_open=True, what="an area fraction")
    _in("augment.jitter", aug.jitter, 0.0, 1.0, what="a jitter strength")
    _in("augment.crop_padding", aug.crop_padding, 0, 1024, what="a padding in pixels")
    _in("augment.cutout", aug.cutout, 0.0, 1 << 16, what="a side in pixels")
    for key in ("mixup", "cutmix"):
        _in(f"augment.{key}", getattr(aug, key), 0.0, 1e6, what="a Beta parameter (0: off)")
    es = cfg.train.early_stopping
    if es.min_delta < 0:
        raise ConfigError(f"train.early_stopping.min_delta: expected a change >= 0, got {es.min_delta!r}")
    d = cfg.data
    if d.resize is not None and any(side > 8192 for side in d.resize):
        raise ConfigError(f"data.resize: expected sides of at most 8192 pixels, got {d.resize!r}")
    _in("data.val_fraction", d.val_fraction, 0.0, 1.0, high_open=True, what="a fraction")
    _in("data.test_fraction", d.test_fraction, 0.0, 1.0, high_open=True, what="a fraction")
