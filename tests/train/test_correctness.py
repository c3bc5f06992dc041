"""Silent-result bugs, each with the fault that exposed it: every dynamic number reaches every member, resuming a
group keeps members' checkpoints, non-finite gradients freeze a run, the recorded driver is reused, caches are
atomic and versioned, evaluation aggregates true sums."""

from __future__ import annotations

import json
import multiprocessing as mp

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import config as C
from jaxdl import losses, optim
from jaxdl.checkpoint import Checkpointer
from jaxdl.data import load
from jaxdl.errors import DivergenceError
from jaxdl.train import dynamic_keys, fit, train_group


@pytest.fixture(scope="module")
def digits():
    return load(C.DataConfig(name="digits"))


def cfg_of(i: int = 0, **overrides) -> C.Config:
    cfg = C.Config(name=f"m{i}", model=C.model_config("mlp", widths=(16,)), data=C.DataConfig(name="digits"),
                   optim=C.OptimConfig(name="adam", lr=3e-3),
                   train=C.TrainConfig(batch_size=32, steps=4, eval_every=2, chunk_steps=4, progress=False,
                                       plots=False, driver="host", checkpoints=False))
    return C.apply_overrides(cfg, overrides)


def params_of(result):
    return [np.asarray(x) for x in jax.tree.leaves(result.state.params)]


# Structures (static settings shared by a group) and, for each dynamic key, a value away from its default.
STRUCTURES = {
    "adam": ({"optim.clip_norm": 1.0},
             {"optim.lr": 1e-2, "optim.b1": 0.5, "optim.b2": 0.9, "optim.eps": 1e-2, "optim.l1": 1e-2,
              "optim.l2": 1e-2, "optim.weight_decay": 0.1, "optim.clip_norm": 0.01, "model.dropout": 0.3,
              "loss.label_smoothing": 0.2, "seed": 1}),
    "augment": ({"augment.ops": ("flip", "cutout", "jitter", "mixup", "resized_crop", "cutmix")},
                {"augment.flip": 0.9, "augment.cutout": 3.0, "augment.crop_scale": 0.5, "augment.jitter": 0.8,
                 "augment.mixup": 0.7, "augment.cutmix": 0.4}),
    "sgd": ({"optim.name": "sgd", "optim.lr": 0.1}, {"optim.momentum": 0.9}),
    "rmsprop": ({"optim.name": "rmsprop"}, {"optim.rms_decay": 0.5}),
    "adagrad": ({"optim.name": "adagrad", "optim.lr": 0.1}, {"optim.initial_accumulator": 0.5}),
    "bce": ({"loss.name": "bce"}, {"loss.pos_weight": 5.0}),
}

_STANDALONE: dict[str, object] = {}  # member name -> its standalone result, shared by the fused and one-by-one cases


def standalone(cfg, root, dataset):
    """Member ``cfg`` trained alone (its own setup and compilation), once per test session and worker."""
    key = json.dumps(C.to_dict(cfg), sort_keys=True, default=str)
    if key not in _STANDALONE:
        _STANDALONE[key] = train_group([cfg], [root / f"alone-{cfg.name}"], dataset=dataset)[0]
    return _STANDALONE[key]


# Dynamic keys that change nothing on digits classification; the same check (a fused member off the default gets
# its standalone step) runs with the task that reads them.
COVERED_BY_TASK_TESTS = {"loss.mask_rate": "tests/tasks/test_masked_lm.py", "loss.kl_weight": "tests/tasks/test_vae.py",
                         "loss.gp_weight": "tests/tasks/test_gan.py",
                         **{f"loss.{k}": "tests/tasks/test_diffusion.py"
                            for k in ("label_dropout", "ema_decay", "guidance_scale")},
                         # the second player's numbers: members with different optim2 numbers in one fused group
                         **{f"optim2.{k}": "tests/tasks/test_two_player.py" for k in optim.DYNAMIC_FIELDS}}


