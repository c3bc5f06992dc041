"""Pure training and evaluation steps.

``train_step(state, batch, hparams) -> (state, metrics)`` is a pure function: the RNG key for a step is
``fold_in(state.rng, state.step)``, every number a sweep may vary arrives in ``hparams`` as an array, and nothing in
it depends on the number of devices. It is jitted once (with the state donated) by the loop; a population trainer is
``jax.vmap(train_step, in_axes=(0, None, 0))``.

``batch`` is ``{"x": inputs, "y": labels, "mask": optional per-example weights}``; a mask lets the last, padded batch
of an evaluation pass count only its real examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxdl import augment as augment_lib
from jaxdl import losses, optim
from jaxdl.config import Config, LossConfig
from jaxdl.errors import ConfigError
from jaxdl.models import Model

Batch = dict[str, jax.Array]
HParams = dict[str, jax.Array]


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training, as one pytree (a population is the same with a leading axis)."""

    step: jax.Array  # int32 scalar: optimisation steps taken
    params: Any
    model_state: Any  # non-parameter collections, e.g. {"batch_stats": ...}
    opt_state: Any
    rng: jax.Array  # base key; step t uses fold_in(rng, t)


# Config fields outside ``optim`` that enter the step as arrays (model.dropout, loss.label_smoothing …).
EXTRA_DYNAMIC = {"dropout": ("model", "dropout", 0.0), "label_smoothing": ("loss", "label_smoothing", 0.0),
                 "pos_weight": ("loss", "pos_weight", 1.0),
                 **{key: ("augment", field, 0.0) for key, field in augment_lib.STRENGTHS.items()}}


def make_hparams(cfg: Config) -> HParams:
    """The dynamic numbers of ``cfg`` as float32 scalars: optimizer numbers plus dropout and loss numbers."""
    hp = dict(optim.hparams(cfg.optim))
    for key, (section, field, default) in EXTRA_DYNAMIC.items():
        value = getattr(getattr(cfg, section), field, None)
        hp[key] = float(default if value is None else value)
    return {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}


def uses_dropout(cfgs: list[Config]) -> bool:
    """Whether any of ``cfgs`` trains with dropout (``model.dropout`` > 0). A run or group where none does gets a
    step without dropout: drawing the masks costs compilation and step time, and at rate 0 they change nothing."""
    section, field, default = EXTRA_DYNAMIC["dropout"]
    return any(float(getattr(getattr(c, section), field, None) or default) > 0 for c in cfgs)


def dynamic_keys() -> list[str]:
    """Dotted config keys whose values enter the step as arrays (plus ``seed``, which keys init and data order)."""
    keys = [f"optim.{k}" for k in optim.DYNAMIC_FIELDS]
    keys += [f"{section}.{field}" for section, field, _ in EXTRA_DYNAMIC.values()]
    return keys + ["seed"]


# Keys that only affect host-side bookkeeping, so members of one compiled program may differ in them.
HOST_KEYS = ("name", "train.early_stopping", "train.progress", "train.plots")


def signature(cfg: Config) -> str:
    """The static structure of ``cfg``: configs with equal signatures can train as one compiled (vmapped) program.

    Dynamic numbers (:func:`dynamic_keys`) and host-side settings are blanked; what remains — architecture, data,
    loss kind, optimizer kind and mode, schedule shape, batch size, step count, whether clipping is on — must match.
    """
    import dataclasses
    import json

    tree = dataclasses.asdict(cfg)
    for key in dynamic_keys() + list(HOST_KEYS):
        *path, last = key.split(".")
        node = tree
        for p in path:
            node = node.get(p, {})
        if last in node:
            if key == "optim.clip_norm":
                node[last] = node[last] is not None  # clipping on/off is structure; its norm is a number
            else:
                node.pop(last)
    return json.dumps(tree, sort_keys=True, default=str)


# --------------------------------------------------------------------------------------------------------------------
# Loss adapter: model outputs + labels -> scalar loss
# --------------------------------------------------------------------------------------------------------------------

LossFn = Callable[[jax.Array, jax.Array, jax.Array | None, HParams], jax.Array]


