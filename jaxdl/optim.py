"""Optimizers, learning-rate schedules and regularisation built from an :class:`~jaxdl.config.OptimConfig`.

One function, :func:`build`, turns the config into an :class:`Optimizer` whose update is the optax chain

    clip (global norm) → + l1·sign(w) + l2·w (coupled) → SGD | Adam | RMSprop | AdaGrad scaling
        → + weight_decay·w (decoupled) → × (−lr · schedule(step))

Every number a sweep may vary enters as an array in ``hparams`` (lr, momentum, betas, eps, RMSprop decay, l1, l2,
weight decay, clip norm); the chain is rebuilt from them inside the compiled step (the same idea as
``optax.inject_hyperparams``, without storing the numbers in the optimizer state), so changing them never recompiles
and a population of members can hold different values. Structure — optimizer kind, mode, schedule shape, Nesterov,
centred RMSprop, whether clipping is on, the decay mask — is static.

``mode="torch"`` (default) reproduces the PyTorch optimizer of the same name step for step. Where optax's own
defaults differ (``mode="optax"``):

=========  ======================================  =========================================================
optimizer  PyTorch (mode="torch")                  optax (mode="optax")
=========  ======================================  =========================================================
RMSprop    alpha=0.99, g / (sqrt(v) + eps)         decay=0.9, g / sqrt(v + eps)
AdaGrad    accumulator starts at 0, eps=1e-10,     accumulator starts at 0.1, eps=1e-7 inside the sqrt
           g / (sqrt(G) + eps)
AdamW      weight_decay=0.01                       weight_decay=1e-4
=========  ======================================  =========================================================

PyTorch's ``weight_decay`` argument is *coupled* L2 for SGD/Adam/RMSprop/AdaGrad — here ``optim.l2`` — and
*decoupled* for AdamW — here ``optim.weight_decay``. Both, and ``optim.l1``, work with every optimizer.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdl.config import OptimConfig
from jaxdl.errors import ConfigError
from jaxdl.registry import unknown_message

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine", "one_cycle")
MODES = ("torch", "optax")
DECAY_MASKS = ("all", "kernels")

# Config fields (under ``optim.``) that enter the step as arrays.
DYNAMIC_FIELDS = ("lr", "momentum", "b1", "b2", "eps", "rms_decay", "initial_accumulator", "l1", "l2",
                  "weight_decay", "clip_norm")

_DEFAULTS = {
    # (name, mode) -> defaults for fields left as None
    ("rmsprop", "torch"): {"rms_decay": 0.99, "eps": 1e-8},
    ("rmsprop", "optax"): {"rms_decay": 0.9, "eps": 1e-8},
    ("adagrad", "torch"): {"initial_accumulator": 0.0, "eps": 1e-10},
    ("adagrad", "optax"): {"initial_accumulator": 0.1, "eps": 1e-7},
    ("adamw", "torch"): {"weight_decay": 0.01},
    ("adamw", "optax"): {"weight_decay": 1e-4},
}


def _range(key: str, value: float | None, low: float, high: float, *, low_open: bool = False,
           high_open: bool = False, what: str = "a value") -> None:
    if value is None:
        return
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        raise ConfigError(f"optim.{key}: expected {what} in {lo}, {hi}, got {value!r}")


def validate(cfg: OptimConfig) -> None:
    """Raise ConfigError naming the offending ``optim.*`` key and its value: unknown names, and numbers that cannot
    be right (NaN/Inf anywhere, lr <= 0, eps <= 0, momentum or betas outside [0, 1), step_size < 1 …)."""
    for key, value, allowed in (("name", cfg.name, OPTIMIZERS), ("schedule", cfg.schedule, SCHEDULES),
                                ("mode", cfg.mode, MODES), ("decay_mask", cfg.decay_mask, DECAY_MASKS)):
        if value not in allowed:
            raise ConfigError(f"optim.{key}: " + unknown_message(f"optim.{key} value", value, allowed))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"optim.{f.name}: expected a finite number, got {value!r}")
    if cfg.lr <= 0:
        raise ConfigError(f"optim.lr: expected a positive learning rate, got {cfg.lr}")
    for key in ("lr", "eps"):  # the step computes in float32: a positive number must stay positive there
        value = getattr(cfg, key)
        if value is not None and 0 < value < 1.1754944e-38:
            raise ConfigError(f"optim.{key}: {value!r} is below float32's smallest normal number (1.2e-38)")
    for key in ("l1", "l2", "momentum"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"optim.{key}: expected a value >= 0, got {getattr(cfg, key)}")
    _range("momentum", cfg.momentum, 0.0, 1.0, high_open=True, what="a momentum")
    _range("b1", cfg.b1, 0.0, 1.0, high_open=True, what="a decay rate")
    _range("b2", cfg.b2, 0.0, 1.0, high_open=True, what="a decay rate")
    _range("rms_decay", cfg.rms_decay, 0.0, 1.0, high_open=True, what="a decay rate")
    if cfg.eps is not None and cfg.eps <= 0:
        raise ConfigError(f"optim.eps: expected a positive epsilon (or none for the default), got {cfg.eps}")
    for key in ("initial_accumulator", "weight_decay"):
        value = getattr(cfg, key)
        if value is not None and value < 0:
            raise ConfigError(f"optim.{key}: expected a value >= 0 (or none for the default), got {value}")
    if cfg.clip_norm is not None and cfg.clip_norm <= 0:
        raise ConfigError(f"optim.clip_norm: expected a positive norm (or none), got {cfg.clip_norm}")
    if cfg.warmup_steps < 0:
        raise ConfigError(f"optim.warmup_steps: expected a number of steps >= 0, got {cfg.warmup_steps}")
    if cfg.step_size < 1:
        raise ConfigError(f"optim.step_size: expected a number of steps >= 1, got {cfg.step_size}")
    if cfg.gamma <= 0:
        raise ConfigError(f"optim.gamma: expected a positive decay factor, got {cfg.gamma}")
    if cfg.final_lr_ratio < 0:
        raise ConfigError(f"optim.final_lr_ratio: expected a ratio >= 0, got {cfg.final_lr_ratio}")
    if cfg.nesterov and cfg.name != "sgd":
        raise ConfigError(f"optim.nesterov applies to sgd only, not {cfg.name!r}")


MAX_STEPS = 2**31 - 1  # the step counter and schedules are int32


def check_total_steps(total_steps: int) -> None:
    """A run longer than the int32 step counter holds (``train.steps``, or ``train.epochs`` × steps per epoch)."""
    if total_steps > MAX_STEPS:
        raise ConfigError(f"train.steps / train.epochs: the run would take {total_steps} steps, more than the int32 "
                          f"step counter holds ({MAX_STEPS}); lower train.epochs or set train.steps")


def hparams(cfg: OptimConfig) -> dict[str, float]:
    """The dynamic numbers of ``cfg`` with mode defaults filled in (plain floats; the step makes them arrays)."""
    validate(cfg)
    defaults = {"eps": 1e-8, "rms_decay": 0.99, "initial_accumulator": 0.0, "weight_decay": 0.0,
                "clip_norm": 1.0, **_DEFAULTS.get((cfg.name, cfg.mode), {})}
    out = {}
    for key in DYNAMIC_FIELDS:
        value = getattr(cfg, key)
        out[key] = float(defaults[key] if value is None else value)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Schedules: factor(step) multiplying the base lr. Pure functions of the (traced) step; their shape is static.
# --------------------------------------------------------------------------------------------------------------------


def schedule(cfg: OptimConfig, total_steps: int) -> Callable[[jax.Array], jax.Array]:
    """``factor(step)`` such that the learning rate at ``step`` is ``lr * factor(step)``.

    - constant: 1 (after an optional linear warmup)
    - step: ``gamma ** (step // step_size)``
    - cosine: ``r + (1 - r)(1 + cos(pi t / T)) / 2`` with ``r = final_lr_ratio``
    - warmup_cosine: linear warmup over ``warmup_steps`` then cosine over the rest
    - one_cycle: PyTorch's OneCycleLR shape — cosine from lr/25 up to lr over ``warmup_steps`` (default 30% of the
      run), then cosine down to lr/25/1e4
    """
    validate(cfg)
    total = max(int(total_steps), 1)
    warmup = int(cfg.warmup_steps)
    r = float(cfg.final_lr_ratio)

    def warm(step, body):
        if warmup <= 0:
            return body
        return jnp.where(step < warmup, (step + 1.0) / warmup, body)

    def cosine(t, span):
        frac = jnp.clip(t / max(span, 1), 0.0, 1.0)
        return r + (1.0 - r) * 0.5 * (1.0 + jnp.cos(math.pi * frac))

    kind = cfg.schedule

    def factor(step):
        step = jnp.asarray(step, jnp.float32)
        if kind == "constant":
            return warm(step, jnp.ones_like(step))
        if kind == "step":
            return warm(step, cfg.gamma ** jnp.floor(step / max(cfg.step_size, 1)))
        if kind == "cosine":
            return cosine(step, total)
        if kind == "warmup_cosine":
            return warm(step, cosine(step - warmup, total - warmup))
        # one_cycle, with OneCycleLR's phase ends: peak at step up-1, floor at the last step (total-1)
        up = (warmup if warmup > 0 else 0.3 * total) - 1.0
        last = total - 1.0
        start, end = 1.0 / 25.0, 1.0 / 25.0 / 1e4
        t_up = jnp.clip(step / max(up, 1e-9), 0.0, 1.0)
        t_down = jnp.clip((step - up) / max(last - up, 1e-9), 0.0, 1.0)
        rising = start + (1.0 - start) * 0.5 * (1.0 - jnp.cos(math.pi * t_up))
        falling = end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(math.pi * t_down))
        return jnp.where(step < up, rising, falling)

    return factor


# --------------------------------------------------------------------------------------------------------------------
# Transforms (optax GradientTransformation shape: init_fn / update_fn, NamedTuple states)
# --------------------------------------------------------------------------------------------------------------------


def kernel_mask(params: Any) -> Any:
    """True for weights of dense/conv layers (leaves named ``kernel`` or ``embedding``), False for biases, scales."""

    def is_kernel(path, _):
        last = path[-1]
        name = getattr(last, "key", getattr(last, "name", str(last)))
        return str(name) in ("kernel", "embedding")

    return jax.tree_util.tree_map_with_path(is_kernel, params)


def _masked(tree: Any, params: Any, mask: str) -> Any:
    if mask == "all":
        return tree
    keep = kernel_mask(params)
    return jax.tree.map(lambda t, k: t if k else jnp.zeros_like(t), tree, keep)


def add_penalties(l1: jax.Array, l2: jax.Array, mask: str = "all") -> optax.GradientTransformation:
    """Gradient of ``l1·|w|₁ + (l2/2)·|w|²``: adds ``l1·sign(w) + l2·w`` to the updates (coupled regularisation)."""

    def init_fn(params):
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        extra = jax.tree.map(lambda w: l1 * jnp.sign(w) + l2 * w, params)
        return jax.tree.map(jnp.add, updates, _masked(extra, params, mask)), state

    return optax.GradientTransformation(init_fn, update_fn)


def add_decoupled_decay(weight_decay: jax.Array, mask: str = "all") -> optax.GradientTransformation:
    """Adds ``weight_decay·w`` after the optimizer's scaling (so the final step is ``-lr·(update + wd·w)``)."""

    def init_fn(params):
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        decay = _masked(jax.tree.map(lambda w: weight_decay * w, params), params, mask)
        return jax.tree.map(jnp.add, updates, decay), state

    return optax.GradientTransformation(init_fn, update_fn)


