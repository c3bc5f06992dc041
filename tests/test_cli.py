"""The command line and every config's smoke variant (one short run each)."""

import json
from pathlib import Path

import pytest

from jaxdl import cli
from jaxdl.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.py") if not p.name.startswith("_"))  # not __init__.py


@pytest.mark.parametrize("name", CONFIGS)
def test_config_smoke_variant_trains(name, tmp_path, capsys, load_dataset):
    cfg = load_config(ROOT / "configs" / f"{name}:smoke")
    load_dataset(cfg.data)  # skips (or fails under JAXDL_REQUIRE_DATA=1) when the data set is not installed
    code = cli.main(["train", str(ROOT / "configs" / f"{name}:smoke"), "--workdir", str(tmp_path)])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == cfg.train.steps
    metric = {"forecast": "mase", "language_model": "bpc", "vae": "nelbo", "gan": "d_loss"}.get(summary["task"],
                                                                                               "accuracy")
    metric = "loss" if summary["task"] == "diffusion" else metric  # the EMA weights' noise-prediction error
    if metric == "bpc" and "bits_per_char" in summary["test"]:
        metric = "bits_per_char"  # a subword language model's bits per character
    assert metric in summary["test"] and summary["test"][metric] >= 0.0
    if metric == "accuracy":
        assert summary["test"]["accuracy"] <= 1.0
    if summary["task"] == "seq2seq":  # token accuracy above, and the translations scored after training
        assert 0.0 <= summary["translation"]["test"]["greedy"]["bleu"] <= 100.0
    if summary["task"] == "vae":  # the importance-weighted bound and the image grids written after training
        assert summary["iw_nll"]["test"] >= 0.0
        for grid in ("vae_reconstructions.png", "vae_samples.png", "vae_interpolation.png"):
            assert (tmp_path / grid).is_file(), grid
    if "scores" in summary and "skipped" not in summary["scores"]:  # generative runs: samples scored after training
        scores = summary["scores"]
        assert scores["test"]["frechet_distance"] >= 0.0 and scores["val"]["frechet_distance"] >= 0.0
        assert scores["reference"]["frechet_real_vs_gaussian"] > scores["reference"]["frechet_real_vs_real"]
        assert sorted((tmp_path / "samples").glob("step_*.png"))  # a sample grid at each evaluation
    if summary["task"] == "gan":  # the final sample grid and the scores of the samples drawn after training
        assert (tmp_path / "gan_samples.png").is_file()
        assert summary["scores"]["samples"] == cfg.loss.score_samples
    if summary["task"] == "diffusion":  # the sampler's settings and speed, the final grid, the scored samples
        assert summary["sampling"]["seconds_per_image"] > 0 and (tmp_path / "diffusion_samples.png").is_file()
        assert summary["scores"]["samples"] == cfg.loss.score_samples
    assert (tmp_path / "curves.png").is_file()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_docstring_gives_its_command(name):
    doc = load_config.__globals__["load_module"](ROOT / "configs" / name).__doc__
    assert f"jaxdl train configs/{name}" in doc and f"configs/{name}:smoke" in doc


def test_train_eval_and_resume_commands(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "configs/digits_mlp.py:smoke", "optim.lr=0.003", "--workdir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "test" in out and "accuracy" in out
    assert json.loads((run / "config.json").read_text())["config"]["optim"]["lr"] == 0.003

    assert cli.main(["eval", str(run)]) == 0
    evaluated = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert evaluated["which"] == "best" and set(evaluated) >= {"val", "test"}
    assert cli.main(["eval", str(run), "--which", "latest", "--splits", "test"]) == 0
    latest = json.loads((run / "eval.json").read_text())
    assert latest["test"]["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-6)

    # Resuming a finished run has nothing left to do and changes nothing.
    before = {name: (run / name).read_bytes() for name in ("summary.json", "metrics.jsonl")}
    capsys.readouterr()
    assert cli.main(["resume", str(run)]) == 0
    assert f"is already complete ({summary['steps']} steps); nothing to do" in capsys.readouterr().out
    assert {name: (run / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("ending", [{"status": "completed", "steps": 20},
                                    {"status": "completed", "steps": 12, "stopped_early": True},
                                    {"status": "diverged", "steps": 7, "diverged_at": 7}])
def test_resume_of_a_finished_run_does_nothing(ending, tmp_path, capsys):
    """A finished run (by its summary.json) is left byte for byte as it is: no training, no rewriting."""
    from jaxdl.train import rundir

    cfg = load_config(ROOT / "configs" / "digits_mlp.py:smoke", ["train.steps=20"])
    rundir.write_config(tmp_path, cfg)
    (tmp_path / "summary.json").write_text(json.dumps({"name": cfg.name, **ending}, indent=2))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 10, "val/loss": 1.0}) + "\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert cli.main(["resume", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"run {tmp_path} is already complete ({ending['steps']} steps" in out and "nothing to do" in out
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_models_command_lists_parameter_counts(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "61,706" in out and "perceptron" in out and "7,850" in out


def test_errors_exit_2_with_the_culprit(tmp_path, capsys):
    assert cli.main(["train", "configs/digits_mlp.py:smoke", "optim.lrr=1", "--workdir", str(tmp_path)]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert cli.main(["train", "configs/digits_mlp.py:smoke", "train.batch_size=lots"]) == 2
    assert "train.batch_size: expected int" in capsys.readouterr().err
    assert cli.main(["resume", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert cli.main(["train", "configs/digits_mlp.py:smoke", "model.name=resnet"]) == 2
    assert "unknown model 'resnet'" in capsys.readouterr().err


def test_training_into_a_used_workdir_is_refused(tmp_path, capsys):
    assert cli.main(["train", "configs/digits_mlp.py:smoke", "--workdir", str(tmp_path)]) == 0
    assert cli.main(["train", "configs/digits_mlp.py:smoke", "--workdir", str(tmp_path)]) == 2
    assert "jaxdl resume" in capsys.readouterr().err


def test_overrides_may_follow_options(capsys):
    args = cli.parse(["train", "configs/digits_mlp.py", "optim.lr=1e-3", "--workdir", "w", "seed=3"])
    assert args.overrides == ["optim.lr=1e-3", "seed=3"] and args.workdir == "w"
    args = cli.parse(["sweep", "experiments/quickstart.py", "--dry-run", "seed=1"])
    assert args.overrides == ["seed=1"] and args.dry_run
    with pytest.raises(SystemExit):
        cli.parse(["train", "configs/digits_mlp.py", "--workdir", "w", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse(["models", "seed=1"])  # a command without overrides
    assert "unrecognized arguments: seed=1" in capsys.readouterr().err
