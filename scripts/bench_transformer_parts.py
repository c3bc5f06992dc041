"""Pieces of ``scripts/bench_transformer.py``: the bookkeeping (medians, ratios, MFU), the PyTorch reference GPT (the
same function as jaxdl's ``DecoderLM`` with ``gpt`` settings, parameters copied from jaxdl) with its training step and
generation loops, the machine facts and the markdown report.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Dense TF32 tensor-core peaks (TFLOP/s) by device name: float32 matmuls run on them by default on these GPUs.
PEAK_TFLOPS = {"H200": 494.7, "H100": 494.7, "A100": 156.0}


# ----------------------------------------------------------------------------------------------------------------
# Bookkeeping (pure)
# ----------------------------------------------------------------------------------------------------------------


# Log-spaced member learning rates, a guarded ratio and medians of a key: the same bookkeeping as the RNN benchmark.
from bench_rnn import median_of, member_lrs, ratio  # noqa: E402,F401


def summarize(raw: dict[str, list[dict[str, Any]]], key: str, base: str) -> dict[str, Any]:
    """Medians of ``key`` per side and each side's ratio to ``base`` (median / median, and round by round).

    Args:
      raw: side -> per-round records holding ``key``.
      base: the side every ratio divides by.
    Returns: ``{"median": {side: m}, "over_<base>": {side: m_side / m_base}, "over_<base>_per_round": {side: [...]}}``.
    """
    med = {side: median_of(runs, key) for side, runs in raw.items()}
    others = [s for s in raw if s != base]
    return {"median": med,
            f"over_{base}": {s: ratio(med[s], med.get(base)) for s in others},
            f"over_{base}_per_round": {s: [ratio(a.get(key), b.get(key)) for a, b in zip(raw[s], raw.get(base, []))]
                                       for s in others}}


def peak_tflops_for(device_kind: str) -> float | None:
    """The default peak of a GPU by its device name (None when unknown)."""
    for name, peak in PEAK_TFLOPS.items():
        if name.lower() in device_kind.lower():
            return peak
    return None


def mfu(params: int, tokens_per_s: float | None, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation ``6 · N · tokens/s / peak`` (forward 2N + backward 4N FLOPs per token; the attention
    score FLOPs are left out, as in the usual 6N estimate)."""
    if tokens_per_s is None or not peak_tflops:
        return None
    return 6.0 * params * tokens_per_s / (peak_tflops * 1e12)



def _fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


# ----------------------------------------------------------------------------------------------------------------
# The PyTorch reference GPT
# ----------------------------------------------------------------------------------------------------------------


def torch_gpt(m: dict[str, int], vocab: int):
    """The PyTorch GPT that ``jaxdl bench`` also times (:func:`jaxdl.bench_torch.torch_gpt`: jaxdl's ``DecoderLM``
    layout, an optional key/value cache); imported here so that torch loads only when it is used."""
    from jaxdl.bench_torch import torch_gpt as build

    return build(m, vocab)


def copy_params_to_torch(params: dict[str, Any], net) -> None:
    """Load jaxdl ``DecoderLM`` parameters into :func:`torch_gpt`'s module (Dense kernels (in, out) transposed)."""
    import torch

    def t(x):
        return torch.from_numpy(np.array(x, np.float32))

    sd = {"wte.weight": t(params["token_embedding"]["embedding"]),
          "wpe.weight": t(params["positions"]["position_embedding"]["embedding"]),
          "ln_f.weight": t(params["norm_f"]["scale"]), "ln_f.bias": t(params["norm_f"]["bias"])}
    for i in range(len(net.blocks)):
        b, p = f"blocks.{i}.", params[f"block_{i}"]
        att, mlp = p["attn"], p["mlp"]
        sd.update({
            b + "ln_1.weight": t(p["norm_1"]["scale"]), b + "ln_1.bias": t(p["norm_1"]["bias"]),
            b + "ln_2.weight": t(p["norm_2"]["scale"]), b + "ln_2.bias": t(p["norm_2"]["bias"]),
            b + "qkv.weight": t(np.concatenate([att[n]["kernel"] for n in ("query", "key", "value")], 1).T),
            b + "qkv.bias": t(np.concatenate([att[n]["bias"] for n in ("query", "key", "value")])),
            b + "out.weight": t(np.asarray(att["out"]["kernel"]).T), b + "out.bias": t(att["out"]["bias"]),
            b + "fc_in.weight": t(np.asarray(mlp["fc_in"]["kernel"]).T), b + "fc_in.bias": t(mlp["fc_in"]["bias"]),
            b + "fc_out.weight": t(np.asarray(mlp["fc_out"]["kernel"]).T),
            b + "fc_out.bias": t(mlp["fc_out"]["bias"])})
    net.load_state_dict(sd, strict=True)


