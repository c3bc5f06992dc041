#!/usr/bin/env python3
"""Where jaxdl's CPU convolution models lose to PyTorch, and what helps: LeNet-5 and ResNet-18 (and EfficientNet-B0)
training steps/s against the same PyTorch model, at ``jaxdl.bench``'s sizes, in two parts.

* **variants** (one process, interleaved rounds): LeNet-5 through jaxdl's real training step (``setup(cfg,
  model=...)``, the task's loss, Adam, the guard) built from model variants that share one parameter layout —
  ``before``: Flax's ``nn.Conv`` + ``nn.max_pool`` (XLA ``reduce_window``; its gradient is a ``select_and_scatter``),
  as ``jaxdl.models.lenet`` had it; ``reshape pool``: the same convs with 2×2/2 pooling as a reshape and a max (its
  gradient is elementwise); ``nchw``: the reshape pool with both convolutions in NCHW/OIHW; ``library``: the zoo's
  ``lenet5`` as it is now — and PyTorch. ResNet-18 (the library model) and PyTorch alongside.
* **kernels**: CPU ms of the pieces — LeNet-5's loss gradient per variant, its two convolutions in NHWC, NCHW and
  PyTorch (forward, + kernel gradient, + input gradient), and depthwise convolutions as in EfficientNet: XLA's grouped
  convolution, the same as shifted multiply-adds, PyTorch.
* **flags** (one subprocess per ``XLA_FLAGS`` setting, each timing jaxdl and PyTorch in turn): the baseline and
  XLA:CPU's oneDNN, XNNPACK and XNNPACK graph-fusion switches, reported as jaxdl/PyTorch ratios (PyTorch is the
  yardstick that the flags do not touch) and as process CPU milliseconds per step of each side.

Both parts also record process CPU time per step: on a shared, oversubscribed machine the wall-time ratios swing with
the load (a multi-threaded XLA step and a one-thread PyTorch step suffer from it differently), the CPU time a step
costs much less.

    python scripts/profile_cnn.py --out /tmp/cnn_profile                       # JSON; the findings: cnn_profile.md
    python scripts/profile_cnn.py --parts flags --flags baseline onednn --flag-models lenet5 resnet18
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

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FLAGS = {
    "baseline": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "xnn_graph_greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "xnn_graph_greedy_slinky": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY_SLINKY",
    "xnnpack+graph_greedy": "--xla_cpu_use_xnnpack=true "
                            "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    # XLA:CPU on one thread, like the PyTorch side (both then use one core of the shared machine)
    "xla_one_thread": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def lenet_variant(kind: str, classes: int):
    """LeNet-5 (relu, max-pool; parameters named as ``jaxdl.models.lenet``) with the convolution/pooling of ``kind``."""
    import flax.linen as nn
    import jax.numpy as jnp
    from jax import lax

    def pool(x):  # (B, H, W, C) or (B, C, H, W) -> halved spatial sides
        if kind == "before":
            return nn.max_pool(x, (2, 2), strides=(2, 2))
        if kind == "nchw":
            b, c, h, w = x.shape
            return x.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    class Conv(nn.Module):  # nn.Conv's parameters (kernel HWIO, bias), applied in NCHW
        features: int

        @nn.compact
        def __call__(self, x):  # (B, C, H, W)
            k = self.param("kernel", nn.initializers.lecun_normal(), (5, 5, x.shape[1], self.features))
            b = self.param("bias", nn.initializers.zeros, (self.features,))
            y = lax.conv_general_dilated(x, k.transpose(3, 2, 0, 1), (1, 1), "VALID",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return y + b[None, :, None, None]

    class LeNet(nn.Module):
        @nn.compact
        def __call__(self, x, *, train: bool = False):
            if kind == "nchw":
                x = jnp.transpose(x, (0, 3, 1, 2))  # (B, 1, 32, 32)
                x = pool(nn.relu(Conv(6, name="c1")(x)))
                x = pool(nn.relu(Conv(16, name="c3")(x)))  # (B, 16, 5, 5)
                x = jnp.transpose(x, (0, 2, 3, 1))  # the flattening order of the NHWC model
            else:
                x = pool(nn.relu(nn.Conv(6, (5, 5), padding="VALID", name="c1")(x)))
                x = pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID", name="c3")(x)))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(120, name="c5")(x))
            x = nn.relu(nn.Dense(84, name="f6")(x))
            return nn.Dense(classes, name="output")(x)

    return LeNet()


def variants(args) -> dict:
    import jax

    from jaxdl import bench
    from jaxdl.train.setup import setup

    z = bench.SIZES["lenet5"]
    base = bench.build_pair("lenet5", z)
    sides = {}
    for kind in ("before", "reshape pool", "nchw"):
        s = setup(base.setup.cfg, dataset=base.setup.dataset, model=lenet_variant(kind, z["classes"]))
        pair = bench.Pair("lenet5", z, s, base.batches, base.net, base.torch_batches, base.torch_loss)
        sides[f"lenet5 {kind}"] = bench.JaxSide(pair)
    sides["lenet5 library"] = bench.JaxSide(base)
    sides["lenet5 torch"] = bench.TorchSide(base, args.torch_threads)
    res = bench.build_pair("resnet18", bench.SIZES["resnet18"])
    sides["resnet18 library"] = bench.JaxSide(res)
    sides["resnet18 torch"] = bench.TorchSide(res, args.torch_threads)
    compile_s = {}
    for name, side in sides.items():
        out = side.compile() if isinstance(side, bench.JaxSide) else side.first()
        compile_s[name] = out.get("compile_s")
        side.run(1)
    steps = {"lenet5": args.lenet_steps, "resnet18": args.resnet_steps}
    raw: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}  # process CPU ms per step
    order = list(sides)
    for r in range(args.rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            n = steps[name.split()[0]]
            wall, cpu_s = sides[name].run(n)
            raw[name].append(n / wall)
            cpu[name].append(1000 * cpu_s / n)
        print(f"  [variants] round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in raw.items())
              + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    med = {k: statistics.median(v) for k, v in raw.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    print("  [variants] CPU ms/step: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu_med.items()), flush=True)
    jax.clear_caches()
    return {"raw_steps_per_s": raw, "steps_per_s": med, "compile_s": compile_s, "raw_cpu_ms_per_step": cpu,
            "cpu_ms_per_step": cpu_med,
            "cpu_speedup_over_before": cpu_med["lenet5 before"] / cpu_med["lenet5 reshape pool"],
            "ratios": {k: med[k] / med[k.split()[0] + " torch"] for k in med if not k.endswith("torch")},
            "ratios_per_round": {k: [a / b for a, b in zip(raw[k], raw[k.split()[0] + " torch"])]
                                 for k in raw if not k.endswith("torch")},
            "speedup_over_before": med["lenet5 reshape pool"] / med["lenet5 before"],
            "nchw_over_reshape": med["lenet5 nchw"] / med["lenet5 reshape pool"]}


def _cpu_ms(f, n: int = 30) -> float:
    """Process CPU milliseconds per call of ``f`` (after two warm-up calls)."""
    f()
    f()
    c0 = time.process_time()
    for _ in range(n):
        f()
    return 1000 * (time.process_time() - c0) / n


def kernels(args) -> dict:
    """CPU ms of the pieces: LeNet-5's loss gradient per variant, its two convolutions (NHWC, NCHW, PyTorch) and
    EfficientNet-style depthwise convolutions (XLA's grouped convolution, shifted multiply-adds, PyTorch)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch
    import torch.nn.functional as F
    from jax import lax

    from jaxdl import bench_torch as T

    torch.set_num_threads(args.torch_threads)
    rng = np.random.default_rng(0)
    B = 64
    x = jnp.asarray(rng.standard_normal((B, 32, 32, 1)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, B).astype(np.int32))
    out: dict = {"lenet5_grad": {}, "conv": {}, "depthwise": {}}
    for kind in ("before", "reshape pool", "nchw"):
        m = lenet_variant(kind, 10)
        p = m.init(jax.random.key(0), x[:1])
        g = jax.jit(jax.grad(lambda p, x, y, m=m: optax.softmax_cross_entropy_with_integer_labels(m.apply(p, x),
                                                                                                  y).mean()))
        out["lenet5_grad"][kind] = _cpu_ms(lambda: jax.block_until_ready(g(p, x, y)))
    net = T.lenet5(1, 10)
    xt, yt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()), torch.from_numpy(np.asarray(y)).long()

    def tgrad():
        net.zero_grad()
        F.cross_entropy(net(xt), yt).backward()

    out["lenet5_grad"]["torch"] = _cpu_ms(tgrad)
    for H, C, Fo in ((32, 1, 6), (14, 6, 16)):  # LeNet's c1 and c3 at batch 64
        xx = rng.standard_normal((B, H, H, C)).astype(np.float32)
        k = rng.standard_normal((5, 5, C, Fo)).astype(np.float32)
        rec = {}
        for layout, dn, xi, ki in (("NHWC", ("NHWC", "HWIO", "NHWC"), xx, k),
                                   ("NCHW", ("NCHW", "OIHW", "NCHW"), xx.transpose(0, 3, 1, 2), k.transpose(3, 2, 0, 1))):
            xi, ki = jnp.asarray(xi), jnp.asarray(ki)
            f = lambda a, b, dn=dn: lax.conv_general_dilated(a, b, (1, 1), "VALID", dimension_numbers=dn)  # noqa: E731
            fw = jax.jit(f)
            gk = jax.jit(jax.grad(lambda a, b, f=f: jnp.sum(f(a, b) ** 2), argnums=1))
            ga = jax.jit(jax.grad(lambda a, b, f=f: jnp.sum(f(a, b) ** 2), argnums=(0, 1)))
            rec[layout] = [_cpu_ms(lambda: fw(xi, ki).block_until_ready()),
                           _cpu_ms(lambda: jax.block_until_ready(gk(xi, ki))),
                           _cpu_ms(lambda: jax.block_until_ready(ga(xi, ki)))]
        xt2 = torch.from_numpy(xx.transpose(0, 3, 1, 2).copy())
        kt = torch.from_numpy(k.transpose(3, 2, 0, 1).copy()).requires_grad_(True)

        def tconv(need_x=None):
            if need_x is None:
                with torch.no_grad():
                    F.conv2d(xt2, kt)
                return
            xt2.requires_grad_(need_x)
            xt2.grad, kt.grad = None, None
            (F.conv2d(xt2, kt) ** 2).sum().backward()

        rec["torch"] = [_cpu_ms(tconv), _cpu_ms(lambda: tconv(False)), _cpu_ms(lambda: tconv(True))]
        out["conv"][f"B{B} {H}x{H} {C}->{Fo} 5x5 (fwd, +dK, +dK+dX)"] = rec
    for Bd, H, C, K, st in ((8, 16, 96, 3, 1), (8, 8, 144, 5, 1), (8, 16, 96, 3, 2)):
        xx = jnp.asarray(rng.standard_normal((Bd, H, H, C)).astype(np.float32))
        k = jnp.asarray(rng.standard_normal((K, K, 1, C)).astype(np.float32))
        pd = (K - 1) // 2

        def grouped(x, k, st=st, pd=pd, C=C):
            return lax.conv_general_dilated(x, k, (st, st), ((pd, pd), (pd, pd)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=C)

        def shifted(x, k, st=st, pd=pd, K=K, H=H):  # Σ_ij x[i::s, j::s] · k[i, j]: elementwise, fused
            xp = jnp.pad(x, ((0, 0), (pd, pd), (pd, pd), (0, 0)))
            oh = (H + 2 * pd - K) // st + 1
            return sum(xp[:, i:i + st * (oh - 1) + 1:st, j:j + st * (oh - 1) + 1:st, :] * k[i, j, 0]
                       for i in range(K) for j in range(K))

        np.testing.assert_allclose(np.asarray(shifted(xx, k)), np.asarray(grouped(xx, k)), rtol=1e-4, atol=1e-3)
        rec = {}
        for name, f in (("xla grouped", grouped), ("shifted", shifted)):
            fw = jax.jit(f)
            g = jax.jit(jax.grad(lambda a, b, f=f: jnp.sum(f(a, b) ** 2), argnums=(0, 1)))
            rec[name] = [_cpu_ms(lambda: fw(xx, k).block_until_ready()), _cpu_ms(lambda: jax.block_until_ready(g(xx, k)))]
        xt3 = torch.from_numpy(np.asarray(xx).transpose(0, 3, 1, 2).copy()).requires_grad_(True)
        kt3 = torch.from_numpy(np.asarray(k).transpose(3, 2, 0, 1).copy()).requires_grad_(True)

        def tdw(grad: bool):
            if not grad:
                with torch.no_grad():
                    F.conv2d(xt3, kt3, stride=st, padding=pd, groups=C)
                return
            xt3.grad, kt3.grad = None, None
            (F.conv2d(xt3, kt3, stride=st, padding=pd, groups=C) ** 2).sum().backward()

        rec["torch"] = [_cpu_ms(lambda: tdw(False)), _cpu_ms(lambda: tdw(True))]
        out["depthwise"][f"B{Bd} {H}x{H}x{C} {K}x{K}/{st} (fwd, fwd+grads)"] = rec
    print("  [kernels] " + json.dumps(out, default=lambda v: round(v, 2)), flush=True)
    return out


def flag_child(spec: dict) -> dict:
    """In a fresh process (``XLA_FLAGS`` set by the parent): the models' jaxdl and PyTorch steps/s, interleaved."""
    from jaxdl import bench

    out = {}
    for name in spec["models"]:
        rec = bench.bench_one(name, bench.SIZES[name], spec["rounds"], spec["steps"].get(name), spec["torch_threads"],
                              log=lambda s: print(s, file=sys.stderr, flush=True))
        out[name] = {"steps_per_s": rec["steps_per_s"], "ratio": rec["ratio"], "cpu_ms_per_step": rec["cpu_ms_per_step"],
                     "ratio_per_round": rec["ratio_per_round"], "compile_s": rec["compile"]["compile_s"]}
    return out


def flags(args) -> dict:
    results = {}
    spec = {"models": args.flag_models, "rounds": args.flag_rounds, "torch_threads": args.torch_threads,
            "steps": {"lenet5": args.lenet_steps, "resnet18": args.resnet_steps, "efficientnet_b0": 3}}
    for name in args.flags:
        env = dict(os.environ, XLA_FLAGS=FLAGS[name])
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)], env=env,
                              capture_output=True, text=True, cwd=REPO, timeout=1200)
        if proc.returncode != 0:
            results[name] = {"error": proc.stderr[-2000:], "xla_flags": FLAGS[name]}
            print(f"  [flags] {name}: failed\n{proc.stderr[-800:]}", flush=True)
            continue
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name] = {"xla_flags": FLAGS[name], "models": rec, "wall_s": time.perf_counter() - t0,
                         "loadavg_after": os.getloadavg()}
        print(f"  [flags] {name}: " + ", ".join(f"{m} jaxdl/torch {r['ratio']:.2f} (jaxdl "
                                                   f"{r['steps_per_s']['jaxdl']:.1f} steps/s)"
                                                   for m, r in rec.items()), flush=True)
    base = results.get("baseline", {}).get("models", {})
    for name, r in results.items():
        for m, v in r.get("models", {}).items():
            if m in base:
                v["ratio_over_baseline_ratio"] = v["ratio"] / base[m]["ratio"]
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=["variants", "kernels", "flags"],
                   choices=("variants", "kernels", "flags"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--flag-rounds", type=int, default=3)
    p.add_argument("--flags", nargs="+", default=list(FLAGS), choices=list(FLAGS))
    p.add_argument("--flag-models", nargs="+", default=["lenet5", "resnet18", "efficientnet_b0"])
    p.add_argument("--lenet-steps", type=int, default=20)
    p.add_argument("--resnet-steps", type=int, default=5)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--out", default="scripts/results/cnn_profile")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(flag_child(json.loads(args.child))))
        return
    from jaxdl.bench import machine

    result = {"args": vars(args), "loadavg_start": os.getloadavg()}
    if "variants" in args.parts:
        result["variants"] = variants(args)
    if "kernels" in args.parts:
        result["kernels"] = kernels(args)
    if "flags" in args.parts:
        result["flags"] = flags(args)
    result["machine"] = machine(args.torch_threads)
    result["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "args"}, indent=1, default=str)[:6000])


if __name__ == "__main__":
    main()