def make_loss(cfg: LossConfig, model: Model, num_classes: int) -> LossFn:
    """Build ``loss(outputs, labels, mask, hp)`` for a classification model.

    cross_entropy takes logits (or softmax probabilities); mse compares outputs with one-hot targets; bce takes logits
    (or sigmoid probabilities) against one-hot targets (or the 0/1 label for a single output).
    """
    name, out = cfg.name, model.output
    losses.get(name)  # unknown names fail here with the closest names
    if name == "cross_entropy" and out not in ("logits", "softmax"):
        raise ConfigError(f"loss.name=cross_entropy needs a model that outputs logits or softmax; model "
                          f"{model.name!r} outputs {out!r} (use loss.name=mse or set model.output=logits)")
    if name == "bce" and out not in ("logits", "sigmoid"):
        raise ConfigError(f"loss.name=bce needs a model that outputs logits or sigmoid; model {model.name!r} "
                          f"outputs {out!r}")
    if cfg.class_weights is not None and len(cfg.class_weights) != num_classes:
        raise ConfigError(f"loss.class_weights: expected {num_classes} weights (one per class), "
                          f"got {len(cfg.class_weights)}")
    weights = None if cfg.class_weights is None else jnp.asarray(cfg.class_weights, jnp.float32)

    def targets(labels, outputs):
        if jnp.issubdtype(labels.dtype, jnp.integer):
            if outputs.shape[-1] == 1:
                return labels[..., None].astype(outputs.dtype)
            return jax.nn.one_hot(labels, outputs.shape[-1], dtype=outputs.dtype)
        return labels.astype(outputs.dtype)

    def loss(outputs, labels, mask, hp):
        if name == "cross_entropy":
            return losses.cross_entropy(outputs, labels, label_smoothing=hp["label_smoothing"],
                                        class_weights=weights, mask=mask, from_logits=out == "logits")
        if name == "mse":
            return losses.mse(outputs, targets(labels, outputs), mask=mask)
        pos = None if cfg.pos_weight is None else hp["pos_weight"]
        return losses.binary_cross_entropy(outputs, targets(labels, outputs), pos_weight=pos, mask=mask,
                                           from_logits=out == "logits")

    return loss


def global_norm(tree: Any) -> jax.Array:
    """``sqrt(sum of squares)`` over every leaf."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def predictions(outputs: jax.Array, output_kind: str) -> jax.Array:
    """Predicted class: argmax, or a threshold for a single output (0 for logits, 0.5 for probabilities)."""
    if outputs.shape[-1] == 1:
        threshold = 0.0 if output_kind == "logits" else 0.5
        return (outputs[..., 0] > threshold).astype(jnp.int32)
    return jnp.argmax(outputs, axis=-1)


def _correct(outputs, labels, output_kind):
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        labels = jnp.argmax(labels, axis=-1)
    return (predictions(outputs, output_kind) == labels).astype(jnp.float32)


# --------------------------------------------------------------------------------------------------------------------
# State and steps
# --------------------------------------------------------------------------------------------------------------------


def init_state(model: Model, optimizer: optim.Optimizer, example_x: jax.Array, seed: int | jax.Array,
               hp: HParams) -> TrainState:
    """Initialise parameters (key ``fold_in(seed_key, 0)``) and optimizer state. Pure; vmappable over seeds."""
    key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    init_key, step_key = jax.random.split(key)
    variables = model.init(init_key, example_x)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=optimizer.init(params, hp), rng=step_key)


def make_train_step(model: Model, optimizer: optim.Optimizer, loss_fn: LossFn, augment=None,
                    model_train_mode: bool = True, dropout: bool = True):
    """``train_step(state, batch, hp) -> (state, metrics)`` with metrics loss, accuracy, grad_norm, lr.

    ``augment(batch, key, hp) -> batch`` (from :func:`jaxdl.augment.make_augment`) runs first, with its own key.
    ``model_train_mode=False`` runs the model in inference mode (frozen batch statistics, no dropout).
    ``dropout=False`` builds the step without dropout (``hp["dropout"]`` is ignored): for runs whose rate is 0, the
    same numbers without drawing masks (see :func:`uses_dropout`).
    """

    def train_step(state: TrainState, batch: Batch, hp: HParams):
        rng = jax.random.fold_in(state.rng, state.step)
        if augment is not None:
            batch = augment(batch, jax.random.fold_in(rng, 0x5EED), hp)
        mask = batch.get("mask")

        def objective(params):
            outputs, new_model_state = model.apply({"params": params, **state.model_state}, batch["x"],
                                                   train=model_train_mode, rng=rng,
                                                   dropout_rate=hp["dropout"] if dropout else 0.0)
            return loss_fn(outputs, batch["y"], mask, hp), (outputs, new_model_state)

        (loss, (outputs, new_model_state)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, hp, state.step)
        params = optax.apply_updates(state.params, updates)
        correct = _correct(outputs, batch["y"], model.output)
        accuracy = jnp.mean(correct) if mask is None else jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1)
        metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": global_norm(grads),
                   "lr": optimizer.lr(hp, state.step)}
        new_state = state.replace(step=state.step + 1, params=params, model_state=new_model_state,
                                  opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_eval_step(model: Model, loss_fn: LossFn):
    """``eval_step(params, model_state, batch, hp) -> sums`` of loss and correct predictions over real examples.

    Returns sums (not means) so a padded last batch and uneven batches aggregate exactly.
    """

    def eval_step(params, model_state, batch: Batch, hp: HParams):
        outputs, _ = model.apply({"params": params, **model_state}, batch["x"], train=False)
        mask = batch.get("mask")
        if mask is None:
            mask = jnp.ones(batch["x"].shape[:1], jnp.float32)
        count = jnp.sum(mask)
        loss = loss_fn(outputs, batch["y"], mask, hp) * count
        correct = jnp.sum(_correct(outputs, batch["y"], model.output) * mask)
        return {"loss": loss, "correct": correct, "count": count}

    return eval_step
