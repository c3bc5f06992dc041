"""Character-level Shakespeare: LSTM, GRU and GPT language models against the text's unigram and bigram baselines.

Trains configs/shakespeare_char_lstm.py (LSTM) and its :gru variant — embedding 64 → one recurrent layer of 256 →
logits over the 84-character vocabulary, Adam 3e-3 with a cosine schedule, batches of 64 blocks of 128 characters —
and configs/shakespeare_char_gpt.py (4 Transformer layers, d_model 128) on the same spans and blocks,
then writes a table of held-out bits per character (test span, 1,000 evenly spaced blocks), the unigram and bigram
baselines measured on the same text, generated samples, and the validation learning curves against wall time.

Run (about 1.5 hours on 2 CPU cores for all three):
    python experiments/shakespeare_char.py --workdir runs/shakespeare_char
Only the table and plot, from finished runs:
    python experiments/shakespeare_char.py --workdir runs/shakespeare_char --report-only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RUNS = {"lstm": ("shakespeare_char_lstm", 3000), "gru": ("shakespeare_char_lstm:gru", 1500),
        "gpt": ("shakespeare_char_gpt", 2000)}
TARGET_BPC = 2.3


def train(workdir: Path, names: list[str]) -> None:
    from jaxdl.config import load_config
    from jaxdl.train import fit

    for name in names:
        config, steps = RUNS[name]
        fit(load_config(config, [f"train.steps={steps}"]), workdir=workdir / name)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def plot(workdir: Path, names: list[str], baselines: dict, out: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for name in names:
        rec = [r for r in records(workdir / name) if "val/bpc" in r]
        ax.plot([r["time"] / 60 for r in rec], [r["val/bpc"] for r in rec], marker="o", ms=3, label=f"{name} (val)")
    for label, value, style in (("unigram (test)", baselines["unigram"]["bpc"], ":"),
                                ("bigram (test)", baselines["bigram"]["bpc"], "--"),
                                (f"target {TARGET_BPC}", TARGET_BPC, "-.")):
        ax.axhline(value, color="grey", ls=style, lw=1)
        ax.text(0.01, value, label, transform=ax.get_yaxis_transform(), fontsize=8, color="grey", va="bottom")
    ax.set_xlabel("wall time (minutes, 2 shared CPU cores)")
    ax.set_ylabel("bits per character")
    ax.set_title("Shakespeare, character level: validation bpc of one run each (seed 0) against wall time")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def report(workdir: Path, names: list[str], out_dir: Path) -> str:
    summaries = {n: json.loads((workdir / n / "summary.json").read_text()) for n in names}
    base = next(iter(summaries.values()))["baselines"]
    lines = ["| model | steps | wall time | val bpc | test bpc | test perplexity | test next-char accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for n, s in summaries.items():
        lines.append(f"| {n} ({s['params']:,} parameters) | {s['steps']} | {s['wall_time_s'] / 60:.1f} min | "
                     f"{s['val']['bpc']:.3f} | {s['test']['bpc']:.3f} | {s['test']['perplexity']:.2f} | "
                     f"{s['test']['accuracy']:.3f} |")
    for k in ("unigram", "bigram"):
        lines.append(f"| {k} baseline (add-one, fitted on the training span) | | | | {base['test'][k]['bpc']:.3f} | "
                     f"{2 ** base['test'][k]['bpc']:.2f} | |")
    lines += ["", f"Entropy of the whole text: unigram {base['entropy_bits']['unigram']:.3f} bits, bigram "
              f"(conditional) {base['entropy_bits']['bigram']:.3f} bits per character.", ""]
    for n, s in summaries.items():
        for sample in s.get("samples", []):
            lines += [f"**{n}**, temperature {sample['temperature']:g}:", "", "```", sample["text"], "```", ""]
    plot(workdir, names, base["test"], out_dir / "shakespeare_char_curves.png")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/shakespeare_char"))
    parser.add_argument("--models", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.report_only:
        train(args.workdir, args.models)
    args.out.mkdir(parents=True, exist_ok=True)
    text = report(args.workdir, args.models, args.out)
    (args.out / "shakespeare_char_table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
