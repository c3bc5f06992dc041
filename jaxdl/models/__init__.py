"""The model zoo: every model is a pair of pure functions (see :mod:`jaxdl.models.core`), looked up by name.

>>> model = jaxdl.models.get("mlp", widths=(256, 128), num_classes=10, input_shape=(8, 8, 1))
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
>>> logits, _ = model.apply(variables, x, train=False)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxdl.config import ModelConfig, model_config, register_model_config
from jaxdl.errors import ConfigError
from jaxdl.models import resnet as _resnet
from jaxdl.models import vgg as _vgg
from jaxdl.models.alexnet import AlexNet, AlexNetConfig, build_alexnet
from jaxdl.models.core import Model, ModelSpec, as_model, count_params, from_linen, from_nnx
from jaxdl.models.lenet import LeNet5, LeNetConfig, build_lenet
from jaxdl.models.mlp import MLP, MLPConfig, Perceptron, PerceptronConfig, build_mlp, build_perceptron
from jaxdl.models.resnet import ResNet, ResNetConfig, build_resnet
from jaxdl.models.rnn_classifier import POOLINGS, RNNClassifier, RNNClassifierConfig, build_rnn_classifier
from jaxdl.models.rnn_forecaster import RNNForecaster, RNNForecasterConfig, build_rnn_forecaster
from jaxdl.models.rnn_lm import RNNLanguageModel, RNNLMConfig, build_rnn_lm
from jaxdl.models.vgg import VGG, VGGConfig, build_vgg
from jaxdl.nn import ACTIVATIONS
from jaxdl.nn.layers import OUTPUTS
from jaxdl.registry import Registry


MODELS: Registry[ModelSpec] = Registry("model")


def register(name: str, spec: ModelSpec) -> None:
    MODELS.register(name, spec)
    register_model_config(name, spec.config_cls)


register("perceptron", ModelSpec(PerceptronConfig, build_perceptron, description="single layer of threshold units"))
register("mlp", ModelSpec(MLPConfig, build_mlp, description="multi-layer perceptron"))
register("lenet5", ModelSpec(LeNetConfig, build_lenet, description="LeNet-5 (LeCun et al. 1998)"))
register("alexnet", ModelSpec(AlexNetConfig, build_alexnet, (224, 224, 3), "AlexNet (torchvision layout)"))
for _name, _cls in _vgg.VARIANTS.items():
    register(_name, ModelSpec(_cls, build_vgg, (224, 224, 3),
                              f"VGG-{_cls.depth}{' with batch norm' if _cls.batch_norm else ''} (torchvision layout)"))
for _name, _cls in _resnet.VARIANTS.items():
    register(_name, ModelSpec(_cls, build_resnet, (32, 32, 3) if _cls.stem == "cifar" else (224, 224, 3),
                              f"ResNet-{_cls.depth}, {_cls.stem} stem (torchvision v1.5 blocks)"))
del _name, _cls
register("rnn_lm", ModelSpec(RNNLMConfig, build_rnn_lm, (32,), "LSTM/GRU language model (PyTorch layout)", "int"))
register("rnn_classifier", ModelSpec(RNNClassifierConfig, build_rnn_classifier, (28, 28),
                                     "LSTM/GRU sequence classifier; reads images row by row (PyTorch layout)"))
register("rnn_forecaster", ModelSpec(RNNForecasterConfig, build_rnn_forecaster, (24, 1),
                                     "LSTM/GRU direct multi-step forecaster (PyTorch layout)"))


def _register_efficientnet() -> None:
    from jaxdl.models import efficientnet

    for name, spec in efficientnet.specs().items():
        register(name, spec)


_register_efficientnet()


def _register_transformer_lms() -> None:
    from jaxdl.models import gpt, llama

    register("gpt", ModelSpec(gpt.GPTConfig, gpt.build_gpt, (64,), "GPT-2-style decoder (learned positions, "
                              "pre-LN, GELU, tied embeddings)", "int"))
    for name, cls in gpt.VARIANTS.items():
        register(name, ModelSpec(cls, gpt.build_gpt, (64,), f"{name}: GPT-2 small's shape", "int"))
    register("llama", ModelSpec(llama.LlamaConfig, llama.build_llama, (64,), "Llama-style decoder (RoPE, RMSNorm, "
                                "SwiGLU, grouped-query attention)", "int"))
    for name, cls in llama.VARIANTS.items():
        register(name, ModelSpec(cls, llama.build_llama, (64,), f"{name}: SmolLM2-135M's shape", "int"))


_register_transformer_lms()


def _register_bert() -> None:
    from jaxdl.models import bert

    for name, cls in bert.VARIANTS.items():
        register(name, ModelSpec(cls, bert.build_bert, (128,), f"BERT encoder, {name} shape (HF BertModel layout)",
                                 "int"))


_register_bert()


def _register_t5() -> None:
    from jaxdl.models import t5

    register("t5", ModelSpec(t5.T5Config, t5.build_t5, (16,), "T5 encoder-decoder (relative position bias, RMSNorm, "
                             "ReLU FFN, tied embeddings; HF T5 layout)", "int"))
    for name, cls in t5.VARIANTS.items():
        register(name, ModelSpec(cls, t5.build_t5, (16,), f"{name}: HF {name.replace('_', '-')}'s shape", "int"))


_register_t5()


def _register_vae() -> None:
    from jaxdl.models import vae

    register("vae", ModelSpec(vae.VAEConfig, vae.build_vae, (28, 28, 1), "variational autoencoder (MLP or "
                              "convolutional encoder/decoder; Bernoulli or Gaussian pixels)"))


_register_vae()


def _register_gan() -> None:
    from jaxdl.models import gan

    register("dcgan", ModelSpec(gan.DCGANConfig, gan.build_dcgan, (28, 28, 1), "DCGAN generator and discriminator "
                                "(optionally class-conditional, spectrally normalised)"))


_register_gan()


def _register_unet() -> None:
    from jaxdl.models import unet

    register("unet", ModelSpec(unet.UNetConfig, unet.build_unet, (28, 28, 1), "diffusion U-Net (residual blocks, "
                               "time embedding, attention at low resolution, optional class conditioning)"))


_register_unet()


def _validate(cfg: ModelConfig) -> None:
    act = getattr(cfg, "activation", None)
    if act is not None and act not in ACTIVATIONS:
        from jaxdl.registry import unknown_message

        raise ConfigError("model.activation: " + unknown_message("activation", act, ACTIVATIONS.names()))
    out = getattr(cfg, "output", None)
    if out is not None and out not in OUTPUTS:
        raise ConfigError(f"model.output: unknown output {out!r}; expected one of {', '.join(OUTPUTS)}")
    widths = getattr(cfg, "widths", None)
    if widths is not None and any(w <= 0 for w in widths):
        raise ConfigError(f"model.widths: every width must be positive, got {widths}")
    rate = getattr(cfg, "dropout", None)
    if rate is not None and not 0.0 <= rate < 1.0:
        raise ConfigError(f"model.dropout: expected a rate in [0, 1), got {rate}")
    if isinstance(cfg, (RNNLMConfig, RNNClassifierConfig, RNNForecasterConfig)):
        _validate_recurrent(cfg)


def _validate_recurrent(cfg: ModelConfig) -> None:
    if cfg.cell not in ("lstm", "gru"):
        raise ConfigError(f"model.cell: unknown recurrent cell {cfg.cell!r}; expected lstm or gru")
    for key in ("hidden_size", "num_layers"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"model.{key}: expected a positive number, got {getattr(cfg, key)}")
    if isinstance(cfg, RNNLMConfig) and cfg.embed_dim <= 0:
        raise ConfigError(f"model.embed_dim: expected a positive number, got {cfg.embed_dim}")
    if isinstance(cfg, RNNClassifierConfig):
        if cfg.pooling not in POOLINGS:
            raise ConfigError(f"model.pooling: unknown pooling {cfg.pooling!r}; expected one of {', '.join(POOLINGS)}")
        if cfg.embed_dim < 0:
            raise ConfigError(f"model.embed_dim: expected 0 (float inputs) or a positive width, got {cfg.embed_dim}")
        if cfg.embed_dim > 0 and cfg.vocab_size <= 0:
            raise ConfigError(f"model.vocab_size: embedding token ids (model.embed_dim={cfg.embed_dim}) needs the "
                              f"vocabulary size, got {cfg.vocab_size}")


REMAT = ("none", "blocks")


def _check_remat(cfg: ModelConfig, module: Any) -> None:
    """``model.remat=blocks`` needs a family that wires it: its module has a ``remat`` field (ResNet, VGG,
    EfficientNet, the Transformers, the U-Net). Families without blocks (MLP, LeNet, AlexNet, RNNs, VAE, GAN)
    refuse it rather than silently training without it."""
    remat = getattr(cfg, "remat", "none")
    if remat not in REMAT:
        raise ConfigError(f"model.remat: expected one of {', '.join(REMAT)}, got {remat!r}")
    if remat != "none" and "remat" not in getattr(type(module), "__dataclass_fields__", {}):
        raise ConfigError(f"model.remat={remat!r}: model {cfg.name!r} has no residual or transformer blocks to "
                          "rematerialise; use model.remat=none (remat is wired for ResNet, VGG, EfficientNet, GPT, "
                          "Llama, BERT, T5 and the U-Net)")


def from_config(cfg: ModelConfig, *, num_classes: int | None = None, input_shape=None,
                input_kind: str | None = None) -> Model:
    """Build the model described by ``cfg``. ``cfg.num_classes`` wins over ``num_classes`` when set; the input kind
    (``float`` or ``int`` token ids) is the family's unless given."""
    spec = MODELS.get(cfg.name)
    if input_kind is None and isinstance(cfg, RNNClassifierConfig) and cfg.embed_dim > 0:
        input_kind = "int"  # token ids through the embedding
    input_kind = input_kind or spec.input_kind
    _validate(cfg)
    n = cfg.num_classes if cfg.num_classes is not None else num_classes
    if n is None:
        raise ConfigError(f"model {cfg.name!r}: number of outputs unknown; set model.num_classes")
    if n <= 0:
        raise ConfigError(f"model.num_classes: expected a positive number, got {n}")
    module = spec.build(cfg, n)
    _check_remat(cfg, module)
    return from_linen(module, cfg.name, output=getattr(cfg, "output", "logits"), input_shape=input_shape,
                      input_kind=input_kind, config=dataclasses.replace(cfg, num_classes=n))


def get(name: str, *, input_shape=None, **fields: Any) -> Model:
    """The model registered as ``name`` with config ``fields`` (e.g. ``widths=(256,)``, ``num_classes=10``)."""
    MODELS.get(name)  # unknown names fail here with the closest names
    return from_config(model_config(name, **fields), input_shape=input_shape)


def names() -> list[str]:
    return MODELS.names()


__all__ = ["MODELS", "MLP", "LeNet5", "Model", "ModelSpec", "as_model", "Perceptron", "count_params", "from_config",
           "from_linen", "from_nnx", "get", "names", "register", "LeNetConfig", "MLPConfig", "PerceptronConfig",
           "AlexNet", "AlexNetConfig", "VGG", "VGGConfig", "ResNet", "ResNetConfig", "RNNClassifier",
           "RNNClassifierConfig", "RNNForecaster", "RNNForecasterConfig", "RNNLanguageModel", "RNNLMConfig"]
