"""Helpers shared by the sweep fault tests: a tiny digits experiment file and the environment of a driver process."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EXPERIMENT = '''
from jaxdl.config import Config, DataConfig, LossConfig, OptimConfig, TrainConfig, model_config
from jaxdl.experiment import grid


def get_config():
    return Config(
        name="{name}",
        model=model_config("mlp", widths=(16,)),
        data=DataConfig(name="digits"),
        loss=LossConfig(name="cross_entropy"),
        optim=OptimConfig(name="adam", lr=3e-3),
        train=TrainConfig(batch_size=32, steps=20, eval_every=10, checkpoint_every=10, keep_checkpoints=1,
                          driver="scan", chunk_steps=10, progress=False, plots=False),
    )


def get_sweep():
    return {sweep}
'''


def write_experiment(directory: Path, name: str = "faulty", sweep: str = "grid(seed=[0, 1])") -> Path:
    """``directory/<name>.py``: a 20-step digits MLP experiment with the given sweep expression."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(EXPERIMENT).format(name=name, sweep=sweep))
    return path


def env(cache: Path, **extra: str) -> dict[str, str]:
    """A driver's environment: CPU, its own cache directory, this checkout importable."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAXDL_CACHE_DIR": str(cache),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}
