"""Memory and time of one training step with ``model.remat=none`` vs ``model.remat=blocks``.

For each model the training step is lowered and compiled with remat none and blocks, and XLA's own accounting of
the compiled program is read back (``compiled.memory_analysis()``): ``temp`` (the buffers live inside the step: the
activations kept for the backward pass and the scratch of each op), ``argument`` and ``output`` (state, batch,
hyperparameters in; new state and metrics out) and ``alias`` (output buffers that reuse a donated argument's).
Rematerialisation can only shrink ``temp``; arguments and outputs are the same program's state.

``blocks`` is compiled twice: with XLA:CPU's default pipeline, and with its ``cse_barrier_expander`` pass disabled
(``compiler_options={"xla_disable_hlo_passes": "cse_barrier_expander"}``). The default CPU pipeline removes the
optimization barriers that ``jax.checkpoint`` puts around the recomputation, and CSE then merges the recomputation
back into the forward pass: the program keeps every activation, as without remat. With the pass disabled the
barriers survive and the recomputation happens in the backward pass, as remat intends. Then the programs run
alternately (``--repeats`` × ``--steps`` steps each) and the best per-step time of each gives the time ratios.

The steps measured:

* ResNet-18 and ResNet-50 (ImageNet stem, 1000 classes) — jaxdl's own classification training step
  (``jaxdl.train.setup.setup(cfg)``: SGD with momentum, batch norm in training mode), random images;
* GPT (learned positions, pre-LN) — jaxdl's language-model step on the Python standard library's sources
  (character tokens, blocks of ``T``);
* BERT (post-LN encoder, MLM head) and T5 (encoder-decoder) — ``jax.value_and_grad`` of token cross-entropy on
  random token ids plus an SGD update (``p - 0.01·g``) in one jitted function.

Numbers are XLA:CPU's: its buffer assignment and fusion differ from XLA:GPU's (GPU fusion keeps fewer
intermediates, so both sides are smaller there and the ratio differs); the step-time ratio on an accelerator is
usually closer to the ~1.3x of one extra forward pass than on a busy CPU.

    python scripts/bench_remat.py [--quick] [--models resnet18 resnet50 gpt bert t5] [--steps 3] [--repeats 2] \
        [--out scripts/results/remat]

``--quick`` shrinks every size (a smoke run of about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# model → what is measured; "quick" replaces entries for the smoke run
SIZES: dict[str, dict[str, Any]] = {
    "resnet18": dict(image=128, batch=8, quick=dict(image=32, batch=2)),
    "resnet50": dict(image=128, batch=8, quick=dict(image=32, batch=2)),
    "gpt": dict(d_model=256, num_layers=8, num_heads=8, context=256, batch=8,
                quick=dict(d_model=32, num_layers=2, num_heads=2, context=32, batch=2)),
    "bert": dict(d_model=256, num_layers=8, num_heads=8, ffn_dim=1024, seq=256, vocab=8192, batch=8,
                 quick=dict(d_model=32, num_layers=2, num_heads=2, ffn_dim=64, seq=32, vocab=128, batch=2)),
    "t5": dict(d_model=256, num_layers=6, num_heads=8, d_kv=32, d_ff=1024, seq=128, vocab=8192, batch=8,
               quick=dict(d_model=32, num_layers=2, num_heads=2, d_kv=16, d_ff=64, seq=16, vocab=128, batch=2)),
}
# XLA:CPU's pipeline removes jax.checkpoint's optimization barriers (pass cse_barrier_expander) before CSE, which
# then merges the recomputation back into the forward pass: remat has no effect on memory there. Compiling with the
# pass disabled keeps the barriers, as remat needs.
KEEP_BARRIERS = {"xla_disable_hlo_passes": "cse_barrier_expander"}
MEMORY_FIELDS = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                 "generated_code_size_in_bytes")


def describe(name: str, size: dict[str, Any]) -> str:
    if name.startswith("resnet"):
        return f"{name}, {size['image']}×{size['image']}×3, batch {size['batch']}, jaxdl step (SGD momentum)"
    if name == "gpt":
        return (f"gpt d{size['d_model']} L{size['num_layers']} H{size['num_heads']}, T {size['context']}, batch "
                f"{size['batch']}, jaxdl language-model step")
    if name == "bert":
        return (f"bert d{size['d_model']} L{size['num_layers']} ffn {size['ffn_dim']}, T {size['seq']}, vocab "
                f"{size['vocab']}, batch {size['batch']}, MLM head, value_and_grad + SGD")
    return (f"t5 d{size['d_model']} L{size['num_layers']}+{size['num_layers']} ff {size['d_ff']}, S=T {size['seq']}, "
            f"vocab {size['vocab']}, batch {size['batch']}, value_and_grad + SGD")


def jaxdl_step(name: str, size: dict[str, Any], remat: str):
    """(jitted step with the state donated, state, batch, hparams) from jaxdl's own setup."""
    from jaxdl import data as data_lib
    from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config
    from jaxdl.train.setup import initial_state, setup

    train = TrainConfig(batch_size=size["batch"], steps=10, progress=False, checkpoints=False, plots=False)
    if name.startswith("resnet"):
        n = 4 * size["batch"]
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, size["image"], size["image"], 3)).astype(np.float32)
        y = np.arange(n) % 1000
        source = data_lib.from_arrays(x=x, y=y.astype(np.int32), class_names=tuple(str(i) for i in range(1000)))
        cfg = Config(name=f"remat_{name}", model=model_config(name, remat=remat),
                     data=DataConfig(kind="classification", split="random"),
                     optim=OptimConfig(name="sgd", lr=0.01, momentum=0.9), train=train)
        s = setup(cfg, source=source)
    else:
        cfg = Config(name=f"remat_{name}", task="language_model",
                     model=model_config("gpt", remat=remat, d_model=size["d_model"], num_layers=size["num_layers"],
                                        num_heads=size["num_heads"], context_length=size["context"]),
                     data=DataConfig(name="python_stdlib", block_size=size["context"]),
                     optim=OptimConfig(name="adamw", lr=1e-3), train=train)
        s = setup(cfg)
    state = initial_state(s)
    batch = {k: jnp.asarray(v) for k, v in s.dataset.train.batch(np.arange(size["batch"])).items()}
    return jax.jit(s.train_step, donate_argnums=0), state, batch, s.hparams


