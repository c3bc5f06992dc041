"""Memory planning from compiled programs: the estimate counts activations (it grows with the batch), a budget splits
a group into equal sub-groups that fit, and ``jaxdl sweep --dry-run`` shows the numbers and the split."""

from __future__ import annotations

import pytest

from jaxdl import compile_cache
from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config
from jaxdl.experiment import grid, memory
from jaxdl.experiment.memory import MemoryEstimate, as_estimate, split_sizes
from jaxdl.experiment.plan import build_plan, member_bytes
from jaxdl.train import setup


def base(batch_size: int = 32, widths=(256,)) -> Config:
    return Config(name="m", model=model_config("mlp", widths=widths), data=DataConfig(name="digits"),
                  optim=OptimConfig(lr=1e-3), train=TrainConfig(batch_size=batch_size, steps=5, progress=False))


@pytest.fixture(scope="module")
def estimates():
    """The compiled estimates of a 256-wide MLP at batch 16 and 256 (two signatures, four small compilations)."""
    return {bs: member_bytes(base(bs)) for bs in (16, 256)}


def test_the_estimate_counts_activations_and_grows_with_the_batch(estimates):
    small, large = estimates[16], estimates[256]
    assert small.source == large.source == "memory_analysis"
    assert large.per_member > small.per_member and large.one > small.one
    s16, s256 = setup(base(16)), setup(base(256))
    # the parameter-based count (state, gradients, one batch) grows by the batch alone; the compiled step also
    # holds every layer's activations — here the (B, 256) hidden layer, forward and backward
    batch_growth = memory.state_bytes(s256) - memory.state_bytes(s16)
    hidden_growth = (256 - 16) * 256 * 4
    assert large.per_member - small.per_member > batch_growth + hidden_growth
    assert large.per_member > memory.state_bytes(s256)
    # the training split the scan driver keeps on the device is counted once per group, not per member
    assert small.data == large.data == memory.nbytes(s16.dataset.train.storage()) > 0
    assert large.total(3) == large.data + large.one + 2 * large.per_member


def test_estimates_are_cached_in_the_process_and_on_disk(estimates, monkeypatch):
    with compile_cache.counting() as n:
        again = member_bytes(base(16))
    assert again == estimates[16] and n.compiled == 0
    # a new process (empty in-process cache) reads what an earlier one wrote to $JAXDL_CACHE_DIR/memory_plan.json
    monkeypatch.setattr(memory, "_ESTIMATES", {})
    monkeypatch.setattr(memory, "step_bytes", lambda s, members: 1000 * members + 1)
    first = member_bytes(base(16))
    assert (first.one, first.per_member) == (1001, 1000)
    monkeypatch.setattr(memory, "_ESTIMATES", {})
    monkeypatch.setattr(memory, "step_bytes", lambda s, members: pytest.fail("compiled despite the disk cache"))
    assert member_bytes(base(16)) == first


def test_a_budget_splits_a_group_into_equal_sub_groups_that_fit(estimates, monkeypatch):
    monkeypatch.setattr("jaxdl.experiment.plan.member_bytes", lambda cfg, model=None: estimates[16])
    est = estimates[16]
    spec = grid(seed=list(range(5)))
    whole = build_plan(base(16), spec, "m", budget=est.total(5))
    assert [len(g.runs) for g in whole.groups] == [5] and whole.groups[0].split_of is None
    plan = build_plan(base(16), spec, "m", budget=est.total(2))
    assert [len(g.runs) for g in plan.groups] == [2, 2, 1]
    base_id = whole.groups[0].id
    assert [g.id for g in plan.groups] == [f"{base_id}-{k}" for k in range(3)]
    assert all(g.split_of == base_id and g.bytes_total <= est.total(2) for g in plan.groups)
    assert [r.run_id for g in plan.groups for r in g.runs] == [r.run_id for r in whole.runs]  # order kept
    # 7 members, room for 3: three sub-groups of 3, 2 and 2 (not 3, 3, 1)
    assert split_sizes(7, 3) == [3, 2, 2] and split_sizes(6, 4) == [3, 3] and split_sizes(4, 9) == [4]
    alone = build_plan(base(16), spec, "m", budget=est.total(1) - 1)
    assert [len(g.runs) for g in alone.groups] == [1] * 5


def test_fit_and_flat_estimates():
    est = MemoryEstimate(one=100, per_member=30, data=50)
    assert [est.fit(b) for b in (0, 150, 179, 180, 240)] == [1, 1, 1, 2, 4]
    assert MemoryEstimate(one=10, per_member=0).fit(20) > 1000
    flat = as_estimate(64)  # a replacement member_bytes returning plain bytes per member
    assert flat.source == "given" and flat.total(3) == 192


def test_dry_run_shows_the_compiled_estimate_the_budget_and_the_split(estimates, write_tiny_experiment, tmp_path,
                                                                      monkeypatch, capsys):
    from jaxdl.cli import main

    exp = write_tiny_experiment(tmp_path / "experiments", "mem", two_models=False, seeds=(0, 1, 2, 3, 4), lrs=(0.01,))
    monkeypatch.setattr("jaxdl.experiment.plan.member_bytes", lambda cfg, model=None: estimates[16])
    monkeypatch.setenv("JAXDL_GROUP_MEMORY", str(estimates[16].total(2)))
    assert main(["sweep", str(exp), "--dry-run", "--workdir", str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "5 runs in 3 groups" in out
    assert "memory_analysis()" in out and "compiled for 1 and 2 members and extrapolated linearly" in out
    budget = memory.budget()[0]
    from jaxdl.experiment.plan import format_bytes

    assert f"memory budget per group: {format_bytes(budget)} (JAXDL_GROUP_MEMORY)" in out
    (line,) = [x for x in out.splitlines() if x.startswith("split: group ")]
    assert "5 members" in line and "3 sub-groups" in line
    assert f"2 of 2 ({format_bytes(estimates[16].total(2))} each)" in line
    assert f"1 of 1 ({format_bytes(estimates[16].total(1))} each)" in line
    assert format_bytes(estimates[16].per_member) in out  # the mem/member column
