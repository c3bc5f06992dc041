"""jaxdl: deep-learning models as pure functions, compiled training steps, and sweeps trained as populations."""

from jaxdl import config, errors, models
from jaxdl.config import Config, DataConfig, EarlyStoppingConfig, LossConfig, OptimConfig, TrainConfig


def _register_converters() -> None:
    # Families with Hugging Face key layouts. Registered here, above both jaxdl.models and jaxdl.convert (which
    # imports jaxdl.models): a model module importing jaxdl.convert would be an import cycle.
    from jaxdl.convert import register_converter
    from jaxdl.models import bert

    for prefix in bert.CONVERTER_PREFIXES:
        register_converter(prefix, bert.convert_bert_state_dict)

    from jaxdl.models import t5

    for prefix in t5.CONVERTER_PREFIXES:
        register_converter(prefix, t5.convert_t5_state_dict)

    from jaxdl.models import gpt

    for prefix in gpt.CONVERTER_PREFIXES:
        register_converter(prefix, gpt.convert_gpt2_state_dict)


_register_converters()

__version__ = "0.1.0"

__all__ = ["Config", "DataConfig", "EarlyStoppingConfig", "LossConfig", "OptimConfig", "TrainConfig", "config",
           "errors", "models", "__version__"]
