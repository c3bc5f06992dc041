import pytest

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config
from jaxdl.errors import ConfigError
from jaxdl.experiment import choice, grid, log_uniform, parse_sweep, points, randint, random, uniform, zip_
from jaxdl.experiment.plan import build_plan, expand, swept_keys


def test_grid_is_a_product_and_records_values():
    pts = grid(**{"optim.lr": [1e-3, 1e-2], "seed": [0, 1, 2]}).expand()
    assert len(pts) == 6
    assert pts[0].overrides == {"optim.lr": 1e-3, "seed": 0} and pts[0].values == pts[0].overrides
    assert {(p.overrides["optim.lr"], p.overrides["seed"]) for p in pts} == {(a, b) for a in (1e-3, 1e-2)
                                                                             for b in (0, 1, 2)}


def test_zip_moves_in_lockstep_and_checks_lengths():
    pts = zip_(**{"optim.lr": [1e-3, 1e-2], "optim.momentum": [0.9, 0.99]}).expand()
    assert [p.overrides for p in pts] == [{"optim.lr": 1e-3, "optim.momentum": 0.9},
                                          {"optim.lr": 1e-2, "optim.momentum": 0.99}]
    with pytest.raises(ConfigError, match="equal lengths"):
        zip_(**{"optim.lr": [1, 2], "seed": [0]}).expand()


def test_random_search_is_seeded_and_in_range():
    spec = random(20, rng_seed=3, **{"optim.lr": log_uniform(1e-4, 1e-1), "model.dropout": uniform(0.0, 0.5),
                                 "optim.name": choice("adam", "sgd"), "seed": randint(0, 4)})
    a, b = spec.expand(), spec.expand()
    assert [p.overrides for p in a] == [p.overrides for p in b]
    for p in a:
        assert 1e-4 <= p.overrides["optim.lr"] <= 1e-1 and 0 <= p.overrides["model.dropout"] <= 0.5
        assert p.overrides["optim.name"] in ("adam", "sgd") and 0 <= p.overrides["seed"] <= 4
    assert len({p.overrides["optim.lr"] for p in a}) == 20
    with pytest.raises(ConfigError, match="0 < low < high"):
        log_uniform(0, 1)


def test_label_axes_and_sections():
    spec = grid(model=[{"name": "mlp", "widths": (8,)}, {"name": "lenet5"}],
                reg=[{"label": "none"}, {"label": "l2", "optim.l2": 1e-3}])
    pts = spec.expand()
    assert len(pts) == 4
    assert pts[1].overrides == {"model.name": "mlp", "model.widths": (8,), "optim.l2": 1e-3}
    assert pts[1].labels == {"model": "mlp", "reg": "l2"} and pts[1].values == {}
    with pytest.raises(ConfigError, match="'reg' is not a config key"):
        grid(reg=[1, 2]).expand()


def test_product_concat_and_points():
    spec = grid(seed=[0, 1]) * points([{"optim.lr": 0.1}, {"optim.lr": 0.2, "optim.name": "sgd"}])
    assert len(spec.expand()) == 4
    both = grid(seed=[0]) + grid(seed=[1, 2])
    assert [p.overrides["seed"] for p in both.expand()] == [0, 1, 2]
    with pytest.raises(ConfigError, match="same key twice"):
        (grid(seed=[0]) * grid(seed=[1])).expand()


def test_parse_sweep_cli_syntax():
    pts = parse_sweep("optim.lr=1e-3,3e-3 seed=0:4 model.widths=(64,32),(128,)").expand()
    assert len(pts) == 2 * 4 * 2
    assert pts[0].overrides == {"optim.lr": "1e-3", "seed": 0, "model.widths": "64,32"}
    with pytest.raises(ConfigError, match="not of the form"):
        parse_sweep("optim.lr")
    with pytest.raises(ConfigError, match="empty range"):
        parse_sweep("seed=3:1")