def test_every_dynamic_key_is_covered():
    covered = {k for _, varied in STRUCTURES.values() for k in varied} | set(COVERED_BY_TASK_TESTS)
    assert covered == set(dynamic_keys())


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_member_off_default_gets_its_standalone_result(structure, fused, tmp_path, digits):
    """A group whose member 0 sits at the default and member k does not gives member k its standalone result, for
    every dynamic key (pos_weight was dropped for the whole group when member 0 had none)."""
    base, varied = STRUCTURES[structure]
    cfgs = [cfg_of(0, **base)] + [cfg_of(i + 1, **{**base, k: v}) for i, (k, v) in enumerate(varied.items())]
    group = train_group(cfgs, [tmp_path / f"g{i}" for i in range(len(cfgs))], fused=fused, dataset=digits)
    first = params_of(group[0])
    for c, r in zip(cfgs[1:], group[1:]):
        alone = standalone(c, tmp_path, digits)
        mine = params_of(r)
        assert any(not np.array_equal(a, b) for a, b in zip(mine, first)), f"{c.name}: value had no effect"
        for a, b in zip(mine, params_of(alone)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"member {c.name} ({structure})")
        np.testing.assert_allclose(r.summary["test"]["loss"], alone.summary["test"]["loss"], rtol=1e-5)


def test_pos_weight_reaches_member_one(tmp_path, digits):
    """The reported case: member 0 without pos_weight, member 1 with pos_weight=5."""
    cfgs = [cfg_of(0, **{"loss.name": "bce"}), cfg_of(1, **{"loss.name": "bce", "loss.pos_weight": 5.0})]
    group = train_group(cfgs, [tmp_path / "a", tmp_path / "b"], dataset=digits)
    alone = fit(cfgs[1], workdir=tmp_path / "c", dataset=digits)
    without = fit(dataclasses_replace_pos(cfgs[1]), workdir=tmp_path / "d", dataset=digits)
    assert group[1].summary["test"]["loss"] == pytest.approx(alone.summary["test"]["loss"], rel=1e-6)
    assert group[1].summary["test"]["loss"] != pytest.approx(without.summary["test"]["loss"], rel=1e-3)


def dataclasses_replace_pos(cfg):
    return C.apply_overrides(cfg, {"loss.pos_weight": None})


def test_resume_keeps_checkpoints_of_members_when_one_has_none(tmp_path, digits):
    """A fused group rerun after a member was added: the old members resume, the new one starts fresh."""
    over = {"train.steps": 8, "train.checkpoints": True, "train.checkpoint_every": 2, "train.keep_checkpoints": 4}
    cfgs = [cfg_of(i, seed=i, **over) for i in range(3)]
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    train_group(cfgs[:2], dirs[:2], fused=True, dataset=digits)
    for d in dirs[:2]:
        with Checkpointer(d / "checkpoints") as c:
            for step in (6, 8):
                c.delete(step)
            assert c.steps() == [2, 4]
    resumed = train_group(cfgs, dirs, fused=True, resume=True, dataset=digits)
    for i, d in enumerate(dirs):
        meta = json.loads((d / "config.json").read_text())
        assert meta["resumed_from"] == (4 if i < 2 else None)
        with Checkpointer(d / "checkpoints") as c:
            assert c.steps()[-1] == 8
    for i, c in enumerate(cfgs):
        alone = fit(c, workdir=tmp_path / f"alone{i}", dataset=digits)
        for a, b in zip(params_of(resumed[i]), params_of(alone)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class SqrtTrap(nn.Module):
    """Finite outputs whose gradient is NaN for a batch holding the marker example: ``where(True, 0, sqrt(g))``
    passes a zero cotangent into ``sqrt`` at a negative ``g``, and 0 * (0.5 / sqrt(g)) = 0 * nan."""

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.ones, ())
        h = nn.Dense(10)(x.reshape(x.shape[0], -1))
        gate = 100.0 * w - jnp.max(x[..., 0, 0, 0])  # negative only when the marker (1e3) is in the batch
        return h + jnp.where(True, 0.0, jnp.sqrt(gate))


@pytest.fixture(scope="module")
def trapped(digits):
    """Digits with a marker in the example seed 0 visits at step 3 (batch 32) — seed 1 does not reach it by step 6."""
    import dataclasses

    from jaxdl.data import Split, epoch_permutation

    x = digits.train.x.copy()
    marker = epoch_permutation(len(x), 0, 0)[2 * 32 + 5]
    assert np.flatnonzero(epoch_permutation(len(x), 1, 0) == marker)[0] >= 6 * 32
    x[marker, 0, 0, 0] = 1e3
    return dataclasses.replace(digits, train=Split(x, digits.train.y))


def trap_cfg(seed, **over):
    return cfg_of(seed, seed=seed, **{"optim.name": "sgd", "optim.lr": 0.1, "train.steps": 6, **over})


def test_nan_gradient_with_finite_loss_is_divergence(tmp_path, trapped):
    with pytest.raises(DivergenceError, match=r"gradient norm became nan at step 3"):
        fit(trap_cfg(0), model=SqrtTrap(), workdir=tmp_path / "a", dataset=trapped)


