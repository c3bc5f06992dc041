"""VGG-11/13/16/19 (Simonyan & Zisserman, 2014), with or without batch norm, in torchvision's layout.

Configurations A (11), B (13), D (16) and E (19): stacks of 3×3 convolutions (padding 1, each followed by ReLU, or by
BatchNorm then ReLU in the ``_bn`` variants) separated by 2×2/2 max-pools, then an adaptive average pool to 7×7 and the
classifier Dense 4096 → ReLU → Dropout → Dense 4096 → ReLU → Dropout → Dense num_classes.

Parameter names are torchvision's state-dict keys with ``.`` → ``_``: ``features_<i>`` where ``i`` is the layer's
index in torchvision's ``features`` Sequential (ReLUs and max-pools take indices too, so e.g. VGG-16 has convs at 0, 2,
5, 7, 10, …; with batch norm a conv at ``i`` is followed by its BatchNorm at ``i + 1``), and ``classifier_0``,
``classifier_3``, ``classifier_6`` for the dense layers (the dropouts are ``classifier_2`` and ``classifier_5``).
Conv kernels are ``weight.transpose(2, 3, 1, 0)``, dense kernels ``weight.T`` (the pooled features are flattened in
PyTorch's (C, H, W) order, so ``classifier_0`` needs no permutation); BatchNorm ``weight``/``bias`` are ``scale``/
``bias`` and ``running_mean``/``running_var`` are ``batch_stats``' ``mean``/``var``. Convolutions keep their bias even
before batch norm, as in torchvision. Initialisation follows torchvision: convs Kaiming-normal (fan_out, ReLU) with
zero bias, dense layers N(0, 0.01) with zero bias, batch norm scale 1 / bias 0.

Parameters at 1000 classes (any input size): VGG-11 132,863,336; VGG-13 133,047,848; VGG-16 138,357,544; VGG-19
143,667,240; with batch norm 132,868,840 / 133,053,736 / 138,365,992 / 143,678,248.

Input sizes: the five max-pools divide the image by 32 (rounding down), so inputs must be at least 32×32 — a 28×28
image would pool to nothing (PyTorch fails there too) and raises :class:`~jaxdl.errors.ModelInputError`. A 32×32 image
(CIFAR) ends as a 1×1×512 map that the adaptive pool replicates to 7×7, exactly as in PyTorch: the classifier then sees
49 copies of each feature. Grayscale (C=1) and any other channel count work; the first conv adapts.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax

from jaxdl.config import ModelConfig, config_variant
from jaxdl.errors import ConfigError
from jaxdl.models.alexnet import channels_last, check_min_size, flatten_chw
from jaxdl.nn import Dropout, adaptive_avg_pool

# torchvision's cfgs: numbers are conv widths, "M" a 2×2/2 max-pool.
LAYOUTS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
VGG_MIN_SIZE = 32


@dataclass(frozen=True)
class VGGConfig(ModelConfig):
    """VGG; registered as ``vgg11`` … ``vgg19`` and ``vgg11_bn`` … ``vgg19_bn`` (subclasses below set the defaults).

    ``depth`` and ``batch_norm`` must agree with the registered name (``model.name=vgg19_bn`` selects both)."""

    name: str = "vgg16"
    # 11 | 13 | 16 | 19
    depth: int = 16
    batch_norm: bool = False
    # Dropout after each of the two hidden classifier layers; the step may override it with a traced rate.
    dropout: float = 0.5


# registry name → config class (one preset per name; depth and batch norm follow from the name)
VARIANTS: dict[str, type[VGGConfig]] = {
    f"vgg{depth}{suffix}": config_variant(VGGConfig, f"vgg{depth}{suffix}", depth=depth, batch_norm=bn)
    for depth in (11, 13, 16, 19) for suffix, bn in (("", False), ("_bn", True))}


class VGG(nn.Module):
    num_outputs: int
    depth: int = 16
    batch_norm: bool = False
    dropout: float = 0.5
    # registry name, used in error messages
    model_name: str = "vgg16"
    # recompute each stage's activations (its convs and max-pool) in the backward pass (model.remat=blocks);
    # parameter names are unchanged
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, dropout_rate: jax.Array | float | None = None):
        x = channels_last(x)  # (B, H, W, C)
        check_min_size(x, VGG_MIN_SIZE, self.model_name, "its five 2×2/2 max-pools divide the size by 32")
        conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal_(fan_out, relu)

        def stage(module, x, widths: tuple[int, ...], index: int):
            """The convs of one stage, then its max-pool; ``index``: the first conv's position in torchvision's
            ``features`` Sequential. Defined on ``module`` (this VGG) so that names stay ``features_<i>``."""
            for w in widths:
                x = nn.Conv(w, (3, 3), padding=((1, 1), (1, 1)), kernel_init=conv_init, name=f"features_{index}")(x)
                if self.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                     name=f"features_{index + 1}")(x)
                x = nn.relu(x)
                index += 3 if self.batch_norm else 2
            return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")  # (B, H/2, W/2, C)

        run = nn.remat(stage, static_argnums=(2, 3)) if self.remat else stage
        index = 0
        for widths in _stages(LAYOUTS[self.depth]):
            x = run(self, x, widths, index)
            index += len(widths) * (3 if self.batch_norm else 2) + 1  # each conv (+ BN) + ReLU, then the pool
        # 224: (B, 7, 7, 512); 32: (B, 1, 1, 512)
        x = adaptive_avg_pool(x, 7)  # (B, 7, 7, 512)
        x = flatten_chw(x)  # (B, 25088), PyTorch's (C, H, W) order

        dense_init = nn.initializers.normal(0.01)
        x = nn.relu(nn.Dense(4096, kernel_init=dense_init, name="classifier_0")(x))  # (B, 4096)
        x = Dropout(self.dropout, name="classifier_2")(x, train=train, rate=dropout_rate)
        x = nn.relu(nn.Dense(4096, kernel_init=dense_init, name="classifier_3")(x))  # (B, 4096)
        x = Dropout(self.dropout, name="classifier_5")(x, train=train, rate=dropout_rate)
        return nn.Dense(self.num_outputs, kernel_init=dense_init, name="classifier_6")(x)  # (B, num_outputs)


def _stages(layout: tuple[int | str, ...]) -> list[tuple[int, ...]]:
    """The conv widths of each stage: ``(64, "M", 128, 128, "M")`` → ``[(64,), (128, 128)]``."""
    stages, current = [], []
    for v in layout:
        if v == "M":
            stages.append(tuple(current))
            current = []
        else:
            current.append(int(v))
    return stages


def build_vgg(cfg: VGGConfig, num_classes: int) -> nn.Module:
    if cfg.depth not in LAYOUTS:
        raise ConfigError(f"model.depth: VGG depth must be one of {', '.join(map(str, LAYOUTS))}, got {cfg.depth}")
    preset = VARIANTS.get(cfg.name)
    if preset is not None and (cfg.depth, cfg.batch_norm) != (preset.depth, preset.batch_norm):
        want = f"vgg{cfg.depth}" + ("_bn" if cfg.batch_norm else "")
        raise ConfigError(f"model {cfg.name!r} has depth={preset.depth}, batch_norm={preset.batch_norm}; got "
                          f"depth={cfg.depth}, batch_norm={cfg.batch_norm}. Select the variant by name instead "
                          f"(model.name={want})")
    return VGG(num_outputs=num_classes, depth=cfg.depth, batch_norm=cfg.batch_norm, dropout=cfg.dropout,
               model_name=cfg.name, remat=cfg.remat == "blocks")


__all__ = ["LAYOUTS", "VARIANTS", "VGG", "VGGConfig", "VGG_MIN_SIZE", "build_vgg"]
