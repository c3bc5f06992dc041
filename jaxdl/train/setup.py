"""Everything derived from a config before training starts: data, task (models, loss, metrics), optimizers, steps.

``setup(cfg)`` validates the config, loads the data (or takes a data set / in-memory source / user model), builds the
task and its compiled-to-be steps, and traces init and one step abstractly (``jax.eval_shape``) so shape and config
errors surface before anything compiles.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import data as data_lib
from jaxdl import models, optim, precision, tasks
from jaxdl.config import Config, check_types, check_values
from jaxdl.errors import ConfigError, DataError
from jaxdl.train.step import TrainState, init_state, make_eval_step, make_hparams, make_train_step, uses_dropout

DRIVERS = ("auto", "scan", "host")
PRECISIONS = ("fp32", "bf16", "fp16")
REMAT = ("none", "blocks")


@dataclasses.dataclass
class Setup:
    """Everything derived from a config before training starts."""

    cfg: Config
    dataset: Any  # jaxdl.data.Dataset
    task: tasks.Task
    optimizers: dict[str, optim.Optimizer]
    hparams: dict[str, jax.Array]
    train_step: Any
    eval_step: Any
    steps_per_epoch: int
    total_steps: int
    fused: bool = False  # a population trained as one vmapped program
    dropout: bool = True  # the step draws dropout masks (False: every member's rate is 0, see uses_dropout)
    user_model: bool = False  # the model came from Python (fit(model=...)), not from cfg.model
    mesh: Any = None  # the ("pop", "data") device mesh the programs are placed on (None: one device)

    @property
    def model(self) -> models.Model:
        """The first player's model."""
        return self.task.model

    @property
    def optimizer(self) -> optim.Optimizer:
        return self.optimizers[self.task.players[0]]

    @property
    def model_name(self) -> str:
        return self.model.name if self.user_model else self.cfg.model.name


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the key and the value of anything in ``cfg`` that cannot be right — types, names,
    ranges, non-finite numbers, seeds, step counts — before data is loaded or anything is compiled."""
    check_types(cfg)
    check_values(cfg)
    t = cfg.train
    if t.driver not in DRIVERS:
        raise ConfigError(f"train.driver: expected one of {', '.join(DRIVERS)}, got {t.driver!r}")
    for key in ("batch_size", "epochs", "chunk_steps", "eval_batch_size", "keep_checkpoints", "prefetch"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key}: expected a positive integer, got {getattr(t, key)}")
    for key in ("steps", "eval_every", "checkpoint_every"):
        value = getattr(t, key)
        if value is not None and value < 1:
            raise ConfigError(f"train.{key}: expected a positive integer or none, got {value}")
    es = t.early_stopping
    split, _, name = es.monitor.partition("/")
    if split not in ("val", "train") or not name:
        raise ConfigError(f"train.early_stopping.monitor: expected val/<metric> or train/<metric> (e.g. val/loss, "
                          f"val/accuracy, val/rmse), got {es.monitor!r}")
    if es.mode not in ("auto", "min", "max"):
        raise ConfigError(f"train.early_stopping.mode: expected auto, min or max, got {es.mode!r}")
    if t.batch_stats not in ("update", "frozen"):
        raise ConfigError(f"train.batch_stats: expected 'update' or 'frozen', got {t.batch_stats!r}")
    if es.patience < 1:
        raise ConfigError(f"train.early_stopping.patience: expected >= 1, got {es.patience}")
    if t.precision not in PRECISIONS:
        raise ConfigError(f"train.precision: expected one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    if t.accumulate < 1 or t.batch_size % t.accumulate:
        raise ConfigError(f"train.accumulate: expected a positive divisor of train.batch_size={t.batch_size} "
                          f"(micro-batches per step), got {t.accumulate}")
    if getattr(cfg.model, "remat", "none") not in REMAT:
        raise ConfigError(f"model.remat: expected one of {', '.join(REMAT)}, got {cfg.model.remat!r}")
    from jaxdl.parallel import parse_mesh

    parse_mesh(t.mesh)
    optim.validate(cfg.optim)
    try:
        optim.validate(cfg.optim2)
    except ConfigError as e:
        raise ConfigError(re.sub(r"\boptim\.", "optim2.", str(e))) from None


def player_optim(cfg: Config, task: tasks.Task, player: str):
    """The optimizer config of ``player``: ``optim`` for the first player, ``optim2`` for the second."""
    return cfg.optim2 if task.players.index(player) == 1 else cfg.optim


def check_players(cfg: Config, task: tasks.Task) -> None:
    """``optim2`` configures a second player; a task with one player (or more than two) cannot use it."""
    from jaxdl.config import OptimConfig

    if len(task.players) == 1 and cfg.optim2 != OptimConfig():
        raise ConfigError(f"optim2 configures the second player of a two-player task, but task {task.name!r} has one "
                          f"player ({task.players[0]}); set the optimizer with optim.* instead")
    if len(task.players) > 2:
        raise ConfigError(f"task {task.name!r} has {len(task.players)} players ({', '.join(task.players)}); "
                          "optim and optim2 configure at most two")


def _input_spec(ds) -> tuple[Any, str]:
    """Per-example shape and kind (``float`` | ``int``) of the model's first input."""
    spec = ds.train.example_spec()
    name = ds.inputs[0]
    if name not in spec:
        raise DataError(f"data set {ds.name!r}: input {name!r} is not in its batches ({', '.join(spec)})")
    shape, dtype = spec[name]
    return tuple(shape), ("int" if jnp.issubdtype(dtype, jnp.integer) else "float")


