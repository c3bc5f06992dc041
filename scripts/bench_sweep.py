#!/usr/bin/env python3
"""Sweep benchmark: fused vs one-by-one vs ``--fuse=auto`` vs a PyTorch loop, on the real digits data.

For each model (MLP widths (128,), LeNet-5 relu/max-pool) and member count, a group of members that differ in
learning rate and seed (Adam, batch 64, ``--steps`` steps each, evaluation only at the end, no checkpoints, plots or
progress bars) is trained

* **fused**      — ``train_group(cfgs, dirs, fused=True)`` (one vmapped program for the whole group);
* **one-by-one** — ``train_group(cfgs, dirs, fused=False)`` (members in turn, sharing the compiled programs);
* **auto**       — ``decide_fusion(cfgs, "auto")`` (the timed probe), then ``train_group(..., fused=decision["fused"])``
                   with the probe's compiled programs, as ``jaxdl sweep`` does;
* **torch**      — the same architecture, optimizer, batch size, data order and step count in PyTorch (CPU,
                   ``--torch-threads``), members one after the other, evaluated on val and test at the end.

Every jaxdl timing is end-to-end wall time in this process *including tracing and XLA compilation* (JAX recompiles
each repeat: the programs are new closures), from one of two starting points:

* **cold** (``auto``, ``fused_cold``, ``one_by_one_cold``) — a fresh, empty ``$JAXDL_CACHE_DIR``, as on a machine
  that never ran this model: auto pays its whole fusion probe (which also picks the driver), fused and one-by-one pay
  their own driver probe (scan | host);
* **warm** (``fused``, ``one_by_one``, ``auto_cached``) — the decisions cached: fused and one-by-one find the driver
  auto's probe chose, auto_cached finds the fuse-or-not decision itself.

``auto / best`` is reported for both (cold against the best cold mode, warm against the best warm mode), plus auto
cold against the best warm mode (what a first-ever probe costs next to modes told their driver). The torch timing
includes building the models. The digits data set is loaded once up front and passed to every call; for torch the
LeNet inputs are resized to 32×32 once up front with jaxdl's own ``fit_to_size`` (jaxdl's LeNet resizes inside the
model, every step).

The modes are interleaved within each repeat so slow drifts of a shared machine hit them alike; the tables report
medians over ``--repeats`` and ratios of medians measured in the same process.

    python scripts/bench_sweep.py                       # defaults: --members 16 64 --models mlp lenet5 --steps 200
    python scripts/bench_sweep.py --quick               # smoke run (seconds)
    python scripts/bench_sweep.py --steps-for lenet5:64=100   # fewer steps for one (model, members) case
    python scripts/bench_sweep.py --models lenet5 --members 16 --modes auto one_by_one_cold --no-torch \
        --out more_repeats                                    # extra repeats of some modes only
    python scripts/bench_sweep.py --combine full.json more_repeats.json   # one table from the pooled repeats
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = {
    "mlp": {"model.name": "mlp", "model.widths": (128,), "model.activation": "relu"},
    "lenet5": {"model.name": "lenet5", "model.activation": "relu", "model.pool": "max"},
}
BATCH = 64


# ----------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------


def member_lrs(members: int) -> list[float]:
    """Log-spaced learning rates 3e-4 … 3e-3 (all stable for Adam on digits)."""
    if members == 1:
        return [1e-3]
    return [float(v) for v in np.geomspace(3e-4, 3e-3, members)]


def make_cfgs(model: str, members: int, steps: int):
    from jaxdl.config import Config, apply_overrides

    base = apply_overrides(Config(), {
        "name": f"bench_{model}", **MODELS[model],
        "data.name": "digits",
        "optim.name": "adam",
        "train.batch_size": BATCH,
        "train.steps": steps,
        "train.eval_every": steps,
        "train.checkpoints": False,
        "train.plots": False,
        "train.progress": False,
    })
    return [apply_overrides(base, {"name": f"bench_{model}_{i}", "seed": i, "optim.lr": lr})
            for i, lr in enumerate(member_lrs(members))]


# ----------------------------------------------------------------------------------------------------------------
# Timed runs (jaxdl)
# ----------------------------------------------------------------------------------------------------------------


class Scratch:
    """A fresh temporary directory holding the run directories of one timed call, and its ``$JAXDL_CACHE_DIR``
    (fresh and empty unless ``cache`` is given)."""

    def __init__(self, root: Path, tag: str, cache: Path | None = None):
        self.path = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=root))
        self.cache = cache if cache is not None else self.path / "cache"
        self._old = None

    def __enter__(self):
        self._old = os.environ.get("JAXDL_CACHE_DIR")
        os.environ["JAXDL_CACHE_DIR"] = str(self.cache)
        return self

    def __exit__(self, *exc):
        if self._old is None:
            os.environ.pop("JAXDL_CACHE_DIR", None)
        else:
            os.environ["JAXDL_CACHE_DIR"] = self._old
        shutil.rmtree(self.path, ignore_errors=True)

    def dirs(self, n: int) -> list[Path]:
        return [self.path / "runs" / f"m{i:03d}" for i in range(n)]


def _result_info(results) -> dict[str, Any]:
    accs = [r.summary.get("test", {}).get("accuracy") for r in results]
    accs = [a for a in accs if a is not None]
    return {"driver": results[0].summary.get("driver"),
            "statuses": sorted({r.summary["status"] for r in results}),
            "test_accuracy_median": statistics.median(accs) if accs else None,
            "steps_per_s_member0": results[0].summary.get("steps_per_s")}


def _merge_driver_cache(src: Path, dst: Path) -> None:
    """Copy the driver decisions the fusion probe cached (for the fused and the single step) into ``dst``."""
    for name in ("driver_probe.json", "fuse_probe.json"):
        if not (src / name).is_file():
            continue
        dst.mkdir(parents=True, exist_ok=True)
        merged = json.loads((dst / name).read_text()) if (dst / name).is_file() else {}
        merged.update(json.loads((src / name).read_text()))
        (dst / name).write_text(json.dumps(merged, indent=1))


def time_jaxdl(cfgs, dataset, mode: str, scratch_root: Path, driver_cache: Path) -> dict[str, Any]:
    """One end-to-end timed call of ``mode`` (auto | fused_cold | one_by_one_cold | fused | one_by_one | auto_cached).

    auto and the *_cold modes run with a fresh, empty ``$JAXDL_CACHE_DIR``; afterwards the decisions auto cached are
    copied into ``driver_cache``, which fused, one_by_one and auto_cached use — they find their driver (scan | host)
    and the fuse-or-not decision made, as on any machine that ran jaxdl on this model before."""
    from jaxdl.experiment.runner import decide_fusion
    from jaxdl.train import train_group

    cold = mode == "auto" or mode.endswith("_cold")
    with Scratch(scratch_root, mode, cache=None if cold else driver_cache) as sc:
        dirs = sc.dirs(len(cfgs))
        t0 = time.perf_counter()
        decision, probe_s, programs = None, 0.0, None
        if mode in ("auto", "auto_cached"):
            decision = decide_fusion(cfgs, "auto", dataset=dataset)
            programs = decision.pop("programs", None)  # the probe's compiled programs, as `jaxdl sweep` reuses them
            probe_s = time.perf_counter() - t0
            fused = bool(decision["fused"])
        else:
            fused = mode.startswith("fused")
        results = train_group(cfgs, dirs, fused=fused, dataset=dataset, on_divergence="mark", programs=programs)
        wall = time.perf_counter() - t0
        if mode == "auto":
            _merge_driver_cache(sc.cache, driver_cache)
    out = {"seconds": wall, **_result_info(results)}
    if decision is not None:
        out["probe_s"] = probe_s
        out["train_s"] = wall - probe_s
        out["decision"] = {k: v for k, v in decision.items() if k in ("fused", "reason", "how", "fused_s_per_step",
                                                                        "one_by_one_s_per_step", "timings")}
    return out


# ----------------------------------------------------------------------------------------------------------------
# The PyTorch loop doing the same work
# ----------------------------------------------------------------------------------------------------------------


def torch_data(model: str, dataset):
    """NCHW float32 tensors of train/val/test; LeNet inputs resized to 32×32 once, as jaxdl's LeNet does per step."""
    import torch

    def prep(x):
        if model == "lenet5":
            import jax.numpy as jnp

            from jaxdl.models.lenet import fit_to_size

            x = np.asarray(fit_to_size(jnp.asarray(x), 32))
        return torch.from_numpy(np.array(np.transpose(x, (0, 3, 1, 2)), dtype=np.float32, order="C"))

    return {name: (prep(getattr(dataset, name).x), torch.from_numpy(getattr(dataset, name).y.astype(np.int64)))
            for name in ("train", "val", "test")}


