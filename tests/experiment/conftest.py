"""Fixtures for the experiment-runner tests: a tiny experiment file on the digits data set and an isolated cache."""

from __future__ import annotations

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
