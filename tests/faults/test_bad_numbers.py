"""Numbers that cannot be right are rejected before anything is loaded or compiled, with a ConfigError naming the
key and the value — for ``fit`` (``setup.validate``), for overrides (``apply_overrides``) and for sweeps alike.

Before: ``optim.lr=nan`` passed validation, and ``loss.label_smoothing=2`` trained to accuracy 0 and "completed".
"""

from __future__ import annotations

import math

import pytest

from jaxdl import cli, optim
from jaxdl.config import Config, LossConfig, OptimConfig, apply_overrides, check_values, load_config
from jaxdl.errors import ConfigError
from jaxdl.train.setup import validate

BAD = [
    # (override, fragments the message must hold: the key and the value)
    ("optim.lr=nan", ["optim.lr", "nan"]),
    ("optim.lr=inf", ["optim.lr", "inf"]),
    ("optim.lr=-inf", ["optim.lr", "-inf"]),
    ("optim.lr=1e999", ["optim.lr", "inf"]),
    ("optim.lr=0", ["optim.lr", "0"]),
    ("optim.eps=0", ["optim.eps", "0"]),
    ("optim.eps=-1e-8", ["optim.eps", "-1e-08"]),
    ("optim.eps=nan", ["optim.eps", "nan"]),
    ("optim.step_size=0", ["optim.step_size", "0"]),
    ("optim.warmup_steps=-1", ["optim.warmup_steps", "-1"]),
    ("optim.momentum=1", ["optim.momentum", "1.0"]),
    ("optim.momentum=-0.1", ["optim.momentum", "-0.1"]),
    ("optim.b1=1", ["optim.b1", "1.0"]),
    ("optim.b2=1.5", ["optim.b2", "1.5"]),
    ("optim.b2=-0.5", ["optim.b2", "-0.5"]),
    ("optim.rms_decay=1", ["optim.rms_decay", "1.0"]),
    ("optim.gamma=nan", ["optim.gamma", "nan"]),
    ("optim.gamma=0", ["optim.gamma", "0"]),
    ("optim.final_lr_ratio=-1", ["optim.final_lr_ratio", "-1"]),
    ("optim.clip_norm=inf", ["optim.clip_norm", "inf"]),
    ("optim.weight_decay=nan", ["optim.weight_decay", "nan"]),
    ("optim.weight_decay=-0.1", ["optim.weight_decay", "-0.1"]),
    ("optim.initial_accumulator=-1", ["optim.initial_accumulator", "-1"]),
    ("optim.l2=inf", ["optim.l2", "inf"]),
    ("optim.l1=-1", ["optim.l1", "-1"]),
    ("loss.label_smoothing=2", ["loss.label_smoothing", "2.0"]),
    ("loss.label_smoothing=1", ["loss.label_smoothing", "1.0"]),
    ("loss.label_smoothing=-0.1", ["loss.label_smoothing", "-0.1"]),
    ("loss.label_smoothing=nan", ["loss.label_smoothing", "nan"]),
    ("loss.class_weights=1,nan", ["loss.class_weights", "nan"]),
    ("loss.class_weights=1,-1", ["loss.class_weights", "-1.0"]),
    ("loss.class_weights=0,0", ["loss.class_weights", "0.0"]),
    ("loss.pos_weight=0", ["loss.pos_weight", "0"]),
    ("loss.pos_weight=inf", ["loss.pos_weight", "inf"]),
    ("augment.flip=1.5", ["augment.flip", "1.5"]),
    ("augment.mixup=nan", ["augment.mixup", "nan"]),
    ("augment.mixup=-0.5", ["augment.mixup", "-0.5"]),  # 0 is allowed: it turns mixup off
    ("augment.cutmix=-1", ["augment.cutmix", "-1"]),
    ("augment.cutout=inf", ["augment.cutout", "inf"]),
    ("augment.jitter=2", ["augment.jitter", "2.0"]),
    ("augment.crop_scale=0", ["augment.crop_scale", "0"]),
    ("augment.crop_padding=-1", ["augment.crop_padding", "-1"]),
    ("model.dropout=nan", ["model.dropout", "nan"]),
    ("model.widths=64,99999999999", ["model.widths", "99999999999"]),
    ("seed=-1", ["seed", "-1"]),
    (f"seed={2**32}", ["seed", str(2**32)]),
    ("data.split_seed=-5", ["data.split_seed", "-5"]),
    (f"data.split_seed={2**40}", ["data.split_seed", str(2**40)]),
    (f"train.steps={2**31}", ["train.steps", str(2**31)]),
    (f"train.epochs={2**31}", ["train.epochs", str(2**31)]),
    (f"train.eval_every={2**33}", ["train.eval_every", str(2**33)]),
    ("train.early_stopping.min_delta=nan", ["train.early_stopping.min_delta", "nan"]),
    ("train.early_stopping.min_delta=-inf", ["train.early_stopping.min_delta", "-inf"]),
    ("train.early_stopping.min_delta=-0.1", ["train.early_stopping.min_delta", "-0.1"]),
    ("data.val_fraction=nan", ["data.val_fraction", "nan"]),
    ("data.test_fraction=1.5", ["data.test_fraction", "1.5"]),
    ("data.resize=100000,100000", ["data.resize", "(100000, 100000)"]),  # was a MemoryError (47 TiB) in load
]


