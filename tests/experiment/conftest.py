"""Fixtures for the experiment-runner tests: a tiny experiment file on the digits data set and an isolated cache."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest

TEMPLATE = '''
from jaxdl.config import Config, DataConfig, LossConfig, OptimConfig, TrainConfig, model_config
from jaxdl.experiment import grid


def get_config():
    return Config(
        name="tiny",
        model=model_config("mlp", widths=(16,)),
        data=DataConfig(name="digits"),
        loss=LossConfig(name="cross_entropy"),
        optim=OptimConfig(name="adam", lr=3e-3),
        train=TrainConfig(batch_size=32, steps={steps}, eval_every=10, checkpoint_every=10, keep_checkpoints=1,
                          driver="scan", chunk_steps=10, progress=False),
    )


def get_sweep():
    return grid(
        {models}
        **{{"optim.lr": {lrs}}},
        seed={seeds},
    )
'''

TWO_MODELS = 'model=[{"name": "mlp", "widths": (16,)}, {"name": "perceptron", "output": "logits"}],'


def write_experiment(directory: Path, name: str = "tiny", *, steps: int = 30, lrs=(3e-3, 1e-2), seeds=(0, 1),
                     two_models: bool = True) -> Path:
    """Write ``directory/name.py``: an experiment of ``len(lrs) * len(seeds)`` (× 2 architectures) runs."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory) / f"{name}.py"
    path.write_text(textwrap.dedent(TEMPLATE).format(steps=steps, lrs=list(lrs), seeds=list(seeds),
                                                     models=TWO_MODELS if two_models else ""))
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Probe caches (fuse/driver decisions) live in the test's own directory."""
    cache = tmp_path / "jaxdl-cache"
    cache.mkdir()
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def tiny_experiment(tmp_path):
    """Path of a tiny experiment: MLP(16) and perceptron × lr ∈ {3e-3, 1e-2} × seed ∈ {0, 1} (8 runs, 2 groups),
    30 steps of batch 32 on digits, evaluation and checkpoints every 10 steps."""
    return write_experiment(tmp_path / "experiments")


@pytest.fixture(scope="session")
def write_tiny_experiment():
    """``write_tiny_experiment(directory, name="tiny", steps=…, lrs=…, seeds=…, two_models=…)`` -> path of a custom
    tiny experiment (usable from module-scoped fixtures). Same file name and settings give the same run ids."""
    return write_experiment


# --------------------------------------------------------------------------------------------------------------------
# Fake sweeps: a sweep database with hand-written summaries and metric records (no training) for report tests
# --------------------------------------------------------------------------------------------------------------------

LRS = (1e-4, 1e-3, 1e-2, 1e-1)
WEIGHT_DECAYS = (0.0, 0.1)
SEEDS = (0, 1, 2)
# one label choice per weight decay, long enough that a table row is wider than any terminal
REG_LABELS = {0.0: "none-of-the-regularisers-at-all", 0.1: "decoupled-weight-decay-of-one-tenth-per-step"}