def clip_by_global_norm_torch(max_norm: jax.Array) -> optax.GradientTransformation:
    """PyTorch's ``clip_grad_norm_``: scale by ``min(1, max_norm / (norm + 1e-6))``."""

    def init_fn(params):
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(u)) for u in jax.tree.leaves(updates)))
        scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
        return jax.tree.map(lambda u: u * scale, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByRssState(NamedTuple):
    sum_of_squares: Any


def scale_by_rss_eps_outside(initial_accumulator: jax.Array, eps: jax.Array) -> optax.GradientTransformation:
    """PyTorch AdaGrad scaling: ``G += g²; u = g / (sqrt(G) + eps)``."""

    def init_fn(params):
        return ScaleByRssState(jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator), params))

    def update_fn(updates, state, params=None):
        sos = jax.tree.map(lambda s, g: s + g * g, state.sum_of_squares, updates)
        out = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, sos)
        return out, ScaleByRssState(sos)

    return optax.GradientTransformation(init_fn, update_fn)


def _scaling(cfg: OptimConfig, hp: dict[str, jax.Array]) -> list[optax.GradientTransformation]:
    torch = cfg.mode == "torch"
    if cfg.name == "sgd":
        # Always keep the momentum buffer so momentum stays sweepable (momentum 0 is plain SGD exactly).
        return [optax.trace(decay=hp["momentum"], nesterov=cfg.nesterov)]
    if cfg.name in ("adam", "adamw"):
        return [optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], eps_root=0.0)]
    if cfg.name == "rmsprop":
        scale = optax.scale_by_stddev if cfg.centered else optax.scale_by_rms
        return [scale(decay=hp["rms_decay"], eps=hp["eps"], initial_scale=0.0, eps_in_sqrt=not torch),
                optax.trace(decay=hp["momentum"], nesterov=False)]
    # adagrad
    if torch:
        return [scale_by_rss_eps_outside(hp["initial_accumulator"], hp["eps"])]
    return [optax.scale_by_rss(initial_accumulator_value=hp["initial_accumulator"], eps=hp["eps"])]


