"""bf16 against fp32 training curves: does mixed precision train the same models to the same place?

Trains each model twice from the same seed (same initialisation, same batches), once with ``train.precision=fp32``
and once with ``bf16`` (the model computes in bfloat16; parameters, optimizer state, batch-norm statistics and
losses stay float32) — plus, as the yardstick, fp32 with the next seed: any perturbation of a trajectory (rounding
included) makes late-training losses, which are small and noisy, differ by some percent, and two seeds show how
much. It writes

- ``<out>.png``: train loss against step, fp32 and bf16, one panel per model;
- ``<out>.json`` / ``<out>.md``: per model, the largest relative difference between the two smoothed train-loss
  curves, the final validation metrics of both and their differences, and steps per second of each.

Models (configs in ``configs/``, shortened to a few hundred steps so the whole script runs in ~15 minutes on two
busy CPU cores): the digits MLP (``digits_mlp``: batch norm, dropout), LeNet-5 on the 5,000-image MNIST subset
(``mnist5k_lenet``) and a small character GPT on Shakespeare (``shakespeare_char_gpt``: 2 layers, d_model 64).
Curves: ``train/loss`` averaged over each ``--every``-step interval (the loop's own training statistic), then a
centred moving average over ``--smooth`` points. Tolerance: bf16's max relative difference from fp32 on that
smoothed curve is at most ``max(--tolerance (5%), fp32's seed-to-seed difference)``. bf16 is not a speed-up on XLA:CPU (it emulates bfloat16 arithmetic); the speed
columns say what it costs here, not on an accelerator::

    python scripts/bench_precision.py [--models mlp lenet gpt] [--out scripts/results/precision_curves]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (config, overrides, monitored validation metrics)
MODELS = {
    "mlp": ("digits_mlp", {"train.steps": 400}, ("loss", "accuracy")),
    "lenet": ("mnist5k_lenet", {"train.steps": 300, "train.driver": "host"}, ("loss", "accuracy")),
    "gpt": ("shakespeare_char_gpt",
            {"model.d_model": 64, "model.num_layers": 2, "model.num_heads": 2, "model.context_length": 64,
             "data.block_size": 64, "data.eval_limit": 256, "train.batch_size": 16, "train.steps": 300,
             "optim.warmup_steps": 30}, ("loss", "bpc")),
}
TITLES = {"mlp": "MLP (digits, batch norm + dropout)", "lenet": "LeNet-5 (MNIST 5k)",
          "gpt": "char GPT, 2 layers (Shakespeare)"}


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average (the window shrinks at the ends)."""
    if window <= 1:
        return y
    half = window // 2
    return np.asarray([np.mean(y[max(0, i - half):i + half + 1]) for i in range(len(y))])


def train(name: str, precision: str, every: int, workdir: Path, seed: int | None = None) -> dict:
    from jaxdl.config import apply_overrides, load_config
    from jaxdl.train import fit

    spec, overrides, _ = MODELS[name]
    cfg = load_config(spec)
    label = f"{name}_{precision}" + ("" if seed is None else f"_seed{seed}")
    cfg = apply_overrides(cfg, {**overrides, "train.precision": precision, "train.eval_every": every,
                                "train.checkpoints": False, "train.plots": False, "train.progress": False,
                                "name": label, "seed": cfg.seed if seed is None else seed})
    t0 = time.perf_counter()
    res = fit(cfg, workdir=workdir / label)
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "train/loss" in r]
    return {"steps": [r["step"] for r in records], "train_loss": [r["train/loss"] for r in records],
            "val": res.summary["val"], "steps_per_s": res.summary["steps_per_s"], "wall_s": round(wall, 1),
            "status": res.summary["status"]}


def max_rel_diff(a: list[float], b: list[float], window: int) -> tuple[float, int]:
    """Largest ``|b - a| / |a|`` of the smoothed curves, and its index."""
    sa, sb = smooth(np.asarray(a), window), smooth(np.asarray(b), window)
    rel = np.abs(sb - sa) / np.abs(sa)
    return float(rel.max()), int(rel.argmax())


def compare(name: str, runs: dict, window: int, tolerance: float) -> dict:
    """bf16 against fp32 (same seed), beside fp32 against fp32 with the next seed (the run-to-run spread that any
    change of the trajectory produces). Within tolerance: bf16's max relative difference is at most
    ``max(tolerance, seed-to-seed difference)``."""
    a, b = np.asarray(runs["fp32"]["train_loss"]), np.asarray(runs["bf16"]["train_loss"])
    sa, sb = smooth(a, window), smooth(b, window)
    rel, at = max_rel_diff(a, b, window)
    seed_rel = max_rel_diff(a, runs["fp32_seed"]["train_loss"], window)[0] if "fp32_seed" in runs else None
    _, _, metrics = MODELS[name]
    val = {m: {"fp32": runs["fp32"]["val"][m], "bf16": runs["bf16"]["val"][m],
               "rel_diff": abs(runs["bf16"]["val"][m] - runs["fp32"]["val"][m]) / abs(runs["fp32"]["val"][m])}
           for m in metrics}
    if "fp32_seed" in runs:
        for m in metrics:
            v = runs["fp32_seed"]["val"][m]
            val[m]["fp32_next_seed"] = v
            val[m]["seed_rel_diff"] = abs(v - runs["fp32"]["val"][m]) / abs(runs["fp32"]["val"][m])
    return {"max_rel_diff_smoothed_train_loss": rel, "at_step": int(runs["fp32"]["steps"][at]),
            "seed_to_seed_max_rel_diff": seed_rel,
            "final_smoothed_train_loss": {"fp32": float(sa[-1]), "bf16": float(sb[-1])},
            "within_tolerance": bool(rel <= max(tolerance, seed_rel or 0.0)), "val": val,
            "steps_per_s": {p: runs[p]["steps_per_s"] for p in ("fp32", "bf16")},
            "bf16_over_fp32_time": round(runs["fp32"]["steps_per_s"] / runs["bf16"]["steps_per_s"], 2)}


