#!/usr/bin/env python3
"""Persistent compilation cache benchmark: time to the first step's metrics, and the quickstart sweep, with an empty
and with a filled cache — every timing in a fresh process.

**First step** (``--cases``: the digits MLP of ``configs/digits_mlp.py``; ResNet-18 at full width on 28×28
Fashion-MNIST images, batch 32; the 4-layer character GPT of ``configs/shakespeare_char_gpt.py``, batch 8): a child
process enables the cache as ``jaxdl``'s entry points do, then calls ``jaxdl.train.fit`` on a 3-step run evaluated
after every step. A thread polls the run's ``metrics.jsonl``; the first row — step 1's training and validation
metrics — is "the first step's metrics". Two clocks:

* **from process start** — from the parent starting the child (interpreter start, imports, data, compiling
  initialisation, the step and the evaluation program, one step, its evaluation);
* **from fit()** — from the ``fit()`` call to the same row (what the cache can change: imports are not cached).

Three starting points per repeat, each a fresh process with its own run directory: **off**
(``JAXDL_COMPILATION_CACHE=0``), **cold** (an empty ``$JAXDL_CACHE_DIR``: everything compiled and written), **warm**
(the cache cold filled). Compilations are counted with ``jaxdl.compile_cache.counting`` (XLA compile requests;
cache hits; compiled = requests − hits) up to the first row and over the whole ``fit()``.

**Quickstart** (``--quickstart``): ``jaxdl sweep experiments/quickstart.py`` (60 runs in 10 groups, ``--fuse=auto``)
into a new directory, total wall time and compilations, from three starting points in one cache directory (JAX's
cache keys include the directory's path: a copy starts cold): **cold** (empty), **warm** (what cold wrote: compiled
programs, probe decisions, memory estimates), and **warm, compiled programs only** (the decisions and memory
estimates deleted: the probes run and time again, loading their programs).

**Memory extrapolation** (``--memory``): the planner compiles a group's step for 1 and 2 members and extrapolates
linearly (:mod:`jaxdl.experiment.memory`); this compiles the same step for 4 and 8 members too and compares.

    python scripts/bench_compile_cache.py --quick                           # smoke: MLP, one repeat (~1 min)
    python scripts/bench_compile_cache.py --repeats 2 --quickstart --memory --out scripts/results/compile_cache
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CASES = {
    "mlp": ("configs/digits_mlp.py", []),
    "resnet18": ("configs/fashion_mnist_resnet18.py:smoke", ["model.width=1.0", "data.train_limit=512"]),
    "gpt": ("configs/shakespeare_char_gpt.py", ["train.batch_size=8", "data.eval_limit=64",
                                                "train.eval_batch_size=64"]),
}
COMMON = ["train.steps=3", "train.eval_every=1", "train.progress=false"]
FIRST_STEP_VARIANTS = ("off", "cold", "warm")


# ---------------------------------------------------------------------------------------------------------------- child


def child_first_step(case: str, workdir: str, out: str) -> None:
    t_main = time.time()
    sys.path.insert(0, str(REPO))
    from jaxdl import compile_cache
    from jaxdl.config import load_config
    from jaxdl.train import fit

    path, overrides = CASES[case]
    cfg = load_config(str(REPO / path), [*overrides, *COMMON])
    compile_cache.enable()
    metrics = Path(workdir) / "metrics.jsonl"
    seen: dict = {}

    def watch():
        while "t" not in seen and not seen.get("stop"):
            if metrics.is_file() and metrics.stat().st_size > 0:
                seen.update(t=time.time(), count=count.as_dict())
                return
            time.sleep(0.005)

    with compile_cache.counting() as count:
        thread = threading.Thread(target=watch, daemon=True)
        t_fit = time.time()
        thread.start()
        fit(cfg, workdir=workdir)
        t_done = time.time()
        seen["stop"] = True
        thread.join()
    Path(out).write_text(json.dumps({"t_main": t_main, "t_fit": t_fit, "t_first": seen.get("t"), "t_done": t_done,
                                     "first_count": seen.get("count"), "count": count.as_dict()}))


def child_sweep(workdir: str, out: str) -> None:
    sys.path.insert(0, str(REPO))
    from jaxdl import compile_cache
    from jaxdl.cli import main

    t0 = time.time()
    with compile_cache.counting() as count:
        code = main(["sweep", str(REPO / "experiments" / "quickstart.py"), "--workdir", workdir])
    Path(out).write_text(json.dumps({"code": code, "seconds": time.time() - t0, "count": count.as_dict()}))


# --------------------------------------------------------------------------------------------------------------- parent


def run_child(args: list[str], cache: Path, tmp: Path, switch: str = "1") -> tuple[dict, float]:
    out = tmp / f"out-{time.time_ns()}.json"
    env = {**os.environ, "JAXDL_CACHE_DIR": str(cache), "JAXDL_COMPILATION_CACHE": switch,
           "PYTHONPATH": str(REPO)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    t0 = time.time()
    proc = subprocess.run([sys.executable, __file__, *args, str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text()), t0


def first_step(case: str, repeats: int, tmp: Path) -> list[dict]:
    rows = []
    for r in range(repeats):
        cache = tmp / f"cache-{case}-{r}"
        for variant in FIRST_STEP_VARIANTS:
            workdir = tmp / f"run-{case}-{r}-{variant}"
            result, t0 = run_child(["--child-first-step", case, str(workdir)], cache, tmp,
                                   switch="0" if variant == "off" else "1")
            row = {"case": case, "repeat": r, "variant": variant,
                   "from_process_start_s": result["t_first"] - t0, "from_fit_s": result["t_first"] - result["t_fit"],
                   "imports_s": result["t_fit"] - t0, "fit_total_s": result["t_done"] - result["t_fit"],
                   "first_count": result["first_count"], "count": result["count"], "load": os.getloadavg()[0]}
            rows.append(row)
            print(f"{case} #{r} {variant}: first step {row['from_process_start_s']:.1f} s from process start, "
                  f"{row['from_fit_s']:.1f} s from fit(); compiled {row['first_count']['compiled']}, hits "
                  f"{row['first_count']['cache_hits']} (load {row['load']:.1f})", flush=True)
    return rows


def quickstart(tmp: Path) -> list[dict]:
    # one cache directory throughout: JAX's cache keys include the directory's path (XLA's autotuning-cache option
    # is derived from it), so a copied directory would start cold
    rows = []
    cache = tmp / "qs-cache"
    for variant in ("cold", "warm", "warm_xla_only"):
        if variant == "warm_xla_only":  # the decisions and memory estimates go; the compiled programs stay
            for path in cache.iterdir():
                if path.is_file():
                    path.unlink()
        result, _ = run_child(["--child-sweep", str(tmp / f"qs-run-{variant}")], cache, tmp)
        if result["code"] != 0:
            raise RuntimeError(f"quickstart {variant}: jaxdl sweep exited {result['code']}")
        rows.append({"variant": variant, "seconds": result["seconds"], "count": result["count"],
                     "load": os.getloadavg()[0]})
        print(f"quickstart {variant}: {result['seconds']:.1f} s, compiled {result['count']['compiled']}, hits "
              f"{result['count']['cache_hits']}", flush=True)
    return rows


def memory_check(cases: list[str]) -> list[dict]:
    """The planner's linear extrapolation from 1 and 2 members against the compiled step for 4 and 8."""
    sys.path.insert(0, str(REPO))
    from jaxdl.config import load_config
    from jaxdl.experiment import memory
    from jaxdl.train import setup

    rows = []
    for case in cases:
        path, overrides = CASES[case]
        s = setup(load_config(str(REPO / path), [*overrides, *COMMON]))
        compiled = {n: memory.step_bytes(s, n) for n in (1, 2, 4, 8)}
        per = compiled[2] - compiled[1]
        for n in (4, 8):
            predicted = compiled[1] + (n - 1) * per
            rows.append({"case": case, "members": n, "compiled": compiled[n], "predicted": predicted,
                         "ratio": predicted / compiled[n], "one": compiled[1], "two": compiled[2],
                         "state_bytes": memory.state_bytes(s)})
            print(f"memory {case} x{n}: predicted {predicted / 2**20:.2f} MiB, compiled {compiled[n] / 2**20:.2f} MiB "
                  f"({predicted / compiled[n]:.3f})", flush=True)
    return rows


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def report(result: dict) -> str:
    lines = ["# Persistent compilation cache: cold vs warm", "",
             f"`{result['command']}` — {result['date']}; jax {result['jax']} on {result['device']}, "
             f"{result['cores']} CPU cores (shared with other work: load average {result['load'][0]:.1f} at start, "
             f"{result['load'][1]:.1f} at the end)."]
    rows = result["first_step"]
    if rows:
        lines += ["", "Every timing is a fresh process. **First step**: `fit()` of a 3-step run evaluated after every step; "
             "the first row of `metrics.jsonl` (step 1's training and validation metrics) is the first step's "
             "metrics. *From process start*: the parent's clock from starting the child (interpreter, imports, data, "
             "compiling, one step, its evaluation); *from fit()*: from the `fit()` call to that row. off = "
             "`JAXDL_COMPILATION_CACHE=0`; cold = an empty cache directory; warm = the directory cold filled. "
             "Compilations up to the first row: compiled anew / loaded from the cache (XLA compile requests counted "
             f"with `jaxdl.compile_cache.counting`). Medians over {result['repeats']} repeats.", "",
             "| case | variant | from process start, s | from fit(), s | imports, s | compiled / cache hits (first "
             "step) | compile s (first step) | whole fit(), s | compiled / hits (whole fit) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case in dict.fromkeys(r["case"] for r in rows):
        for variant in FIRST_STEP_VARIANTS:
            rs = [r for r in rows if r["case"] == case and r["variant"] == variant]
            if not rs:
                continue
            m = lambda key: median([r[key] for r in rs])  # noqa: E731
            fc = lambda key: median([r["first_count"][key] for r in rs])  # noqa: E731
            wc = lambda key: median([r["count"][key] for r in rs])  # noqa: E731
            lines.append(f"| {case} | {variant} | {m('from_process_start_s'):.1f} | {m('from_fit_s'):.1f} | "
                         f"{m('imports_s'):.1f} | {fc('compiled'):g} / {fc('cache_hits'):g} | "
                         f"{fc('compile_s'):.1f} | {m('fit_total_s'):.1f} | {wc('compiled'):g} / "
                         f"{wc('cache_hits'):g} |")
    if rows:
        lines += ["", "| case | warm / cold, from process start | warm / cold, from fit() | cold / off, from fit() |",
                  "|---|---:|---:|---:|"]
    for case in dict.fromkeys(r["case"] for r in rows):
        def med(variant, key):
            return median([r[key] for r in rows if r["case"] == case and r["variant"] == variant])
        lines.append(f"| {case} | {med('warm', 'from_process_start_s') / med('cold', 'from_process_start_s'):.2f} | "
                     f"{med('warm', 'from_fit_s') / med('cold', 'from_fit_s'):.2f} | "
                     f"{med('cold', 'from_fit_s') / med('off', 'from_fit_s'):.2f} |")
    if result.get("quickstart"):
        lines += ["", "**Quickstart** — `jaxdl sweep experiments/quickstart.py` (60 runs, 10 groups, `--fuse=auto`) "
                  "into a new directory, one run per starting point, in that order, all in one cache directory: cold "
                  "(empty); warm (everything cold wrote); warm, compiled programs only (probe decisions and memory "
                  "estimates deleted: the probes run again).", "",
                  "| variant | total s | compiled | cache hits | compile s |", "|---|---:|---:|---:|---:|"]
        for r in result["quickstart"]:
            c = r["count"]
            lines.append(f"| {r['variant']} | {r['seconds']:.1f} | {c['compiled']} | {c['cache_hits']} | "
                         f"{c['compile_s']:.1f} |")
    if result.get("memory"):
        lines += ["", "**Memory extrapolation** — the planner's estimate for n members, `bytes(1) + (n − 1) · "
                  "(bytes(2) − bytes(1))` from the step compiled for 1 and 2 members, against the step compiled for n "
                  "(`memory_analysis()`: temp + arguments + outputs − aliased); the parameter-based count "
                  "(state + gradients + a batch, per member) for comparison.", "",
                  "| case | members | predicted MiB | compiled MiB | predicted / compiled | parameter-based × n, MiB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in result["memory"]:
            lines.append(f"| {r['case']} | {r['members']} | {r['predicted'] / 2**20:.2f} | "
                         f"{r['compiled'] / 2**20:.2f} | {r['ratio']:.3f} | "
                         f"{r['members'] * r['state_bytes'] / 2**20:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-first-step":
        child_first_step(*sys.argv[2:5])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-sweep":
        child_sweep(*sys.argv[2:4])
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--report":  # rewrite OUT.md from OUT.json
        path = Path(sys.argv[2])
        path.with_suffix(".md").write_text(report(json.loads(path.read_text())))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES),
                   help="first-step cases (none: --cases with no names)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quickstart", action="store_true", help="also time the quickstart sweep cold and warm")
    p.add_argument("--memory", action="store_true", help="also check the planner's memory extrapolation")
    p.add_argument("--quick", action="store_true", help="smoke run: the MLP, one repeat, no quickstart")
    p.add_argument("--out", default=str(REPO / "scripts" / "results" / "compile_cache"))
    args = p.parse_args()
    if args.quick:
        args.cases, args.repeats, args.quickstart = ["mlp"], 1, False
    import jax

    device = jax.devices()[0]
    result = {"command": "python scripts/bench_compile_cache.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "jax": jax.__version__,
              "device": f"{device.platform}:{device.device_kind}", "cores": os.cpu_count(),
              "python": platform.python_version(), "repeats": args.repeats}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_compile_cache_") as tmp:
        tmp = Path(tmp)
        result["first_step"] = [row for case in args.cases for row in first_step(case, args.repeats, tmp)]
        if args.quickstart:
            result["quickstart"] = quickstart(tmp)
    if args.memory:
        result["memory"] = memory_check(args.cases)
    result["load"] = [load0, os.getloadavg()[0]]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    text = report(result)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