def outputs_needed(ds, task_name: str) -> int:
    """How many outputs the model needs: classes, vocabulary, or the number of elements of one target."""
    return tasks.TASKS[task_name].outputs_needed(ds)


def build_model(cfg: Config, ds, task_name: str, model: Any = None) -> tuple[models.Model, bool]:
    """The model of ``cfg.model`` sized for ``ds`` — or a user's model (a :class:`~jaxdl.models.Model`, a Linen
    module, an NNX module or a ``rngs -> nnx.Module`` constructor). Returns ``(model, is_user_model)``."""
    task_cls = tasks.TASKS[task_name]
    shape, kind = task_cls.model_input(*_input_spec(ds))
    if model is not None:
        return models.as_model(model, input_shape=shape if len(ds.inputs) == 1 else None, input_kind=kind), True
    n = task_cls.outputs_needed(ds)
    if task_name != "classification" and cfg.model.num_classes is not None and cfg.model.num_classes != n:
        what = "a vocabulary of" if task_name == "language_model" else "each target of"
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but {what} {ds.name!r} has {n} values")
    # a zoo model reads what its family reads (an image model given uint8 pixels is an error naming it)
    return models.from_config(cfg.model, num_classes=n, input_shape=shape), False


def setup(cfg: Config, dataset=None, dropout: bool | None = None, *, model: Any = None, source: Any = None) -> Setup:
    """Load data and build the task, optimizers and steps; check shapes abstractly before compiling.

    Args:
      cfg: the run's config.
      dataset: a ready :class:`~jaxdl.data.Dataset` (else ``cfg.data`` is loaded — from ``source``, an in-memory
        :func:`jaxdl.data.from_arrays` source, when given; the config's splitting and standardisation apply).
      dropout: whether the step draws dropout masks; default: whether ``cfg`` has a nonzero rate. A group of runs
        passes ``uses_dropout(cfgs)``, so members with rates 0 and 0.3 share one step (rate 0 keeps everything).
      model: a user's model instead of ``cfg.model`` (see :func:`build_model`).
    """
    validate(cfg)
    if dataset is not None:
        ds = dataset
    else:
        ds = data_lib.load(cfg.data, source=source) if source is not None else data_lib.load(cfg.data)
    task_name = tasks.resolve(cfg.task, ds)
    net, user = build_model(cfg, ds, task_name, model)
    n_train = len(ds.train)
    if cfg.train.batch_size > n_train:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} exceeds the {n_train} training examples of "
                          f"{ds.name!r}")
    steps_per_epoch = n_train // cfg.train.batch_size
    total = cfg.train.steps if cfg.train.steps is not None else cfg.train.epochs * steps_per_epoch
    dropout = uses_dropout([cfg]) if dropout is None else dropout
    task = tasks.TASKS[task_name].build(cfg, ds, net, dropout=dropout)
    task = task.with_precision(precision.policy(cfg.train.precision))
    check_monitor(cfg, task)
    check_players(cfg, task)
    optimizers = {player: optim.build(player_optim(cfg, task, player), total) for player in task.players}
    hp = make_hparams(cfg)
    s = Setup(cfg, ds, task, optimizers, hp, make_train_step(task, optimizers, cfg.train.accumulate),
              make_eval_step(task),
              steps_per_epoch, total, dropout=dropout, user_model=user)
    check_shapes(s)
    return s


def check_monitor(cfg: Config, task: tasks.Task) -> None:
    """``train.early_stopping.monitor`` must name one of the task's metrics (``val/accuracy`` on a regression run
    would otherwise never improve and silently never stop)."""
    monitor = cfg.train.early_stopping.monitor
    known = [f"{split}/{name}" for split in ("val", "train") for name in task.metric_names()]
    if monitor not in known:
        from jaxdl.registry import closest

        hint = closest(monitor, known, n=1)
        raise ConfigError(f"train.early_stopping.monitor: {monitor!r} is not a metric of task {task.name!r}"
                          + (f" — did you mean {hint[0]}?" if hint else "") + f" (expected one of {', '.join(known)})")


def abstract_batch(s: Setup, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of a training batch (no arrays)."""
    return {name: jax.ShapeDtypeStruct((batch_size, *shape), dtype)
            for name, (shape, dtype) in s.dataset.train.example_spec().items()}


def example_batch(s: Setup) -> dict[str, jax.Array]:
    """A one-example batch of zeros (initialisation only reads shapes and dtypes)."""
    return {k: jnp.zeros(v.shape, v.dtype) for k, v in abstract_batch(s, 1).items()}


def check_shapes(s: Setup) -> None:
    """Trace init and one step abstractly (``jax.eval_shape``): errors surface before anything compiles."""
    batch = abstract_batch(s, s.cfg.train.batch_size)
    one = abstract_batch(s, 1)
    variables = jax.eval_shape(lambda b: s.task.init(jax.random.PRNGKey(0), b), one)
    for player, v in variables.items():
        ocfg = player_optim(s.cfg, s.task, player)
        try:
            optim.check_groups(ocfg, v["params"])
        except ConfigError as e:
            if ocfg is s.cfg.optim:
                raise
            raise ConfigError(re.sub(r"\boptim\.", "optim2.", str(e))) from None
    state = jax.eval_shape(lambda b: init_state(s.task, s.optimizers, b, 0, s.hparams), one)
    jax.eval_shape(s.train_step, state, batch, s.hparams)


def initial_state(s: Setup) -> TrainState:
    example = example_batch(s)
    return jax.jit(lambda: init_state(s.task, s.optimizers, example, s.cfg.seed, s.hparams))()