def plain_step(name: str, size: dict[str, Any], remat: str):
    """(jitted value_and_grad + SGD step, params, batch, None) for BERT (MLM) or T5 (teacher forcing)."""
    from jaxdl import models

    B, T, V = size["batch"], size["seq"], size["vocab"]
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, V)
    if name == "bert":
        model = models.get("bert", num_classes=2, remat=remat, head="mlm", vocab_size=V, max_positions=T,
                           d_model=size["d_model"], num_layers=size["num_layers"], num_heads=size["num_heads"],
                           ffn_dim=size["ffn_dim"], dropout=0.0, attention_dropout=0.0)
        inputs = tokens
    else:
        model = models.get("t5", num_classes=V, remat=remat, d_model=size["d_model"], num_layers=size["num_layers"],
                           num_heads=size["num_heads"], d_kv=size["d_kv"], d_ff=size["d_ff"])
        inputs = {"source": tokens, "target_in": jnp.roll(tokens, 1, axis=1)}
    variables = jax.jit(model.init)(jax.random.key(0), inputs)

    def loss(params, batch):
        logits, _ = model.apply({**variables, "params": params}, batch["inputs"], train=True)  # (B, T, V)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1))

    def step(params, batch, hp):
        value, grads = jax.value_and_grad(loss)(params, batch)
        return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), value

    return jax.jit(step, donate_argnums=0), variables["params"], {"inputs": inputs, "targets": tokens}, None


def build(name: str, size: dict[str, Any], remat: str):
    return (jaxdl_step if name in ("resnet18", "resnet50", "gpt") else plain_step)(name, size, remat)


