"""Fused populations: each member equals its standalone run; one compilation serves every member."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdl import config as C
from jaxdl.data import load
from jaxdl.errors import ConfigError
from jaxdl.train import fit, train_group
from jaxdl.train import Programs, setup

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits():
    return load(C.DataConfig(name="digits"))


def member_cfg(i, **overrides):
    cfg = C.Config(name=f"m{i}", seed=i, model=C.model_config("mlp", widths=(32,)), data=C.DataConfig(name="digits"),
                   optim=C.OptimConfig(name="adam", lr=3e-3),
                   train=C.TrainConfig(batch_size=32, steps=30, eval_every=10, chunk_steps=10, progress=False,
                                       plots=False, driver="scan"))
    return C.apply_overrides(cfg, overrides)


VARIED = [{"optim.lr": 3e-3}, {"optim.lr": 1e-2, "optim.weight_decay": 0.05, "model.dropout": 0.3},
          {"optim.lr": 5e-4, "loss.label_smoothing": 0.1, "optim.l2": 1e-3}]


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_fused_member_equals_its_standalone_run(arch, tmp_path, digits):
    extra = {"model.name": arch, "train.driver": "host"} if arch == "lenet5" else {}
    cfgs = [member_cfg(i, **v, **extra) for i, v in enumerate(VARIED)]
    fused = train_group(cfgs, [tmp_path / f"f{i}" for i in range(3)], fused=True, dataset=digits)
    for i in (0, 1):
        alone = fit(cfgs[i], workdir=tmp_path / f"s{i}", dataset=digits)
        a, b = fused[i].summary, alone.summary
        assert a["steps"] == b["steps"] == 30 and a["fused"] and not b["fused"]
        for split in ("val", "test"):
            for k in ("loss", "accuracy"):
                np.testing.assert_allclose(a[split][k], b[split][k], rtol=1e-4)
        for k, v in b["final"].items():
            np.testing.assert_allclose(a["final"][k], v, rtol=1e-4)
        # the same artifacts as a standalone run
        for name in ("config.json", "metrics.jsonl", "summary.json"):
            assert (tmp_path / f"f{i}" / name).is_file()
        assert (tmp_path / f"f{i}" / "checkpoints").is_dir()
        la = [json.loads(l) for l in (tmp_path / f"f{i}" / "metrics.jsonl").read_text().splitlines()]
        lb = [json.loads(l) for l in (tmp_path / f"s{i}" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in la] == [r["step"] for r in lb] == [10, 20, 30]


@pytest.mark.parametrize("fused", [True, False])
def test_members_share_one_compilation(fused, tmp_path, digits):
    """Members differing in lr / weight decay / dropout / label smoothing run one compiled step program."""
    cfgs = [member_cfg(i, **v) for i, v in enumerate(VARIED)]
    s = setup(cfgs[0], digits)
    s.fused = fused
    programs = Programs(s)
    from jaxdl.train.loop import _train_unit  # noqa: PLC2701

    dirs = [tmp_path / f"r{i}" for i in range(3)]
    opts = {"resume": False, "on_divergence": "raise", "extra": {}, "title": "t", "members": 3}
    if fused:
        _train_unit(programs, cfgs, dirs, **opts)
    else:
        for c, d in zip(cfgs, dirs):
            _train_unit(programs, [c], [d], **opts)
    run = programs.runners["scan"]
    assert run.compiled._cache_size() == 1
    assert programs._init._cache_size() == 1


def test_population_starts_where_its_standalone_runs_start(digits):
    """A population's initial state is its members' standalone initial states, stacked (bit for bit), built by the
    single-run init program — one compilation for both modes."""
    from jaxdl.train import stack_hparams

    cfgs = [member_cfg(i, **v) for i, v in enumerate(VARIED)]
    single = Programs(setup(cfgs[0], digits))
    s = setup(cfgs[0], digits)
    s.fused = True
    fused = Programs(s, share=single)
    pop = fused.init([c.seed for c in cfgs], stack_hparams(cfgs))
    alone = single.init([cfgs[2].seed], setup(cfgs[2], digits).hparams)
    for a, b in zip(jax.tree.leaves(pop), jax.tree.leaves(alone)):
        assert a.shape == (3, *b.shape)
        np.testing.assert_array_equal(np.asarray(a[2]), np.asarray(b))
    assert single._init._cache_size() == 1


def test_diverged_member_is_frozen_while_the_rest_finish(tmp_path, digits):
    cfgs = [member_cfg(0), member_cfg(1, **{"optim.lr": 1e30}), member_cfg(2, **{"optim.lr": 1e-2})]
    res = train_group(cfgs, [tmp_path / f"r{i}" for i in range(3)], fused=True, dataset=digits,
                      on_divergence="mark")
    bad = res[1].summary
    assert bad["status"] == "diverged" and bad["diverged_at"] is not None and bad["diverged_at"] <= 30
    params = jax.tree.leaves(res[1].state.params)
    assert all(np.isfinite(np.asarray(p)).all() for p in params)  # frozen at its last finite state
    for r in (res[0], res[2]):
        assert r.summary["status"] == "completed" and r.summary["steps"] == 30
        assert r.summary["test"]["accuracy"] > 0.5
    # the healthy members match their standalone runs
    alone = fit(cfgs[2], workdir=tmp_path / "alone", dataset=digits)
    np.testing.assert_allclose(res[2].summary["test"]["loss"], alone.summary["test"]["loss"], rtol=1e-4)


def test_per_member_early_stopping(tmp_path, digits):
    stop = {"train.early_stopping.enabled": True, "train.early_stopping.patience": 1,
            "train.early_stopping.min_delta": 100.0}
    cfgs = [member_cfg(0), member_cfg(1, **stop), member_cfg(2)]
    res = train_group(cfgs, [tmp_path / f"r{i}" for i in range(3)], fused=True, dataset=digits)
    assert res[1].summary["stopped_early"] and res[1].summary["steps"] == 20
    assert res[1].summary["restored_best"] and res[1].summary["best"]["step"] == 10
    assert not res[0].summary["stopped_early"] and res[0].summary["steps"] == 30
    alone = fit(cfgs[1], workdir=tmp_path / "alone", dataset=digits)
    np.testing.assert_allclose(res[1].summary["test"]["loss"], alone.summary["test"]["loss"], rtol=1e-4)
    # the stopped member's updates were masked: its state stayed at step 20 while the others reached 30
    assert int(res[1].state.step) == 20 and int(res[0].state.step) == 30


def test_structure_mismatch_is_refused(tmp_path, digits):
    with pytest.raises(ConfigError, match="differ in static structure"):
        train_group([member_cfg(0), member_cfg(1, **{"model.widths": (8,)})], [tmp_path / "a", tmp_path / "b"],
                    fused=True, dataset=digits)


def _draws_random_bits(s) -> bool:
    """Whether one training step of ``s`` draws random bits (dropout masks)."""
    from jaxdl.train import abstract_batch, initial_state

    state = jax.eval_shape(lambda: initial_state(s))
    jaxpr = jax.make_jaxpr(s.train_step)(state, abstract_batch(s, s.cfg.train.batch_size), s.hparams)
    return "random_bits" in str(jaxpr)


def test_step_draws_dropout_masks_only_when_some_member_uses_dropout(digits):
    """A run or group whose dropout rates are all 0 compiles a step without masks; one member with dropout turns
    them on for the whole group (the rate stays a per-member number, so rates 0 and 0.3 still share one step)."""
    from jaxdl.train.step import uses_dropout

    plain, dropped = member_cfg(0), member_cfg(1, **{"model.dropout": 0.3})
    assert not uses_dropout([plain, plain]) and uses_dropout([plain, dropped])
    alone = setup(plain, digits)
    assert alone.dropout is False and not _draws_random_bits(alone)
    mixed = setup(plain, digits, dropout=uses_dropout([plain, dropped]))
    assert mixed.dropout is True and _draws_random_bits(mixed)


def test_train_group_rebuilds_programs_without_dropout_for_a_group_that_needs_it(tmp_path, digits):
    """Programs compiled for a dropout-free group are not reused for members with dropout (they would silently
    train without it)."""
    cfgs = [member_cfg(0), member_cfg(1, **{"model.dropout": 0.5})]
    s = setup(cfgs[0], digits)
    s.fused = True
    stale = Programs(s)
    assert stale.s.dropout is False
    fused = train_group(cfgs, [tmp_path / "a", tmp_path / "b"], fused=True, dataset=digits, programs=stale)
    assert not stale.runners  # never ran: train_group built its own programs, with dropout
    alone = fit(cfgs[1], workdir=tmp_path / "alone", dataset=digits)
    for k in ("loss", "accuracy"):
        np.testing.assert_allclose(fused[1].summary["val"][k], alone.summary["val"][k], rtol=1e-4)
