"""Training: the pure step (``step``), the loop (``loop.fit``) and run directories (``rundir``)."""

from jaxdl.train.loop import FitResult, fit, restore, setup, train_group
from jaxdl.train.step import (TrainState, init_state, make_eval_step, make_hparams, make_loss, make_train_step,
                              signature)

__all__ = ["FitResult", "TrainState", "fit", "init_state", "make_eval_step", "make_hparams", "make_loss",
           "make_train_step", "restore", "setup", "signature", "train_group"]
