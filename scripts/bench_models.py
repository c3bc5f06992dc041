#!/usr/bin/env python3
"""Every zoo family against the same model in PyTorch: training steps/s, compile time and FLOPs (``jaxdl.bench``),
written as ``OUT.json`` (every raw round, the machine, load averages) and ``OUT.md`` (the table, the command, the
machine). The measuring is :func:`jaxdl.bench.run`; this script adds the report files.

    python scripts/bench_models.py --out scripts/results/bench_models                 # the suite, a few minutes
    python scripts/bench_models.py --models lenet5,resnet18 --rounds 5 --out /tmp/cnn
    python scripts/bench_models.py --tiny --rounds 1 --out /tmp/smoke                  # smoke run (not a measurement)

JAX's persistent compilation cache is left as the environment has it (off unless ``JAX_COMPILATION_CACHE_DIR`` is
set): with it on, a second run's compile times would be cache loads.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def report(result: dict, command: str, notes: list[str]) -> str:
    from jaxdl import bench

    m = result["machine"]
    lines = ["# jaxdl vs PyTorch: training steps/s and compile time per model family", "",
             f"`{command}` — {time.strftime('%Y-%m-%d %H:%M:%S')}; jax {m['jax']} on {m['platform']} "
             f"({m['device_kind']}), torch {m['torch']} with {m['torch_threads']} thread(s), {m['cpu_count']} CPU "
             f"cores (shared with other work: load average {m['loadavg_start'][0]:.1f} at start, "
             f"{m['loadavg_end'][0]:.1f} at the end); XLA_FLAGS={m['xla_flags'] or '(none)'}; "
             f"{result['rounds']} rounds; {m['total_s']:.0f} s in all.", "",
             bench.markdown(result),
             "jaxdl/torch: ratio of the median steps/s over the rounds (> 1: jaxdl is faster); per round: "]
    lines[-1] += "; ".join(f"{r['label']} " + ", ".join(f"{x:.2f}" for x in r["ratio_per_round"])
                           for r in result["results"]) + "."
    lines += ["", "lower s / compile s / first run s: jaxdl's first step taken apart (`jax.jit(step).lower(...)`, "
              "`.compile()`, the first call); torch first s: PyTorch's first eager step. GFLOP/step: the compiled "
              "step's `cost_analysis()` flops; GFLOP/s: that times jaxdl's steps/s (model FLOPs utilisation is "
              "reported on a GPU only).", ""]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> dict:
    from jaxdl import bench

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help="comma-separated families (default: all)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="timed steps per round and side (default: per family)")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    p.add_argument("--out", default="scripts/results/bench_models", help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    command = "python scripts/bench_models.py " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    result = bench.run(bench.parse_models(args.models), rounds=args.rounds, steps=args.steps,
                       torch_threads=args.torch_threads, tiny=args.tiny, peak_tflops=args.peak_tflops)
    result["command"] = command
    bench.print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(result, indent=1, default=str))
    Path(f"{out}.md").write_text(report(result, command, args.note))
    return result


if __name__ == "__main__":
    main()