def test_one_by_one_mark_freezes_exactly_like_a_fused_member(tmp_path, trapped):
    over = {"train.checkpoints": True, "train.checkpoint_every": 1, "train.keep_checkpoints": 10}
    cfgs = [trap_cfg(1, **over), trap_cfg(0, **over)]
    fused = train_group(cfgs, [tmp_path / "f0", tmp_path / "f1"], fused=True, dataset=trapped, model=SqrtTrap(),
                        on_divergence="mark")
    alone = train_group(cfgs, [tmp_path / "a0", tmp_path / "a1"], fused=False, dataset=trapped, model=SqrtTrap(),
                        on_divergence="mark")
    for r in (fused[1], alone[1]):
        assert r.summary["status"] == "diverged" and r.summary["diverged_at"] == 3
        assert all(np.isfinite(p).all() for p in params_of(r))
        assert int(r.state.step) == 2  # frozen at its last finite state
    for a, b in zip(params_of(fused[1]), params_of(alone[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert fused[0].summary["status"] == alone[0].summary["status"] == "completed"
    for d in ("f1", "a1"):  # no checkpoint of a non-finite state
        with Checkpointer(tmp_path / d / "checkpoints") as c:
            for step in c.steps():
                state, _ = c.restore(step, jax.eval_shape(lambda: alone[1].state))
                assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_resume_uses_the_driver_recorded_in_config_json(tmp_path, digits, monkeypatch):
    from jaxdl.train import programs

    over = {"train.driver": "auto", "train.steps": 8, "train.checkpoints": True, "train.checkpoint_every": 4}
    cfg = cfg_of(0, **over)
    monkeypatch.setattr(programs, "choose_driver", lambda *a, **k: ("host", {"chosen": "host", "how": "probe"}))
    fit(cfg, workdir=tmp_path, dataset=digits)
    with Checkpointer(tmp_path / "checkpoints") as c:
        c.delete(8)
    # the probe (or its cache) would now say scan; the run continues with the driver it started with
    monkeypatch.setattr(programs, "choose_driver", lambda *a, **k: ("scan", {"chosen": "scan", "how": "probe"}))
    resumed = fit(cfg, workdir=tmp_path, dataset=digits, resume=True)
    assert resumed.summary["driver"] == "host"
    assert json.loads((tmp_path / "config.json").read_text())["driver"]["how"].startswith("recorded")


def _write_many(args):
    root, worker = args
    import os

    os.environ["JAXDL_CACHE_DIR"] = root
    from jaxdl.train import write_cache

    for j in range(25):
        write_cache("probe_test.json", f"w{worker}-{j}", {"chosen": "scan", "n": j})


def test_caches_are_written_atomically_by_concurrent_workers(tmp_path, monkeypatch):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_write_many, [(str(tmp_path), w) for w in range(4)])
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))
    from jaxdl.train import read_cache

    data = read_cache("probe_test.json")
    assert len(data) == 100  # no torn file, no lost entry
    assert not list(tmp_path.glob("*.tmp"))


def test_caches_are_keyed_by_jaxdl_version(tmp_path, monkeypatch):
    import jaxdl
    from jaxdl.train import read_cache, write_cache

    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))
    write_cache("driver_probe.json", "k", {"chosen": "scan"})
    assert read_cache("driver_probe.json")["k"]["chosen"] == "scan"
    monkeypatch.setattr(jaxdl, "__version__", "999.0")
    assert read_cache("driver_probe.json") == {}


def test_evaluation_aggregates_true_sums_with_class_weights(digits):
    """Class-weighted cross-entropy over a split: sum(w_y * nll) / sum(w_y) over all examples, not a mean of batch
    means (batches have different weight sums)."""
    from jaxdl.train import initial_state, make_evaluator, setup

    weights = tuple(float(w) for w in np.linspace(0.2, 3.0, 10))
    cfg = cfg_of(0, **{"loss.class_weights": weights, "train.eval_batch_size": 50})
    s = setup(cfg, digits)
    state = initial_state(s)
    got = make_evaluator(s)(state.params, state.model_state, digits.val, s.hparams)[0]["loss"]
    logits, _ = s.model.apply({"params": state.params, **state.model_state}, digits.val.x)
    want = float(losses.cross_entropy(logits, digits.val.y, class_weights=jnp.asarray(weights)))
    assert got == pytest.approx(want, rel=1e-5)
