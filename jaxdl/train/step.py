"""Pure training and evaluation steps.

``train_step(state, batch, hparams) -> (state, metrics)`` is a pure function: the RNG key for a step is
``fold_in(state.rng, state.step)``, every number a sweep may vary arrives in ``hparams`` as an array, and nothing in
it depends on the number of devices. It is jitted once (with the state donated) by the loop; a population trainer is
``jax.vmap(train_step, in_axes=(0, None, 0))``.

``batch`` is a dict of named arrays sharing the leading axis (``image``/``label``, ``inputs``/``targets``,
``tokens``…) plus an optional per-example ``mask`` that lets the last, padded batch of an evaluation pass count only
its real examples. What the step computes is the task's (:mod:`jaxdl.tasks`): its players are updated in the task's
static order, each by its own optimizer, and its loss returns additive ``(sum, weight)`` statistics.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxdl import augment as augment_lib
from jaxdl import optim
from jaxdl.config import Config
from jaxdl.tasks import TASKS, Task

Batch = dict[str, jax.Array]
HParams = dict[str, jax.Array]


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training, as one pytree (a population is the same with a leading axis)."""

    step: jax.Array  # int32 scalar: optimisation steps taken
    # A single-player task stores its model's trees directly; a multi-player task a dict keyed by player name.
    params: Any
    model_state: Any  # non-parameter collections, e.g. {"batch_stats": ...}
    opt_state: Any
    rng: jax.Array  # base key; step t uses fold_in(rng, t)


# Config fields outside ``optim`` that enter the step as arrays (model.dropout, loss.label_smoothing …).
EXTRA_DYNAMIC = {"dropout": ("model", "dropout", 0.0), "label_smoothing": ("loss", "label_smoothing", 0.0),
                 "pos_weight": ("loss", "pos_weight", 1.0), "mask_rate": ("loss", "mask_rate", 0.15),
                 "kl_weight": ("loss", "kl_weight", 1.0), "gp_weight": ("loss", "gp_weight", 10.0),
                 **{key: ("augment", field, 0.0) for key, field in augment_lib.STRENGTHS.items()}}


# Prefix of the second player's optimizer numbers in ``hparams`` (``optim2.lr`` …; see :func:`player_hparams`).
SECOND = "optim2."


def make_hparams(cfg: Config) -> HParams:
    """The dynamic numbers of ``cfg`` as float32 scalars: optimizer numbers plus dropout and loss numbers (and, for
    a two-player task, the second player's optimizer numbers under ``optim2.``)."""
    hp = dict(optim.hparams(cfg.optim))
    task_cls = TASKS.get(cfg.task)
    if task_cls is not None and len(task_cls.players) > 1:
        hp.update({SECOND + k: v for k, v in optim.hparams(cfg.optim2).items()})
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
    keys = [f"optim.{k}" for k in optim.DYNAMIC_FIELDS] + [f"optim2.{k}" for k in optim.DYNAMIC_FIELDS]
    keys += [f"{section}.{field}" for section, field, _ in EXTRA_DYNAMIC.values()]
    return keys + ["seed"]


def register_dynamic(key: str, section: str, field: str, default: float) -> None:
    """Make config field ``section.field`` a dynamic number ``hp[key]`` of every step (a task's own numbers, e.g.
    a KL weight): it enters as an array whatever a group's first member says, and sweeping it never recompiles."""
    EXTRA_DYNAMIC[key] = (section, field, default)


# The diffusion task's own numbers (jaxdl.tasks.diffusion): label dropout, EMA decay, guidance scale.
for _key, _default in (("label_dropout", 0.1), ("ema_decay", 0.999), ("guidance_scale", 1.0)):
    register_dynamic(_key, "loss", _key, _default)
del _key, _default


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
# Players: a single-player task keeps its one model's trees at the top of the state
# --------------------------------------------------------------------------------------------------------------------


def player_hparams(task: Task, hp: HParams, player: str) -> HParams:
    """``hp`` as ``player``'s optimizer reads it: the second player's ``optim2.*`` numbers replace ``lr``, ``b1``…"""
    if task.players.index(player) != 1:
        return hp
    return {**hp, **{k[len(SECOND):]: v for k, v in hp.items() if k.startswith(SECOND)}}


