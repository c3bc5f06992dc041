"""Run directories: ``runs/<name>/<run_id>/`` with config.json, metrics.jsonl, summary.json, curves.png, checkpoints."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl import config as config_lib
from jaxdl.config import Config

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
# record keys that are axes, not metrics
_NOT_SCALARS = ("step", "epoch", "time")


def ensure_dir(path: str | Path, what: str = "--workdir") -> Path:
    """``path`` as a directory jaxdl can write, created if needed; a clean ConfigError naming ``what`` and the path
    when it is a file, cannot be created or is not writable (never a raw OSError traceback)."""
    from jaxdl.errors import ConfigError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p}: exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot create it ({e.strerror or type(e).__name__})") from e
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {p}: not writable")
    return p


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
    """JSON-ready: numpy scalars become Python numbers, non-finite floats their string (``"nan"``, ``"inf"``)."""
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class RunLogWarning(UserWarning):
    """A run log's torn last line (a crash or a full disk during an append) was dropped."""


class MetricsLog:
    """Append-only JSON-lines log of evaluation records ``{"step":…, "epoch":…, "train/loss":…, "val/rmse":…, …}``.

    Records are stored as given (whatever metrics the task reports, under ``split/metric`` keys); non-finite numbers
    are written as strings (``"nan"``) and numpy scalars as Python numbers.

    Crash safety: each record is one ``write`` call of one whole line on a file opened for appending (``fsync=True``
    also syncs it to disk), so a killed process leaves at most the last line torn. ``read`` drops a torn *last* line
    with a :class:`RunLogWarning`; a garbled line before it is a :class:`~jaxdl.errors.RunLogError` naming the file
    and the line. ``truncate_after`` (on resume) rewrites the file atomically with one record per step, none after
    the restored step."""

    def __init__(self, path: Path, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync

    def truncate_after(self, step: int) -> None:
        """Drop records written after ``step`` (they will be written again by a resumed run) and repeated steps (the
        last record of a step wins), rewriting the file atomically."""
        by_step = {r.get("step", 0): r for r in self.read() if r.get("step", 0) <= step}
        kept = sorted(by_step.values(), key=lambda r: r.get("step", 0))
        _write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(_clean(record)) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:  # a torn last line (no newline) must not swallow this record
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(errors="replace").splitlines()
        numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
        records = []
        for k, (number, line) in enumerate(numbered):
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"a {type(record).__name__}, not a record")
            except ValueError as e:
                if k == len(numbered) - 1:
                    warnings.warn(f"{self.path}: dropped a torn last line {number} (a crash during an append?): "
                                  f"{line[:80]!r}", RunLogWarning, stacklevel=2)
                    break
                from jaxdl.errors import RunLogError

                raise RunLogError(f"{self.path}, line {number}: not a JSON record ({e}): {line[:80]!r}") from None
            records.append(record)
        return records

    def has_records(self) -> bool:
        """Whether the file holds anything but whitespace (a torn line counts)."""
        try:
            with open(self.path, "rb") as f:
                return any(line.strip() for line in f)
        except FileNotFoundError:
            return False


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """``summary.json``, replaced atomically (a crash leaves the old one or the new one, never half of one)."""
    _write_atomic(run_dir / SUMMARY_FILE, json.dumps(_clean(summary), indent=2))


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())


def _number(value: Any) -> float | None:
    """``value`` as a finite-or-not float when it is a real number (numpy scalars included, bools excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value)


def curve_panels(records: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """What :func:`plot_curves` draws: ``[(metric, [record keys]), …]``. First ``loss`` (``train/loss`` and
    ``val/loss``), then one panel per other validation metric in the order the records name them (``val/accuracy``,
    ``val/rmse``, ``val/perplexity`` …), each with its ``train/`` counterpart when the records have one. Nothing is
    assumed about which metrics a task reports."""
    present: dict[str, None] = {}  # keys with at least one number, in first-seen order
    for r in records:
        for key, value in r.items():
            if "/" in key and _number(value) is not None:
                present.setdefault(key)
    panels = []
    loss = [k for k in ("train/loss", "val/loss") if k in present]
    if loss:
        panels.append(("loss", loss))
    for key in present:
        split, _, metric = key.partition("/")
        if split == "val" and metric != "loss":
            panels.append((metric, [k for k in (f"train/{metric}", key) if k in present]))
    return panels


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Learning curves against the step, one panel per metric (see :func:`curve_panels`). Returns the PNG path, or
    None when the records hold nothing to plot.

    Draws on a :class:`matplotlib.figure.Figure` with its own Agg canvas: the user's matplotlib backend and pyplot
    state are never touched (no ``matplotlib.use``, no ``pyplot``)."""
    panels = curve_panels(records)
    if not panels:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = 2 if len(panels) == 4 else min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (metric, keys) in zip(axes, panels):
        for key in keys:
            points = [(r["step"], _number(r.get(key))) for r in records if "step" in r]
            xs = [x for x, y in points]
            ys = [float("nan") if y is None else y for _, y in points]
            split = key.split("/", 1)[0]
            ax.plot(xs, ys, "--" if split == "val" else "-", marker="o", markersize=3, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


SAMPLES_DIR = "samples"  # per-evaluation sample grids: samples/step_0000100.png


def sample_grid_path(run_dir: Path, step: int) -> Path:
    """Where a task writes its sample grid of evaluation ``step`` (the directory is created)."""
    out = Path(run_dir) / SAMPLES_DIR
    out.mkdir(parents=True, exist_ok=True)
    return out / f"step_{int(step):07d}.png"


def sample_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the sample grids written at evaluations, in step order."""
    found = []
    for p in sorted((Path(run_dir) / SAMPLES_DIR).glob("step_*.png")):
        try:
            found.append((int(p.stem.split("_", 1)[1]), p))
        except ValueError:
            continue
    return found


def _read_png(path: Path) -> Any:
    """An ``(H, W, 3)`` uint8 array of a PNG (alpha dropped)."""
    import matplotlib.image

    img = matplotlib.image.imread(str(path))  # float in [0, 1] for PNGs
    img = img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1)
    return (np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def write_tensorboard(run_dir: Path, records: list[dict[str, Any]]) -> Path | None:
    """TensorBoard event files (``run_dir/tb``) from the evaluation records, when tensorboardX is installed
    (``pip install 'jaxdl[tensorboard]'``), so ``tensorboard --logdir SWEEP_DIR`` shows every run. Every numeric
    entry of a record is a scalar under its own key (``train/loss``, ``val/rmse``, ``lr`` …), whatever the task;
    ``step``/``epoch``/``time`` are the axes, non-finite values are left out. Sample grids written at evaluations
    (``samples/step_*.png``) become images under ``samples``."""
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
        for step, png in sample_grids(run_dir):  # a generative task's grids from its evaluations
            writer.add_image("samples", _read_png(png), step, dataformats="HWC")
        for r in records:
            if "step" not in r:
                continue
            for key, value in r.items():
                number = _number(value)
                if key not in _NOT_SCALARS and number is not None and math.isfinite(number):
                    writer.add_scalar(key, number, int(r["step"]))
    finally:
        writer.close()
    return out
