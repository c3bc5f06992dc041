"""VAE, GAN and diffusion on Fashion-MNIST, side by side: the same offline scores, the same data, their cost.

Each family trains from its config (``configs/fashion_mnist_vae.py``, ``fashion_mnist_gan.py``,
``fashion_mnist_diffusion.py``, plus the class-conditional variants with ``--conditional``); after training each
draws ``loss.score_samples`` (5,000) samples that ``jaxdl.gen_metrics`` scores in the shipped LeNet-5's features:
Fréchet distance (not comparable to Inception FID), k-NN precision and recall against the test split, and for
class-conditional models the classifier's accuracy on the classes asked for. The table puts the real-vs-real and
Gaussian reference points at the same sample size beside them, with parameters, training wall time and the time to
draw one image; ``--reuse`` reads finished run directories instead of training again.

Run:     python experiments/generative.py --workdir runs/generative [--conditional] [--reuse]
Writes:  experiments/results/generative/table.md and one sample grid per family (experiments/generative.md)
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

FAMILIES = {"vae": "fashion_mnist_vae", "gan": "fashion_mnist_gan", "diffusion": "fashion_mnist_diffusion"}
CONDITIONAL = {"gan (conditional)": "fashion_mnist_gan:conditional",
               "diffusion (conditional, CFG)": "fashion_mnist_diffusion:conditional"}
OUT = Path(__file__).resolve().parent / "results" / "generative"


def train_or_reuse(spec: str, run_dir: Path, reuse: bool) -> dict:
    """The run's summary.json, training the config first unless ``reuse`` finds a finished run."""
    summary = run_dir / "summary.json"
    if reuse and summary.is_file():
        return json.loads(summary.read_text())
    from jaxdl.config import load_config
    from jaxdl.train import fit

    fit(load_config(spec), workdir=run_dir, restart=True)
    return json.loads(summary.read_text())


def test_scores(summary: dict) -> dict:
    scores = summary.get("scores", {})
    return scores.get("test", scores)


def time_per_image(run_dir: Path, n: int = 200) -> float:
    # timing only: any checkpoint of the run has the same cost
    """Seconds to draw one image with the run's best variables (``n`` images after a warm-up call)."""
    from jaxdl.train import restore

    from jaxdl.train.step import by_player

    s, variables = restore(run_dir)
    task = s.task
    params, state = by_player(task, variables["params"]), by_player(task, variables["model_state"])
    task.sample(params, state, n)  # compile
    t0 = time.perf_counter()
    task.sample(params, state, n, seed=1)
    return (time.perf_counter() - t0) / n


def rescore(run_dir: Path, summary: dict, n: int) -> dict:
    """The run's scores with ``n`` samples against the FULL validation and test splits (whatever limits the run's
    data config set), unless its summary already holds exactly that; rows are only comparable at equal sizes."""
    import dataclasses

    from jaxdl import data as data_lib
    from jaxdl.train import restore
    from jaxdl.train.rundir import read_config
    from jaxdl.train.step import by_player

    scores = summary.get("scores", {})
    if scores.get("samples") == n and test_scores(summary).get("real") == 10000:
        return scores
    cfg = read_config(run_dir)
    ds = data_lib.load(dataclasses.replace(cfg.data, eval_limit=None))
    # the variables the summary scored: the best checkpoint only when early stopping restored it, else the final
    s, variables = restore(run_dir, "best" if summary.get("restored_best") else "latest", data=ds)
    s.task.score_samples = n
    return s.task.scores(by_player(s.task, variables["params"]), by_player(s.task, variables["model_state"]),
                         ds)["scores"]


def row(label: str, summary: dict, per_image: float | None) -> str:
    s = test_scores(summary)
    acc = s.get("conditional_accuracy")
    per = f"{per_image * 1e3:.2f}" if per_image is not None else "–"
    return (f"| {label} | {summary['params']:,} | {summary['wall_time_s'] / 60:.1f} | {per} | "
            f"{s['frechet_distance']:.2f} | {s['precision']:.3f} | {s['recall']:.3f} | "
            + (f"{acc:.3f}" if acc is not None else "–") + f" | {summary['scores'].get('samples', '?')} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/generative")
    p.add_argument("--conditional", action="store_true", help="also the class-conditional GAN and diffusion model")
    p.add_argument("--reuse", action="store_true", help="read finished runs instead of training again")
    p.add_argument("--only", nargs="*", help="labels to (re)train; the others are reused")
    p.add_argument("--run", action="append", default=[], metavar="LABEL=RUN_DIR",
                   help="a finished run to read for LABEL (a family or any new label) instead of training")
    p.add_argument("--samples", type=int, default=None,
                   help="score every model with this many samples against the full test split (default: as trained)")
    args = p.parse_args(argv)
    specs = dict(FAMILIES, **(CONDITIONAL if args.conditional else {}))
    given = dict(item.split("=", 1) for item in args.run)
    specs.update({label: None for label in given if label not in specs})
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["| model | parameters | training (min) | ms per image | Fréchet distance ↓ | precision ↑ | recall ↑ | "
             "class accuracy ↑ | samples |", "|---|---|---|---|---|---|---|---|---|"]
    references = {}  # reference points by sample size (FD is biased upwards at small n: compare at equal n)
    for label, spec in specs.items():
        run_dir = Path(args.workdir) / label.split(" ")[0] / ("conditional" if "(" in label else "unconditional")
        reuse = args.reuse or (args.only is not None and label not in args.only)
        if label in given:
            run_dir, reuse = Path(given[label]), True
        summary = train_or_reuse(spec, run_dir, reuse)
        if args.samples:
            summary = {**summary, "scores": rescore(run_dir, summary, args.samples)}
        lines.append(row(label, summary, time_per_image(run_dir)))
        ref = summary.get("scores", {}).get("reference")
        if ref and "n" in ref:
            references.setdefault(ref["n"], ref)
        finals = sorted(run_dir.glob("*_samples.png")) or sorted((run_dir / "samples").glob("step_*.png"))
        if finals:
            stem = "".join(c if c.isalnum() else "_" for c in label).strip("_")
            shutil.copy(finals[-1], OUT / f"{stem}.png")
        print(lines[-1], flush=True)
    for n, reference in sorted(references.items()):
        rr, rg = reference["pr_real_vs_real"], reference["pr_real_vs_gaussian"]
        lines.append(f"| *real vs real (two test halves)* | – | – | – | "
                     f"{reference['frechet_real_vs_real']:.2f} | {rr['precision']:.3f} | {rr['recall']:.3f} | – | {n} |")
        lines.append(f"| *pixel Gaussian (full covariance)* | – | – | – | "
                     f"{reference['frechet_real_vs_gaussian']:.2f} | {rg['precision']:.3f} | {rg['recall']:.3f} | – | {n} |")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
