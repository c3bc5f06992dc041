r"""Regression: one model, float targets of any per-example shape (a value, a vector, a forecast horizon).

Metrics (no accuracy anywhere): ``loss`` (the training objective), ``mse`` :math:`\sum m_i (\hat y_i - y_i)^2 /
\sum m_i` over elements, ``mae`` :math:`\sum m_i |\hat y_i - y_i| / \sum m_i`, and ``rmse = sqrt(mse)``. The model
is built with as many outputs as a target has elements, and its outputs are reshaped to the target's shape.
Losses: ``mse`` (default), ``mae`` and ``huber`` (``optax.huber_loss`` with delta 1).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax

from jaxdl.config import Config
from jaxdl.errors import ConfigError, DataError
from jaxdl.models import Model
from jaxdl.tasks.base import Derived, Task, masked_count, register

LOSSES = ("mse", "mae", "huber")


def _elementwise(name: str, pred, target):
    if name == "mse":
        return jnp.square(pred - target)
    if name == "mae":
        return jnp.abs(pred - target)
    return optax.huber_loss(pred, target, delta=1.0)


@register("regression")
class Regression(Task):
    """Predict float targets; the loss is a mean over target elements of the (masked) examples."""

    derived = (Derived("rmse", "mse", math.sqrt),)
    monitor = "val/loss"

    def __init__(self, model: Model, inputs, targets, loss: str = "mse", train_mode: bool = True,
                 dropout: bool = True):
        if loss not in LOSSES:
            raise ConfigError(f"loss.name={loss} is not a regression loss; expected one of {', '.join(LOSSES)} "
                              "(or auto)")
        super().__init__({"model": model}, inputs, targets)
        self.loss_name, self.train_mode, self.dropout = loss, train_mode, dropout

    @classmethod
    def build(cls, cfg: Config, dataset, model: Model, *, dropout: bool = True) -> Regression:
        name = "mse" if cfg.loss.name == "auto" else cfg.loss.name
        return cls(model, dataset.inputs, dataset.targets, name, train_mode=cfg.train.batch_stats == "update",
                   dropout=dropout)

    def forward(self, player, params, model_state, batch, rngs, hp, train):
        """The model's predictions shaped like the target: ``(pred, target, mask, weight, new_state)`` with ``mask``
        broadcastable to the target and ``weight`` the number of (masked) target elements."""
        model = self.models[player]
        training = train and self.train_mode
        kwargs = {"rng": rngs["dropout"], "dropout_rate": hp["dropout"] if self.dropout else 0.0} if training else {}
        outputs, new_state = model.apply({"params": params[player], **model_state[player]}, self.model_inputs(batch),
                                         train=training, **kwargs)
        target = batch[self.targets[0]].astype(jnp.float32)
        if outputs.size != target.size:
            raise DataError(f"model {model.name!r} returns {outputs.shape[1:]} per example but target "
                            f"{self.targets[0]!r} has shape {target.shape[1:]}")
        pred = outputs.reshape(target.shape).astype(jnp.float32)
        mask = batch.get("mask")
        m = jnp.ones(target.shape[:1], jnp.float32) if mask is None else mask
        m = m.reshape(m.shape + (1,) * (target.ndim - 1))
        weight = masked_count(batch, target.shape[0]) * target[0].size
        return pred, target, m, weight, {**model_state, player: new_state}

    def objective(self, pred, target, m, weight):
        """The training loss (a mean over masked target elements) and its ``(sum, weight)`` statistic."""
        total = jnp.sum(_elementwise(self.loss_name, pred, target) * m)
        return total / jnp.maximum(weight, 1.0), (total, weight)

    def loss(self, player, params, model_state, batch, rngs, hp, train):
        pred, target, m, weight, new_state = self.forward(player, params, model_state, batch, rngs, hp, train)
        value, loss_stat = self.objective(pred, target, m, weight)
        stats = {"loss": loss_stat,
                 **{k: (jnp.sum(_elementwise(k, pred, target) * m), weight) for k in ("mse", "mae")}}
        return value, (stats, new_state)

    def metric_names(self) -> list[str]:
        return ["loss", "mse", "mae", "rmse"]

    def predict(self, params, model_state, inputs):
        out = super().predict(params, model_state, inputs)
        return out
