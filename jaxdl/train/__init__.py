"""Training: the pure step (``step``), setup, drivers, the timing probe, evaluation, bookkeeping and the loop.

Modules, one concern each: ``step`` (TrainState, the pure train/eval steps, dynamic numbers, signatures), ``setup``
(config -> data, task, optimizers, steps), ``population`` (stacking members), ``drivers`` (scan and host),
``probe`` (timed driver choice, caches), ``programs`` (compiled pieces of a signature, evaluation), ``members``
(early stopping, checkpoints, logs per run), ``loop`` (``fit``, ``train_group``), ``rundir`` (run directories).
"""

from jaxdl.train.drivers import RUNNERS
from jaxdl.train.loop import FitResult, fit, restore, train_group
from jaxdl.train.population import member, stack_hparams, stack_members
from jaxdl.train.probe import (cache_file, choose_driver, probe_drivers, probe_key, probe_steps, race, read_cache,
                               speed_fields, time_runner, write_cache)
from jaxdl.train.programs import Programs, evaluate_splits, make_evaluator
from jaxdl.train.setup import Setup, abstract_batch, initial_state, setup, validate
from jaxdl.train.step import (TrainState, dynamic_keys, init_state, make_eval_step, make_hparams, make_train_step,
                              signature, uses_dropout)

__all__ = ["FitResult", "Programs", "RUNNERS", "Setup", "TrainState", "abstract_batch", "cache_file", "choose_driver",
           "dynamic_keys", "evaluate_splits", "fit", "init_state", "initial_state", "make_eval_step",
           "make_evaluator", "make_hparams", "make_train_step", "member", "probe_drivers", "probe_key",
           "probe_steps", "race", "read_cache", "restore", "setup", "signature", "speed_fields", "stack_hparams",
           "stack_members", "time_runner", "train_group", "uses_dropout", "validate", "write_cache"]
