#!/usr/bin/env python3
"""Decoding speed and compile counts of ``jaxdl.generate.sample`` on a small random GPT, with and without buckets.

* **bucketed** — ``sample(..., prompt_lengths=...)``: prompts right-padded to a bucket (powers of two from 16), one
  prefill into a cache of bucket + ``--new`` positions, each row at its own position (``generate_padded``).
* **exact** — the shared-position loop (``generate._sampler``: the prompt at its exact length, one ``lax.scan``; the
  path prompts of one length took before buckets existed), which compiles once per prompt length.

For each path: programs compiled over ``--lengths`` prompt lengths, the time of that first pass (compiles included),
and the steady-state new tokens/s (median over ``--rounds``; the two paths alternate within a round) at batch 1 and at ``--batch`` rows of mixed lengths
(the exact path cannot batch mixed lengths: it runs rows of the longest length).

    python scripts/bench_generate.py                 # ~1-2 minutes on 2 CPU cores
    python scripts/bench_generate.py --quick         # smoke run (tiny sizes, not a measurement)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import generate, models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=96)
    ap.add_argument("--new", type=int, default=128, help="tokens sampled per prompt")
    ap.add_argument("--lengths", default="5,9,12,16,3,7,14,11", help="prompt lengths of the compile pass")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.d_model, args.layers, args.new, args.lengths, args.rounds = 16, 1, 8, "3,5", 1
    lengths = [int(n) for n in args.lengths.split(",")]
    model = models.get("gpt", num_classes=args.vocab, context_length=256, d_model=args.d_model,
                       num_layers=args.layers, num_heads=4)
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    variables = jax.tree.map(lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype), shapes)
    f32, i32 = jnp.float32, jnp.int32

    def bucketed(prompt, lens, key):
        return generate.sample(model, variables, prompt, key, num_steps=args.new, temperature=1.0,
                               prompt_lengths=lens)

    def exact(prompt, lens, key):  # every row at the longest length (the path has one position for all rows)
        width = max(lens)
        return generate._sampler(model)(variables, jnp.asarray(prompt[:, :width]), key, f32(1.0), i32(0), f32(1.0),
                                        num_steps=args.new)[0]

    out = {"sizes": vars(args), "load_start": os.getloadavg(), "device": str(jax.devices()[0])}
    paths = {"bucketed": (bucketed, lambda: generate._bucket_sampler(model)._cache_size()),
             "exact": (exact, lambda: generate._sampler(model)._cache_size())}
    for name, (fn, cache_size) in paths.items():
        start = time.perf_counter()
        for i, n in enumerate(lengths):  # one prompt per length
            jax.block_until_ready(fn(rng.integers(0, args.vocab, (1, n)).astype(np.int32), [n], jax.random.key(i)))
        out[name] = {"programs_over_lengths": cache_size(), "first_pass_s": time.perf_counter() - start}
    for b in (1, args.batch):
        lens = [lengths[j % len(lengths)] for j in range(b)]
        prompt = rng.integers(0, args.vocab, (b, max(lens))).astype(np.int32)
        times = {name: [] for name in paths}
        for name, (fn, _) in paths.items():
            jax.block_until_ready(fn(prompt, lens, jax.random.key(99)))  # compile this batch size
        for r in range(args.rounds):  # the paths alternate, their order flipping, so load drifts hit both alike
            for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                t = time.perf_counter()
                jax.block_until_ready(paths[name][0](prompt, lens, jax.random.key(r)))
                times[name].append(time.perf_counter() - t)
        for name in paths:
            out[name][f"tokens_per_s_batch{b}"] = b * args.new / statistics.median(times[name])
            out[name][f"raw_s_batch{b}"] = times[name]
    out["load_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
