"""EfficientNet-B0 … B7 (Tan & Le, 2019) in torchvision's layout, and Google's EfficientNet-Lite0 … Lite4.

    stem    stem_conv 3×3/2 (no bias) → stem_bn → act
    blocks  MBConv ×N: [expand_conv 1×1 → expand_bn → act] (only when the expand ratio ≠ 1) → dw_conv k×k/s
            depthwise → dw_bn → act → [squeeze-excitation: global mean → se_reduce 1×1 (bias) → SiLU → se_expand 1×1
            (bias) → sigmoid gate] (B series only) → project_conv 1×1 → project_bn; ``+ input`` when stride 1 and
            in == out channels, the branch first passed through stochastic depth (per-example drop-path, training only,
            rate ``drop_connect · i / num_blocks`` for block i = 0 … num_blocks-1, as torchvision)
    head    head_conv 1×1 → head_bn → act → global average pool → dropout → classifier (linear)

B0 stages (expand, kernel, stride, in, out, layers): (1,3,1,32,16,1) (6,3,2,16,24,2) (6,5,2,24,40,2) (6,3,2,40,80,3)
(6,5,1,80,112,3) (6,5,2,112,192,4) (6,3,1,192,320,1). Compound scaling: channels ``_make_divisible(c·width, 8)``,
layers ``ceil(n·depth)``; the squeeze width is ``max(1, block_in // 4)``.

* **B series** (torchvision ``efficientnet_b0`` … ``b7``): SiLU; the stem (32) and the stage channels are width-scaled;
  head 4 × last block channels (1280 for B0); PyTorch symmetric padding ``(k-1)//2``; width/depth/dropout
  B0 1.0/1.0/0.2, B1 1.0/1.1/0.2, B2 1.1/1.2/0.3, B3 1.2/1.4/0.3, B4 1.4/1.8/0.4, B5 1.6/2.2/0.4, B6 1.8/2.6/0.5,
  B7 2.0/3.1/0.5. Batch norm as torchvision: eps 1e-5, momentum 0.1 (Flax 0.9) for B0-B4; B5-B7 use torchvision's
  ``BatchNorm2d(eps=1e-3, momentum=0.01)`` (Flax 0.99). Parameters at 1000 classes: B0 5,288,548; B1 7,794,184;
  B7 66,347,960.
* **Lite series** (Google's EfficientNet-Lite, as in the ``efficientnet-lite*.pth`` files converted from TensorFlow):
  ReLU6, no squeeze-excitation, stem fixed at 32 and head at 1280 channels (not width-scaled), the first and last
  stages keep 1 layer (not depth-scaled, TF's ``fix_head_stem``), batch norm eps 1e-3 / TF momentum 0.99 (Flax 0.99),
  and TensorFlow ``SAME`` padding (``padding="same"``: stride-2 convs pad one pixel less on the top/left than PyTorch's
  symmetric padding; the pretrained weights were trained that way). Width/depth/dropout Lite0 1.0/1.0/0.2,
  Lite1 1.0/1.1/0.2, Lite2 1.1/1.2/0.3, Lite3 1.2/1.4/0.3, Lite4 1.4/1.8/0.3. Lite0 at 1000 classes: 4,652,008
  parameters (16 blocks), exactly the trainable tensors of ``efficientnet-lite0-57934424.pth``.

Parameter names (``params``; batch norms also have ``batch_stats`` ``mean``/``var``): ``stem_conv``, ``stem_bn``,
``blocks_{i}`` (i = global block index, 0-based, across stages) holding ``expand_conv``/``expand_bn`` (absent when
the expand ratio is 1, i.e. every block of stage 1), ``dw_conv``/``dw_bn``, ``se_reduce``/``se_expand`` (B series
only; ``kernel`` + ``bias``), ``project_conv``/``project_bn``; then ``head_conv``, ``head_bn``, ``classifier``
(``kernel`` + ``bias``). Convs have no bias except the squeeze-excitation ones. Conv kernels are HWIO
(``weight.transpose(2, 3, 1, 0)`` of PyTorch's OIHW); depthwise convs use ``feature_group_count=C`` and kernels
``(k, k, 1, C)`` — the same transpose of PyTorch's ``(C, 1, k, k)``; ``classifier/kernel`` is ``weight.T``; BatchNorm
``weight``/``bias``/``running_mean``/``running_var`` → ``scale``/``bias`` (params) and ``mean``/``var``
(batch_stats); ``num_batches_tracked`` is dropped.

Key mapping from the Lite ``.pth`` files (lukemelas-style; see :func:`lite_state_dict_to_variables`):
``_conv_stem`` → ``stem_conv``, ``_bn0`` → ``stem_bn``, ``_blocks.{i}._expand_conv`` / ``_bn0`` / ``_depthwise_conv``
/ ``_bn1`` / ``_project_conv`` / ``_bn2`` → ``blocks_{i}/expand_conv`` / ``expand_bn`` / ``dw_conv`` / ``dw_bn`` /
``project_conv`` / ``project_bn``, ``_conv_head`` → ``head_conv``, ``_bn1`` → ``head_bn``, ``_fc`` → ``classifier``.

Key mapping from torchvision's B-series state dicts: ``features.0.0`` → ``stem_conv``, ``features.0.1`` →
``stem_bn``; block j of stage s (``features.{s}.{j}``, s = 1 … 7) is ``blocks_{i}`` with i counting blocks in order;
inside it ``block.0.0``/``block.0.1`` → ``expand_conv``/``expand_bn``, ``block.1.0``/``block.1.1`` →
``dw_conv``/``dw_bn``, ``block.2.fc1``/``block.2.fc2`` → ``se_reduce``/``se_expand``, ``block.3.0``/``block.3.1`` →
``project_conv``/``project_bn`` — in stage 1 (no expansion) the indices shift down by one (``block.0`` depthwise,
``block.1`` SE, ``block.2`` project); ``features.8.0``/``features.8.1`` → ``head_conv``/``head_bn``;
``classifier.1`` → ``classifier``.

Initialisation follows torchvision: convs Kaiming-normal (fan_out), conv biases 0, batch norm 1/0, the classifier
uniform(±1/√num_classes) with bias 0. Any input of at least 1×1 pixel works (global average pool at the end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.config import ModelConfig, config_variant
from jaxdl.errors import ConfigError, JaxdlError
from jaxdl.nn import Dropout
from jaxdl.nn import remat as _remat

if TYPE_CHECKING:
    from jaxdl.models.core import ModelSpec

# (expand ratio, kernel, stride, in channels, out channels, layers) of EfficientNet-B0
B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


class VariantSpec(NamedTuple):
    width: float
    depth: float
    dropout: float
    lite: bool
    bn_eps: float
    bn_momentum: float  # Flax convention: running = momentum·running + (1-momentum)·batch


# variant → (width, depth, dropout, lite, bn eps, flax bn momentum)
VARIANT_SPECS: dict[str, VariantSpec] = {
    "b0": VariantSpec(1.0, 1.0, 0.2, False, 1e-5, 0.9),
    "b1": VariantSpec(1.0, 1.1, 0.2, False, 1e-5, 0.9),
    "b2": VariantSpec(1.1, 1.2, 0.3, False, 1e-5, 0.9),
    "b3": VariantSpec(1.2, 1.4, 0.3, False, 1e-5, 0.9),
    "b4": VariantSpec(1.4, 1.8, 0.4, False, 1e-5, 0.9),
    "b5": VariantSpec(1.6, 2.2, 0.4, False, 1e-3, 0.99),
    "b6": VariantSpec(1.8, 2.6, 0.5, False, 1e-3, 0.99),
    "b7": VariantSpec(2.0, 3.1, 0.5, False, 1e-3, 0.99),
    "lite0": VariantSpec(1.0, 1.0, 0.2, True, 1e-3, 0.99),
    "lite1": VariantSpec(1.0, 1.1, 0.2, True, 1e-3, 0.99),
    "lite2": VariantSpec(1.1, 1.2, 0.3, True, 1e-3, 0.99),
    "lite3": VariantSpec(1.2, 1.4, 0.3, True, 1e-3, 0.99),
    "lite4": VariantSpec(1.4, 1.8, 0.3, True, 1e-3, 0.99),
}
PADDINGS = ("torch", "same")


# --------------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EfficientNetConfig(ModelConfig):
    """EfficientNet; registered as ``efficientnet_b0`` … ``efficientnet_b7`` and ``efficientnet_lite0`` …
    ``efficientnet_lite4`` (presets from ``config_variant`` set ``name``/``variant``)."""

    name: str = "efficientnet_b0"
    # b0 … b7 | lite0 … lite4
    variant: str = "b0"
    # stochastic-depth rate of the last block (block i drops its residual branch with rate drop_connect·i/num_blocks)
    drop_connect: float = 0.2
    # dropout before the classifier; None: the variant's (B0 0.2 … B7 0.5, Lite 0.2/0.2/0.3/0.3/0.3)
    dropout: float | None = None
    # torch (symmetric (k-1)//2) | same (TensorFlow SAME); None: torch for the B series, same for Lite
    padding: str | None = None


# registry name → config class (one preset per name: efficientnet_b0 … efficientnet_lite4)
VARIANTS: dict[str, type[EfficientNetConfig]] = {
    f"efficientnet_{v}": config_variant(EfficientNetConfig, f"efficientnet_{v}", variant=v) for v in VARIANT_SPECS}


# --------------------------------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------------------------------


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's channel rounding: nearest multiple of ``divisor``, never more than 10% below ``v``."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class BlockSpec(NamedTuple):
    expand: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int


def architecture(variant: str) -> tuple[int, list[BlockSpec], int]:
    """``(stem channels, blocks, head channels)`` of a variant, after width/depth scaling."""
    if variant not in VARIANT_SPECS:
        raise ConfigError(f"model.variant: unknown EfficientNet variant {variant!r}; expected one of "
                          f"{', '.join(VARIANT_SPECS)}")
    spec = VARIANT_SPECS[variant]
    blocks: list[BlockSpec] = []
    for s, (expand, kernel, stride, cin, cout, layers) in enumerate(B0_STAGES):
        cin, cout = _make_divisible(cin * spec.width), _make_divisible(cout * spec.width)
        if spec.lite and s == 0:
            cin = 32  # the stem is not width-scaled
        if spec.lite and s in (0, len(B0_STAGES) - 1):
            n = layers  # TF's fix_head_stem: first and last stages keep their depth
        else:
            n = int(math.ceil(layers * spec.depth))
        for j in range(n):
            blocks.append(BlockSpec(expand, kernel, stride if j == 0 else 1, cin if j == 0 else cout, cout))
    stem = 32 if spec.lite else blocks[0].in_channels
    head = 1280 if spec.lite else 4 * blocks[-1].out_channels
    return stem, blocks, head


_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal_(mode="fan_out")


def _classifier_init(key, shape, dtype=jnp.float32):
    r = 1.0 / math.sqrt(shape[-1])  # torchvision: uniform(-1/sqrt(out_features), 1/sqrt(out_features))
    return jax.random.uniform(key, shape, dtype, -r, r)


def _conv(features: int, kernel: int, stride: int, padding: str, name: str, groups: int = 1,
          bias: bool = False) -> nn.Conv:
    if padding == "same":
        pad: Any = "SAME"
    else:
        p = (kernel - 1) // 2
        pad = ((p, p), (p, p))
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=pad, feature_group_count=groups,
                   use_bias=bias, kernel_init=_CONV_INIT, bias_init=nn.initializers.zeros, name=name)


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Per-example stochastic depth (torchvision ``StochasticDepth(mode="row")``): each example's ``x`` is zeroed with
    probability ``rate``, the survivors scaled by ``1 / (1 - rate)``."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    if keep > 0.0:
        return jnp.where(mask, x / keep, 0.0).astype(x.dtype)
    return jnp.zeros_like(x)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: expand → depthwise → (squeeze-excitation) → project (+ drop-path residual)."""

    expand: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    drop_rate: float = 0.0
    squeeze_excite: bool = True
    act: str = "silu"
    padding: str = "torch"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        act = nn.silu if self.act == "silu" else nn.relu6

        def bn(y, name):
            return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_eps,
                                name=name)(y)

        inputs = x  # (B, H, W, in)
        hidden = _make_divisible(self.in_channels * self.expand, 8)
        if self.expand != 1:
            x = act(bn(_conv(hidden, 1, 1, self.padding, "expand_conv")(x), "expand_bn"))  # (B, H, W, hidden)
        x = act(bn(_conv(hidden, self.kernel, self.stride, self.padding, "dw_conv", groups=hidden)(x), "dw_bn"))
        if self.squeeze_excite:
            squeeze = max(1, self.in_channels // 4)
            s = jnp.mean(x, axis=(1, 2), keepdims=True)  # (B, 1, 1, hidden)
            s = nn.silu(_conv(squeeze, 1, 1, self.padding, "se_reduce", bias=True)(s))
            s = nn.sigmoid(_conv(hidden, 1, 1, self.padding, "se_expand", bias=True)(s))
            x = x * s
        x = bn(_conv(self.out_channels, 1, 1, self.padding, "project_conv")(x), "project_bn")  # (B, H', W', out)
        if self.stride == 1 and self.in_channels == self.out_channels:
            if train and self.drop_rate > 0.0:
                if not self.has_rng("dropout"):
                    raise JaxdlError(f"{'/'.join(map(str, self.path)) or 'MBConv'}: training with stochastic depth "
                                     "needs an RNG key: call model.apply(variables, x, train=True, rng=key)")
                x = drop_path(x, self.drop_rate, self.make_rng("dropout"))
            x = x + inputs
        return x


class EfficientNet(nn.Module):
    """EfficientNet-B0 … B7 / Lite0 … Lite4 (see the module docstring); ``variant`` picks the layout."""

    num_classes: int = 1000
    variant: str = "b0"
    drop_connect: float = 0.2
    dropout: float | None = None
    padding: str | None = None
    # recompute each block's activations in the backward pass (model.remat=blocks); parameter names are unchanged
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False, dropout_rate: jax.Array | float | None = None):
        spec = VARIANT_SPECS[self.variant]
        stem, blocks, head = architecture(self.variant)
        padding = self.padding or ("same" if spec.lite else "torch")
        act_name = "relu6" if spec.lite else "silu"
        act = nn.silu if act_name == "silu" else nn.relu6
        dropout = spec.dropout if self.dropout is None else self.dropout

        def bn(y, name):
            return nn.BatchNorm(use_running_average=not train, momentum=spec.bn_momentum, epsilon=spec.bn_eps,
                                name=name)(y)

        if x.ndim == 3:
            x = x[..., None]  # (B, H, W) -> (B, H, W, 1)
        x = act(bn(_conv(stem, 3, 2, padding, "stem_conv")(x), "stem_bn"))  # (B, H/2, W/2, stem)
        for i, b in enumerate(blocks):
            block = MBConv(b.expand, b.kernel, b.stride, b.in_channels, b.out_channels,
                           drop_rate=self.drop_connect * i / len(blocks), squeeze_excite=not spec.lite, act=act_name,
                           padding=padding, bn_eps=spec.bn_eps, bn_momentum=spec.bn_momentum, name=f"blocks_{i}")
            x = _remat.call(self.remat, block, x, train=train)  # (B, H/32, W/32, 320·width) after the last
        x = act(bn(_conv(head, 1, 1, padding, "head_conv")(x), "head_bn"))  # (B, H/32, W/32, head)
        x = jnp.mean(x, axis=(1, 2))  # (B, head)
        x = Dropout(dropout, name="dropout")(x, train=train, rate=dropout_rate)
        return nn.Dense(self.num_classes, kernel_init=_classifier_init, bias_init=nn.initializers.zeros,
                        name="classifier")(x)  # (B, num_classes)


