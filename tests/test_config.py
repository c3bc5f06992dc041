import dataclasses

import pytest

from jaxdl import config as C
from jaxdl.errors import ConfigError


def test_overrides_are_coerced_to_field_types():
    cfg = C.apply_overrides(C.Config(), ["optim.lr=3e-4", "model.widths=256,128", "train.batch_size=32",
                                         "model.batch_norm=true", "optim.clip_norm=none", "optim.eps=1e-6"])
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.model.widths == (256, 128)
    assert cfg.train.batch_size == 32
    assert cfg.model.batch_norm is True
    assert cfg.optim.clip_norm is None
    assert cfg.optim.eps == 1e-6


def test_nested_override():
    cfg = C.apply_overrides(C.Config(), ["train.early_stopping.patience=3", "train.early_stopping.enabled=yes"])
    assert cfg.train.early_stopping.patience == 3 and cfg.train.early_stopping.enabled


def test_unknown_key_names_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*did you mean 'optim.lr'"):
        C.apply_overrides(C.Config(), ["optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"'model.widht'.*'model.widths'"):
        C.apply_overrides(C.Config(), ["model.widht=3"])
    with pytest.raises(ConfigError, match=r"'trian.epochs'.*'train'"):
        C.apply_overrides(C.Config(), ["trian.epochs=3"])


def test_wrong_type_names_field_and_expected_type():
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected int, got 'big'"):
        C.apply_overrides(C.Config(), ["train.batch_size=big"])
    with pytest.raises(ConfigError, match=r"model\.widths: expected tuple\[int, \.\.\.\]"):
        C.apply_overrides(C.Config(), ["model.widths=1.5,2"])
    with pytest.raises(ConfigError, match=r"optim\.lr: expected float"):
        C.apply_overrides(C.Config(), {"optim.lr": "fast"})
    with pytest.raises(ConfigError, match=r"model\.batch_norm: expected bool"):
        C.apply_overrides(C.Config(), ["model.batch_norm=maybe"])


def test_type_errors_in_python_configs_are_caught():
    cfg = dataclasses.replace(C.Config(), optim=dataclasses.replace(C.OptimConfig(), lr="0.1"))
    with pytest.raises(ConfigError, match=r"optim\.lr: expected float, got '0.1' \(str\)"):
        C.check_types(cfg)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        C.apply_overrides(C.Config(), ["optim.lr"])


def test_section_cannot_be_set_as_value():
    with pytest.raises(ConfigError, match="optim is a section"):
        C.apply_overrides(C.Config(), ["optim=adam"])


def test_model_name_switches_family_and_keeps_num_classes():
    cfg = C.apply_overrides(C.Config(model=C.model_config("mlp", num_classes=7)),
                            ["model.activation=tanh", "model.name=lenet5"])
    assert cfg.model.name == "lenet5" and cfg.model.num_classes == 7 and cfg.model.activation == "tanh"
    with pytest.raises(ConfigError, match=r"model.name: unknown model 'lenet'.*'lenet5'"):
        C.apply_overrides(C.Config(), ["model.name=lenet"])
    with pytest.raises(ConfigError, match=r"'model.widths'"):  # lenet5 has no widths
        C.apply_overrides(C.Config(), ["model.name=lenet5", "model.widths=3"])


def test_json_round_trip(tmp_path):
    cfg = C.apply_overrides(C.Config(), ["model.name=lenet5", "optim.clip_norm=1.0", "loss.class_weights=1,2"])
    C.save_json(cfg, tmp_path / "c.json", extra="x")
    assert C.load_json(tmp_path / "c.json") == cfg


def test_load_config_variants_and_errors(tmp_path):
    cfg = C.load_config("configs/digits_mlp.py:smoke", ["optim.lr=0.01"])
    assert cfg.name.endswith("smoke") and cfg.optim.lr == 0.01
    with pytest.raises(ConfigError, match="does not exist"):
        C.load_config(tmp_path / "nope.py")
    bad = tmp_path / "bad.py"
    bad.write_text("X = 1\n")
    with pytest.raises(ConfigError, match="no get_config"):
        C.load_config(bad)


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown variant 'tiny' of config 'digits_mlp'; known: smoke"):
        C.load_config("configs/digits_mlp.py:tiny")


def test_config_variant_builds_a_preset_and_rejects_unknown_fields():
    from jaxdl.models.resnet import ResNetConfig

    cls = C.config_variant(ResNetConfig, "resnet7_test", depth=50)
    assert cls().name == "resnet7_test" and cls().depth == 50 and issubclass(cls, ResNetConfig)
    with pytest.raises(TypeError, match=r"unknown fields \['depht'\]"):
        C.config_variant(ResNetConfig, "x", depht=50)


ALIASES = [
    ("optim.learning_rate", "optim.lr"), ("optim.wd", "optim.weight_decay"),
    ("optim.weight_decay_rate", "optim.weight_decay"), ("train.bs", "train.batch_size"),
    ("train.batch", "train.batch_size"), ("train.num_epochs", "train.epochs"), ("train.n_epochs", "train.epochs"),
    ("optim.optimizer", "optim.name"), ("optim.type", "optim.name"), ("model.arch", "model.name"),
    ("model.architecture", "model.name"), ("optim.beta1", "optim.b1"), ("optim.beta2", "optim.b2"),
    ("optim.epsilon", "optim.eps"), ("loss.smoothing", "loss.label_smoothing"),
    ("model.dropout_rate", "model.dropout"), ("model.p", "model.dropout"), ("lr", "optim.lr"),
    ("random_seed", "seed"), ("train.max_steps", "train.steps"), ("train.num_steps", "train.steps"),
    ("optimizer.lr", "optim.lr"), ("optimizer.learning_rate", "optim.lr"),
]


@pytest.mark.parametrize("alias,canonical", ALIASES)
def test_common_aliases_fail_with_the_canonical_key(alias, canonical):
    """Aliases are suggested, never applied: configs keep one spelling."""
    msg = f"unknown config key '{alias}' — did you mean {canonical}?"
    with pytest.raises(ConfigError) as e:
        C.apply_overrides(C.Config(), [f"{alias}=1"])
    assert str(e.value) == msg


def test_aliases_in_python_configs_and_json_are_errors_too(tmp_path):
    with pytest.raises(ConfigError, match=r"'model\.dropout_rate' — did you mean model\.dropout\?"):
        C.model_config("mlp", dropout_rate=0.1)
    data = C.to_dict(C.Config())
    data["optim"]["learning_rate"] = data["optim"].pop("lr")
    with pytest.raises(ConfigError, match=r"'optim\.learning_rate' — did you mean optim\.lr\?"):
        C.from_dict(data)


def test_model_dropout_alias_only_for_families_with_dropout():
    # ResNet has no dropout field: no alias suggestion, the ordinary unknown-key message listing its valid keys
    with pytest.raises(ConfigError) as e:
        C.apply_overrides(C.Config(), ["model.name=resnet18", "model.dropout_rate=0.1"])
    assert "did you mean model.dropout" not in str(e.value)
    assert "unknown config key 'model.dropout_rate'" in str(e.value) and "Valid keys under model" in str(e.value)


def test_shipped_configs_load_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "digits_mlp" in C.list_configs() and "__init__" not in C.list_configs()
    assert C.load_config("digits_mlp").name == "digits_mlp"
    cfg = C.load_config("digits_mlp:smoke", ["optim.lr=0.01"])
    assert cfg.name == "digits_mlp_smoke" and cfg.train.steps == 20 and cfg.optim.lr == 0.01
    with pytest.raises(ConfigError, match=r"unknown config 'digits_mlpp'; did you mean 'digits_mlp'.*Known configs:"):
        C.load_config("digits_mlpp")
    with pytest.raises(ConfigError, match=r"unknown variant 'tiny' of config 'digits_mlp'"):
        C.load_config("digits_mlp:tiny")
    # a file in the working directory wins over a shipped config of the same name
    (tmp_path / "digits_mlp.py").write_text(
        "from jaxdl.config import Config\n\ndef get_config(name=None):\n    return Config(name='local')\n")
    assert C.load_config("digits_mlp.py").name == "local"


def test_configs_ship_in_the_package():
    """jaxdl/configs is a package found by the setuptools rule (so wheels carry it); the top-level configs/ is a
    link to it, so configs/NAME.py paths keep working."""
    from pathlib import Path

    import setuptools

    root = Path(__file__).resolve().parents[1]
    assert "jaxdl.configs" in setuptools.find_packages(where=root, include=["jaxdl*"])
    assert (root / "configs").is_symlink() and (root / "configs").resolve() == C.CONFIG_DIR
    assert sorted(p.stem for p in (root / "configs").glob("[!_]*.py")) == C.list_configs()