def measure(name: str, size: dict[str, Any], steps: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"model": name, "setting": describe(name, size), "size": size}
    programs = {}
    # (label, remat, compiler options): "none" has no barriers, so one compile serves both pipelines
    variants = [("none", "none", None), ("blocks", "blocks", None), ("blocks_kept", "blocks", KEEP_BARRIERS)]
    for label, remat, options in variants:
        fn, state, batch, hp = build(name, size, remat)
        t0 = time.perf_counter()
        compiled = fn.lower(state, batch, hp).compile(compiler_options=options)
        compile_s = time.perf_counter() - t0
        ma = compiled.memory_analysis()
        out[label] = {f.removesuffix("_size_in_bytes"): int(getattr(ma, f)) for f in MEMORY_FIELDS}
        out[label]["compile_s"] = round(compile_s, 2)
        programs[label] = [compiled, state, batch, hp, []]
    for _ in range(repeats):  # alternate the programs: the machine's load drifts
        for label, p in programs.items():
            compiled, state, batch, hp, times = p
            state = jax.block_until_ready(compiled(state, batch, hp)[0])  # warm-up (and donation chain)
            t0 = time.perf_counter()
            for _ in range(steps):
                state = compiled(state, batch, hp)[0]
            jax.block_until_ready(state)
            times.append((time.perf_counter() - t0) / steps)
            p[1] = state
    for label, p in programs.items():
        out[label]["step_s"] = round(min(p[4]), 4)

    def peak(r):
        return out[r]["temp"] + out[r]["argument"] + out[r]["output"] - out[r]["alias"]

    for label in ("blocks", "blocks_kept"):
        out[f"{label}_temp_ratio"] = round(out[label]["temp"] / out["none"]["temp"], 3)
        out[f"{label}_peak_ratio"] = round(peak(label) / peak("none"), 3)
        out[f"{label}_time_ratio"] = round(out[label]["step_s"] / out["none"]["step_s"], 3)
    return out


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model (setting) | argument / output / alias MiB | temp MiB none | blocks (XLA:CPU default) | "
            "blocks (barriers kept) | peak ratio default / kept | step s none | time ratio default / kept |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        n, b, k = r["none"], r["blocks"], r["blocks_kept"]
        lines.append(f"| {r['setting']} | {mib(n['argument'])} / {mib(n['output'])} / {mib(n['alias'])} | "
                     f"{mib(n['temp'])} | {mib(b['temp'])} (×{r['blocks_temp_ratio']:.3f}) | "
                     f"{mib(k['temp'])} (×{r['blocks_kept_temp_ratio']:.3f}) | "
                     f"{r['blocks_peak_ratio']:.3f} / {r['blocks_kept_peak_ratio']:.3f} | {n['step_s']:.3f} | "
                     f"{r['blocks_time_ratio']:.2f} / {r['blocks_kept_time_ratio']:.2f} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "scripts" / "results" / "remat"))
    ap.add_argument("--render", metavar="JSON", help="only rewrite the Markdown table of an earlier run's JSON")
    args = ap.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        md = report(saved["meta"], saved["rows"])
        Path(args.render).with_suffix(".md").write_text(md)
        print(md)
        return
    rows = []
    load_start = os.getloadavg()[0]
    for name in args.models:
        size = {k: v for k, v in SIZES[name].items() if k != "quick"}
        if args.quick:
            size.update(SIZES[name]["quick"])
        t0 = time.perf_counter()
        rows.append(measure(name, size, args.steps, args.repeats))
        print(f"{name}: temp ratio default {rows[-1]['blocks_temp_ratio']}, kept {rows[-1]['blocks_kept_temp_ratio']}; "
              f"time ratio kept {rows[-1]['blocks_kept_time_ratio']} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    meta = {"jax": jax.__version__, "backend": jax.default_backend(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "steps": args.steps, "repeats": args.repeats,
            "quick": args.quick, "command": "python scripts/bench_remat.py " + " ".join(argv or sys.argv[1:]),
            "load": f"1-minute load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    md = report(meta, rows)
    out.with_suffix(".md").write_text(md)
    print(md)


def report(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    return (f"# Rematerialisation: memory and time of one training step, remat none vs blocks\n\n"
            f"`{meta['command']}` — jax {meta['jax']}, backend {meta['backend']} ({meta['cpu_count']} cores, "
            f"shared), best of {meta['repeats']} × {meta['steps']} steps per program.\n\n"
            "Memory is XLA's own accounting of each compiled step (`compiled.memory_analysis()`); temp is the "
            "buffers live inside the step (activations kept for the backward pass, scratch). Peak ratio: "
            "(temp + argument + output − alias) of blocks over none. *XLA:CPU default*: the program as jaxdl compiles "
            "it on a CPU — the `cse_barrier_expander` pass removes jax.checkpoint's optimization barriers and CSE "
            "folds the recomputation back into the forward pass, so nothing is saved. *Barriers kept*: compiled with "
            "`compiler_options={'xla_disable_hlo_passes': 'cse_barrier_expander'}`, the recomputation stays in the "
            "backward pass as remat intends. Accelerators were not measured: XLA:GPU's fusion and scheduling differ, "
            "so both sides and the ratios will too.\n\n" + table(rows)
            + ("\nTime ratios are best-of-repeats on a shared CPU (" + meta["load"] + "): ratios below 1 are noise "
               "(remat adds about one forward pass of work), read them as \"no large slowdown here\", not as a "
               "speed-up.\n" if meta.get("load") else ""))


if __name__ == "__main__":
    main()
