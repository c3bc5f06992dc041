"""Objectives: a task owns its players, loss, RNG streams, metrics and dynamic numbers (see :mod:`.base`).

``build(cfg, dataset, model)`` makes the task named by ``cfg.task`` (``auto``: classification for labelled data,
regression for float targets, forecast for series, language_model for text). New tasks register with :func:`register` and implement
:class:`Task`; see ``docs/ARCHITECTURE.md`` for a worked example.
"""

from __future__ import annotations

from jaxdl.errors import ConfigError
from jaxdl.registry import unknown_message
from jaxdl.tasks.base import TASKS, Derived, Task, mode_for, register, stream_id
from jaxdl.tasks.classification import Classification
from jaxdl.tasks.forecasting import Forecast
from jaxdl.tasks.language_model import LanguageModel
from jaxdl.tasks.masked_lm import MaskedLM
from jaxdl.tasks.regression import Regression
from jaxdl.tasks.seq2seq import Seq2Seq  # noqa: F401  (registers seq2seq)
from jaxdl.tasks.diffusion import Diffusion  # noqa: F401  (registers diffusion)
from jaxdl.tasks.vae import VAE  # noqa: F401  (registers vae)
from jaxdl.tasks.gan import GAN  # noqa: F401  (registers gan)

__all__ = ["TASKS", "Classification", "Derived", "Forecast", "LanguageModel", "MaskedLM", "Regression", "Task", "build", "mode_for", "names", "register",
           "resolve", "stream_id"]

KIND_TASKS = {"classification": "classification", "regression": "regression", "series": "forecast",
              "text": "language_model", "seq2seq": "seq2seq"}


def names() -> list[str]:
    return sorted(TASKS)


def resolve(name: str, dataset) -> str:
    """The task name ``cfg.task`` stands for on ``dataset`` (``auto`` picks by the data set's kind)."""
    if name == "auto":
        kind = getattr(dataset, "kind", "classification")
        if kind not in KIND_TASKS:
            raise ConfigError(f"task=auto: no default task for {kind} data ({dataset.name!r}); set task= one of "
                              f"{', '.join(names())}")
        return KIND_TASKS[kind]
    if name not in TASKS:
        raise ConfigError("task: " + unknown_message("task", name, names()))
    return name


def build(cfg, dataset, model, *, dropout: bool = True) -> Task:
    """The task of ``cfg`` for ``dataset``, training ``model``."""
    return TASKS[resolve(cfg.task, dataset)].build(cfg, dataset, model, dropout=dropout)
