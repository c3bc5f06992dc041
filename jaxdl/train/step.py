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

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdl import augment as augment_lib
from jaxdl import optim
from jaxdl import precision as precision_lib
from jaxdl.config import Config
from jaxdl.errors import ConfigError
from jaxdl.tasks import TASKS, Task

Batch = dict[str, jax.Array]
HParams = dict[str, jax.Array]


@jax.tree_util.register_pytree_with_keys_class
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes during training, as one pytree (a population is the same with a leading axis)."""

    step: jax.Array  # int32 scalar: optimisation steps taken
    # A single-player task stores its model's trees directly; a multi-player task a dict keyed by player name.
    params: Any
    model_state: Any  # non-parameter collections, e.g. {"batch_stats": ...}
    opt_state: Any
    rng: jax.Array  # base key; step t uses fold_in(rng, t)
    # fp16's dynamic loss scale (jaxdl.precision.LossScale); None otherwise. A None field is not a child of the
    # pytree at all, so fp32/bf16 states (and their checkpoints) have exactly the leaves and keys they always had.
    loss_scale: Any = None

    _FIELDS = ("step", "params", "model_state", "opt_state", "rng")

    def replace(self, **changes) -> TrainState:
        return dataclasses.replace(self, **changes)

    def tree_flatten_with_keys(self):
        names = self._FIELDS + (("loss_scale",) if self.loss_scale is not None else ())
        return [(jax.tree_util.GetAttrKey(n), getattr(self, n)) for n in names], names

    def tree_flatten(self):
        children, names = self.tree_flatten_with_keys()
        return [c for _, c in children], names

    @classmethod
    def tree_unflatten(cls, names, children):
        return cls(**dict(zip(names, children)))


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
    """Initialise every player's variables (key ``split(seed_key)[0]``) and optimizer state, plus the loss-scale
    state of an fp16 task (``task.precision``). Pure; vmappable."""
    key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    init_key, step_key = jax.random.split(key)
    variables = task.init(init_key, example_batch)
    params = {p: v["params"] for p, v in variables.items()}
    model_state = {p: {k: x for k, x in v.items() if k != "params"} for p, v in variables.items()}
    opt_state = {p: optimizers[p].init(params[p], player_hparams(task, hp, p)) for p in task.players}
    return TrainState(step=jnp.zeros((), jnp.int32), params=from_players(task, params),
                      model_state=from_players(task, model_state), opt_state=from_players(task, opt_state),
                      rng=step_key, loss_scale=precision_lib.init_loss_scale(task.precision))


def micro_batches(batch: Batch, k: int) -> Batch:
    """``batch`` cut into ``k`` micro-batches, strided: every array ``(B, ...)`` becomes ``(k, B/k, ...)`` with
    micro-batch ``i`` holding examples ``i, i+k, i+2k, …``. A batch sharded over devices on its leading axis stays
    sharded the same way in every micro-batch (each device's rows contribute to every micro-batch), so accumulation
    needs no data movement.

    Raises:
      ConfigError: when ``k`` does not divide an array's leading size, naming ``train.accumulate`` and the array.
    """
    def split(path, x):
        if x.shape[0] % k:
            raise ConfigError(f"train.accumulate={k} must divide the batch size: batch array "
                              f"{jax.tree_util.keystr(path)} has shape {tuple(x.shape)}")
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)  # (B, ...) -> (k, B/k, ...)

    return jax.tree_util.tree_map_with_path(split, batch)


def _weighted_sum(acc: Any, tree: Any, w: jax.Array) -> Any:
    return jax.tree.map(lambda a, x: a + w * x, acc, tree)


def make_train_step(task: Task, optimizers: dict[str, optim.Optimizer], accumulate: int = 1):
    """``train_step(state, batch, hp) -> (state, metrics)``.

    The step key ``fold_in(rng, step)`` gives the task's named RNG streams; the task prepares the batch (e.g.
    augmentation), then each player in the task's static ``update_order`` takes one gradient step on its loss with
    the other players' current parameters held fixed. Metrics: ``loss`` and ``grad_norm`` (single player) or
    ``<player>/loss`` and ``<player>/grad_norm`` (and ``loss``: the first player's), ``lr``, ``finite`` (every loss
    and gradient norm finite: a member failing it is frozen by the loop) and ``stats`` (``{name: (sum, weight)}``).

    **Precision** (``task.precision``, see :mod:`jaxdl.precision`): the task's models compute in the policy's dtype;
    everything here stays float32. Under fp16 the loss is multiplied by ``state.loss_scale.scale`` before
    differentiating and the gradients divided by it; if any player's gradients (or loss) are not finite the whole
    step is skipped — parameters, optimizer and model state keep their values, the step's statistics count nothing,
    the scale halves — and ``finite`` stays True (a handled overflow is not a divergence) unless the scale was
    already at its minimum. Extra metrics under fp16: ``loss_scale`` (the scale the step used) and ``skipped`` (steps
    skipped so far).

    **Accumulation** (``accumulate = k > 1``): each player's gradient is accumulated over ``k`` strided micro-batches
    (:func:`micro_batches`) in a ``lax.scan`` — only one micro-batch's activations are live — then applied in one
    optimizer update. Micro-batch ``i`` is weighted by its share of the loss weight (:meth:`Task.loss_weight`: the
    examples, tokens or elements its loss averages over), so the update equals one step on the whole batch for
    models without batch statistics. Batch norm normalises each micro-batch with its own statistics (ghost batch
    norm) and updates the running statistics once per micro-batch, in order. Micro-batch ``i`` draws its RNG streams
    from ``fold_in(step key, i)`` (with ``k = 1`` the step key itself, as always); ``task.prepare`` (augmentation)
    runs once on the whole batch.
    """
    if not isinstance(accumulate, int) or accumulate < 1:
        raise ConfigError(f"train.accumulate: expected a positive integer, got {accumulate!r}")
    single = len(task.players) == 1
    policy = task.precision
    scaling = policy.loss_scaling

    def gradients(player, params, model_state, batch, step_key, rngs, hp, scale):
        """``(loss, stats, model_state, grads)`` of ``player`` on ``batch`` (grads unscaled, float32)."""
        def objective(p, model_state, batch, rngs):
            loss, (s, new_state) = task.loss(player, {**params, player: p}, model_state, batch, rngs, hp, True)
            return (loss * scale if scaling else loss), (loss, s, new_state)

        grad_fn = jax.grad(objective, has_aux=True)
        if accumulate == 1:
            grads, (loss, s, model_state) = grad_fn(params[player], model_state, batch, rngs)
        else:
            micro = micro_batches(batch, accumulate)  # every leaf (k, B/k, ...)
            first = jax.tree.map(lambda x: x[0], micro)
            shapes = jax.eval_shape(grad_fn, params[player], model_state, first, task.rngs(step_key))
            zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), (shapes[0], shapes[1][1]))

            def body(carry, xs):
                model_state, g_acc, s_acc, l_acc, w_acc = carry
                i, mb = xs
                g, (loss, s, model_state) = grad_fn(params[player], model_state, mb,
                                                    task.rngs(jax.random.fold_in(step_key, i)))
                w = task.loss_weight(player, s)
                w = jnp.ones((), jnp.float32) if w is None else jnp.asarray(w, jnp.float32)
                s_acc = jax.tree.map(jnp.add, s_acc, s)  # (sum, weight) statistics are additive
                return (model_state, _weighted_sum(g_acc, g, w), s_acc, l_acc + w * loss, w_acc + w), None

            init = (model_state, zeros[0], zeros[1], jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
            (model_state, g_sum, s, l_sum, w_sum), _ = jax.lax.scan(body, init,
                                                                     (jnp.arange(accumulate), micro))
            # sum_i w_i * grad(loss_i) / sum_i w_i = grad(sum of the loss numerators / total weight)
            denom = jnp.where(w_sum > 0, w_sum, 1.0)
            grads = jax.tree.map(lambda g: g / denom, g_sum)
            loss = l_sum / denom
        if scaling:
            grads = jax.tree.map(lambda g: g / scale, grads)
        return loss, s, model_state, grads

    def train_step(state: TrainState, batch: Batch, hp: HParams):
        step_key = jax.random.fold_in(state.rng, state.step)
        rngs = task.rngs(step_key)
        batch = task.prepare(batch, rngs, hp)
        params, model_state = by_player(task, state.params), by_player(task, state.model_state)
        opt_state = by_player(task, state.opt_state)
        scale = state.loss_scale.scale if scaling else None
        metrics: dict[str, Any] = {}
        stats: dict[str, Any] = {}
        finite = jnp.asarray(True)
        for player in task.update_order:
            loss, s, model_state, grads = gradients(player, params, model_state, batch, step_key, rngs, hp,
                                                    scale)
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
        new_state = state.replace(step=state.step + 1, params=from_players(task, params),
                                  model_state=from_players(task, model_state), opt_state=from_players(task, opt_state))
        if scaling:
            # an overflow skips the whole step: every player's variables keep their values, the data moves on
            kept = state.replace(step=state.step + 1)
            new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, kept)
            new_state = new_state.replace(loss_scale=precision_lib.next_loss_scale(state.loss_scale, finite, policy))
            stats = jax.tree.map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), stats)
            metrics.update(loss_scale=scale, skipped=new_state.loss_scale.skipped)
            finite = finite | (scale > policy.min_scale)  # handled by the scale, unless it cannot shrink further
        metrics.update(lr=optimizers[first].lr(hp, state.step), finite=finite, stats=stats)
        return new_state, metrics

    return train_step


def make_eval_step(task: Task):
    """``eval_step(params, model_state, batch, hp) -> stats``: ``{name: (sum, weight)}`` over the real (mask > 0)
    examples of the batch. Sums, not means, so a padded last batch and uneven batches aggregate exactly."""

    def eval_step(params, model_state, batch: Batch, hp: HParams):
        return task.eval_stats(by_player(task, params), by_player(task, model_state), batch, hp)

    return eval_step
