"""What drawing dropout masks costs a training step that does not use them (rate 0).

A step built with dropout draws a Bernoulli mask per dropout layer and step even at rate 0 (the rate is a traced
per-member number, so the step cannot know it is 0). jaxdl builds a run's or group's step without masks when every
member's rate is 0 (``jaxdl.train.step.uses_dropout``). This script measures the two builds of the same step side
by side — XLA compile seconds and per-step milliseconds (best of ``--repeats`` timed loops), one member and a fused
population — on digits, Adam, batch 64::

    python scripts/bench_dropout.py [--models mlp lenet5] [--members 1 16] [--repeats 5] \
        [--out scripts/results/bench_dropout]

Ratios are "without masks / with masks" from the same process (< 1: the mask-free step is cheaper).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def step_cost(model: str, members: int, dropout: bool, dataset, loops: int, repeats: int) -> dict[str, float]:
    """Compile seconds and best per-step seconds of one host-driven step (``drivers.advance``) of ``members`` members."""
    import jax
    import jax.numpy as jnp

    from bench_sweep import make_cfgs
    from jaxdl.train import drivers, loop

    cfgs = make_cfgs(model, max(members, 2), 10)[:members]
    s = dataclasses.replace(loop.setup(cfgs[0], dataset, dropout=dropout), fused=members > 1)
    programs = loop.Programs(s)
    seeds = [c.seed for c in cfgs]
    hp = loop.stack_hparams(cfgs) if s.fused else s.hparams
    state = programs.init(seeds, hp)
    active = jnp.ones(members, bool) if s.fused else jnp.asarray(True)
    lead = (members,) if s.fused else ()
    batch = {k: np.broadcast_to(v, lead + v.shape).copy() for k, v in dataset.train.batch(np.arange(64)).items()}
    step = jax.jit(drivers.advance(s), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, active, batch, hp).compile()
    compile_s = time.perf_counter() - t0
    state, active, m = compiled(state, active, batch, hp)
    jax.block_until_ready(m)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            state, active, m = compiled(state, active, batch, hp)
        jax.block_until_ready(m)
        best = min(best, (time.perf_counter() - t0) / loops)
    return {"compile_s": compile_s, "step_s": best}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["mlp", "lenet5"], choices=["mlp", "lenet5"])
    p.add_argument("--members", nargs="+", type=int, default=[1, 16])
    p.add_argument("--repeats", type=int, default=5, help="timed loops per build; the fastest counts")
    p.add_argument("--step-seconds", type=float, default=0.5, help="about how long one timed loop runs")
    p.add_argument("--out", default=str(ROOT / "scripts" / "results" / "bench_dropout"))
    args = p.parse_args(argv)

    from jaxdl.config import DataConfig
    from jaxdl.data import load
    from bench_sweep import BATCH, machine_info

    dataset = load(DataConfig(name="digits"))
    rows = []
    for model in args.models:
        for members in args.members:
            got = {}
            for dropout in (True, False):
                probe = step_cost(model, members, dropout, dataset, loops=3, repeats=1)
                loops = max(3, int(args.step_seconds / max(probe["step_s"], 1e-6)))
                got[dropout] = step_cost(model, members, dropout, dataset, loops, args.repeats)
            row = {"model": model, "members": members, "with_masks": got[True], "without_masks": got[False],
                   "compile_ratio": got[False]["compile_s"] / got[True]["compile_s"],
                   "step_ratio": got[False]["step_s"] / got[True]["step_s"]}
            rows.append(row)
            print(f"  {model} x{members}: compile {got[True]['compile_s']:.2f} -> {got[False]['compile_s']:.2f} s, "
                  f"step {got[True]['step_s'] * 1e3:.3f} -> {got[False]['step_s'] * 1e3:.3f} ms", flush=True)
    info = machine_info()
    out = {"machine": info, "batch_size": BATCH, "rows": rows}
    lines = ["### Dropout masks at rate 0: what they cost a step", "",
             f"`{info['command']}` — {info['started']}; jax {info['jax']} on {info['device']}, "
             f"{info['affinity_cpus']} CPU cores (shared; noisy).", "",
             "Host-driven step (``_advance``), digits, Adam, batch 64; compile = XLA compilation of that step; "
             "step = best per-step time of the timed loops. Ratios: without / with masks (< 1: cheaper without).", "",
             "| model | members | compile s with / without | step ms with / without | compile ratio | step ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        w, wo = r["with_masks"], r["without_masks"]
        lines.append(f"| {r['model']} | {r['members']} | {w['compile_s']:.2f} / {wo['compile_s']:.2f} | "
                     f"{w['step_s'] * 1e3:.3f} / {wo['step_s'] * 1e3:.3f} | {r['compile_ratio']:.2f} | "
                     f"{r['step_ratio']:.2f} |")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=1))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