@pytest.mark.parametrize("text, message", [
    ("optim.lr=1e-3,,3e-3", "'optim.lr=1e-3,,3e-3': value 2 is empty"),
    ("optim.lr=1e-3,3e-3,", "'optim.lr=1e-3,3e-3,': a trailing comma"),
    ("optim.lr=,1e-3", "'optim.lr=,1e-3': value 1 is empty"),
    ("model.widths=(128,", "'model.widths=(128,': unbalanced parenthesis, '(' is never closed"),
    ("model.widths=(64,32)),(128,)", "'model.widths=(64,32)),(128,)': unbalanced ')'"),
    ("model.widths=(64,32]", "'model.widths=(64,32]': unbalanced ']'"),
    ("seed=0:", "'seed=0:': a range needs both ends"),
    ("seed=:4", "'seed=:4': a range needs both ends"),
    ("optim.lr=", "'optim.lr=': no values"),
    ("=1,2", "'=1,2': no key"),
    ("seed=0:2 seed=5", "'seed=5': seed is swept twice"),
])
def test_parse_sweep_rejects_malformed_lists_naming_the_item(text, message):
    with pytest.raises(ConfigError) as e:
        parse_sweep(text)
    assert message in str(e.value)


def base():
    return Config(name="t", model=model_config("mlp", widths=(16,)), data=DataConfig(name="digits"),
                  optim=OptimConfig(lr=1e-3), train=TrainConfig(batch_size=32, steps=5, progress=False))


def test_planner_groups_by_static_signature():
    spec = grid(**{"optim.lr": [1e-3, 1e-2], "model.dropout": [0.0, 0.3], "optim.weight_decay": [0.0, 0.1],
                   "seed": [0, 1]}) + grid(**{"model.widths": [(32,)], "seed": [0]})
    plan = build_plan(base(), spec, "t")
    sizes = sorted(len(g.runs) for g in plan.groups)
    assert sizes == [1, 16]  # dynamic numbers share a program; a different width does not
    assert all(g.bytes_per_member > 0 for g in plan.groups)
    assert len({r.run_id for r in plan.runs}) == 17
    assert swept_keys(plan) == ["model.dropout", "model.widths", "optim.lr", "optim.weight_decay", "seed"]


def test_planner_splits_groups_over_a_memory_budget():
    spec = grid(**{"seed": list(range(6))})
    one = build_plan(base(), spec, "t")
    room_for_4 = one.groups[0].memory.total(4)
    plan = build_plan(base(), spec, "t", budget=room_for_4)
    assert [len(g.runs) for g in plan.groups] == [3, 3]  # the fewest sub-groups that fit, of equal sizes


def test_planner_skips_fields_an_architecture_lacks_but_not_typos():
    spec = grid(model=[{"name": "perceptron", "output": "logits"}, {"name": "mlp"}],
                reg=[{"label": "none"}, {"label": "dropout", "model.dropout": 0.3}])
    runs, skipped = expand(base(), spec, "t")
    assert len(runs) == 3 and len(skipped) == 1 and "perceptron has no field dropout" in skipped[0][1]
    with pytest.raises(ConfigError, match="optim.lrr"):
        expand(base(), grid(**{"optim.lrr": [1.0]}), "t")
    with pytest.raises(ConfigError, match="model.widht"):
        expand(base(), grid(**{"model.widht": [1]}), "t")


def test_duplicate_points_collapse_and_run_ids_are_stable():
    spec = grid(**{"optim.lr": [1e-3, 1e-3, 2e-3]})
    runs, skipped = expand(base(), spec, "t")
    assert len(runs) == 2 and skipped[0][1] == "duplicate of an earlier point"
    again, _ = expand(base(), spec, "t")
    assert [r.run_id for r in runs] == [r.run_id for r in again]


def test_run_ids_change_with_the_jaxdl_version(monkeypatch):
    import jaxdl

    spec = grid(**{"optim.lr": [1e-3, 2e-3]})
    ids = [r.run_id for r in expand(base(), spec, "t")[0]]
    monkeypatch.setattr(jaxdl, "__version__", "99.0.0")
    other = [r.run_id for r in expand(base(), spec, "t")[0]]
    assert len(set(other)) == 2 and not set(ids) & set(other)
    assert [r.run_id for r in expand(base(), spec, "t")[0]] == other  # stable within a version
