#!/usr/bin/env python3
"""Recurrent benchmark: jaxdl's ``nn.Recurrent`` against PyTorch's ``nn.LSTM``/``nn.GRU`` on this CPU, and a fused
population of small recurrent models against the same members trained one by one.

Two sections:

* **train** — training steps/s of one model, for an LSTM and a GRU: a ``Recurrent(cell, hidden, layers)`` stack
  (``batch_first``), a linear head on every step, MSE against a random target, Adam. jaxdl: one ``jax.jit``-compiled
  step (forward, backward, ``optax.adam`` update; the state is donated); PyTorch: eager ``nn.LSTM``/``nn.GRU`` +
  ``nn.Linear`` with ``torch.optim.Adam`` and ``torch.set_num_threads(--torch-threads)``. Both start from the same
  weights (PyTorch's initialisation, imported with ``jaxdl.convert.convert_recurrent_state_dict``) and read the same
  few pre-generated batches in turn, so their first losses agree (recorded as a check). ``--warmup`` steps are run
  untimed, then ``--steps`` timed steps; steps/s = steps / wall seconds of the timed loop. jaxdl's step is compiled
  afresh each repeat (a new closure) and its **compile time** is the first call minus one steady-state step.
* **population** — ``--members`` small recurrent models (LSTM by default) that differ only in learning rate
  (log-spaced) and init seed, each on its own batches: (a) **fused** — one ``jax.vmap``-ed step over stacked
  params/optimizer states, one program for all members; (b) **one-by-one** — the single-member step (compiled once,
  lr passed as an argument) called for each member in turn; (c) **torch** — the members in PyTorch, one by one, for
  reference. Reported: seconds per round of ``members`` member-steps (one fused step, or ``members`` single steps).

Within each repeat the sides alternate (jaxdl, torch, per cell; fused, one-by-one, torch) so the slow drifts of a
shared machine hit them alike; the tables give medians over ``--repeats`` and ratios of medians measured in this
process. The JSON keeps every raw timing, the sizes, the load averages at start and end, and the machine.

    python scripts/bench_rnn.py --quick                       # smoke run (seconds; tiny sizes, not a measurement)
    python scripts/bench_rnn.py --out scripts/results/bench_rnn
    python scripts/bench_rnn.py --sections population --members 16 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CELLS = ("lstm", "gru")
SECTIONS = ("train", "population")
N_BATCHES = 4  # pre-generated batches each side cycles through

# Default sizes; --quick replaces them with tiny ones.
TRAIN_SIZES = {"batch": 64, "seq": 128, "input": 64, "hidden": 256, "layers": 2, "output": 64}
POP_SIZES = {"batch": 32, "seq": 32, "input": 8, "hidden": 32, "layers": 1, "output": 8}
QUICK_TRAIN = {"batch": 4, "seq": 8, "input": 4, "hidden": 8, "layers": 2, "output": 4}
QUICK_POP = {"batch": 4, "seq": 8, "input": 4, "hidden": 8, "layers": 1, "output": 4}


# ----------------------------------------------------------------------------------------------------------------
# Bookkeeping (pure)
# ----------------------------------------------------------------------------------------------------------------


def member_lrs(members: int) -> list[float]:
    """Log-spaced learning rates 3e-4 … 3e-3."""
    if members == 1:
        return [1e-3]
    return [float(v) for v in np.geomspace(3e-4, 3e-3, members)]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def torch_side(threads: int) -> str:
    return f"torch@{threads}"


def side_threads(side: str) -> int:
    return int(side.split("@")[1])


def summarize_train(cell: str, raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians and ratios of one cell's training timings. ``raw`` maps ``jaxdl`` and ``torch@<threads>`` (one per
    torch thread count) to per-repeat records with ``steps_per_s`` (and, for jaxdl, ``compile_s``). Ratios are keyed
    by the torch side: ``jaxdl_over_torch["torch@2"]`` = median jaxdl steps/s / median torch steps/s (> 1: jaxdl
    faster)."""
    jx = raw.get("jaxdl", [])
    med = {"steps_per_s": {side: median_of(runs, "steps_per_s") for side, runs in raw.items()},
           "jaxdl_compile_s": median_of(jx, "compile_s"), "jaxdl_first_call_s": median_of(jx, "first_call_s")}
    torch_sides = [side for side in raw if side.startswith("torch@")]
    jx_sps = med["steps_per_s"].get("jaxdl")
    compile_s = med["jaxdl_compile_s"]
    return {"cell": cell, "repeats": {k: len(v) for k, v in raw.items()}, "raw": raw, "median": med,
            "ratios": {
                "jaxdl_over_torch": {t: ratio(jx_sps, med["steps_per_s"][t]) for t in torch_sides},
                "jaxdl_over_torch_per_repeat": {t: [ratio(a["steps_per_s"], b["steps_per_s"])
                                                    for a, b in zip(jx, raw[t])] for t in torch_sides},
                "compile_s_in_torch_steps": {t: None if compile_s is None or med["steps_per_s"][t] is None
                                             else compile_s * med["steps_per_s"][t] for t in torch_sides}}}