@pytest.mark.parametrize("override,fragments", BAD, ids=[o for o, _ in BAD])
def test_bad_number_is_a_config_error_naming_key_and_value(override, fragments):
    with pytest.raises(ConfigError) as info:
        validate(apply_overrides(Config(), [override]))
    msg = str(info.value)
    assert msg.startswith(fragments[0]), msg
    assert all(f in msg for f in fragments), msg


@pytest.mark.parametrize("override,fragments", BAD[:3] + [o for o in BAD if o[0].startswith(("loss", "seed"))][:3],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_a_config_built_in_python_is_checked_by_validate(override, fragments):
    """A Config built without overrides (``fit(Config(...))``) meets the same checks in setup.validate."""
    key, _, text = override.partition("=")
    section, _, field = key.rpartition(".")
    cfg = Config()
    value = float(text) if section else int(text)
    if section:
        cfg = Config(**{section: type(getattr(cfg, section))(**{field: value})})
    else:
        cfg = Config(**{field: value})
    with pytest.raises(ConfigError, match="^" + fragments[0]):
        validate(cfg)


def test_optim_validate_alone_rejects_non_finite_numbers():
    for field in ("lr", "b1", "b2", "gamma", "momentum", "final_lr_ratio", "l1", "l2"):
        with pytest.raises(ConfigError, match=f"^optim.{field}: expected a finite number, got nan"):
            optim.validate(OptimConfig(**{field: math.nan}))
    with pytest.raises(ConfigError, match="optim.eps"):
        optim.build(OptimConfig(eps=0.0), 10)


def test_values_at_the_edges_of_the_ranges_pass():
    ok = ["optim.momentum=0.99", "optim.b2=0.9999", "optim.eps=none", "optim.eps=1e-12", "loss.label_smoothing=0",
          "loss.label_smoothing=0.999", f"seed={2**32 - 1}", "data.split_seed=0", f"train.steps={2**31 - 1}",
          "optim.warmup_steps=0", "optim.step_size=1", "augment.flip=1", "train.early_stopping.min_delta=0",
          "loss.class_weights=0,1", "loss.pos_weight=none", "optim.clip_norm=none"]
    validate(apply_overrides(Config(), ok))


def test_total_steps_beyond_int32_are_rejected_before_compiling():
    """``train.epochs`` × steps per epoch is known once the data is: ``setup`` rejects it before tracing."""
    from jaxdl.train.setup import setup

    cfg = load_config("digits_mlp:smoke", ["train.steps=none", f"train.epochs={2**31 - 1}", "train.batch_size=8"])
    with pytest.raises(ConfigError, match=r"train.steps / train.epochs: the run would take \d+ steps"):
        setup(cfg)
    with pytest.raises(ConfigError, match="int32"):
        optim.build(OptimConfig(), 2**31)


@pytest.mark.parametrize("override,message", [
    ("optim.lr=nan", "error: optim.lr: expected a finite number, got nan"),
    ("loss.label_smoothing=2", "error: loss.label_smoothing: expected a smoothing factor in [0, 1), got 2.0"),
    ("seed=-1", "error: seed: expected a seed in 0 … 2**32-1 (4294967295), got -1"),
])
def test_jaxdl_train_rejects_bad_numbers_before_training(override, message, tmp_path, capsys):
    rc = cli.main(["train", "digits_mlp:smoke", override, "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == message, err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_sweeps_reject_bad_numbers_in_any_point(tmp_path, capsys):
    from jaxdl.experiment.runner import run_sweep

    with pytest.raises(ConfigError, match="^optim.lr: expected a finite number, got nan"):
        run_sweep(Config(), {"optim.lr": [1e-3, math.nan]}, workdir=tmp_path / "a", dry_run=True, report=False)
    rc = cli.main(["sweep", str(load_config_path()), "--sweep", "loss.label_smoothing=0.1,2", "--dry-run",
                   "--workdir", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and "error: loss.label_smoothing: expected a smoothing factor in [0, 1), got 2.0" in err, err


def load_config_path():
    from jaxdl.config import CONFIG_DIR

    return CONFIG_DIR / "digits_mlp.py"


def test_check_values_is_what_apply_overrides_runs():
    with pytest.raises(ConfigError, match="loss.label_smoothing"):
        check_values(Config(loss=LossConfig(label_smoothing=5.0)))
    with pytest.raises(ConfigError, match="loss.label_smoothing"):
        apply_overrides(Config(), ["loss.label_smoothing=5"])