def build_efficientnet(cfg: EfficientNetConfig, num_classes: int) -> nn.Module:
    architecture(cfg.variant)  # validates the variant
    if not 0.0 <= cfg.drop_connect < 1.0:
        raise ConfigError(f"model.drop_connect: expected a rate in [0, 1), got {cfg.drop_connect}")
    if cfg.padding is not None and cfg.padding not in PADDINGS:
        raise ConfigError(f"model.padding: expected one of {', '.join(PADDINGS)} (or None), got {cfg.padding!r}")
    return EfficientNet(num_classes=num_classes, variant=cfg.variant, drop_connect=cfg.drop_connect,
                        dropout=cfg.dropout, padding=cfg.padding, remat=cfg.remat == "blocks")


# --------------------------------------------------------------------------------------------------------------------
# Pretrained EfficientNet-Lite files
# --------------------------------------------------------------------------------------------------------------------

_LITE_TOP = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn",
             "_fc": "classifier"}
_LITE_BLOCK = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dw_conv", "_bn1": "dw_bn",
               "_project_conv": "project_conv", "_bn2": "project_bn", "_se_reduce": "se_reduce",
               "_se_expand": "se_expand"}
_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
              "running_var": ("batch_stats", "var")}


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def lite_state_dict_to_variables(state_dict: dict[str, np.ndarray]) -> dict:
    """Flax variables ``{"params": …, "batch_stats": …}`` of ``efficientnet_lite*`` from a lukemelas-style
    EfficientNet(-Lite) PyTorch state dict (e.g. ``efficientnet-lite0-57934424.pth``).

    Keys map as in the module docstring. 4-D conv weights OIHW → HWIO (``transpose(2, 3, 1, 0)``; depthwise
    ``(C, 1, k, k)`` → ``(k, k, 1, C)``), the linear weight is transposed, batch-norm ``weight``/``bias`` →
    ``scale``/``bias`` and ``running_mean``/``running_var`` → ``batch_stats`` ``mean``/``var``;
    ``num_batches_tracked`` is dropped. Values may be NumPy arrays or torch tensors; the result holds float32 NumPy
    arrays. An unrecognised key raises :class:`~jaxdl.errors.JaxdlError`.
    """
    variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
    for key, value in state_dict.items():
        parts = key.split(".")
        leaf = parts[-1]
        if leaf == "num_batches_tracked":
            continue
        if len(parts) == 2 and parts[0] in _LITE_TOP:
            path, torch_name = [_LITE_TOP[parts[0]]], parts[0]
        elif len(parts) == 4 and parts[0] == "_blocks" and parts[1].isdigit() and parts[2] in _LITE_BLOCK:
            path, torch_name = [f"blocks_{int(parts[1])}", _LITE_BLOCK[parts[2]]], parts[2]
        else:
            raise JaxdlError(f"EfficientNet-Lite state dict: unexpected key {key!r}")
        arr = _to_numpy(value).astype(np.float32)
        if "_bn" in torch_name:
            if leaf not in _BN_LEAVES:
                raise JaxdlError(f"EfficientNet-Lite state dict: unexpected batch-norm entry {key!r}")
            collection, name = _BN_LEAVES[leaf]
        elif leaf == "weight" and arr.ndim == 4:
            collection, name, arr = "params", "kernel", arr.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif leaf == "weight" and arr.ndim == 2:
            collection, name, arr = "params", "kernel", arr.T  # (out, in) -> (in, out)
        elif leaf == "bias":
            collection, name = "params", "bias"
        else:
            raise JaxdlError(f"EfficientNet-Lite state dict: unexpected entry {key!r} of shape {arr.shape}")
        node = variables[collection]
        for p in path:
            node = node.setdefault(p, {})
        node[name] = np.ascontiguousarray(arr)
    return variables


# --------------------------------------------------------------------------------------------------------------------
# Registration (jaxdl.models registers these)
# --------------------------------------------------------------------------------------------------------------------


def specs() -> dict[str, ModelSpec]:
    """Registry name → ModelSpec of every EfficientNet variant."""
    from jaxdl.models.core import ModelSpec

    out = {}
    for name, cls in VARIANTS.items():
        v = cls.variant
        label = f"EfficientNet-{v.capitalize()}"
        desc = (f"{label} (Google's EfficientNet-Lite: ReLU6, no SE, fixed stem/head)" if VARIANT_SPECS[v].lite
                else f"{label} (torchvision layout)")
        out[name] = ModelSpec(cls, build_efficientnet, (224, 224, 3), desc)
    return out