def _fake_values(kind: str, lr: float, wd: float, seed: int) -> dict:
    """Summary metrics of one fake run. Validation and test disagree on purpose: ranking by test (or by the last
    evaluation during training, ``final``) gives a different order than ranking by ``summary["val"]``."""
    i = LRS.index(lr)
    jitter = 0.01 * seed + 0.001 * i + 0.004 * (wd > 0)  # no two runs tie
    if kind == "classification":
        val = {"accuracy": 0.6 + 0.1 * i + 0.02 * (wd > 0) + jitter, "loss": 1.2 - 0.2 * i - jitter}
        test = {"accuracy": 0.95 - 0.1 * i - jitter, "loss": 0.4 + 0.2 * i + jitter}
        final = {"val/accuracy": 0.95 - 0.1 * i, "val/loss": 0.5 + 0.1 * i}
        monitor = None
    elif kind == "regression":
        rmse = 2.0 - 0.4 * i + jitter + 0.05 * (wd > 0)
        val = {"loss": rmse ** 2, "mse": rmse ** 2, "mae": 0.8 * rmse, "rmse": rmse}
        t = 0.5 + 0.4 * i + jitter
        test = {"loss": t ** 2, "mse": t ** 2, "mae": 0.8 * t, "rmse": t}
        final = {"val/loss": 1.0, "val/rmse": 1.0 + 0.1 * i}
        monitor = {"name": "val/rmse", "mode": "min"}
    else:  # language model
        ppl = 30.0 - 5 * i + jitter
        val = {"loss": math.log(ppl), "perplexity": ppl, "bits_per_char": math.log2(ppl) / 4}
        test = {"loss": math.log(ppl + 1), "perplexity": ppl + 1, "bits_per_char": math.log2(ppl + 1) / 4}
        final = {"val/loss": math.log(ppl)}
        monitor = None
    return {"val": val, "test": test, "final": final, "monitor": monitor}


def make_fake_sweep(directory: Path, kind: str = "classification", *, lrs=LRS, weight_decays=WEIGHT_DECAYS,
                    seeds=SEEDS, models=("mlp",), failed: int = 0) -> Path:
    """A sweep directory (``sweep.db`` and ``runs/<id>/summary.json``) of ``kind`` classification | regression |
    language_model runs: ``models`` × ``lrs`` × ``weight_decays`` (a label axis ``reg`` too) × ``seeds``, one group
    per model, three evaluations each (steps 10, 20, 30); the last ``failed`` runs failed."""
    from jaxdl.experiment.store import SweepStore

    directory = Path(directory)
    store = SweepStore(directory / "sweep.db")
    loss = {"classification": "cross_entropy", "regression": "mse", "language_model": "cross_entropy"}[kind]
    n = 0
    points = [(m, lr, wd, s) for m in models for lr in lrs for wd in weight_decays for s in seeds]
    for model, lr, wd, seed in points:
        run_id = f"{model[:3]}{n:09d}"
        n += 1
        run_dir = directory / "runs" / run_id
        swept = {"optim.lr": lr, "optim.weight_decay": wd, "seed": seed}
        config = {"model": {"name": model}, "loss": {"name": loss}, "optim": {"lr": lr, "weight_decay": wd},
                  "seed": seed}
        store.add_group(f"g-{model}", signature=model, members=len(points) // len(models))
        store.add_run(run_id, name=f"fake-{run_id}", group_id=f"g-{model}", config=config, config_hash=run_id,
                      labels={"model": model, "reg": REG_LABELS.get(wd, str(wd))}, swept=swept,
                      run_dir=str(run_dir))
        if n > len(points) - failed:
            store.fail(run_id, "Traceback (most recent call last):\nConfigError: broken on purpose")
            continue
        v = _fake_values(kind, lr, wd, seed)
        records = [{"step": step, **{f"val/{k}": x * (1 + 0.1 * (3 - step // 10)) for k, x in v["val"].items()}}
                   for step in (10, 20, 30)]
        summary = {"name": f"fake-{run_id}", "status": "completed", "steps": 30, "epochs": 1.0,
                   "stopped_early": False, "best": {"step": 30, "val/loss": v["val"]["loss"]}, "final": v["final"],
                   "val": v["val"], "test": v["test"], "wall_time_s": 1.0 + n / 10}
        if v["monitor"]:
            summary["monitor"] = v["monitor"]
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps(summary))
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        store.finish(run_id, summary, records)
    return directory


@pytest.fixture
def fake_sweep(tmp_path):
    """``fake_sweep(kind="classification", **kw)`` -> a fake sweep directory under the test's tmp_path."""
    counter = iter(range(1000))
    return lambda kind="classification", **kw: make_fake_sweep(tmp_path / f"{kind}-{next(counter)}", kind, **kw)
