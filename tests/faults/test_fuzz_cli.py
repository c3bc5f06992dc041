"""Property-based fuzzing of what users type: ``key=value`` overrides and ``--sweep`` strings.

Whatever the text — random keys, NaN, Inf, huge or negative numbers, empty values, unicode, brackets — the outcome is
either a valid config or a :class:`~jaxdl.errors.JaxdlError` (a ConfigError naming the problem), never another
exception type; through the CLI (``jaxdl sweep CONFIG OVERRIDES --sweep … --dry-run``) it is exit 0, or a clean
``error: …`` and exit 2.
"""

from __future__ import annotations

import math
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from jaxdl import cli, optim  # noqa: E402
from jaxdl.config import CONFIG_DIR, Config, all_keys, apply_overrides  # noqa: E402
from jaxdl.errors import JaxdlError  # noqa: E402
from jaxdl.experiment.sweep import parse_sweep  # noqa: E402
from jaxdl.train.setup import validate  # noqa: E402
from jaxdl.train.step import make_hparams  # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("JAXDL_FUZZ_EXAMPLES", 200)), deadline=None, database=None,
                derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

KEYS = all_keys(Config())
SPECIAL = ["nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity", "1e999", "-1e999", "1e308", "1e-320", "0",
           "-0", "-1", "1", str(2**31), str(2**32), str(2**63), str(10**30), "-" + str(10**30), "", " ", "none",
           "None", "null", "true", "false", "()", "[]", "(,)", "1,,2", "1,2,", "(1,2)", "[1, 2]", "((1))", "(", "]",
           "0x10", "1_000", "1e3", "٣", "½", "é", "日本", "\x00", "\t", "a=b", "=", "😀", "1:2", "0:", "mlp",
           "lenet5", "adam", "sgd", "cosine", "step", "resnet18", "digits", "cifar10"]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=-3, max_value=20).map(str),
)
texts = st.text(max_size=12)
values = st.one_of(st.sampled_from(SPECIAL), numbers, texts,
                   st.lists(st.one_of(numbers, st.sampled_from(SPECIAL)), min_size=1, max_size=4).map(",".join))
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS), st.sampled_from(KEYS),
                 st.sampled_from(["model", "optim", "train.early_stopping", "optim.learning_rate", "lr", "wd",
                                  "model.name", "optimizer.lr", "seed.x", "optim.lr.x", "", ".", "..", "optim."]),
                 texts)
overrides = st.one_of(st.builds(lambda k, v: f"{k}={v}", keys, values), texts, st.sampled_from(SPECIAL))


def check_config(cfg: Config) -> None:
    """What a run does with a config before loading data: validate, then the numbers that enter the step."""
    validate(cfg)
    hp = make_hparams(cfg)
    assert all(math.isfinite(float(v)) for v in hp.values()), hp
    optim.build(cfg.optim, 1000)


@FUZZ
@given(st.lists(overrides, max_size=4))
def test_random_overrides_give_a_config_or_a_jaxdl_error(items):
    try:
        cfg = apply_overrides(Config(), items)
        check_config(cfg)
    except JaxdlError:
        pass


sweep_values = st.one_of(values, st.builds(lambda a, b: f"{a}:{b}", numbers, numbers),
                         st.lists(values, min_size=1, max_size=3).map(lambda vs: "(" + ",".join(vs) + ")"))
sweep_items = st.one_of(st.builds(lambda k, vs: f"{k}={','.join(vs)}", keys, st.lists(sweep_values, min_size=1,
                                                                                      max_size=3)),
                        texts, st.sampled_from(SPECIAL))
sweep_texts = st.one_of(st.lists(sweep_items, max_size=3).map(" ".join), texts)


@FUZZ
@given(sweep_texts)
def test_random_sweep_strings_give_points_or_a_jaxdl_error(text):
    try:
        grid = parse_sweep(text)
        points = grid.expand()
        for p in points[:4]:
            check_config(apply_overrides(Config(), p.overrides))
    except JaxdlError:
        pass


@pytest.fixture
def cheap_plan(monkeypatch):
    """The sweep dry run without its memory estimate (which loads the data and traces a step, ~1 s a point): what
    it would validate first is still validated."""
    from jaxdl.experiment import plan

    def member_bytes(cfg, model=None):
        check_config(cfg)
        return 1 << 20

    monkeypatch.setattr(plan, "member_bytes", member_bytes)


@FUZZ
@given(st.lists(overrides, max_size=3), sweep_texts)
def test_cli_sweep_dry_run_is_exit_0_or_a_clean_error(cheap_plan, tmp_path_factory, capsys, items, text):
    workdir = tmp_path_factory.mktemp("sweep")
    argv = ["sweep", str(CONFIG_DIR / "digits_mlp.py"), *items, "--sweep", text, "--dry-run", "--workdir",
            str(workdir)]
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse: an override that looks like an option
        err = capsys.readouterr().err
        assert e.code == 2 and "error:" in err, (argv, err)
        return
    err = capsys.readouterr().err
    assert rc in (0, 2), (argv, rc, err)
    if rc == 2:
        assert err.startswith("error: ") and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize("items,sweep", [
    (["optim.lr=nan"], "seed=0:2"),
    (["optim.lr=1e-3"], "optim.lr=1e-3,inf"),
    ([], "loss.label_smoothing=0.1,2"),
    (["seed=-1"], "seed=0,1"),
    ([], f"seed={2**32},1"),
    ([], "optim.lr=(1,2)"),
    ([], "train.steps=0:"),
    (["model.widths=1e400"], "seed=0"),
    (["optim.eps=1e-320"], "seed=0"),
    (["optim.lr=1e300"], "seed=0"),
    ([], "optim.momentum=1,0.9"),
    ([], "=1"),
])
def test_known_bad_inputs_through_the_cli(items, sweep, cheap_plan, tmp_path, capsys):
    rc = cli.main(["sweep", str(CONFIG_DIR / "digits_mlp.py"), *items, "--sweep", sweep, "--dry-run",
                   "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: "), err