def summarize_population(members: int, raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians and ratios of one population case. ``raw`` maps ``fused``, ``one_by_one`` and ``torch@<threads>`` to
    per-repeat records with ``round_s`` (seconds per round of ``members`` member-steps)."""
    med = {m: median_of(runs, "round_s") for m, runs in raw.items()}
    compile_s = {m: median_of(runs, "compile_s") for m in ("fused", "one_by_one") if (runs := raw.get(m))}
    torch_sides = [side for side in raw if side.startswith("torch@")]
    return {"members": members, "repeats": {k: len(v) for k, v in raw.items()}, "lrs": member_lrs(members),
            "raw": raw, "median_round_s": med, "median_compile_s": compile_s,
            "ratios": {"one_by_one_over_fused": ratio(med.get("one_by_one"), med.get("fused")),
                       "one_by_one_over_fused_per_repeat": [ratio(b["round_s"], a["round_s"]) for a, b in
                                                            zip(raw.get("fused", []), raw.get("one_by_one", []))],
                       "torch_over_fused": {t: ratio(med[t], med.get("fused")) for t in torch_sides},
                       "torch_over_one_by_one": {t: ratio(med[t], med.get("one_by_one")) for t in torch_sides}}}


def _fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def _sizes(s: dict[str, int]) -> str:
    return (f"batch {s['batch']}, sequence {s['seq']}, input {s['input']}, hidden {s['hidden']}, "
            f"{s['layers']} layer(s), head {s['output']} outputs")


def markdown(result: dict[str, Any]) -> str:
    info, args = result["machine"], result["args"]
    la0, la1 = info["loadavg_start"], info["loadavg_end"]
    lines = [
        "### Recurrent benchmark: jaxdl nn.Recurrent vs PyTorch nn.LSTM/nn.GRU (CPU)",
        "",
        f"`{info['command']}` — {info['started']}; jax {info['jax']} on {info['device']}, torch {info['torch']} "
        f"({' and '.join(map(str, info['torch_threads']))} thread(s), `torch.set_num_threads`), "
        f"{info['affinity_cpus']} CPU cores, **shared with other work** "
        f"(load average 1/5/15 min: {' / '.join(f'{v:.2f}' for v in la0)} at start, "
        f"{' / '.join(f'{v:.2f}' for v in la1)} at end).",
    ]
    if result["notes"]:
        lines += [""] + [f"- {n}" for n in result["notes"]]
    if result.get("train"):
        s = result["train_sizes"]
        lines += [
            "",
            f"#### One model, one training step ({_sizes(s)}; MSE, Adam; {args['warmup']} warm-up + "
            f"{args['steps']} timed steps, median of {args['repeats']} repeats)",
            "",
            "| cell | jaxdl steps/s | torch threads | torch steps/s | **jaxdl / torch** | per-repeat jaxdl / torch "
            "| jaxdl compile s | compile in torch steps | first loss jaxdl / torch |",
            "|---|---:|---:|---:|---:|---|---:|---:|---|",
        ]
        for c in result["train"]:
            m, r = c["median"], c["ratios"]
            for side in r["jaxdl_over_torch"]:
                loss = c["raw"]["jaxdl"][0].get("first_loss"), c["raw"][side][0].get("first_loss")
                lines.append(
                    f"| {c['cell']} | {_fmt(m['steps_per_s']['jaxdl'], '.3f')} | {side_threads(side)} "
                    f"| {_fmt(m['steps_per_s'][side], '.3f')} | **{_fmt(r['jaxdl_over_torch'][side])}** "
                    f"| {', '.join(_fmt(v) for v in r['jaxdl_over_torch_per_repeat'][side])} "
                    f"| {_fmt(m['jaxdl_compile_s'])} | {_fmt(r['compile_s_in_torch_steps'][side], '.1f')} "
                    f"| {_fmt(loss[0], '.5f')} / {_fmt(loss[1], '.5f')} |")
        lines += ["", "jaxdl / torch > 1: jaxdl's jitted step trains faster than PyTorch eager on this CPU; < 1: "
                  "PyTorch is faster. The compile time (first call minus one steady step, paid once per shape) is "
                  "not in steps/s; 'compile in torch steps' says how many PyTorch steps it is worth. The first "
                  "losses agree when both start from the same weights and batch (a check that the two sides do the "
                  "same work)."]
    if result.get("population"):
        s = result["pop_sizes"]
        lines += [
            "",
            f"#### Population: {args['pop_cell'].upper()} members differing in lr and seed, fused vs one by one "
            f"({_sizes(s)}; {args['pop_warmup']} warm-up + {args['pop_steps']} timed rounds, median of "
            f"{args['repeats']} repeats; torch {args['pop_torch_steps']} timed rounds)",
            "",
            "| members | fused ms / round | one-by-one ms / round | **one-by-one / fused** "
            "| per-repeat one-by-one / fused | compile s fused / single | torch (threads): ms / round, "
            "torch / fused, torch / one-by-one |",
            "|---:|---:|---:|---:|---|---|---|",
        ]
        for c in result["population"]:
            m, r, cs = c["median_round_s"], c["ratios"], c["median_compile_s"]
            ms = lambda v: None if v is None else v * 1e3  # noqa: E731
            torch_cells = "; ".join(
                f"({side_threads(t)}) {_fmt(ms(m[t]))}, {_fmt(r['torch_over_fused'][t])}, "
                f"{_fmt(r['torch_over_one_by_one'][t])}" for t in r["torch_over_fused"]) or "–"
            lines.append(
                f"| {c['members']} | {_fmt(ms(m.get('fused')))} | {_fmt(ms(m.get('one_by_one')))} "
                f"| **{_fmt(r['one_by_one_over_fused'])}** "
                f"| {', '.join(_fmt(v) for v in r['one_by_one_over_fused_per_repeat'])} "
                f"| {_fmt(cs.get('fused'))} / {_fmt(cs.get('one_by_one'))} | {torch_cells} |")
        lines += ["", "A round is one training step of every member: one vmapped step (fused) or one call of the "
                  "single-member step per member (one-by-one; compiled once, reused). one-by-one / fused > 1: "
                  "fusing the population into one program pays on this CPU; < 1: it costs. torch trains the same "
                  "members one by one in eager PyTorch (reference; > 1 in its columns: jaxdl is faster)."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Models and data
# ----------------------------------------------------------------------------------------------------------------


def make_batches(sizes: dict[str, int], seed: int, n: int = N_BATCHES) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shape = (sizes["batch"], sizes["seq"])
    return [(rng.standard_normal(shape + (sizes["input"],), dtype=np.float32),
             rng.standard_normal(shape + (sizes["output"],), dtype=np.float32)) for _ in range(n)]


def torch_model(cell: str, sizes: dict[str, int], seed: int):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            rnn = nn.LSTM if cell == "lstm" else nn.GRU
            self.rnn = rnn(sizes["input"], sizes["hidden"], sizes["layers"], batch_first=True)
            self.head = nn.Linear(sizes["hidden"], sizes["output"])

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    torch.manual_seed(seed)
    return Net()


def jax_module(cell: str, sizes: dict[str, int]):
    import flax.linen as nn

    from jaxdl.nn.recurrent import Recurrent

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            out, _ = Recurrent(cell, sizes["hidden"], sizes["layers"], name="rnn")(x)
            return nn.Dense(sizes["output"], name="head")(out)

    return Net()


def params_from_torch(net) -> dict[str, Any]:
    """jaxdl params equal to a torch ``Net``'s weights (recurrent import + the head transposed)."""
    import jax
    import jax.numpy as jnp

    from jaxdl.convert import convert_recurrent_state_dict

    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    params = convert_recurrent_state_dict({k: v for k, v in sd.items() if k.startswith("rnn.")})["params"]
    params["head"] = {"kernel": sd["head.weight"].T.copy(), "bias": sd["head.bias"].copy()}
    return jax.tree.map(jnp.asarray, params)


def make_jax_step(module, tx=None):
    """``step(state, x, y) -> (state, loss)`` with ``state = (params, opt_state)``; with ``tx=None`` the update is
    Adam written as ``scale_by_adam`` times ``-lr``, and the step takes the lr as an argument:
    ``step(state, x, y, lr)``."""
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(params, x, y):
        return jnp.mean((module.apply({"params": params}, x) - y) ** 2)

    if tx is not None:
        def step(state, x, y):
            params, opt_state = state
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss
        return step

    adam = optax.scale_by_adam()

    def step_lr(state, x, y, lr):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = adam.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
        return (params, opt_state), loss

    return step_lr


# ----------------------------------------------------------------------------------------------------------------
# Timings
# ----------------------------------------------------------------------------------------------------------------


def time_jaxdl_train(cell: str, sizes: dict[str, int], batches, warmup: int, steps: int, seed: int) -> dict[str, Any]:
    """Fresh jit (so the compile is paid and measured each repeat), first call, warm-up, then ``steps`` timed."""
    import jax
    import optax

    module = jax_module(cell, sizes)
    params = params_from_torch(torch_model(cell, sizes, seed))
    tx = optax.adam(1e-3)
    state = (params, tx.init(params))
    step = jax.jit(make_jax_step(module, tx), donate_argnums=0)
    dev = [(jax.device_put(x), jax.device_put(y)) for x, y in batches]
    jax.block_until_ready(dev)

    t0 = time.perf_counter()
    state, loss = step(state, *dev[0])
    first_loss = float(loss)
    first_call = time.perf_counter() - t0
    t0 = time.perf_counter()  # one steady-state step: the compile time is the first call minus this
    state, loss = step(state, *dev[1 % len(dev)])
    jax.block_until_ready((state, loss))
    steady = time.perf_counter() - t0
    for i in range(warmup):
        state, loss = step(state, *dev[(i + 2) % len(dev)])
    jax.block_until_ready((state, loss))
    step_s = []  # each step waited for (a step is ~seconds at the default sizes: the wait costs nothing)
    for i in range(steps):
        t0 = time.perf_counter()
        state, loss = step(state, *dev[i % len(dev)])
        jax.block_until_ready((state, loss))
        step_s.append(time.perf_counter() - t0)
    wall = sum(step_s)
    return {"seconds": wall, "steps": steps, "steps_per_s": steps / wall, "step_s": step_s,
            "first_call_s": first_call, "steady_step_s": steady, "compile_s": first_call - steady,
            "first_loss": first_loss, "last_loss": float(loss)}


def time_torch_train(cell: str, sizes: dict[str, int], batches, warmup: int, steps: int, seed: int,
                     threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    net = torch_model(cell, sizes, seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]

    def step(x, y):
        loss = torch.mean((net(x) - y) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    first_loss = float(step(*data[0]).detach())
    first = time.perf_counter() - t0
    for i in range(warmup):
        step(*data[(i + 1) % len(data)])
    step_s = []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = step(*data[i % len(data)])
        step_s.append(time.perf_counter() - t0)
    wall = sum(step_s)
    return {"seconds": wall, "steps": steps, "steps_per_s": steps / wall, "step_s": step_s, "threads": threads,
            "threads_effective": torch.get_num_threads(), "first_call_s": first, "first_loss": first_loss,
            "last_loss": float(loss.detach())}


class Population:
    """The members' initial states and batches, built once and reused by every repeat and mode."""

    def __init__(self, cell: str, sizes: dict[str, int], members: int):
        self.cell, self.sizes, self.members = cell, sizes, members
        self.lrs = member_lrs(members)
        self.nets = [torch_model(cell, sizes, seed) for seed in range(members)]
        self.params = [params_from_torch(n) for n in self.nets]
        self.batches = [make_batches(sizes, 1000 + seed) for seed in range(members)]  # member -> [(x, y)] * N


def time_population_jax(pop: Population, fused: bool, warmup: int, rounds: int) -> dict[str, Any]:
    """``rounds`` rounds of one step per member: one vmapped step (fused) or the single step for each member."""
    import jax
    import jax.numpy as jnp
    import optax

    module = jax_module(pop.cell, pop.sizes)
    step = make_jax_step(module)
    adam = optax.scale_by_adam()
    states = [(p, adam.init(p)) for p in pop.params]
    lrs = [jnp.asarray(lr, jnp.float32) for lr in pop.lrs]
    n_b = len(pop.batches[0])
    if fused:
        fn = jax.jit(jax.vmap(step), donate_argnums=0)
        stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
        state = stack(states)
        lr = jnp.stack(lrs)
        data = [(jnp.stack([b[k][0] for b in pop.batches]), jnp.stack([b[k][1] for b in pop.batches]))
                for k in range(n_b)]
        jax.block_until_ready((state, data))

        def one_round(k):
            nonlocal state
            state, loss = fn(state, *data[k % n_b], lr)
            return loss
    else:
        fn = jax.jit(step, donate_argnums=0)
        state = [jax.tree.map(jnp.array, s) for s in states]  # own buffers (donated)
        data = [[(jnp.asarray(x), jnp.asarray(y)) for x, y in b] for b in pop.batches]
        jax.block_until_ready((state, data))

        def one_round(k):
            loss = None
            for m in range(pop.members):
                state[m], loss = fn(state[m], *data[m][k % n_b], lrs[m])
            return loss

    t0 = time.perf_counter()
    jax.block_until_ready(one_round(0))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(one_round(1))
    steady = time.perf_counter() - t0
    for k in range(warmup):
        loss = one_round(k + 2)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for k in range(rounds):
        loss = one_round(k)
    jax.block_until_ready((state, loss))
    wall = time.perf_counter() - t0
    return {"seconds": wall, "rounds": rounds, "round_s": wall / rounds, "first_round_s": first,
            "steady_round_s": steady, "compile_s": first - steady}


def time_population_torch(pop: Population, warmup: int, rounds: int, threads: int) -> dict[str, Any]:
    import copy

    import torch

    torch.set_num_threads(threads)
    nets = [copy.deepcopy(n) for n in pop.nets]
    opts = [torch.optim.Adam(n.parameters(), lr=lr) for n, lr in zip(nets, pop.lrs)]
    data = [[(torch.from_numpy(x), torch.from_numpy(y)) for x, y in b] for b in pop.batches]
    n_b = len(data[0])

    def one_round(k):
        for net, opt, d in zip(nets, opts, data):
            x, y = d[k % n_b]
            loss = torch.mean((net(x) - y) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for k in range(warmup + 1):
        one_round(k)
    t0 = time.perf_counter()
    for k in range(rounds):
        one_round(k)
    wall = time.perf_counter() - t0
    return {"seconds": wall, "rounds": rounds, "round_s": wall / rounds, "threads": threads,
            "threads_effective": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------


def machine_info(torch_threads: list[int]) -> dict[str, Any]:
    import jax
    import torch

    from importlib import metadata

    dev = jax.devices()[0]
    return {"jax": jax.__version__, "jaxlib": metadata.version("jaxlib"), "flax": metadata.version("flax"),
            "optax": metadata.version("optax"), "torch": torch.__version__, "torch_threads": torch_threads,
            "torch_interop_threads": torch.get_num_interop_threads(), "device": f"{dev.platform}:{dev.device_kind}",
            "cpu_count": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "platform": platform.platform(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "shared_machine": True}


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS, help="cells of the train section")
    p.add_argument("--batch", type=int, default=TRAIN_SIZES["batch"])
    p.add_argument("--seq", type=int, default=TRAIN_SIZES["seq"])
    p.add_argument("--input", type=int, default=TRAIN_SIZES["input"])
    p.add_argument("--hidden", type=int, default=TRAIN_SIZES["hidden"])
    p.add_argument("--layers", type=int, default=TRAIN_SIZES["layers"])
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first two (train section)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per repeat (train section)")
    p.add_argument("--members", type=int, nargs="+", default=[16], help="population sizes")
    p.add_argument("--pop-cell", default="lstm", choices=CELLS)
    p.add_argument("--pop-warmup", type=int, default=3)
    p.add_argument("--pop-steps", type=int, default=30, help="timed rounds per repeat (population section, jaxdl)")
    p.add_argument("--pop-torch-steps", type=int, default=10,
                   help="timed rounds per repeat of the torch population (slow with 2 threads on a busy machine)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--torch-threads", type=int, nargs="+", default=[2],
                   help="torch.set_num_threads; several values time one torch side each (e.g. 2 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="scripts/results/bench_rnn", help="writes OUT.json and OUT.md")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 2 steps, 1 repeat (not a measurement)")
    args = p.parse_args(argv)
    if args.quick:
        q = QUICK_TRAIN
        args.batch, args.seq, args.input, args.hidden, args.layers = q["batch"], q["seq"], q["input"], q["hidden"], \
            q["layers"]
        args.warmup, args.steps, args.pop_warmup, args.pop_steps, args.pop_torch_steps, args.repeats = 1, 2, 1, 2, 2, 1
        args.members = [4]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    loadavg_start = os.getloadavg()

    import jax

    info = machine_info(args.torch_threads)
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.zeros(3, np.float32)))  # backend start-up is nobody's cost
    train_sizes = {"batch": args.batch, "seq": args.seq, "input": args.input, "hidden": args.hidden,
                   "layers": args.layers, "output": args.input}
    pop_sizes = dict(QUICK_POP if args.quick else POP_SIZES)
    notes = []
    if args.quick:
        notes.append("**--quick smoke run** (tiny sizes, 2 timed steps, 1 repeat): not a measurement.")
    if args.torch_threads != [2]:
        notes.append(f"**torch timed with {' and '.join(map(str, args.torch_threads))} thread(s)** "
                     "(`--torch-threads`; the default is 2), one torch side per value.")
    result: dict[str, Any] = {"args": vars(args), "notes": notes, "train_sizes": train_sizes, "pop_sizes": pop_sizes,
                              "train": [], "population": [], "loadavg_per_repeat": []}
    t_all = time.perf_counter()

    if "train" in args.sections:
        batches = make_batches(train_sizes, args.seed)
        sides = ["jaxdl"] + [torch_side(t) for t in args.torch_threads]
        raw = {cell: {side: [] for side in sides} for cell in args.cells}
        for r in range(args.repeats):
            result["loadavg_per_repeat"].append({"section": "train", "repeat": r, "loadavg": os.getloadavg()})
            for cell in args.cells:
                # alternate which side goes first from repeat to repeat
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    if side == "jaxdl":
                        rec = time_jaxdl_train(cell, train_sizes, batches, args.warmup, args.steps, args.seed)
                    else:
                        rec = time_torch_train(cell, train_sizes, batches, args.warmup, args.steps, args.seed,
                                               side_threads(side))
                    raw[cell][side].append(rec)
                    extra = f", compile {rec['compile_s']:.2f} s" if side == "jaxdl" else ""
                    print(f"  [train {cell}] repeat {r + 1}/{args.repeats} {side:>6}: {rec['steps_per_s']:7.3f} "
                          f"steps/s (first loss {rec['first_loss']:.5f}{extra})", flush=True)
        result["train"] = [summarize_train(cell, raw[cell]) for cell in args.cells]

    if "population" in args.sections:
        for members in args.members:
            pop = Population(args.pop_cell, pop_sizes, members)
            modes = ["fused", "one_by_one"] + [torch_side(t) for t in args.torch_threads]
            raw = {mode: [] for mode in modes}
            for r in range(args.repeats):
                result["loadavg_per_repeat"].append({"section": "population", "members": members, "repeat": r,
                                                     "loadavg": os.getloadavg()})
                for mode in (modes if r % 2 == 0 else modes[::-1]):
                    if mode.startswith("torch@"):
                        rec = time_population_torch(pop, args.pop_warmup, args.pop_torch_steps, side_threads(mode))
                    else:
                        rec = time_population_jax(pop, mode == "fused", args.pop_warmup, args.pop_steps)
                    raw[mode].append(rec)
                    print(f"  [population x{members}] repeat {r + 1}/{args.repeats} {mode:>10}: "
                          f"{rec['round_s'] * 1e3:8.2f} ms / round", flush=True)
            result["population"].append(summarize_population(members, raw))

    info["total_s"] = round(time.perf_counter() - t_all, 1)
    info["loadavg_start"], info["loadavg_end"] = loadavg_start, os.getloadavg()
    result["machine"] = info
    md = markdown(result)
    out_json, out_md = Path(args.out + ".json"), Path(args.out + ".md")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1, default=str))
    out_md.write_text(md)
    print()
    print(md)
    print(f"wrote {out_json} and {out_md} ({info['total_s']} s)")
    return result


if __name__ == "__main__":
    main()
    raise SystemExit(0)
