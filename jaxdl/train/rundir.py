"""Run directories: ``runs/<name>/<run_id>/`` with config.json, metrics.jsonl, summary.json, curves.png, checkpoints."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

from jaxdl import config as config_lib
from jaxdl.config import Config

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"


def new_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / cfg.name
    path = base / stamp
    suffix = 1
    while path.exists():
        suffix += 1
        path = base / f"{stamp}-{suffix}"
    return path


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def _static_environment() -> tuple[tuple[str, Any], ...]:
    """What does not change within a process (looked up once: a group writes one config.json per member)."""
    versions = {}
    for pkg in ("jaxdl", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    devices = jax.devices()
    return (("git_commit", git_commit()), ("versions", versions), ("python", sys.version.split()[0]),
            ("device", {"platform": devices[0].platform, "kind": devices[0].device_kind, "count": len(devices)}),
            ("host", os.uname().nodename))


def environment() -> dict[str, Any]:
    return {**dict(_static_environment()), "command": " ".join(sys.argv),
            "created": _dt.datetime.now().isoformat(timespec="seconds")}


def write_config(run_dir: Path, cfg: Config, **extra: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save_json(cfg, run_dir / CONFIG_FILE, **environment(), **extra)


def read_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        from jaxdl.errors import ConfigError

        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return config_lib.load_json(path)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class MetricsLog:
    """Append-only JSON-lines log of evaluation records ``{"step":…, "epoch":…, "train/loss":…, …}``."""

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop records written after ``step`` (they will be written again by a resumed run)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(_clean(record)) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    (run_dir / SUMMARY_FILE).write_text(json.dumps(_clean(summary), indent=2))


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Learning curves: train vs val loss and accuracy against the step. Returns the PNG path."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}/{metric}"
            ys = [r.get(key) for r in records]
            if any(isinstance(y, (int, float)) for y in ys):
                ax.plot(steps, [y if isinstance(y, (int, float)) else float("nan") for y in ys], style, marker="o",
                        markersize=3, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_tensorboard(run_dir: Path, records: list[dict[str, Any]]) -> Path | None:
    """TensorBoard event files (``run_dir/tb``) from the evaluation records, when tensorboardX is installed
    (``pip install 'jaxdl[tensorboard]'``), so ``tensorboard --logdir SWEEP_DIR`` shows every run."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    out = run_dir / "tb"
    if out.exists():  # rewritten whole: a resumed run must not repeat steps
        import shutil

        shutil.rmtree(out)
    writer = SummaryWriter(str(out))
    try:
        for r in records:
            for key, value in r.items():
                if key not in ("step", "epoch", "time") and isinstance(value, (int, float)) and math.isfinite(value):
                    writer.add_scalar(key, value, r["step"])
    finally:
        writer.close()
    return out
