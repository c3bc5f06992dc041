"""Error types raised by jaxdl.

Every error a user can reach names its culprit: the model, the config key, the data set, the step — and, for shape
problems, the expected and the actual shape.
"""

from __future__ import annotations


class JaxdlError(Exception):
    """Base class of every error jaxdl raises on purpose."""


class ConfigError(JaxdlError, ValueError):
    """A config key is unknown, has the wrong type, or holds an invalid value."""


class RegistryError(JaxdlError, KeyError):
    """A name (model, dataset, loss, optimizer, schedule …) is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelInputError(JaxdlError, ValueError):
    """Inputs given to a model do not have the shape or dtype the model expects."""


class DataError(JaxdlError, ValueError):
    """A data set is missing, malformed, or inconsistent with the model/config."""


class DivergenceError(JaxdlError, FloatingPointError):
    """Training produced a non-finite loss. ``step`` is the first step whose loss was NaN/Inf."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


class CheckpointError(JaxdlError, RuntimeError):
    """No valid checkpoint could be restored, or a run directory holds a run that would be overwritten."""


class CheckpointDamagedError(CheckpointError):
    """A checkpoint step is verifiably corrupt: a checksum mismatch, a missing or garbled file, a non-finite restored
    leaf. ``step`` and ``directory`` name it; such a step may be quarantined (renamed ``damaged-<step>``)."""

    def __init__(self, message: str, step: int | None = None, directory: str | None = None):
        super().__init__(message)
        self.step = step
        self.directory = directory


class CheckpointIOError(CheckpointError):
    """A checkpoint step could not be read because of the filesystem (permission denied, I/O error …): nothing is
    known about its contents, so it is left in place and the restore stops."""

    def __init__(self, message: str, step: int | None = None, directory: str | None = None):
        super().__init__(message)
        self.step = step
        self.directory = directory


class CheckpointUnverifiedError(CheckpointError):
    """A checkpoint step has no checksum manifest although a newer step has one: it cannot be verified, so it is
    skipped (and left in place), never restored."""

    def __init__(self, message: str, step: int | None = None, directory: str | None = None):
        super().__init__(message)
        self.step = step
        self.directory = directory


class RunLogError(JaxdlError, ValueError):
    """A run's log (``metrics.jsonl``) holds a garbled record before its last line; the file and line are named."""


class PreemptedError(JaxdlError):
    """Training stopped on SIGTERM/SIGINT after checkpointing; ``jaxdl resume`` continues it exactly.
    ``step`` is the step checkpointed; ``signal`` the signal number."""

    def __init__(self, message: str, step: int | None = None, signal: int | None = None):
        super().__init__(message)
        self.step = step
        self.signal = signal
