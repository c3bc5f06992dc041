"""Transfer learning: pretrained variables, head replacement, freezing, per-group learning rates, unfreezing."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import optim
from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, apply_overrides, model_config
from jaxdl.errors import CheckpointError, ConfigError
from jaxdl.train import fit
from jaxdl.transfer import flatten, load_variables, merge_pretrained, save_variables


def cfg(**overrides):
    base = Config(name="tl", model=model_config("mlp", widths=(32, 16)), data=DataConfig(name="digits"),
                  optim=OptimConfig(lr=3e-3),
                  train=TrainConfig(batch_size=64, steps=20, progress=False, plots=False, driver="scan"))
    return apply_overrides(base, overrides)


def test_save_load_round_trip(tmp_path):
    v = {"params": {"a": {"kernel": np.ones((2, 3), np.float32)}}, "batch_stats": {"bn": {"mean": np.zeros(3)}}}
    path = save_variables(tmp_path / "v", v, {"source": "test"})
    back, meta = load_variables(path)
    assert meta == {"source": "test"} and flatten(back).keys() == flatten(v).keys()
    with pytest.raises(CheckpointError, match="not found"):
        load_variables(tmp_path / "nope.npz")


def test_merge_reports_loaded_missing_unexpected_mismatched_skipped():
    target = {"params": {"body": {"kernel": np.zeros((4, 4))}, "head": {"kernel": np.zeros((4, 10))},
                         "extra": {"bias": np.zeros(2)}, "skipme": {"bias": np.zeros(1)}}}
    source = {"params": {"body": {"kernel": np.ones((4, 4))}, "head": {"kernel": np.ones((4, 1000))},
                         "old": {"bias": np.ones(3)}, "skipme": {"bias": np.ones(1)}}}
    merged, report = merge_pretrained(target, source, skip=("skipme",))
    assert report.loaded == ["params/body/kernel"] and report.missing == ["params/extra/bias"]
    assert report.unexpected == ["params/old/bias"] and report.skipped == ["params/skipme/bias"]
    assert report.mismatched == [("params/head/kernel", (4, 1000), (4, 10))]
    assert merged["params"]["body"]["kernel"].sum() == 16 and merged["params"]["head"]["kernel"].sum() == 0
    assert "re-initialised" in report.summary()


def test_fine_tune_from_pretrained_with_new_head_and_frozen_body(tmp_path):
    source = fit(cfg(), workdir=tmp_path / "src")
    pre = save_variables(tmp_path / "pre.npz", {"params": source.state.params, **source.state.model_state})
    # A 12-class head (shape differs -> re-initialised), body frozen: only the head trains.
    run = fit(cfg(**{"model.num_classes": 12, "train.init_from": str(pre), "optim.freeze": ("dense",)}),
              workdir=tmp_path / "tl")
    meta = json.loads((tmp_path / "tl" / "config.json").read_text())
    assert "loaded 4" in meta["pretrained"]["report"] and "head/kernel" in meta["pretrained"]["report"]
    for layer in ("dense0", "dense1"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(run.state.params[layer][leaf], source.state.params[layer][leaf])
    assert run.state.params["head"]["kernel"].shape == (16, 12)
    # frozen parameters have no optimizer state
    adam = [s for s in jax.tree.leaves(run.state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
            if hasattr(s, "mu")]
    assert adam and all(sorted(optim.param_paths(s.mu)) == ["head/bias", "head/kernel"] for s in adam)


def test_lr_multipliers_and_gradual_unfreezing():
    params = {"body": {"kernel": jnp.ones((3, 3))}, "head": {"kernel": jnp.ones((3, 2))}}
    grads = jax.tree.map(jnp.ones_like, params)
    c = OptimConfig(name="sgd", lr=0.1, lr_multipliers=("head=10",), unfreeze=("4:body",))
    opt = optim.build(c, 10)
    hp = {k: jnp.float32(v) for k, v in optim.hparams(c).items()}
    state = opt.init(params, hp)
    early, _ = opt.update(grads, state, params, hp, jnp.int32(3))
    late, _ = opt.update(grads, state, params, hp, jnp.int32(4))
    np.testing.assert_allclose(early["head"]["kernel"], -1.0)  # lr 0.1 x 10
    np.testing.assert_allclose(early["body"]["kernel"], 0.0)  # still frozen at step 3
    np.testing.assert_allclose(late["body"]["kernel"], -0.1)  # trains from step 4


def test_group_pattern_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"optim.freeze: pattern 'encoder' matches no parameter; parameter paths "
                                          r"look like dense0/bias"):
        fit(cfg(**{"optim.freeze": ("encoder",)}), workdir=tmp_path / "a")
    with pytest.raises(ConfigError, match="every parameter is frozen"):
        fit(cfg(**{"optim.freeze": (".",)}), workdir=tmp_path / "b")
    with pytest.raises(ConfigError, match=r"optim.lr_multipliers: expected 'pattern=multiplier', got 'head'"):
        optim.parse_groups(OptimConfig(lr_multipliers=("head",)))
    with pytest.raises(ConfigError, match=r"optim.unfreeze: expected 'step:pattern', got 'x:body'"):
        optim.parse_groups(OptimConfig(unfreeze=("x:body",)))
    with pytest.raises(CheckpointError, match="no variable matched the model"):
        other = save_variables(tmp_path / "other.npz", {"params": {"conv": {"kernel": np.ones((3, 3))}}})
        fit(cfg(**{"train.init_from": str(other)}), workdir=tmp_path / "c")


def test_frozen_batch_stats_keep_running_statistics(tmp_path):
    base = {"model.batch_norm": True}
    moving = fit(cfg(**base), workdir=tmp_path / "a")
    frozen = fit(cfg(**base, **{"train.batch_stats": "frozen"}), workdir=tmp_path / "b")
    init_mean = np.zeros(32)
    assert not np.allclose(moving.state.model_state["batch_stats"]["bn0"]["mean"], init_mean)
    np.testing.assert_array_equal(frozen.state.model_state["batch_stats"]["bn0"]["mean"], init_mean)
    with pytest.raises(ConfigError, match="train.batch_stats: expected 'update' or 'frozen', got 'fixed'"):
        fit(cfg(**{"train.batch_stats": "fixed"}), workdir=tmp_path / "c")
