"""Classification: one model, class logits (or probabilities), cross-entropy / MSE / BCE, accuracy.

Batch names: the data set's input (``image`` for image data sets) and its integer ``label`` (or class
probabilities after mixup/cutmix). Dynamic numbers: ``label_smoothing``, ``pos_weight`` and the augmentation
strengths (see :data:`jaxdl.train.step.EXTRA_DYNAMIC`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import augment as augment_lib
from jaxdl import losses
from jaxdl.config import Config, LossConfig
from jaxdl.errors import ConfigError
from jaxdl.models import Model
from jaxdl.tasks.base import Batch, HParams, Task, masked_count, register

LOSSES = ("cross_entropy", "mse", "bce")


def predictions(outputs: jax.Array, output_kind: str) -> jax.Array:
    """Predicted class: argmax, or a threshold for a single output (0 for logits, 0.5 for probabilities)."""
    if outputs.shape[-1] == 1:
        threshold = 0.0 if output_kind == "logits" else 0.5
        return (outputs[..., 0] > threshold).astype(jnp.int32)
    return jnp.argmax(outputs, axis=-1)


def correct(outputs: jax.Array, labels: jax.Array, output_kind: str) -> jax.Array:
    """1.0 where the predicted class equals the label (labels: ids, or probabilities whose argmax counts)."""
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        labels = jnp.argmax(labels, axis=-1)
    return (predictions(outputs, output_kind) == labels).astype(jnp.float32)


def loss_name(cfg: LossConfig, default: str = "cross_entropy") -> str:
    return default if cfg.name == "auto" else cfg.name


def make_loss(cfg: LossConfig, model: Model, num_classes: int):
    """``loss(outputs, labels, mask, hp) -> (mean, weight)``: the batch loss exactly as PyTorch reduces it, and its
    denominator (examples, class-weighted examples or elements), so ``mean * weight`` sums over batches.

    cross_entropy takes logits (or softmax probabilities); mse compares outputs with one-hot targets; bce takes logits
    (or sigmoid probabilities) against one-hot targets (or the 0/1 label for a single output). ``hp["pos_weight"]``
    always enters BCE (1 weighs nothing), so a group member's value is never dropped.
    """
    name, out = loss_name(cfg), model.output
    if name not in LOSSES:
        losses.get(name)  # unknown names fail here with the closest names
        raise ConfigError(f"loss.name={name} is not a classification loss; expected one of {', '.join(LOSSES)}")
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
        count = masked_count({"mask": mask} if mask is not None else {}, outputs.shape[0])
        if name == "cross_entropy":
            value = losses.cross_entropy(outputs, labels, label_smoothing=hp["label_smoothing"],
                                         class_weights=weights, mask=mask, from_logits=out == "logits")
            if weights is not None and jnp.issubdtype(labels.dtype, jnp.integer):
                m = jnp.ones(labels.shape, jnp.float32) if mask is None else mask
                count = jnp.sum(m * weights[jnp.clip(labels, 0, num_classes - 1)])
            return value, count
        elements = count * outputs[0].size
        if name == "mse":
            return losses.mse(outputs, targets(labels, outputs), mask=mask), elements
        return losses.binary_cross_entropy(outputs, targets(labels, outputs), pos_weight=hp["pos_weight"],
                                           mask=mask, from_logits=out == "logits"), elements

    return loss


@register("classification")
class Classification(Task):
    """Class prediction from one input. Metrics: ``loss`` and ``accuracy`` (monitored by default: val/accuracy
    is what a researcher selects classifiers by; early stopping keeps its own configured monitor)."""

    rng_streams = ("dropout", "augment")
    monitor = "val/accuracy"

    def __init__(self, model: Model, inputs, targets, loss_fn, augment=None, train_mode: bool = True,
                 dropout: bool = True):
        super().__init__({"model": model}, inputs, targets)
        self.loss_fn, self.augment = loss_fn, augment
        self.train_mode, self.dropout = train_mode, dropout

    @classmethod
    def build(cls, cfg: Config, dataset, model: Model, *, dropout: bool = True) -> Classification:
        if dataset.num_classes is None:
            raise ConfigError(f"task=classification needs class labels; data set {dataset.name!r} has "
                              f"{dataset.kind} targets (use task=regression)")
        n_out = model.config.num_classes if model.config is not None else None
        if n_out is not None and n_out != 1 and n_out < dataset.num_classes:
            raise ConfigError(f"model.num_classes={n_out} but data set {dataset.name!r} has {dataset.num_classes} "
                              "classes")
        loss_fn = make_loss(cfg.loss, model, dataset.num_classes)
        augment = augment_lib.make_augment(cfg.augment, dataset.num_classes)
        return cls(model, dataset.inputs, dataset.targets, loss_fn, augment,
                   train_mode=cfg.train.batch_stats == "update", dropout=dropout)

    @classmethod
    def outputs_needed(cls, ds) -> int:
        if ds.num_classes is None:
            raise ConfigError(f"task=classification needs class labels; data set {ds.name!r} has {ds.kind} "
                              "targets (use task=regression)")
        return int(ds.num_classes)

    @property
    def label_key(self) -> str:
        return self.targets[0]

    def rngs(self, key: jax.Array) -> dict[str, jax.Array]:
        # the augmentation key is fold_in(step key, 0x5EED), as it has always been (results stay bitwise equal)
        return {"dropout": key, "augment": jax.random.fold_in(key, 0x5EED)}

    def prepare(self, batch: Batch, rngs, hp: HParams) -> Batch:
        if self.augment is None or len(self.inputs) != 1:
            return batch
        x_key = self.inputs[0]
        out = self.augment({"x": batch[x_key], "y": batch[self.label_key]}, rngs["augment"], hp)
        return {**batch, x_key: out["x"], self.label_key: out["y"]}

    def loss(self, player, params, model_state, batch, rngs, hp, train):
        model = self.models[player]
        training = train and self.train_mode
        kwargs: dict[str, Any] = {}
        if training:
            kwargs = {"rng": rngs["dropout"], "dropout_rate": hp["dropout"] if self.dropout else 0.0}
        outputs, new_state = model.apply({"params": params[player], **model_state[player]}, self.model_inputs(batch),
                                         train=training, **kwargs)
        labels, mask = batch[self.label_key], batch.get("mask")
        value, weight = self.loss_fn(outputs, labels, mask, hp)
        right = correct(outputs, labels, model.output)
        n = masked_count(batch, outputs.shape[0])
        hits = jnp.sum(right) if mask is None else jnp.sum(right * mask)
        stats = {"loss": (value * weight, weight), "accuracy": (hits, n)}
        return value, (stats, {**model_state, player: new_state})

    def metric_names(self) -> list[str]:
        return ["loss", "accuracy"]

    def predict(self, params, model_state, inputs):
        """Class probabilities (softmax of logits; sigmoid for a single output)."""
        out = super().predict(params, model_state, inputs)
        kind = self.model.output
        if kind == "logits":
            return jax.nn.sigmoid(out) if out.shape[-1] == 1 else jax.nn.softmax(out, axis=-1)
        return out