def torch_net(model: str, in_features: int, classes: int):
    from torch import nn

    if model == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 128), nn.ReLU(), nn.Linear(128, classes))
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),       # 6@28x28 -> 14x14
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),      # 16@10x10 -> 5x5
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes))


def time_torch(model: str, cfgs, tdata, classes: int) -> dict[str, Any]:
    """Members one by one: build, ``steps`` Adam steps of batch 64 in jaxdl's data order, evaluate val and test."""
    import torch
    import torch.nn.functional as F

    from jaxdl.data import epoch_permutation

    x_train, y_train = tdata["train"]
    n = len(y_train)
    spe = n // BATCH
    steps = cfgs[0].train.steps
    in_features = int(np.prod(x_train.shape[1:]))
    accs = []
    t0 = time.perf_counter()
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        net = torch_net(model, in_features, classes)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr)
        net.train()
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        perm, perm_epoch = None, -1
        for step in range(steps):
            epoch, offset = divmod(step, spe)
            if epoch != perm_epoch:
                perm = torch.from_numpy(epoch_permutation(n, cfg.seed, epoch).astype(np.int64))
                perm_epoch = epoch
            idx = perm[offset * BATCH:(offset + 1) * BATCH]
            xb, yb = x_train[idx], y_train[idx]
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # the per-step metrics jaxdl also computes
                loss_sum += loss.detach()
                correct += (out.argmax(1) == yb).sum()
        float(loss_sum)
        net.eval()
        with torch.no_grad():
            for split in ("val", "test"):
                xs, ys = tdata[split]
                acc = float((net(xs).argmax(1) == ys).float().mean())
            accs.append(acc)
    return {"seconds": time.perf_counter() - t0, "test_accuracy_median": statistics.median(accs)}


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import jax
    import torch

    dev = jax.devices()[0]
    return {"jax": jax.__version__, "jaxlib": getattr(jax.lib, "__version__", None) or _version("jaxlib"),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": f"{dev.platform}:{dev.device_kind}", "device_count": len(jax.devices()),
            "cpu_count": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "platform": platform.platform(),
            "command": machine_command(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def machine_command() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def _version(pkg: str):
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def parse_steps_for(items: list[str]) -> dict[tuple[str, int], int]:
    out = {}
    for item in items:
        try:
            key, steps = item.split("=")
            model, members = key.split(":")
            out[(model, int(members))] = int(steps)
        except ValueError:
            raise SystemExit(f"--steps-for/--repeats-for: expected MODEL:MEMBERS=N, got {item!r}") from None
    return out


JAXDL_MODES = ("auto", "fused_cold", "one_by_one_cold", "fused", "one_by_one", "auto_cached")
WARM_MODES = ("fused", "one_by_one", "auto_cached")


def bench_case(model: str, members: int, steps: int, repeats: int, dataset, tdata, scratch: Path,
               skip_torch: bool, modes: tuple[str, ...] = JAXDL_MODES) -> dict[str, Any]:
    cfgs = make_cfgs(model, members, steps)
    # auto first: its probe seeds the driver decisions that fused and one_by_one then find cached;
    # *_cold: fused / one by one with an empty cache, paying their own driver probe (like-for-like with auto);
    # auto_cached: a later sweep of the same structure on this machine (the decision is cached; no probe)
    modes = [m for m in JAXDL_MODES if m in modes] + ([] if skip_torch else ["torch"])
    driver_cache = Path(tempfile.mkdtemp(prefix="driver-cache-", dir=scratch))
    raw: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for r in range(repeats):
        for mode in modes:
            if mode == "torch":
                rec = time_torch(model, cfgs, tdata, dataset.num_classes)
            else:
                rec = time_jaxdl(cfgs, dataset, mode, scratch, driver_cache)
            raw[mode].append(rec)
            extra = f" (chose {'fused' if rec['decision']['fused'] else 'one-by-one'}, probe {rec['probe_s']:.1f} s)" \
                if mode == "auto" else ""
            print(f"  [{model} x{members}, {steps} steps] repeat {r + 1}/{repeats} {mode:>10}: "
                  f"{rec['seconds']:7.2f} s{extra}", flush=True)
    return summarize(model, members, steps, raw)


def summarize(model: str, members: int, steps: int, raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians, ratios and auto's choices of one case from its raw timings (``{mode: [record, …]}``)."""
    raw = {m: runs for m, runs in raw.items() if runs}
    med = {m: statistics.median(x["seconds"] for x in runs) for m, runs in raw.items()}

    def best_of(*names):
        present = [med[n] for n in names if n in med]
        return min(present) if present else None

    best, best_cold = best_of("fused", "one_by_one"), best_of("fused_cold", "one_by_one_cold")
    ratios = {
        "one_by_one_over_fused": _ratio(med.get("one_by_one"), med.get("fused")),
        "auto_over_best_cold": _ratio(med.get("auto"), best_cold),
        "auto_over_best": _ratio(med.get("auto"), best),
        "auto_cached_over_best": _ratio(med.get("auto_cached"), best),
        "torch_over_fused": _ratio(med.get("torch"), med.get("fused")),
        "torch_over_best": _ratio(med.get("torch"), best),
    }
    auto = raw.get("auto", [])
    choices = [x["decision"]["fused"] for x in auto]
    return {
        "model": model, "members": members, "steps": steps, "batch_size": BATCH,
        "repeats": {m: len(runs) for m, runs in raw.items()},
        "lrs": member_lrs(members), "raw": raw, "median_s": med,
        "auto": {"choices_fused": choices, "chose": _choice_label(choices),
                 "median_probe_s": statistics.median(x["probe_s"] for x in auto) if auto else None,
                 "median_train_s": statistics.median(x["train_s"] for x in auto) if auto else None,
                 "extra_cold_s": None if not auto or best_cold is None else med["auto"] - best_cold,
                 "probe_numbers": [{k: x["decision"].get(k) for k in ("fused_s_per_step", "one_by_one_s_per_step",
                                                                      "reason")} for x in auto]},
        "best_mode": None if best is None else min(("fused", "one_by_one"), key=lambda n: med.get(n, float("inf"))),
        "ratios": ratios,
    }


def combine_source(item: str) -> tuple[str, set[str] | None]:
    """``FILE.json`` or ``FILE.json:MODEL[,MODEL…]`` -> (path, the models to take or None for all)."""
    head, _, tail = item.rpartition(":")
    if head.endswith(".json") and tail:
        return head, set(tail.split(","))
    return item, None


def combine(paths: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Pool the raw timings of earlier runs' JSON files: cases with the same model, members, steps and batch size are
    merged (every repeat of every mode counts), then summarised again. A path may end in ``:MODEL[,MODEL…]`` to take
    only those models' cases from it (e.g. a file whose other cases an improved code version re-ran). Returns
    (cases, notes naming the sources)."""
    pooled: dict[tuple, dict[str, list]] = {}
    notes = []
    for item in paths:
        path, models = combine_source(item)
        data = json.loads(Path(path).read_text())
        present = {c["model"] for c in data["cases"]}
        if models is not None and not models <= present:
            raise SystemExit(f"--combine: {path} has no {', '.join(sorted(models - present))} cases "
                             f"(it has {', '.join(sorted(present))})")
        taken = f" — its {', '.join(sorted(models))} cases only" if models else ""
        notes.append(f"pooled from `{path}`{taken}: `{data['machine']['command']}` ({data['machine']['started']})")
        for c in data["cases"]:
            if models is not None and c["model"] not in models:
                continue
            key = (c["model"], c["members"], c["steps"], c.get("batch_size", BATCH))
            if key[3] != BATCH:
                raise SystemExit(f"--combine: {path} has batch size {key[3]}, this script benchmarks {BATCH}")
            for mode, runs in c["raw"].items():
                pooled.setdefault(key, {}).setdefault(mode, []).extend(runs)
    return [summarize(model, members, steps, raw) for (model, members, steps, _), raw in pooled.items()], notes


def _choice_label(choices: list[bool]) -> str | None:
    if not choices:
        return None
    if all(choices):
        return "fused"
    if not any(choices):
        return "one-by-one"
    return f"mixed ({sum(choices)}/{len(choices)} fused)"


def _repeats_label(repeats: dict[str, int]) -> str:
    """``3`` when every mode ran 3 times, else e.g. ``auto 5, one_by_one_cold 5, others 1``."""
    counts = sorted(set(repeats.values()))
    if len(counts) == 1:
        return str(counts[0])
    common = max(counts, key=lambda n: sum(v == n for v in repeats.values()))
    rest = [f"{m} {n}" for m, n in repeats.items() if n != common]
    return ", ".join(rest + [f"others {common}"])


def _fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def markdown(cases: list[dict[str, Any]], info: dict[str, Any], notes: list[str]) -> str:
    lines = [
        "### Sweep benchmark: fused vs one-by-one vs auto vs PyTorch",
        "",
        f"`{info['command']}` — {info['started']}; jax {info['jax']} on {info['device']}, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['affinity_cpus']} CPU cores (shared; noisy).",
        "",
        "Digits (8×8, 1,299 training images), Adam, batch 64, members differ in lr (3e-4…3e-3, log-spaced) and seed; "
        "evaluation on val+test at the end only; no checkpoints. Times are end-to-end wall seconds for the whole "
        "group, **including tracing/XLA compilation**, median of the repeats. Two starting points: **cold** — an "
        "empty `$JAXDL_CACHE_DIR`, as on a machine that never ran this model: auto pays its whole fusion probe "
        "(which also picks the driver), fused and one-by-one pay their own driver probe; **warm** — the decisions "
        "cached: fused and one-by-one find their driver, auto cached finds its fuse-or-not decision. torch trains the "
        "members one by one, inputs pre-resized to 32×32 for LeNet.",
    ]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines += [
        "",
        "| model | members | steps | repeats | fused s cold / warm | one-by-one s cold / warm | auto s cold (choice, probe s) "
        "| auto s warm | torch s | 1-by-1 / fused | **auto / best, cold** | first probe's extra s "
        "| auto cold / best warm | **auto / best, warm** | torch / best |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        m, r = c["median_s"], c["ratios"]
        flag = lambda v: "" if v is None or v <= 1.10 else " ⚠"  # noqa: E731
        lines.append(
            f"| {c['model']} | {c['members']} | {c['steps']} | {_repeats_label(c['repeats'])} "
            f"| {_fmt(m.get('fused_cold'))} / {_fmt(m.get('fused'))} "
            f"| {_fmt(m.get('one_by_one_cold'))} / {_fmt(m.get('one_by_one'))} "
            f"| {_fmt(m.get('auto'))} ({c['auto']['chose']}, {_fmt(c['auto']['median_probe_s'], '.1f')}) "
            f"| {_fmt(m.get('auto_cached'))} | {_fmt(m.get('torch'))} | {_fmt(r['one_by_one_over_fused'])} "
            f"| {_fmt(r['auto_over_best_cold'])}{flag(r['auto_over_best_cold'])} "
            f"| {_fmt(c['auto'].get('extra_cold_s'), '.1f')} | {_fmt(r['auto_over_best'])} "
            f"| {_fmt(r.get('auto_cached_over_best'))}{flag(r.get('auto_cached_over_best'))} "
            f"| {_fmt(r['torch_over_best'])} |")
    lines += ["", "best = the faster of fused and one-by-one from the same starting point; target for auto / best ≤ "
              "1.10 (⚠ = missed). first probe's extra s = auto cold − best cold: what a signature's first-ever "
              "fusion probe costs beyond the best mode's own driver probe (mostly compiling the losing candidate and "
              "running it once); the probe's own time does not depend on the run's length and it is paid once per "
              "signature, member count and device (then cached), so its share falls as runs grow. auto cold / best warm sets that first probe against modes that were "
              "told their driver (informative, not a target). 1-by-1 / fused compares the warm runs. Ratios > 1 in "
              "the torch column mean jaxdl is faster."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--members", type=int, nargs="+", default=[16, 64])
    p.add_argument("--models", nargs="+", default=["mlp", "lenet5"], choices=sorted(MODELS))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--steps-for", nargs="*", default=[], metavar="MODEL:MEMBERS=STEPS",
                   help="override --steps for one case, e.g. lenet5:64=100 (documented in the table header)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-for", nargs="*", default=[], metavar="MODEL:MEMBERS=N",
                   help="override --repeats for one case, e.g. lenet5:64=1 (documented in the table header)")
    p.add_argument("--out", default="scripts/results/bench_sweep", help="writes OUT.json and OUT.md")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 members, 20 steps, 1 repeat")
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="time nothing: pool the raw timings of earlier runs' JSON files (same model, members and "
                        "steps) into one table, written to --out; FILE.json:MODEL[,MODEL] takes only those models' "
                        "cases from a file")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--modes", nargs="+", default=list(JAXDL_MODES), choices=JAXDL_MODES,
                   help="the jaxdl modes to time (default: all); the warm ones need auto (its probe caches the "
                        "decisions they find)")
    p.add_argument("--torch-threads", type=int, default=2,
                   help="torch.set_num_threads (default 2; on an oversubscribed 2-core machine 1 can be far faster)")
    args = p.parse_args(argv)
    if args.quick:
        args.members, args.steps, args.repeats = [4], 20, 1
    if set(args.modes) & set(WARM_MODES) and "auto" not in args.modes:
        p.error(f"--modes: {', '.join(sorted(set(args.modes) & set(WARM_MODES)))} need auto (its probe caches the "
                "decisions the warm modes find)")
    if args.combine:
        cases, notes = combine(args.combine)
        info = {**json.loads(Path(combine_source(args.combine[0])[0]).read_text())["machine"],
                "command": machine_command(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        info.pop("total_s", None)
        return write_results(args.out, cases, info, notes, args)
    steps_for = parse_steps_for(args.steps_for)
    repeats_for = parse_steps_for(args.repeats_for)

    import torch

    torch.set_num_threads(args.torch_threads)
    import jax

    from jaxdl.config import DataConfig
    from jaxdl.data import load

    info = machine_info()
    dataset = load(DataConfig(name="digits"))
    # warm up the JAX runtime once (backend start-up is not part of any mode's cost)
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.zeros(3, np.float32)))
    notes = []
    for (model, members), steps in sorted(steps_for.items()):
        notes.append(f"**{model} × {members}: {steps} steps instead of {args.steps}** (to fit the time budget).")
    for (model, members), n in sorted(repeats_for.items()):
        notes.append(f"**{model} × {members}: {n} repeat(s) instead of {args.repeats}** (to fit the time budget).")
    if args.torch_threads != 2:
        notes.append(f"**torch ran with {args.torch_threads} thread(s)** (`--torch-threads`), not 2.")
    if set(args.modes) != set(JAXDL_MODES):
        notes.append(f"**modes timed: {', '.join(args.modes)}** (`--modes`); the others show –.")
    if args.quick:
        notes.append("**--quick smoke run** (4 members, 20 steps, 1 repeat): not a measurement.")

    scratch = Path(tempfile.mkdtemp(prefix="jaxdl-bench-"))
    cases = []
    t_all = time.perf_counter()
    try:
        for model in args.models:
            tdata = None if args.no_torch else torch_data(model, dataset)
            for members in args.members:
                steps = steps_for.get((model, members), args.steps)
                print(f"== {model}, {members} members, {steps} steps", flush=True)
                repeats = repeats_for.get((model, members), args.repeats)
                cases.append(bench_case(model, members, steps, repeats, dataset, tdata, scratch,
                                        args.no_torch, tuple(args.modes)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info["total_s"] = round(time.perf_counter() - t_all, 1)
    return write_results(args.out, cases, info, notes, args)


def write_results(out: str, cases: list[dict[str, Any]], info: dict[str, Any], notes: list[str], args) -> int:
    md = markdown(cases, info, notes)
    out_json, out_md = Path(out + ".json"), Path(out + ".md")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"machine": info, "args": vars(args), "notes": notes,
                                                    "cases": cases}, indent=1, default=str))
    out_md.write_text(md)
    print()
    print(md)
    print(f"wrote {out_json} and {out_md}" + (f" ({info['total_s']} s)" if "total_s" in info else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
