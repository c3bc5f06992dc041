"""``jaxdl bench``: every jaxdl/PyTorch pair has the same parameter count, the CLI prints and writes its table, and
unknown names or counts are errors naming the culprit."""

import json

import pytest

pytest.importorskip("torch")

from jaxdl import bench  # noqa: E402
from jaxdl.cli import main  # noqa: E402
from jaxdl.errors import ConfigError  # noqa: E402


@pytest.mark.parametrize("name", bench.MODELS)
def test_every_pair_has_equal_parameter_counts(name):
    """The PyTorch model is the same architecture: counts agree at tiny sizes (the timed sizes differ only in
    numbers the builders pass to both sides alike)."""
    pair = bench.build_pair(name, bench.TINY[name], model_only=True)
    n_jax, n_torch = bench.param_counts(pair)
    assert n_jax == n_torch > 0, (name, n_jax, n_torch)


def test_cli_runs_the_two_smallest_models_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--models", "mlp,lenet5", "--rounds", "1", "--steps", "2", "--tiny", "--json",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["results"]] == ["mlp", "lenet5"]
    cols, body = bench.rows(result)
    assert cols == bench.COLUMNS  # a CPU run: no MFU column
    assert len(body) == 2 and all(len(row) == len(cols) for row in body)
    for r in result["results"]:
        assert r["params"] == r["params_torch"]
        assert r["steps_per_s"]["jaxdl"] > 0 and r["steps_per_s"]["torch"] > 0
        assert r["ratio"] == pytest.approx(r["steps_per_s"]["jaxdl"] / r["steps_per_s"]["torch"])
        assert r["cpu_ms_per_step"]["jaxdl"] > 0 and r["cpu_ms_per_step"]["torch"] > 0
        assert len(r["raw_steps_per_s"]["jaxdl"]) == 1 and r["steps_per_round"] == 2
        c = r["compile"]
        assert c["first_step_s"] == pytest.approx(c["lower_s"] + c["compile_s"] + c["first_run_s"])
        assert r["flops_per_step"] > 0 and r["flops_per_s"] > 0
    for label in ("MLP", "LeNet-5"):
        assert label in printed
    md = bench.markdown(result)
    assert md.splitlines()[0] == "| " + " | ".join(bench.COLUMNS) + " |"


def test_unknown_model_is_an_error_naming_it(capsys):
    with pytest.raises(ConfigError, match=r"unknown model 'resnet19' \(did you mean resnet18\?\).*expected some of"):
        bench.parse_models("mlp,resnet19")
    assert main(["bench", "--models", "transformer_xl"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'transformer_xl'" in err and "lenet5" in err
    assert bench.parse_models("LeNet-5,efficientnet") == ["lenet5", "efficientnet_b0"]
    assert bench.parse_models(None) == list(bench.MODELS)


def test_rounds_and_steps_must_be_positive():
    with pytest.raises(ConfigError, match="bench --rounds: expected a positive number of rounds, got 0"):
        bench.run(["mlp"], rounds=0)
    with pytest.raises(ConfigError, match="bench --steps: expected a positive number of steps per round, got -1"):
        bench.run(["mlp"], steps=-1)