def plot(results: dict, path: Path, every: int, window: int, tolerance: float) -> None:
    from matplotlib.figure import Figure

    names = list(results)
    fig = Figure(figsize=(5 * len(names), 4.2))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        r = results[name]
        for prec, style, label in (("fp32", "-", "fp32"), ("bf16", "--", "bf16 (same seed)"),
                                   ("fp32_seed", ":", "fp32, next seed")):
            if prec in r["runs"]:
                run = r["runs"][prec]
                ax.plot(run["steps"], smooth(np.asarray(run["train_loss"]), window), style, label=label,
                        alpha=0.6 if prec == "fp32_seed" else 1.0)
        c = r["comparison"]
        seed = c["seed_to_seed_max_rel_diff"]
        ax.set_title(f"{TITLES[name]}\nmax rel. diff bf16 vs fp32 {100 * c['max_rel_diff_smoothed_train_loss']:.1f}%"
                     + ("" if seed is None else f" (seed vs seed {100 * seed:.1f}%)"), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(f"train loss (mean per {every} steps, {window}-pt moving avg)")
        ax.set_yscale("log")
        ax.legend()
    fig.suptitle(f"Train loss, bf16 vs fp32 (same seed, init and batches). Tolerance: max rel. diff of the smoothed "
                 f"curves <= max({100 * tolerance:.0f}%, fp32 seed-to-seed diff)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(results: dict, tolerance: float, command: str) -> str:
    lines = ["# bf16 vs fp32 training curves", "", f"Command: `{command}`", "",
             "Tolerance: the max relative difference of the smoothed train-loss curves, bf16 against fp32 from the same "
             f"seed, ≤ max({100 * tolerance:.0f}%, the same difference between fp32 runs of two seeds).",
             "", "| model | max rel. diff bf16 vs fp32 (smoothed train loss) | at step | fp32 seed vs seed | within | "
             "val fp32 | val bf16 | val fp32 next seed | steps/s fp32 | steps/s bf16 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        c = r["comparison"]
        v32 = ", ".join(f"{m} {v['fp32']:.4f}" for m, v in c["val"].items())
        v16 = ", ".join(f"{m} {v['bf16']:.4f}" for m, v in c["val"].items())
        vseed = ", ".join(f"{m} {v['fp32_next_seed']:.4f}" for m, v in c["val"].items() if "fp32_next_seed" in v)
        seed = c["seed_to_seed_max_rel_diff"]
        lines.append(f"| {TITLES[name]} | {100 * c['max_rel_diff_smoothed_train_loss']:.2f}% | {c['at_step']} | "
                     f"{'-' if seed is None else f'{100 * seed:.2f}%'} | {'yes' if c['within_tolerance'] else 'NO'} | "
                     f"{v32} | {v16} | {vseed or '-'} | {c['steps_per_s']['fp32']} | {c['steps_per_s']['bf16']} |")
    lines += ["", "bf16 on XLA:CPU is emulated and slower than fp32; the speed columns are what it costs on this "
              "CPU, not an accelerator's number."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--every", type=int, default=10, help="steps per logged train-loss point")
    ap.add_argument("--smooth", type=int, default=5, help="moving-average window (points)")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--no-seed-baseline", dest="seed_baseline", action="store_false",
                    help="skip the fp32 run with the next seed (the run-to-run yardstick)")
    ap.add_argument("--out", default=str(ROOT / "scripts" / "results" / "precision_curves"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            runs = {}
            for prec in ("fp32", "bf16") + (("fp32_seed",) if args.seed_baseline else ()):
                if prec == "fp32_seed":
                    from jaxdl.config import load_config

                    runs[prec] = train(name, "fp32", args.every, Path(tmp), seed=load_config(MODELS[name][0]).seed + 1)
                else:
                    runs[prec] = train(name, prec, args.every, Path(tmp))
                print(f"{name} {prec}: val {runs[prec]['val']}, {runs[prec]['steps_per_s']} steps/s, "
                      f"{runs[prec]['wall_s']} s", flush=True)
            results[name] = {"runs": runs, "comparison": compare(name, runs, args.smooth, args.tolerance)}
            print(json.dumps(results[name]["comparison"]), flush=True)
    import jax

    command = "python scripts/bench_precision.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"command": command.strip(), "tolerance": args.tolerance, "every": args.every, "smooth": args.smooth,
            "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count(),
                        "jax": jax.__version__, "backend": jax.default_backend()}}
    out.with_suffix(".json").write_text(json.dumps({**meta, "results": results}, indent=1))
    out.with_suffix(".md").write_text(markdown(results, args.tolerance, meta["command"]))
    plot(results, out.with_suffix(".png"), args.every, args.smooth, args.tolerance)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
