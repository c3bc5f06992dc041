"""jaxdl: deep-learning models as pure functions, compiled training steps, and sweeps trained as populations."""

from jaxdl import config, errors, models
from jaxdl.config import Config, DataConfig, EarlyStoppingConfig, LossConfig, OptimConfig, TrainConfig

__version__ = "0.1.0"

__all__ = ["Config", "DataConfig", "EarlyStoppingConfig", "LossConfig", "OptimConfig", "TrainConfig", "config",
           "errors", "models", "__version__"]