def chain(cfg: OptimConfig, hp: dict[str, jax.Array], lr: jax.Array) -> optax.GradientTransformation:
    """The full update for numbers ``hp`` and the current learning rate ``lr``."""
    parts = []
    if cfg.clip_norm is not None:
        clip = clip_by_global_norm_torch if cfg.mode == "torch" else optax.clip_by_global_norm
        parts.append(clip(hp["clip_norm"]))
    parts.append(add_penalties(hp["l1"], hp["l2"], cfg.decay_mask))
    parts.extend(_scaling(cfg, hp))
    parts.append(add_decoupled_decay(hp["weight_decay"], cfg.decay_mask))
    parts.append(optax.scale(-lr))
    return optax.chain(*parts)


# --------------------------------------------------------------------------------------------------------------------
# Parameter groups: freezing, per-group learning rates, gradual unfreezing
# --------------------------------------------------------------------------------------------------------------------


def param_path(path) -> str:
    """``"blocks_3/dw_conv/kernel"`` for a pytree key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def param_paths(params: Any) -> list[str]:
    return [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


@dataclasses.dataclass(frozen=True)
class Groups:
    """Per-parameter static settings parsed from ``optim.freeze``, ``optim.lr_multipliers``, ``optim.unfreeze``."""

    freeze: tuple[str, ...] = ()
    multipliers: tuple[tuple[str, float], ...] = ()
    unfreeze: tuple[tuple[int, str], ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.freeze or self.multipliers or self.unfreeze)

    def frozen(self, path: str) -> bool:
        """Frozen for the whole run (no optimizer state)."""
        return any(re.search(p, path) for p in self.freeze) and self.unfreeze_step(path) is None

    def unfreeze_step(self, path: str) -> int | None:
        return next((s for s, p in self.unfreeze if re.search(p, path)), None)

    def multiplier(self, path: str) -> float:
        return next((m for p, m in self.multipliers if re.search(p, path)), 1.0)


def parse_groups(cfg: OptimConfig) -> Groups:
    mults = []
    for item in cfg.lr_multipliers:
        pattern, sep, value = item.rpartition("=")
        try:
            mults.append((pattern, float(value)))
            if not sep or not pattern:
                raise ValueError
        except ValueError:
            raise ConfigError(f"optim.lr_multipliers: expected 'pattern=multiplier', got {item!r}") from None
    unfreeze = []
    for item in cfg.unfreeze:
        step, sep, pattern = item.partition(":")
        try:
            unfreeze.append((int(step), pattern))
            if not sep or not pattern:
                raise ValueError
        except ValueError:
            raise ConfigError(f"optim.unfreeze: expected 'step:pattern', got {item!r}") from None
    for key, patterns in (("freeze", cfg.freeze), ("lr_multipliers", [p for p, _ in mults]),
                          ("unfreeze", [p for _, p in unfreeze])):
        for p in patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ConfigError(f"optim.{key}: {p!r} is not a valid regular expression ({e})") from None
    return Groups(tuple(cfg.freeze), tuple(mults), tuple(unfreeze))


def check_groups(cfg: OptimConfig, params: Any) -> None:
    """Every pattern must match some parameter (a typo would silently train, or freeze, the wrong thing)."""
    groups = parse_groups(cfg)
    paths = param_paths(params)
    for key, patterns in (("freeze", groups.freeze), ("lr_multipliers", [p for p, _ in groups.multipliers]),
                          ("unfreeze", [p for _, p in groups.unfreeze])):
        for p in patterns:
            if not any(re.search(p, path) for path in paths):
                sample = ", ".join(paths[:6]) + (" …" if len(paths) > 6 else "")
                raise ConfigError(f"optim.{key}: pattern {p!r} matches no parameter; parameter paths look like "
                                  f"{sample}")
    if paths and all(groups.frozen(p) for p in paths):
        raise ConfigError("optim.freeze: every parameter is frozen; nothing would train")


def _labels(groups: Groups, params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda p, _: "frozen" if groups.frozen(param_path(p)) else "train",
                                            params)


def _scale_groups(groups: Groups, updates: Any, step: jax.Array) -> Any:
    """Per-group learning-rate multipliers and the gradual-unfreezing masks."""

    def scale(path, u):
        name = param_path(path)
        factor = groups.multiplier(name)
        at = groups.unfreeze_step(name)
        u = u * factor if factor != 1.0 else u
        return jnp.where(step >= at, u, jnp.zeros_like(u)) if at is not None else u

    return jax.tree_util.tree_map_with_path(scale, updates)


class Optimizer(NamedTuple):
    """``init(params, hp) -> state``; ``update(grads, state, params, hp, step) -> (updates, state)``.

    ``hp`` is the dict from :func:`hparams` (as arrays); ``step`` drives the schedule. ``lr(hp, step)`` is the
    effective learning rate.
    """

    init: Callable[..., Any]
    update: Callable[..., tuple[Any, Any]]
    lr: Callable[[dict, jax.Array], jax.Array]
    config: OptimConfig


def build(cfg: OptimConfig, total_steps: int) -> Optimizer:
    """The optimizer of ``cfg``. With ``optim.freeze`` the frozen parameters go through ``optax.set_to_zero`` (no
    state); ``optim.lr_multipliers`` and ``optim.unfreeze`` scale or mask the final updates per parameter group."""
    validate(cfg)
    check_total_steps(int(total_steps))
    factor = schedule(cfg, total_steps)
    groups = parse_groups(cfg)

    def lr(hp, step):
        return hp["lr"] * factor(step)

    def transform(hp, rate, params):
        tx = chain(cfg, hp, rate)
        if groups.freeze:
            tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, _labels(groups, params))
        return tx

    def init(params, hp):
        return transform(hp, hp["lr"], params).init(params)

    def update(grads, state, params, hp, step):
        updates, state = transform(hp, lr(hp, step), params).update(grads, state, params)
        if groups.multipliers or groups.unfreeze:
            updates = _scale_groups(groups, updates, step)
        return updates, state

    return Optimizer(init, update, lr, cfg)


__all__ = ["Groups", "check_groups", "param_path", "param_paths", "parse_groups", "clip_by_global_norm_torch",
           "DYNAMIC_FIELDS", "OPTIMIZERS", "Optimizer", "SCHEDULES", "add_decoupled_decay", "add_penalties", "build",
           "chain", "check_total_steps", "hparams", "kernel_mask", "schedule", "scale_by_rss_eps_outside", "validate"]
