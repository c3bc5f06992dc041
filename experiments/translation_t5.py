"""English -> Spanish Bible translation with a small T5 trained from scratch, against the copy-the-source baseline.

Trains configs/bible_t5.py (KJV -> Reina-Valera 1909, whole books held out; see jaxdl/data/parallel.py), whose
run ends by translating the validation and test books greedily and scoring them with sacrebleu (BLEU, chrF) beside
the copy baseline (the untranslated English). Then copies the run's summary, metrics, translations and curves to
experiments/results/translation/ and draws the validation loss and token accuracy against steps and wall time.

Run (about an hour on 2 shared CPU cores):
    python experiments/translation_t5.py --workdir runs/translation_t5
Only the table and plot, from a finished run:
    python experiments/translation_t5.py --workdir runs/translation_t5 --report-only
Translate and score the best checkpoint again (greedy, beam search, copy baseline) and report; for a run stopped
before its last step (the time budget) this writes summary.json with the checkpoint's metrics and "status": "stopped":
    python experiments/translation_t5.py --workdir runs/translation_t5 --from-checkpoint
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "translation"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "bible_t5.py"
COPIED = ("summary.json", "metrics.jsonl", "translations.txt", "config.json")


def train(workdir: Path, overrides: list[str]) -> None:
    from jaxdl.config import load_config
    from jaxdl.train import fit

    fit(load_config(str(CONFIG), overrides), workdir=workdir)


def from_checkpoint(run_dir: Path) -> None:
    """Translations and scores (greedy, beam, copy baseline) of a run's best checkpoint: added to the summary.json
    of a completed run (e.g. one trained before beam search existed), or a new summary.json with the checkpoint's
    metrics and ``"status": "stopped"`` for a run stopped before its last step."""
    import time

    from jaxdl.train import evaluate_splits, restore
    from jaxdl.train.step import by_player

    t0 = time.perf_counter()
    s, variables = restore(run_dir, which="best")
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    if summary.get("status") != "completed":
        evals = [r for r in records(run_dir) if "val/loss" in r]
        best = min(evals, key=lambda r: r["val/loss"])
        summary = {"name": s.cfg.name, "status": "stopped", "task": s.task.name, "model": s.model_name,
                   "data": s.dataset.name, "params": s.model.param_count(), "steps": best["step"],
                   "scheduled_steps": s.total_steps, "last_step": evals[-1]["step"],
                   "train_time_s": evals[-1]["time"], "best": {"step": best["step"], "val/loss": best["val/loss"]},
                   **evaluate_splits(s, variables["params"], variables["model_state"])}
    summary.update(s.task.artifacts(by_player(s.task, variables["params"]),
                                    by_player(s.task, variables["model_state"]), s.dataset, run_dir))
    summary["eval_time_s"] = round(time.perf_counter() - t0, 1)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def plot(run_dir: Path, out: Path) -> Path:
    """Validation loss (nats per target token) and teacher-forced token accuracy against steps."""
    from matplotlib.figure import Figure

    rec = [r for r in records(run_dir) if "val/loss" in r]
    train = [r for r in records(run_dir) if "train/loss" in r]
    fig = Figure(figsize=(9, 3.6))
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax.plot([r["step"] for r in train], [r["train/loss"] for r in train], lw=1, alpha=0.6, label="train")
    ax.plot([r["step"] for r in rec], [r["val/loss"] for r in rec], marker="o", ms=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per target token)")
    ax.legend(fontsize=8)
    bx.plot([r["step"] for r in rec], [r["val/accuracy"] for r in rec], marker="o", ms=3, color="C1")
    bx.set_xlabel("step")
    bx.set_ylabel("validation token accuracy (teacher-forced)")
    minutes = rec[-1]["time"] / 60 if rec and "time" in rec[-1] else float("nan")
    fig.suptitle(f"T5 (from scratch) KJV -> RV1909: {rec[-1]['step'] if rec else 0} steps, {minutes:.0f} min "
                 "on 2 shared CPU cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def table(summary: dict) -> str:
    """Markdown table of BLEU/chrF per split: the copy baseline, the model's greedy and beam translations."""
    rows = ["| split | pairs | decoder | BLEU | chrF | loss (nats/token) | token acc. |",
            "|---|---|---|---|---|---|---|"]
    for part in ("val", "test"):
        t = summary["translation"][part]
        for decoder, label in (("copy_baseline", "copy the source"), ("greedy", "T5 greedy"),
                               ("beam", "T5 beam 4")):
            if decoder in t:
                tf = (f"{summary[part]['loss']:.3f} | {summary[part]['accuracy']:.3f}" if decoder != "copy_baseline"
                      else "– | –")
                rows.append(f"| {part} | {t[decoder]['n']} | {label} | {t[decoder]['bleu']:.2f} | "
                            f"{t[decoder]['chrf']:.2f} | {tf} |")
    return "\n".join(rows) + "\n"


def report(run_dir: Path) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, RESULTS / name)
    summary = json.loads((run_dir / "summary.json").read_text())
    (RESULTS / "table.md").write_text(table(summary))
    plot(run_dir, RESULTS / "curves.png")
    print(table(summary))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("runs/translation_t5"))
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--from-checkpoint", action="store_true", help="summarise a stopped run from its best checkpoint")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=100")
    args = p.parse_args(argv)
    if args.from_checkpoint:
        from_checkpoint(args.workdir)
    elif not args.report_only:
        train(args.workdir, args.overrides)
    report(args.workdir)


if __name__ == "__main__":
    main()