def torch_loss(net, tokens):
    import torch.nn.functional as F

    logits = net(tokens[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def torch_generate(net, prompt, new: int, cache: bool, temperature: float, seed: int):
    """``new`` tokens after ``prompt`` (B, P) int64 from the PyTorch module: with a key/value cache (the prompt in one
    call, then one token per call) or without (the whole sequence every token). temperature 0: greedy."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    B, P = prompt.shape
    out = []
    with torch.no_grad():
        kv = net.new_cache(B, P + new) if cache else None
        seq = prompt
        logits = net(prompt, kv, 0)[:, -1] if cache else net(prompt)[:, -1]  # (B, V)
        for i in range(new):
            if temperature <= 0:
                token = logits.argmax(-1, keepdim=True)  # (B, 1)
            else:
                token = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)  # (B, 1)
            out.append(token)
            if cache:
                logits = net(token, kv, P + i)[:, -1]
            else:
                seq = torch.cat([seq, token], 1)
                logits = net(seq)[:, -1]
    return torch.cat(out, 1)  # (B, new)


class TorchTrainer:
    """PyTorch's side of the train section: a module and its AdamW (lr 1e-3, weight decay 0.01, PyTorch defaults),
    kept across rounds like jaxdl's state, run with ``threads`` threads; ``compiled``: through ``torch.compile``.

    Args:
      b: the benchmark's ``Bench`` (its PyTorch module, batches, batch size and sizes).
    """

    def __init__(self, b, threads: int, compiled: bool = False):
        import torch

        self.b, self.threads, self.net = b, threads, b.fresh_torch().train()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=0.01)
        self.fwd = self.net
        self.compile_s = None
        if compiled:
            torch.set_num_threads(threads)
            self.fwd = torch.compile(self.net)
            t0 = time.perf_counter()
            self.one(0)  # the first call compiles forward and backward
            self.compile_s = time.perf_counter() - t0

    def one(self, i: int):
        loss = torch_loss(self.fwd, self.b.torch_batches[i % len(self.b.torch_batches)])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss

    def time(self, warmup: int, steps: int) -> dict[str, Any]:
        import torch

        torch.set_num_threads(self.threads)
        for i in range(warmup):
            self.one(i)
        t0 = time.perf_counter()
        for i in range(steps):
            loss = self.one(i)
        wall = time.perf_counter() - t0
        return {"seconds": wall, "steps": steps, "tokens_per_s": steps * self.b.batch * self.b.m["context"] / wall,
                "last_loss": float(loss.detach()), "threads": self.threads,
                "threads_effective": torch.get_num_threads()}


def machine_info(threads: list[int]) -> dict[str, Any]:
    import jax
    import torch

    from importlib import metadata

    dev = jax.devices()[0]
    return {"jax": jax.__version__, "jaxlib": metadata.version("jaxlib"), "flax": metadata.version("flax"),
            "optax": metadata.version("optax"), "torch": torch.__version__, "torch_threads": threads,
            "device": f"{dev.platform}:{dev.device_kind}", "cpu_count": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "platform": platform.platform(), "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "shared_machine": True}


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def _sizes(m: dict[str, int], vocab) -> str:
    return (f"{m['layers']} layers, d_model {m['d_model']}, {m['heads']} heads, context {m['context']}, "
            f"vocabulary {vocab}")


def markdown(result: dict[str, Any]) -> str:
    info, args = result["machine"], result["args"]
    la0, la1 = info["loadavg_start"], info["loadavg_end"]
    lines = [
        "### Transformer benchmark: jaxdl GPT vs the same GPT in PyTorch",
        "",
        f"`{info['command']}` — {info['started']}, {info['total_s']} s; jax {info['jax']} on {info['device']}, "
        f"torch {info['torch']} (`torch.set_num_threads`: side@N runs with N threads; XLA:CPU uses "
        f"{info['affinity_cpus']} cores), {info['cpu_count']} CPU cores, **shared with other work** (load average "
        f"1/5/15 min: {' / '.join(f'{v:.2f}' for v in la0)} at start, {' / '.join(f'{v:.2f}' for v in la1)} at end).",
    ]
    if result.get("params") is not None:  # the timed GPT was built (parity, train, generate or mfu ran)
        lines += ["", f"Model: GPT-2 style, {_sizes(result['model'], result.get('vocab'))} ({result['params']:,} "
                  "parameters), float32, dropout 0, AdamW (lr 1e-3, weight decay 0.01)."]
    if result["notes"]:
        lines += [""] + [f"- {n}" for n in result["notes"]]
    p = result.get("parity")
    if p:
        lines += ["", f"**Parity** (same weights, eval mode, one batch of {p['logits_shape'][0]}×"
                  f"{p['logits_shape'][1]}): max |logit difference| = {p['max_abs_logit_diff']:.2e} "
                  f"({'within' if p['ok'] else '**beyond**'} {p['tolerance']:g}); first training loss jaxdl "
                  f"{p['first_loss_jaxdl']:.6f}, torch {p['first_loss_torch']:.6f}."]
    t = result.get("train")
    if t:
        lines += ["", f"#### Training (batch {args['batch']} × {result['model']['context']} tokens; {args['warmup']} "
                  f"warm-up + {args['steps']} timed steps per round, median of {args['rounds']} rounds)", "",
                  "| side | tokens/s | **side / jaxdl** | per round |", "|---|---:|---:|---|"]
        for side, med in t["median"].items():
            r = t["over_jaxdl"].get(side, 1.0)
            per = ", ".join(_fmt(v) for v in t["over_jaxdl_per_round"].get(side, []))
            lines.append(f"| {side} | {_fmt(med, '.1f')} | **{_fmt(r)}** | {per or '–'} |")
        extra = (f" `torch.compile` took {t['torch_compile_s']:.1f} s to compile (not in tokens/s)."
                 if t.get("torch_compile_s") is not None else "")
        lines += ["", "side / jaxdl < 1: jaxdl's jitted step trains faster on this machine; > 1: the side is faster. "
                  "tokens/s = steps × batch × context / wall seconds of the timed steps." + extra]
        lines += [f"- {n}" for n in t.get("notes", [])]
    g = result.get("generate")
    if g:
        lines += ["", f"#### Generation (prompt {args['prompt']}, {args['new']} new tokens, temperature 1; median of "
                  f"{args['rounds']} rounds)", "",
                  "| batch | side | tokens/s | **side / jaxdl** | per round |", "|---:|---|---:|---:|---|"]
        for c in g["cases"]:
            for side, med in c["median"].items():
                r = c["over_jaxdl"].get(side, 1.0)
                per = ", ".join(_fmt(v) for v in c["over_jaxdl_per_round"].get(side, []))
                lines.append(f"| {c['batch']} | {side} | {_fmt(med, '.1f')} | **{_fmt(r)}** | {per or '–'} |")
        lines += ["", "tokens/s counts the new tokens (batch × new) over the wall time of the whole call, prompt "
                  "included. jaxdl: `jaxdl.generate.sample` with the model's key/value cache (its first call compiles "
                  "the sampling loop: " + ", ".join(f"batch {c['batch']}: {c['jaxdl_first_call_s']:.1f} s"
                                                    for c in g["cases"]) + "); torch_cache: the hand-written "
                  "key/value-cache loop; torch_no_cache: the whole sequence recomputed for every token. Greedy "
                  "(temperature 0) decodes agree on " + ", ".join(
                      f"{c['greedy_agree_jaxdl_torch_cache']:.0%} (batch {c['batch']})" for c in g["cases"])
                  + " of the tokens between jaxdl and torch_cache (random weights give near-tied logits, where "
                  "float rounding may pick the other token and the sequences part)."]
    c = result.get("compile")
    if c:
        lines += ["", f"#### Compile times (median of {args['compile_rounds']} fresh processes per program)", "",
                  "| program | cold lower s | cold compile s | warm lower s | warm compile s |",
                  "|---|---:|---:|---:|---:|"]
        for prog, med in c["median"].items():
            what = (f"train step (batch {args['batch']})" if prog == "train" else
                    f"sampling loop (batch {c['gen_batch']}, {args['new']} tokens)")
            warm = med.get("warm", {})
            lines.append(f"| {what} | {_fmt(med['cold']['lower_s'])} | {_fmt(med['cold']['compile_s'])} "
                         f"| {_fmt(warm.get('lower_s'))} | {_fmt(warm.get('compile_s'))} |")
        lines += ["", "Cold: the first compilation in a fresh process (after `setup`); warm: the same function again "
                  "from a new `jax.jit` in that process. lower = tracing to StableHLO, compile = XLA."
                  + (" Under --quick one child compiled both programs, cold only, alongside the rest of the run."
                     if c.get("concurrent_with_the_rest") else "")]
    pop = result.get("population")
    if pop:
        vocab = pop.get("vocab", result.get("vocab"))
        lines += ["", f"#### Population: fused vs one by one ({_sizes(result['pop_model'], vocab)}; "
                  f"batch {pop['batch']}; {pop['driver']} driver, segments of {pop['chunk']} steps; "
                  f"{pop['segments']} segments per round, median of {args['rounds']} rounds)", "",
                  "| members | fused member-steps/s | one-by-one member-steps/s | **fused / one-by-one** | per round "
                  "| compile s fused / single | fusing pays? |", "|---:|---:|---:|---:|---|---|---|"]
        for case in pop["cases"]:
            m, cs = case["median"], case["compile"]
            per = ", ".join(_fmt(v) for v in case["over_one_by_one_per_round"]["fused"])
            lines.append(f"| {case['members']} | {_fmt(m['fused'], '.1f')} | {_fmt(m['one_by_one'], '.1f')} "
                         f"| **{_fmt(case['over_one_by_one']['fused'])}** | {per} "
                         f"| {_fmt(cs['fused']['compile_s'])} / {_fmt(cs['one_by_one']['compile_s'])} "
                         f"| {'yes' if case['fused_pays'] else 'no'} |")
        lines += ["", "Members differ in learning rate (log-spaced 3e-4…3e-3) and seed. Fused: one vmapped program "
                  "trains every member per segment; one by one: the single-member program, one segment per member. "
                  "fused / one-by-one > 1: fusing pays on this machine."]
    mf = result.get("mfu")
    if mf:
        if mf["applicable"]:
            lines += ["", f"**MFU** on {mf['device_kind']}: {_fmt(mf['mfu'], '.3%')} (6·N·tokens/s = "
                      f"{_fmt(mf['model_tflops_per_s'], '.2f')} TFLOP/s of a {_fmt(mf['peak_tflops'], '.1f')} TFLOP/s "
                      f"peak, {mf['peak_source']})."]
        else:
            lines += ["", f"**MFU**: not applicable — {mf['reason']}."]
    return "\n".join(lines) + "\n"
