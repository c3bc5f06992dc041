"""A fused group resumes whatever state its members are in: newest shared step, or units by step when they share
none (a driver that died between member saves leaves members at different steps)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxdl import config as C
from jaxdl.checkpoint import Checkpointer
from jaxdl.data import load
from jaxdl.train import fit, train_group


@pytest.fixture(scope="module")
def digits():
    return load(C.DataConfig(name="digits"))


def cfg(i: int) -> C.Config:
    return C.Config(name=f"g{i}", seed=i, model=C.model_config("mlp", widths=(16,)), data=C.DataConfig(name="digits"),
                    train=C.TrainConfig(batch_size=32, steps=8, eval_every=4, checkpoint_every=2, keep_checkpoints=10,
                                        chunk_steps=4, driver="host", progress=False, plots=False))


def keep_only(run_dir, steps):
    with Checkpointer(run_dir / "checkpoints", keep=10) as c:
        for s in c.steps():
            if s not in steps:
                c.delete(s)


@pytest.mark.parametrize("kept", [({2, 4, 6}, {2, 4, 6, 8}), ({6}, {8})], ids=["shared-step", "no-shared-step"])
def test_members_at_different_steps_resume_and_match_standalone(tmp_path, digits, kept):
    cfgs = [cfg(0), cfg(1)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    train_group(cfgs, dirs, fused=True, dataset=digits)
    for d, steps in zip(dirs, kept):
        keep_only(d, steps)
    resumed = train_group(cfgs, dirs, fused=True, resume=True, dataset=digits)
    for i, c in enumerate(cfgs):
        alone = fit(c, workdir=tmp_path / f"alone{i}", dataset=digits)
        assert resumed[i].summary["steps"] == 8
        for x, y in zip(jax.tree.leaves(resumed[i].state.params), jax.tree.leaves(alone.state.params)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
