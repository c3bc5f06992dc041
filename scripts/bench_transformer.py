#!/usr/bin/env python3
"""Transformer benchmark: jaxdl's GPT (``DecoderLM``) against the same GPT in PyTorch on this machine — training,
generation, compile times — and a fused population of small GPTs against the same members trained one by one.

The model is GPT-2-shaped (pre-LayerNorm blocks, learned positions, tanh-GELU MLP of 4·d, tied embeddings; dropout 0,
float32) over a 96-token character vocabulary (95 printable ASCII characters + ``<unk>``; the text is random
characters — the timings do not depend on the text). Both sides start from the *same weights*: jaxdl initialises,
the script copies the parameters into its PyTorch module, and the **parity** check compares eval-mode logits (and the
first training loss) before anything is timed, so the two sides compute the same function.

Sections:

* **parity** — max |logits_jaxdl − logits_torch| on one batch (must be ≤ 1e-4), first training losses of both.
* **train** — tokens/s of one training step (forward, backward, AdamW, as PyTorch's ``AdamW``: ``optim.mode=torch``,
  weight decay 0.01 on every parameter). jaxdl: the step jaxdl's ``host`` driver dispatches
  (``jax.jit(drivers.advance(setup(cfg)), donate_argnums=0)``: the task's loss, gradients, the optimizer, the
  non-finite guard), compiled once; PyTorch: the same model eager with ``torch.optim.AdamW`` and
  ``torch.set_num_threads(--torch-threads)``; optionally (``--torch-compile``) the PyTorch forward compiled with
  ``torch.compile`` (its compile time is recorded, not counted in tokens/s).
* **generate** — tokens/s of sampling ``--new`` tokens after a ``--prompt``-token prompt (temperature 1), batch 1
  and 8.
  jaxdl: ``jaxdl.generate.sample`` (one compiled ``lax.scan`` over the model's key/value-cache ``step``); PyTorch:
  a hand-written key/value-cache loop over the same module, and the same without a cache (the whole sequence
  recomputed every token) for context. A greedy decode (temperature 0) of both cached sides is compared as a check.
* **compile** — jaxdl's train step and its sampling program, ``jax.jit(f).lower(...)`` and ``.compile()`` timed
  separately, in a fresh subprocess per program: **cold** (the first compilation in the process) and **warm** (the
  same program again from a new ``jax.jit`` in the same process). JAX's persistent compilation cache is not enabled.
* **population** — ``--members`` small GPTs (differing in learning rate and seed) trained through jaxdl's population
  machinery (``setup`` → ``Programs`` → the ``--pop-driver`` runner, as ``train_group`` runs them): **fused** (one
  vmapped program; one segment of ``--pop-chunk`` steps trains every member) against **one by one** (the
  single-member program, segment by segment for each member in turn). Member-steps/s, and the ratio.
* **mfu** — on a GPU: model FLOPs utilisation = 6·N·(training tokens/s) / peak (``--peak-tflops``, by default the
  dense TF32 tensor-core peak of an A100/H100/H200, which is what float32 matmuls use there); on a CPU: not applicable.

Within every round the sides alternate (their order flips from round to round) so the slow drifts of a shared
machine hit them alike; tables give medians over ``--rounds`` and ratios of medians measured in this process. The
JSON keeps every raw timing, the sizes, load averages at start and end (and per round) and the machine.

    python scripts/bench_transformer.py --quick                    # smoke run (seconds; tiny sizes, not a measurement)
    python scripts/bench_transformer.py --out scripts/results/bench_transformer
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# the bookkeeping, the PyTorch reference and the report live beside this script (some re-exported for its test)
from bench_transformer_parts import (PEAK_TFLOPS, TorchTrainer, copy_params_to_torch, machine_info,  # noqa: E402,F401
                                     markdown, member_lrs, mfu, peak_tflops_for, ratio, summarize, torch_generate,
                                     torch_gpt, torch_loss)

SECTIONS = ("parity", "train", "generate", "compile", "population", "mfu")
CHARS = "".join(chr(c) for c in range(32, 127))  # 95 printable ASCII characters -> vocabulary 96 with <unk>
N_BATCHES = 4  # pre-cut training batches each side cycles through
PARITY_TOL = 1e-4

# GPT sizes: the timed model, the population members; --quick replaces both with tiny ones.
MODEL = {"layers": 4, "d_model": 256, "heads": 4, "context": 256}
POP_MODEL = {"layers": 2, "d_model": 64, "heads": 4, "context": 64}
QUICK_MODEL = {"layers": 1, "d_model": 16, "heads": 2, "context": 16}
QUICK_POP_MODEL = {"layers": 1, "d_model": 8, "heads": 2, "context": 8}


# ----------------------------------------------------------------------------------------------------------------
# jaxdl side: configs, setup, data
# ----------------------------------------------------------------------------------------------------------------


def random_text(chars: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(np.asarray(list(CHARS))[rng.integers(0, len(CHARS), chars)])


def make_cfg(m: dict[str, int], batch: int, steps: int, *, name: str = "bench_gpt", lr: float = 1e-3, seed: int = 0,
             driver: str = "host", chunk: int = 10):
    """A jaxdl config for a GPT of sizes ``m`` trained with AdamW (PyTorch's update and defaults)."""
    from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config

    return Config(name=name, seed=seed,
                  model=model_config("gpt", context_length=m["context"], d_model=m["d_model"],
                                     num_layers=m["layers"], num_heads=m["heads"], dropout=0.0),
                  data=DataConfig(name="text", block_size=m["context"], val_fraction=0.05, test_fraction=0.05),
                  optim=OptimConfig(name="adamw", mode="torch", lr=lr, weight_decay=0.01),
                  train=TrainConfig(batch_size=batch, steps=steps, driver=driver, chunk_steps=chunk,
                                    checkpoints=False, plots=False, progress=False))


def text_dataset(m: dict[str, int], batch: int, blocks: int, seed: int):
    """A character data set of random printable text with at least ``blocks`` training blocks (and ``batch``)."""
    from jaxdl.data import TextSource, load
    from jaxdl.config import DataConfig

    # the training span (90%) holds the blocks; validation and test (5% each) need at least one block each
    chars = max(int((max(blocks, batch) + 4) * (m["context"] + 1) / 0.9), 30 * (m["context"] + 1)) + 1000
    cfg = DataConfig(name="text", block_size=m["context"], val_fraction=0.05, test_fraction=0.05)
    return load(cfg, source=TextSource(random_text(chars, seed), name="random_chars"))


def gpt_setup(m: dict[str, int], batch: int, seed: int, steps: int = 1000):
    """jaxdl's ``Setup`` of the timed GPT and its initial ``TrainState``."""
    from jaxdl.train import initial_state, setup

    ds = text_dataset(m, batch, N_BATCHES * batch, seed)
    s = setup(make_cfg(m, batch, steps, seed=seed), dataset=ds)
    return s, initial_state(s)


def train_batches(s, batch: int, n: int = N_BATCHES) -> list[np.ndarray]:
    """``n`` training batches of token blocks (B, T + 1) int32, the first ``n·B`` blocks of the training split."""
    return [np.asarray(s.dataset.train.batch(np.arange(k * batch, (k + 1) * batch))["tokens"]) for k in range(n)]


# ----------------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------------


class Bench:
    """The timed GPT on both sides, built once: jaxdl's setup, state and compiled step; PyTorch's module."""

    def __init__(self, m: dict[str, int], batch: int, seed: int):
        import jax
        import jax.numpy as jnp
        import torch

        from jaxdl.models import count_params
        from jaxdl.train.drivers import advance

        self.m, self.batch = m, batch
        self.s, state = gpt_setup(m, batch, seed)
        self.vocab = self.s.dataset.num_classes
        self.params_count = count_params(state.params)
        self.host_params = jax.device_get(state.params)
        self.batches = train_batches(self.s, batch)
        self.step = jax.jit(advance(self.s), donate_argnums=0)  # what the host driver dispatches
        self.state, self.active = state, jnp.asarray(True)
        self.dev = [jax.device_put({"tokens": b}) for b in self.batches]
        self.torch_batches = [torch.from_numpy(b.astype(np.int64)) for b in self.batches]
        self.net = torch_gpt(m, self.vocab)
        copy_params_to_torch(self.host_params, self.net)
        self.variables = {"params": state.params}

    def fresh_torch(self):
        import copy

        return copy.deepcopy(self.net)


def torch_side(name: str, threads: int) -> str:
    return f"{name}@{threads}"


def side_threads(side: str) -> int | None:
    return int(side.split("@")[1]) if "@" in side else None


def run_parity(b: Bench) -> dict[str, Any]:
    """Eval-mode logits of both sides on one batch, and the first training loss of each (same weights, same batch)."""
    import jax
    import torch

    tokens = b.batches[0][:, :-1]  # (B, T)
    forward = jax.jit(lambda v, x: b.s.model.apply(v, x)[0])  # (B, T, V)
    logits_j = np.asarray(forward(b.variables, tokens))
    net = b.fresh_torch().eval()
    with torch.no_grad():
        logits_t = net(torch.from_numpy(tokens.astype(np.int64))).numpy()
        loss_t = float(torch_loss(net, b.torch_batches[0]))
    state = jax.tree.map(jax.numpy.array, b.state)  # a copy: the step donates it
    _, _, metrics = b.step(state, b.active, b.dev[0], b.s.hparams)
    diff = float(np.max(np.abs(logits_j - logits_t)))
    return {"max_abs_logit_diff": diff, "tolerance": PARITY_TOL, "ok": diff <= PARITY_TOL,
            "first_loss_jaxdl": float(metrics["loss"]), "first_loss_torch": loss_t,
            "logits_shape": list(logits_j.shape)}


def time_jaxdl_train(b: Bench, warmup: int, steps: int) -> dict[str, Any]:
    import jax

    for i in range(warmup):
        b.state, b.active, metrics = b.step(b.state, b.active, b.dev[i % N_BATCHES], b.s.hparams)
    jax.block_until_ready((b.state, metrics))
    t0 = time.perf_counter()
    for i in range(steps):
        b.state, b.active, metrics = b.step(b.state, b.active, b.dev[i % N_BATCHES], b.s.hparams)
    jax.block_until_ready((b.state, metrics))
    wall = time.perf_counter() - t0
    return {"seconds": wall, "steps": steps, "tokens_per_s": steps * b.batch * b.m["context"] / wall,
            "last_loss": float(metrics["loss"])}


def run_train(b: Bench, args, loads: list) -> dict[str, Any]:
    sides: dict[str, Any] = {"jaxdl": None}
    sides.update({torch_side("torch", t): TorchTrainer(b, t) for t in args.torch_threads})
    notes = []
    compile_s = None
    if args.torch_compile:
        t = args.torch_compile_threads
        try:
            trainer = TorchTrainer(b, t, compiled=True)
            sides[torch_side("torch_compile", t)], compile_s = trainer, trainer.compile_s
        except Exception as e:  # noqa: BLE001 — recorded: the benchmark goes on without this side
            notes.append(f"torch.compile failed, not measured: {type(e).__name__}: {str(e)[:300]}")
    raw: dict[str, list] = {side: [] for side in sides}
    for r in range(args.rounds):
        loads.append({"section": "train", "round": r, "loadavg": os.getloadavg()})
        for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            rec = time_jaxdl_train(b, args.warmup, args.steps) if side == "jaxdl" else \
                sides[side].time(args.warmup, args.steps)
            raw[side].append(rec)
            print(f"  [train] round {r + 1}/{args.rounds} {side:>16}: {rec['tokens_per_s']:9.1f} tokens/s", flush=True)
    return {"raw": raw, **summarize(raw, "tokens_per_s", "jaxdl"), "notes": notes, "torch_compile_s": compile_s}


def run_generate(b: Bench, args, loads: list) -> dict[str, Any]:
    import jax
    import torch

    from jaxdl.generate import sample

    net = b.fresh_torch().eval()
    keys = [jax.random.fold_in(jax.random.key(args.seed), r) for r in range(args.rounds)]  # made before timing
    cases = []
    for batch in args.gen_batches:
        rng = np.random.default_rng(batch)
        prompt = rng.integers(1, b.vocab, (batch, args.prompt)).astype(np.int32)  # (B, P)
        prompt_t = torch.from_numpy(prompt.astype(np.int64))
        t0 = time.perf_counter()
        jax.block_until_ready(sample(b.s.model, b.variables, prompt, keys[0], num_steps=args.new, temperature=1.0))
        first_call = time.perf_counter() - t0  # compiles the sampling program once per (batch, prompt, new)
        threads = args.gen_torch_threads
        torch.set_num_threads(threads[0])
        greedy_j = np.asarray(sample(b.s.model, b.variables, prompt, keys[0], num_steps=args.new, temperature=0.0))
        greedy_t = torch_generate(net, prompt_t, args.new, True, 0.0, 0).numpy()
        greedy_n = torch_generate(net, prompt_t, args.new, False, 0.0, 0).numpy()

        def torch_fn(cache, threads):
            def run(r):
                torch.set_num_threads(threads)
                return torch_generate(net, prompt_t, args.new, cache, 1.0, r)
            return run

        sides = {"jaxdl": lambda r: sample(b.s.model, b.variables, prompt, keys[r], num_steps=args.new,
                                           temperature=1.0)}
        sides.update({torch_side("torch_cache", t): torch_fn(True, t) for t in threads})
        sides[torch_side("torch_no_cache", threads[0])] = torch_fn(False, threads[0])
        raw: dict[str, list] = {side: [] for side in sides}
        for r in range(args.rounds):
            loads.append({"section": "generate", "batch": batch, "round": r, "loadavg": os.getloadavg()})
            for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                t0 = time.perf_counter()
                jax.block_until_ready(sides[side](r))
                wall = time.perf_counter() - t0
                raw[side].append({"seconds": wall, "tokens_per_s": batch * args.new / wall})
                print(f"  [generate B={batch}] round {r + 1}/{args.rounds} {side:>17}: "
                      f"{batch * args.new / wall:9.1f} tokens/s", flush=True)
        cases.append({"batch": batch, "prompt": args.prompt, "new": args.new, "jaxdl_first_call_s": first_call,
                      "greedy_agree_jaxdl_torch_cache": float(np.mean(greedy_j == greedy_t)),
                      "greedy_agree_torch_cache_no_cache": float(np.mean(greedy_t == greedy_n)),
                      "raw": raw, **summarize(raw, "tokens_per_s", "jaxdl")})
    return {"cases": cases}


# ----------------------------------------------------------------------------------------------------------------
# Compile times (in a fresh process per program)
# ----------------------------------------------------------------------------------------------------------------


def compile_child(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run in a fresh process: build jaxdl's setup, then lower and compile each of ``spec["programs"]`` — cold (the
    first compilation of that program in this process) and, with ``spec["warm"]``, warm (a new ``jax.jit`` of the
    same function). One record per program."""
    import jax
    import jax.numpy as jnp

    t0 = time.perf_counter()
    from jaxdl import generate
    from jaxdl.train import init_state, setup
    from jaxdl.train.drivers import advance

    import_s = time.perf_counter() - t0
    jax.devices()  # backend start-up is nobody's compile time
    m, batch = spec["model"], spec["batch"]
    t0 = time.perf_counter()
    s = setup(make_cfg(m, batch, 1000), dataset=text_dataset(m, batch, batch, 0))
    setup_s = time.perf_counter() - t0
    one = {"tokens": jnp.zeros((1, m["context"] + 1), jnp.int32)}
    state = jax.eval_shape(lambda: init_state(s.task, s.optimizers, one, 0, s.hparams))  # shapes only
    active = jax.ShapeDtypeStruct((), jnp.bool_)
    tokens = {"tokens": jax.ShapeDtypeStruct((batch, m["context"] + 1), jnp.int32)}
    key = jax.eval_shape(lambda: jax.random.key(0))
    f32, i32 = jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32)

    def lower(program):
        if program == "train":
            return jax.jit(advance(s), donate_argnums=0).lower(state, active, tokens, s.hparams)
        # the program generate.sample runs for this model: the bucketed, per-row sampler (a fresh jit object:
        # _bucket_sampler is lru-cached per model), at the prompt's bucket length
        width = generate.bucket_length(spec["prompt"], None)
        padded = jax.ShapeDtypeStruct((spec["gen_batch"], width), jnp.int32)
        lengths = jax.ShapeDtypeStruct((spec["gen_batch"],), jnp.int32)
        stop = jax.eval_shape(lambda: generate._stop_array(()))
        return generate._bucket_sampler.__wrapped__(s.model).lower(
            {"params": state.params}, padded, lengths, key, f32, i32, f32, stop, i32, num_steps=spec["new"],
            max_length=width + spec["new"])

    records = []
    for i, program in enumerate(spec["programs"]):
        rec = {"program": program, "import_s": import_s, "setup_s": setup_s, "position_in_process": i,
               "persistent_cache_dir": jax.config.jax_compilation_cache_dir}
        for when in ("cold", "warm") if spec["warm"] else ("cold",):
            t0 = time.perf_counter()
            lowered = lower(program)
            t1 = time.perf_counter()
            lowered.compile()
            t2 = time.perf_counter()
            rec[when] = {"lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0}
        records.append(rec)
    return records


COMPILE_PROGRAMS = ("train", "generate")


def start_compile_child(args, m: dict[str, int], programs: tuple[str, ...], warm: bool = True) -> subprocess.Popen:
    spec = {"programs": list(programs), "warm": warm, "model": m, "batch": args.batch,
            "gen_batch": args.gen_batches[-1],
            "prompt": args.prompt, "new": args.new}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--compile-child", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def finish_compile_child(proc: subprocess.Popen) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"compile child ({proc.args[-1]}) failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_compile(args, m: dict[str, int], loads: list, started: subprocess.Popen | None = None) -> dict[str, Any]:
    """Each program compiled cold and warm in its own fresh process, ``args.compile_rounds`` times, one process at a
    time (their order flips each round) — or, under ``--quick``, one child (``started`` at the beginning of the run,
    alongside the rest) compiling both programs cold only."""
    raw: dict[str, list] = {p: [] for p in COMPILE_PROGRAMS}
    records = []
    if started is not None:
        records = finish_compile_child(started)
    else:
        for r in range(args.compile_rounds):
            loads.append({"section": "compile", "round": r, "loadavg": os.getloadavg()})
            for program in (COMPILE_PROGRAMS if r % 2 == 0 else COMPILE_PROGRAMS[::-1]):
                records += finish_compile_child(start_compile_child(args, m, (program,)))
    for rec in records:
        raw[rec["program"]].append(rec)
        print(f"  [compile {rec['program']}] " + "; ".join(
            f"{w} lower {rec[w]['lower_s']:.2f} s + compile {rec[w]['compile_s']:.2f} s"
            for w in ("cold", "warm") if w in rec), flush=True)
    med = {p: {w: {k: statistics.median(x[w][k] for x in runs) for k in ("lower_s", "compile_s", "total_s")}
               for w in ("cold", "warm") if all(w in x for x in runs)} for p, runs in raw.items()}
    return {"raw": raw, "median": med, "gen_batch": args.gen_batches[-1],
            "concurrent_with_the_rest": started is not None}


# ----------------------------------------------------------------------------------------------------------------
# Population: fused vs one by one through jaxdl's machinery
# ----------------------------------------------------------------------------------------------------------------


class PopMode:
    """One way of training the population with ``programs`` (jaxdl's compiled pieces of one signature): fused (the
    vmapped group as one unit) or one by one (the single-member programs, reused by every member in turn) — the
    units ``train_group`` runs for each."""

    def __init__(self, cfgs, programs, driver: str):
        import jax.numpy as jnp

        from jaxdl.train import make_hparams, stack_hparams

        s = programs.s
        fused = s.fused
        self.s, self.fused, self.cfgs = s, fused, cfgs
        self.run = programs.runner(driver)
        self.seeds = [c.seed for c in cfgs]
        if fused:
            self.hp = stack_hparams(cfgs)
            self.units = [(programs.init(self.seeds, self.hp), jnp.ones(len(cfgs), bool), self.hp, self.seeds)]
        else:
            self.units = []
            for c in cfgs:
                hp = make_hparams(c)
                self.units.append((programs.init([c.seed], hp), jnp.asarray(True), hp, [c.seed]))
        self.step = 0

    def segment(self, length: int) -> None:
        """``length`` steps of every member (one segment per unit, synchronised by the runner's metrics fetch)."""
        spe = self.s.steps_per_epoch
        epoch, offset = divmod(self.step, spe)
        length = min(length, spe - offset)
        for i, (state, active, hp, seeds) in enumerate(self.units):
            state, active, _ = self.run(state, active, hp, seeds, epoch, offset, length)
            self.units[i] = (state, active, hp, seeds)
        self.step += length
        return length


def time_pop(mode: PopMode, segments: int, chunk: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    steps = sum(mode.segment(chunk) for _ in range(segments))
    wall = time.perf_counter() - t0
    members = len(mode.cfgs)
    return {"seconds": wall, "steps": steps, "member_steps_per_s": members * steps / wall}


def run_population(args, pm: dict[str, int], loads: list) -> dict[str, Any]:
    import dataclasses

    from jaxdl.config import apply_overrides
    from jaxdl.train import Programs, setup, uses_dropout

    cases = []
    ds = text_dataset(pm, args.pop_batch, max(4 * args.pop_chunk, 8) * args.pop_batch, args.seed + 1)
    for members in args.members:
        base = make_cfg(pm, args.pop_batch, 100000, name="bench_pop", driver=args.pop_driver, chunk=args.pop_chunk)
        cfgs = [apply_overrides(base, {"name": f"bench_pop_{i}", "seed": i, "optim.lr": lr})
                for i, lr in enumerate(member_lrs(members))]
        # as the fusion probe builds them: one setup, the fused candidate sharing the single one's init program
        t0 = time.perf_counter()
        single_s = setup(cfgs[0], dataset=ds, dropout=uses_dropout(cfgs))
        single = Programs(single_s)
        programs = {"one_by_one": single, "fused": Programs(dataclasses.replace(single_s, fused=True), share=single)}
        setup_s = time.perf_counter() - t0
        modes, compile_s = {}, {}
        for name in ("fused", "one_by_one"):
            t0 = time.perf_counter()
            modes[name] = PopMode(cfgs, programs[name], args.pop_driver)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            modes[name].segment(args.pop_chunk)  # compiles the runner
            first = time.perf_counter() - t0
            steady = time_pop(modes[name], 1, args.pop_chunk)["seconds"]
            compile_s[name] = {"setup_s": setup_s, "init_s": build, "first_segment_s": first,
                               "steady_segment_s": steady,
                               "compile_s": first - steady}
        raw: dict[str, list] = {name: [] for name in modes}
        for r in range(args.rounds):
            loads.append({"section": "population", "members": members, "round": r, "loadavg": os.getloadavg()})
            for name in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
                rec = time_pop(modes[name], args.pop_segments, args.pop_chunk)
                raw[name].append(rec)
                print(f"  [population x{members}] round {r + 1}/{args.rounds} {name:>10}: "
                      f"{rec['member_steps_per_s']:9.1f} member-steps/s", flush=True)
        summary = summarize(raw, "member_steps_per_s", "one_by_one")
        cases.append({"members": members, "lrs": member_lrs(members), "raw": raw, "compile": compile_s, **summary,
                      "fused_pays": (summary["over_one_by_one"]["fused"] or 0) > 1})
    return {"cases": cases, "driver": args.pop_driver, "chunk": args.pop_chunk, "segments": args.pop_segments,
            "batch": args.pop_batch, "vocab": ds.num_classes}


def run_mfu(args, train: dict[str, Any] | None, params: int | None) -> dict[str, Any]:
    import jax

    dev = jax.devices()[0]
    if dev.platform != "gpu":
        return {"applicable": False, "platform": dev.platform,
                "reason": f"MFU is reported on a GPU only (this run is on {dev.platform}: {dev.device_kind})"}
    peak = args.peak_tflops if args.peak_tflops is not None else peak_tflops_for(dev.device_kind)
    tps = (train or {}).get("median", {}).get("jaxdl")
    return {"applicable": True, "platform": dev.platform, "device_kind": dev.device_kind, "peak_tflops": peak,
            "peak_source": "--peak-tflops" if args.peak_tflops is not None else "default for the device name",
            "params": params, "tokens_per_s": tps, "model_tflops_per_s": None if tps is None else
            6.0 * params * tps / 1e12, "mfu": mfu(params, tps, peak)}


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--batch", type=int, default=8, help="training batch (sequences of the context length)")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps per round")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of alternated sides (train, generate, population)")
    p.add_argument("--torch-threads", type=int, nargs="+", default=[2, 1],
                   help="torch.set_num_threads of the train section, one torch side per value (XLA:CPU uses every "
                   "core)")
    p.add_argument("--gen-torch-threads", type=int, nargs="+", default=None,
                   help="torch threads of the generate section, one cached side per value, the first also for the "
                   "no-cache side (default: --torch-threads)")
    p.add_argument("--torch-compile-threads", type=int, default=None,
                   help="threads of the torch.compile side (default: the first --torch-threads)")
    p.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the PyTorch step with torch.compile (train section)")
    p.add_argument("--gen-batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    p.add_argument("--new", type=int, default=128, help="tokens to generate")
    p.add_argument("--compile-rounds", type=int, default=2, help="fresh processes per program (compile section)")
    p.add_argument("--members", type=int, nargs="+", default=[4, 8], help="population sizes")
    p.add_argument("--pop-batch", type=int, default=16)
    p.add_argument("--pop-driver", default="scan", choices=("scan", "host"))
    p.add_argument("--pop-chunk", type=int, default=10, help="steps per segment (scan: per dispatch)")
    p.add_argument("--pop-segments", type=int, default=10, help="timed segments per round")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="GPU peak for MFU (default by device name: " +
                   ", ".join(f"{k} {v:g}" for k, v in PEAK_TFLOPS.items()) + " — dense TF32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--note", action="append", help="a line for the report's notes (e.g. why threads differ)")
    p.add_argument("--out", default="scripts/results/bench_transformer", help="writes OUT.json and OUT.md")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 round (not a measurement)")
    p.add_argument("--compile-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.warmup, args.steps, args.rounds, args.compile_rounds = 2, 1, 2, 1, 1
        args.gen_batches, args.prompt, args.new, args.torch_compile = [2], 3, 4, False
        args.torch_threads = [1]
        args.members, args.pop_batch, args.pop_chunk, args.pop_segments = [2], 2, 2, 2
    if args.gen_torch_threads is None:
        args.gen_torch_threads = list(args.torch_threads)
    if args.torch_compile_threads is None:
        args.torch_compile_threads = args.torch_threads[0]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.compile_child is not None:
        print(json.dumps(compile_child(json.loads(args.compile_child))))
        return {}
    loadavg_start = os.getloadavg()
    if args.quick:  # a smoke run compiles a dozen tiny programs: LLVM's optimisations would cost more than they save
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

    import jax

    info = machine_info(args.torch_threads)
    m = dict(QUICK_MODEL if args.quick else MODEL)
    # --quick: the compile children run alongside the rest (a smoke run has no timings to protect)
    started = start_compile_child(args, m, COMPILE_PROGRAMS, warm=False) if (
        args.quick and "compile" in args.sections) else None
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.zeros(3, np.float32)))  # backend start-up is nobody's cost
    pm = dict(QUICK_POP_MODEL if args.quick else POP_MODEL)
    notes = []
    if args.quick:
        notes.append("**--quick smoke run** (tiny sizes, 1 round, XLA's backend optimisations off): not a "
                     "measurement.")
    if not args.torch_compile and "train" in args.sections:
        notes.append("`torch.compile` not measured (`--no-torch-compile`).")
    notes += args.note or []
    loads: list = []
    result: dict[str, Any] = {"args": vars(args), "notes": notes, "model": m, "pop_model": pm,
                              "loadavg_per_round": loads}
    t_all = time.perf_counter()
    bench = None
    if {"parity", "train", "generate", "mfu"} & set(args.sections):
        bench = Bench(m, args.batch, args.seed)
        result.update(vocab=bench.vocab, params=bench.params_count)
    section_s = result["section_s"] = {}
    runs = {"parity": lambda: run_parity(bench), "train": lambda: run_train(bench, args, loads),
            "generate": lambda: run_generate(bench, args, loads),
            "population": lambda: run_population(args, pm, loads),
            "compile": lambda: run_compile(args, m, loads, started),
            "mfu": lambda: run_mfu(args, result.get("train"), result.get("params"))}
    for name in ("parity", "train", "generate", "population", "compile", "mfu"):  # mfu reads train's numbers
        if name in args.sections:
            t0 = time.perf_counter()
            result[name] = runs[name]()
            section_s[name] = round(time.perf_counter() - t0, 2)
            # what is measured so far survives a later section's failure
            Path(args.out + ".partial.json").parent.mkdir(parents=True, exist_ok=True)
            Path(args.out + ".partial.json").write_text(json.dumps(result, indent=1, default=str))
            if name == "parity":
                print(f"  [parity] max |logit diff| {result['parity']['max_abs_logit_diff']:.2e}", flush=True)

    info["total_s"] = round(time.perf_counter() - t_all, 1)
    info["loadavg_start"], info["loadavg_end"] = loadavg_start, os.getloadavg()
    result["machine"] = info
    md = markdown(result)
    out_json, out_md = Path(args.out + ".json"), Path(args.out + ".md")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1, default=str))
    out_md.write_text(md)
    Path(args.out + ".partial.json").unlink(missing_ok=True)
    print()
    print(md)
    print(f"wrote {out_json} and {out_md} ({info['total_s']} s)")
    return result


if __name__ == "__main__":
    main()
    raise SystemExit(0)
