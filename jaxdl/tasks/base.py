"""What an objective is: the :class:`Task` interface every objective implements.

A task owns everything specific to an objective, so the loop, the population machinery, checkpoints and sweeps stay
generic. It declares

- its **players**: named models trained by one step, each with its own optimizer, and a *static* update
  ``schedule`` (``("discriminator", "generator")``): the step unrolls it, so a vmapped population runs each update
  once (a traced ``cond`` would compute both branches);
- its **loss**, a pure function of ``(params, model_state, batch, rngs, hp)`` returning the loss of the player being
  updated and per-batch statistics;
- its **RNG streams** (``dropout``, ``augment``, ``latent``, ``noise``…), each derived from the step key;
- its **metrics** as additive ``(sum, weight)`` statistics merged over batches and divided once on the host
  (:meth:`Task.finalize`), and the monitored one with its direction;
- optionally ``predict`` for inference.

Parameters, model state and optimizer state are dicts keyed by player name inside a task (``params["model"]``); a
single-player task's :class:`~jaxdl.train.step.TrainState` stores its one player's trees directly, so checkpoints,
transfer learning and attribution see a plain model.

Statistics: ``stats[name] = (sum, weight)`` with arrays summed over the (masked) examples of a batch; the value of a
metric is ``sum / weight`` over a whole split (never a mean of batch means), optionally transformed (``rmse =
sqrt(mse)``, ``perplexity = exp(loss per token)``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import precision as precision_lib
from jaxdl.models import Model

Batch = dict[str, jax.Array]
HParams = dict[str, jax.Array]
Stats = dict[str, tuple[jax.Array, jax.Array]]

# Metric names whose larger values are better (everything else is minimised).
MAXIMISED = ("accuracy", "f1", "auc", "r2", "bleu", "chrf", "top5")


def mode_for(metric: str) -> str:
    """``max`` for accuracy-like metric names, ``min`` for losses and errors."""
    base = metric.rsplit("/", 1)[-1]
    return "max" if any(base.startswith(m) for m in MAXIMISED) else "min"


@dataclasses.dataclass(frozen=True)
class Derived:
    """A metric computed on the host from a finalised statistic, e.g. ``Derived("rmse", "mse", math.sqrt)``."""

    name: str
    source: str
    fn: Callable[[float], float]


def _safe(fn: Callable[[float], float], value: float) -> float:
    try:
        return float(fn(value))
    except (OverflowError, ValueError):
        return math.inf if value > 0 else math.nan


class Task:
    """Base class of objectives. Subclasses set the class attributes and implement :meth:`loss`.

    Attributes:
      name: registry name (``cfg.task``).
      players: names of the trained models; one optimizer each.
      schedule: order of the players' updates inside one step (static; default: ``players``).
      rng_streams: named RNG streams the loss uses; ``rngs[name]`` is derived from the step key by
        :meth:`rngs` (``dropout`` is the step key itself, as it always was; the others ``fold_in`` a name hash).
      models: one :class:`~jaxdl.models.Model` per player.
      inputs: the batch names fed to the model(s); targets: the names the loss reads.
      derived: metrics computed on the host from finalised statistics.
      monitor: default monitored metric (``val/<name>``) for early stopping and sweep reports.
      precision: the mixed-precision policy (:mod:`jaxdl.precision`) its models compute with; set by
        :meth:`with_precision`.
    """

    name: str = "task"
    players: tuple[str, ...] = ("model",)
    schedule: tuple[str, ...] | None = None
    rng_streams: tuple[str, ...] = ("dropout",)
    derived: tuple[Derived, ...] = ()
    monitor: str = "val/loss"
    precision: precision_lib.Policy = precision_lib.FP32

    def __init__(self, models: dict[str, Model], inputs: tuple[str, ...], targets: tuple[str, ...]):
        missing = [p for p in self.players if p not in models]
        if missing:
            raise ValueError(f"task {self.name!r}: no model for player(s) {', '.join(missing)}")
        self.models = dict(models)
        self.inputs = tuple(inputs)
        self.targets = tuple(targets)

    def with_precision(self, policy: precision_lib.Policy) -> Task:
        """A copy of this task whose players compute in ``policy``'s dtype (variables stay float32; see
        :meth:`jaxdl.models.Model.with_compute_dtype`). Training and evaluation steps built from it use it."""
        if policy == self.precision:
            return self
        out = copy.copy(self)
        out.models = {p: m.with_compute_dtype(policy.compute_dtype) for p, m in self.models.items()}
        out.precision = policy
        return out

    # ---------------------------------------------------------------------------------------------------------------
    @property
    def update_order(self) -> tuple[str, ...]:
        return tuple(self.schedule or self.players)

    @property
    def model(self) -> Model:
        """The first player's model (the only one of a single-player task)."""
        return self.models[self.players[0]]

    def model_inputs(self, batch: Batch) -> Any:
        """What the model is called with: the one input array, or a dict of the named inputs."""
        if len(self.inputs) == 1:
            return batch[self.inputs[0]]
        return {k: batch[k] for k in self.inputs}

    def example(self, batch: Batch) -> Any:
        """A one-example slice of the model inputs, for ``init``."""
        return jax.tree.map(lambda a: a[:1], self.model_inputs(batch))

    def rngs(self, key: jax.Array) -> dict[str, jax.Array]:
        """The step's named RNG streams, all derived from the step key."""
        out = {}
        for stream in self.rng_streams:
            out[stream] = key if stream == "dropout" else jax.random.fold_in(key, stream_id(stream))
        return out

    def init(self, key: jax.Array, example_batch: Batch) -> dict[str, Any]:
        """Variables of every player: ``{player: variables}``; player ``i`` uses ``fold_in(key, i)`` (player 0 uses
        ``key`` itself, so a single-player task initialises exactly as a bare model does)."""
        out = {}
        for i, player in enumerate(self.players):
            k = key if i == 0 else jax.random.fold_in(key, i)
            out[player] = self.models[player].init(k, self.example(example_batch))
        return out

    # ---------------------------------------------------------------------------------------------------------------
    @classmethod
    def model_input(cls, shape: tuple[int, ...], kind: str) -> tuple[tuple[int, ...], str]:
        """Per-example shape and kind (``float`` | ``int``) of what the model reads, given the data set's first
        input's (a language model reads all but the last token of a block)."""
        return shape, kind

    @classmethod
    def outputs_needed(cls, ds) -> int:
        """How many outputs per example the model needs on ``ds``: by default the elements of one target."""
        shape, _ = ds.train.example_spec()[ds.targets[0]]
        return int(math.prod(shape)) if shape else 1

    def artifacts(self, params: dict[str, Any], model_state: dict[str, Any], dataset, run_dir, plots: bool = True
                  ) -> dict[str, Any]:
        """Results computed once after training from the chosen variables (``{player: tree}``): baselines, plots,
        samples. Files go to ``run_dir``; the returned dict is merged into ``summary.json``. None by default."""
        del params, model_state, dataset, run_dir, plots
        return {}

    def hparams(self) -> dict[str, float]:
        """The task's own dynamic numbers beyond the shared table (see :func:`jaxdl.train.step.make_hparams`)."""
        return {}

    def prepare(self, batch: Batch, rngs: dict[str, jax.Array], hp: HParams) -> Batch:
        """Training-time transformation of a batch before the updates (e.g. augmentation); identity by default."""
        del rngs, hp
        return batch

    def after_update(self, player: str, params: dict[str, Any], model_state: dict[str, Any], hp: HParams,
                     step: jax.Array) -> dict[str, Any]:
        """Every player's model state after ``player``'s optimizer update (``params`` are the updated ones), e.g. an
        exponential moving average of the weights kept in the model state. Identity by default; pure and traced."""
        del player, params, hp, step
        return model_state

    def on_evaluation(self, params: dict[str, Any], model_state: dict[str, Any], dataset, run_dir, step: int
                      ) -> dict[str, Any]:
        """Called on the host at every evaluation of a run with plots on (one member's variables, ``{player: tree}``):
        e.g. write the step's sample grid under ``run_dir``. Returns numbers to add to the evaluation record (none by
        default)."""
        del params, model_state, dataset, run_dir, step
        return {}

    def loss(self, player: str, params: dict[str, Any], model_state: dict[str, Any], batch: Batch,
             rngs: dict[str, jax.Array] | None, hp: HParams, train: bool
             ) -> tuple[jax.Array, tuple[Stats, dict[str, Any]]]:
        """The loss that ``player``'s update minimises.

        Args:
          player: the player being updated (gradients are taken w.r.t. ``params[player]`` only).
          params, model_state: every player's, keyed by player name.
          batch: named arrays; ``batch.get("mask")`` weights examples (evaluation pads the last batch).
          rngs: the step's streams (None in evaluation).
          hp: dynamic numbers (arrays).
          train: training mode (dropout, batch-norm updates).

        Returns:
          ``(loss, (stats, new_model_state))``: a scalar, the batch's ``{name: (sum, weight)}`` statistics and every
          player's model state after the call.
        """
        raise NotImplementedError

    def loss_weight(self, player: str, stats: Stats) -> jax.Array | None:
        """The denominator of ``player``'s loss in its statistics — the loss is ``stats[...][0] / weight`` — so
        gradient accumulation can weigh each micro-batch's gradient by its share (exact for masked or token-count
        losses). Default: the weight of ``stats["loss"]``; None (equal micro-batch weights) when there is none."""
        del player
        pair = stats.get("loss")
        return None if pair is None else pair[1]

    def eval_stats(self, params: dict[str, Any], model_state: dict[str, Any], batch: Batch, hp: HParams) -> Stats:
        """Evaluation statistics of one (masked) batch: by default every player's loss statistics in eval mode."""
        stats: Stats = {}
        for player in self.players:
            _, (s, _) = self.loss(player, params, model_state, batch, None, hp, False)
            stats.update(s)
        return stats

    def finalize(self, totals: dict[str, tuple[float, float]]) -> dict[str, float]:
        """Metric values from statistics summed over a split: ``sum / weight``, then the derived metrics."""
        out = {k: (float(s) / float(w) if float(w) > 0 else math.nan) for k, (s, w) in totals.items()}
        for d in self.derived:
            if d.source in out:
                out[d.name] = _safe(d.fn, out[d.source])
        return out

    def metric_names(self) -> list[str]:
        """Names :meth:`finalize` returns (known after one abstract evaluation; subclasses may list them)."""
        return ["loss"]

    def predict(self, params: dict[str, Any], model_state: dict[str, Any], inputs: Any) -> jax.Array:
        """Model outputs on new inputs (eval mode); tasks refine them (class ids, de-standardised values)."""
        player = self.players[0]
        out, _ = self.models[player].apply({"params": params[player], **model_state[player]}, inputs, train=False)
        return out

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.players)})"


def stream_id(name: str) -> int:
    """A stable 31-bit id of an RNG stream name (the ``fold_in`` data)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def masked_count(batch: Batch, n: int) -> jax.Array:
    mask = batch.get("mask")
    return jnp.asarray(n, jnp.float32) if mask is None else jnp.sum(mask)


TASKS: dict[str, Callable[..., Task]] = {}


def register(name: str):
    """Class decorator: make a task available as ``cfg.task = name``."""

    def wrap(cls):
        TASKS[name] = cls
        cls.name = name
        return cls

    return wrap