def by_player(task: Task, tree: Any) -> dict[str, Any]:
    """``{player: tree}`` view of a state field."""
    return {task.players[0]: tree} if len(task.players) == 1 else dict(tree)


def from_players(task: Task, trees: dict[str, Any]) -> Any:
    """Inverse of :func:`by_player`."""
    return trees[task.players[0]] if len(task.players) == 1 else trees


def global_norm(tree: Any) -> jax.Array:
    """``sqrt(sum of squares)`` over every leaf."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


# --------------------------------------------------------------------------------------------------------------------
# State and steps
# --------------------------------------------------------------------------------------------------------------------


def init_state(task: Task, optimizers: dict[str, optim.Optimizer], example_batch: Batch, seed: int | jax.Array,
               hp: HParams) -> TrainState:
    """Initialise every player's variables (key ``split(seed_key)[0]``) and optimizer state. Pure; vmappable."""
    key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    init_key, step_key = jax.random.split(key)
    variables = task.init(init_key, example_batch)
    params = {p: v["params"] for p, v in variables.items()}
    model_state = {p: {k: x for k, x in v.items() if k != "params"} for p, v in variables.items()}
    opt_state = {p: optimizers[p].init(params[p], player_hparams(task, hp, p)) for p in task.players}
    return TrainState(step=jnp.zeros((), jnp.int32), params=from_players(task, params),
                      model_state=from_players(task, model_state), opt_state=from_players(task, opt_state),
                      rng=step_key)


def make_train_step(task: Task, optimizers: dict[str, optim.Optimizer]):
    """``train_step(state, batch, hp) -> (state, metrics)``.

    The step key ``fold_in(rng, step)`` gives the task's named RNG streams; the task prepares the batch (e.g.
    augmentation), then each player in the task's static ``update_order`` takes one gradient step on its loss with
    the other players' current parameters held fixed. Metrics: ``loss`` and ``grad_norm`` (single player) or
    ``<player>/loss`` and ``<player>/grad_norm`` (and ``loss``: the first player's), ``lr``, ``finite`` (every loss
    and gradient norm finite: a member failing it is frozen by the loop) and ``stats`` (``{name: (sum, weight)}``).
    """
    single = len(task.players) == 1

    def train_step(state: TrainState, batch: Batch, hp: HParams):
        rngs = task.rngs(jax.random.fold_in(state.rng, state.step))
        batch = task.prepare(batch, rngs, hp)
        params, model_state = by_player(task, state.params), by_player(task, state.model_state)
        opt_state = by_player(task, state.opt_state)
        metrics: dict[str, Any] = {}
        stats: dict[str, Any] = {}
        finite = jnp.asarray(True)
        for player in task.update_order:
            def objective(p, player=player, params=params, model_state=model_state):
                return task.loss(player, {**params, player: p}, model_state, batch, rngs, hp, True)

            (loss, (s, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(params[player])
            php = player_hparams(task, hp, player)
            updates, new_opt = optimizers[player].update(grads, opt_state[player], params[player], php, state.step)
            params = {**params, player: optax.apply_updates(params[player], updates)}
            opt_state = {**opt_state, player: new_opt}
            model_state = task.after_update(player, params, model_state, hp, state.step)
            norm = global_norm(grads)
            finite = finite & jnp.isfinite(loss) & jnp.isfinite(norm)
            stats.update(s)
            prefix = "" if single else f"{player}/"
            metrics[f"{prefix}loss"] = loss
            metrics[f"{prefix}grad_norm"] = norm
            if not single:
                metrics[f"{player}/lr"] = optimizers[player].lr(php, state.step)
            metrics.setdefault("loss", loss)
        first = task.players[0]
        metrics.update(lr=optimizers[first].lr(hp, state.step), finite=finite, stats=stats)
        new_state = state.replace(step=state.step + 1, params=from_players(task, params),
                                  model_state=from_players(task, model_state), opt_state=from_players(task, opt_state))
        return new_state, metrics

    return train_step


def make_eval_step(task: Task):
    """``eval_step(params, model_state, batch, hp) -> stats``: ``{name: (sum, weight)}`` over the real (mask > 0)
    examples of the batch. Sums, not means, so a padded last batch and uneven batches aggregate exactly."""

    def eval_step(params, model_state, batch: Batch, hp: HParams):
        return task.eval_stats(by_player(task, params), by_player(task, model_state), batch, hp)

    return eval_step
