"""Command line: ``jaxdl train | eval | resume | sweep | report | explain | convert | generate | models | bench``.

    jaxdl train configs/digits_mlp.py optim.lr=3e-3 model.widths=256,128 [--workdir DIR]
    jaxdl train configs/digits_mlp.py:smoke
    jaxdl eval runs/digits_mlp/20261124-101500
    jaxdl resume runs/digits_mlp/20261124-101500
    jaxdl sweep experiments/quickstart.py [--sweep 'optim.lr=1e-3,3e-3 seed=0:4'] [--dry-run]
    jaxdl report runs/sweeps/quickstart [--format md] [--metric val/loss]
    jaxdl explain runs/mnist5k_lenet/20261124-101500 --image digit.png
    jaxdl explain runs/passages_text_lstm/20261201-000000 [--examples 4]     (text classifier: token attributions)
    jaxdl explain runs/shakespeare_char_gpt/20261124-101500 --attention "To be, or not to be"
    jaxdl generate --prompt "The capital of France is" [--prompt ...] [--packaged NAME | --gguf FILE] [--max-tokens 32]
                   [--stop TOKEN]
    jaxdl models
    jaxdl bench [--models mlp,lenet5] [--rounds 3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxdl import compile_cache
from jaxdl.errors import DivergenceError, JaxdlError, PreemptedError

# exit codes: 2 a clean error, 3 divergence, 4 preempted (SIGTERM/SIGINT; checkpointed, resumable)
EXIT_PREEMPTED = 4


def _metric_names(summary: dict) -> list[str]:
    """The metrics a summary has on any split (loss first), e.g. ``loss, accuracy`` or ``loss, mae, mse, rmse``."""
    names = set()
    for split in ("train", "val", "test"):
        names |= {k for k, v in (summary.get(split) or {}).items() if isinstance(v, (int, float))}
    names |= {k.split("/", 1)[1] for k in (summary.get("final") or {}) if "/" in k}
    return sorted(names, key=lambda n: (n != "loss", n))


def _print_summary(summary: dict, run_dir: Path) -> None:
    from rich.table import Table

    from jaxdl.experiment.report import make_console

    names = _metric_names(summary)
    table = Table(title=f"{summary.get('name', '')} → {run_dir}")
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    for split in ("train", "val", "test"):
        metrics = summary.get(split) or {k.split("/", 1)[1]: v for k, v in (summary.get("final") or {}).items()
                                         if k.startswith(split + "/")}
        if metrics:
            table.add_row(split, *[f"{metrics[n]:.4f}" if isinstance(metrics.get(n), (int, float)) else "-"
                                   for n in names])
    console = make_console()
    console.print(table)
    extra = {k: summary.get(k) for k in ("steps", "epochs", "wall_time_s", "steps_per_s", "driver", "stopped_early")
             if k in summary}
    console.print(" ".join(f"{k}={v}" for k, v in extra.items()), soft_wrap=True, markup=False, highlight=False)


def _distributed_flags(p) -> None:
    g = p.add_argument_group("multi-process (multi-host) runs; default: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                             "JAX_PROCESS_ID, or JAXDL_DISTRIBUTED=auto for a cluster JAX detects (SLURM, Open MPI …)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordination service")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes taking part")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 … N-1")


def _join(args) -> None:
    """Join a multi-process run (before anything touches a device)."""
    from jaxdl import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def _print_primary(summary, run_dir) -> None:
    from jaxdl import distributed

    if distributed.is_primary():
        _print_summary(summary, run_dir)


def cmd_train(args) -> int:
    from jaxdl.config import load_config
    from jaxdl.train import fit

    _join(args)
    cfg = load_config(args.config, args.overrides)
    result = fit(cfg, workdir=args.workdir, restart=args.restart)
    _print_primary(result.summary, result.run_dir)
    return 0


def finished_run(run_dir: str | Path) -> dict | None:
    """The summary of a run that has nothing left to train, else None.

    A run is complete when its ``summary.json`` says it ended — diverged, stopped early, or completed with the
    steps its config asks for (``train.steps``; a run sized in epochs is complete once completed).
    """
    from jaxdl.train.rundir import SUMMARY_FILE, read_config

    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except ValueError:
        return None
    status = summary.get("status")
    if status == "diverged" or summary.get("stopped_early") or status == "stopped":
        return summary
    if status != "completed":
        return None
    wanted = read_config(run_dir).train.steps
    return summary if wanted is None or (summary.get("steps") or 0) >= wanted else None


def cmd_resume(args) -> int:
    from jaxdl.train import fit
    from jaxdl.train.rundir import read_config

    _join(args)
    cfg = read_config(args.run_dir)
    done = finished_run(args.run_dir)
    if done is not None:
        how = {"diverged": f"diverged at step {done.get('diverged_at')}"}.get(done.get("status"), "")
        how = how or ("stopped early" if done.get("stopped_early") else "")
        print(f"run {args.run_dir} is already complete ({done.get('steps')} steps{'; ' + how if how else ''}); "
              "nothing to do")
        return 0
    result = fit(cfg, workdir=args.run_dir, resume=True, restart=args.restart)
    _print_primary(result.summary, result.run_dir)
    return 0


def cmd_eval(args) -> int:
    from jaxdl.train import evaluate_splits, restore

    s, variables = restore(args.run_dir, which=args.which)
    results = evaluate_splits(s, variables["params"], variables["model_state"], splits=tuple(args.splits))
    out = Path(args.run_dir) / "eval.json"
    out.write_text(json.dumps({"which": args.which, **results}, indent=2))
    _print_summary({"name": s.cfg.name, **results}, Path(args.run_dir))
    return 0


def load_image(path: str | Path, shape: tuple[int, ...]):
    """An image file as a float array in [0, 1] with the model's per-example ``shape`` (H, W, C)."""
    import numpy as np
    from PIL import Image

    from jaxdl.errors import DataError

    try:
        img = Image.open(path)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {str(path)!r}: {e}") from None
    if len(shape) != 3:
        raise DataError(f"this model takes inputs of shape {shape}, not images")
    h, w, c = shape
    img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, np.float32) / 255.0
    return arr[..., None] if c == 1 else arr


def encode_text(ds, text: str):
    """``(ids (T,) int32, token labels)`` of ``text`` with a text data set's character vocabulary
    (``info["vocab"]``) or subword tokenizer (``info["tokenizer"]``); DataError for a data set with neither."""
    import numpy as np

    from jaxdl.errors import DataError

    info = getattr(ds, "info", None) or {}
    if info.get("vocab"):
        from jaxdl.data.text import encode

        shown = {" ": "␣", "\n": "⏎", "\t": "⇥"}  # whitespace made visible on the plot's axes
        return encode(text, info["vocab"]), [shown.get(c, c) for c in text]
    if info.get("tokenizer"):
        from jaxdl.data import tokenize

        tok = tokenize.load_tokenizer(info["tokenizer"]["json"])
        (ids,) = tokenize.encode_texts(tok, [text], cache_dir=False)
        return np.asarray(ids, np.int32), [tok.id_to_token(int(i)) for i in ids]
    raise DataError(f"data set {getattr(ds, 'name', '?')!r} has no vocabulary or tokenizer to encode text with; "
                    "attention maps need a run trained on text")


def explain_attention(s, variables, text: str, out_dir: Path) -> list[Path]:
    """``jaxdl explain --attention TEXT``: every attention layer's maps for ``text`` (encoded with the run's data
    set) as ``attention.npz`` (one (1, H, T, T) array per layer path) and ``attention.png`` (layers × heads)."""
    import jax.numpy as jnp
    import numpy as np

    from jaxdl import interpret
    from jaxdl.errors import DataError

    ids, labels = encode_text(s.dataset, text)
    if len(ids) == 0:
        raise DataError(f"explain --attention: {text!r} encodes to no tokens")
    full = {"params": variables["params"], **variables["model_state"]}
    maps = interpret.attention_maps(s.model, full, jnp.asarray(ids[None], jnp.int32))
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "attention.npz", **maps)
    png = interpret.plot_attention(maps, labels, out_dir / "attention.png")
    return [out_dir / "attention.npz", png]


def cmd_explain(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdl import interpret
    from jaxdl.errors import ConfigError
    from jaxdl.train import restore

    from jaxdl.train.rundir import CONFIG_FILE

    need = ("explain: give --image FILE (attribution maps of an image model) or --attention TEXT (attention maps of "
            "a text model); a text classification run needs neither (token attributions of test passages)")
    if args.image is None and args.attention is None and not (Path(args.run_dir) / CONFIG_FILE).is_file():
        raise ConfigError(need)
    if args.examples < 1 or args.steps < 1:
        raise ConfigError(f"explain: --examples and --steps must be at least 1, got {args.examples} and {args.steps}")
    s, variables = restore(args.run_dir, which=args.which)
    if args.attention is not None:
        for p in explain_attention(s, variables, args.attention, Path(args.out or Path(args.run_dir) / "explain")):
            print(f"wrote {p}")
        if args.image is None:
            return 0
    if args.image is None:
        if "tokens" in s.dataset.inputs and s.dataset.kind == "classification":
            return explain_text(args, s, variables)
        raise ConfigError(need)
    model, ds = s.model, s.dataset
    x = load_image(args.image, ds.input_shape)
    if ds.mean is not None:
        x = (x - ds.mean) / ds.std
    x = jnp.asarray(x[None], jnp.float32)  # (1, H, W, C)
    full = {"params": variables["params"], **variables["model_state"]}
    f = lambda z: model(full, z)  # noqa: E731
    probs = jax.nn.softmax(f(x)[0]) if model.output == "logits" else f(x)[0]
    pred = int(jnp.argmax(probs))
    target = jnp.array([args.target if args.target is not None else pred])
    out_dir = Path(args.out or Path(args.run_dir) / "explain")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    names = ds.class_names
    label = names[int(target[0])] if names and int(target[0]) < len(names) else str(int(target[0]))
    maps = {"saliency": interpret.saliency(f, x, target),
            "smoothgrad": interpret.smoothgrad(f, x, target, jax.random.PRNGKey(0)),
            "integrated_gradients": jnp.abs(interpret.integrated_gradients(f, x, target)).max(axis=-1)}
    convs = interpret.conv_layers(model.module, full, x) if model.module is not None else []
    if convs:
        maps[f"grad_cam_{convs[-1].replace('/', '_')}"] = interpret.grad_cam(model.module, full, x, target, convs[-1])
    written = []
    for method, heat in maps.items():
        path = out_dir / f"{stem}_{method}.png"
        interpret.overlay(x[0], heat[0], path, title=f"{method}: class {label}")
        written.append(path)
    print(f"predicted class {pred} ({names[pred] if names and pred < len(names) else pred}), "
          f"p={float(probs[pred]):.3f}; explaining class {label}")
    for p in written:
        print(f"wrote {p}")
    if not convs:
        print("no convolutional layer: Grad-CAM skipped")
    np.save(out_dir / f"{stem}_probs.npy", np.asarray(probs))
    return 0


def explain_text(args, s, variables) -> int:
    """``jaxdl explain RUN_DIR`` on a text classification run: token-level integrated gradients
    (:func:`jaxdl.interpret.token_integrated_gradients`) for ``--examples`` test passages, evenly spaced over the
    test split. Writes ``tokens.json`` (per passage: text, tokens, attributions, label, prediction, probabilities,
    completeness gap) and ``tokens.html`` (tokens coloured by attribution) to ``--out`` (default RUN_DIR/explain)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdl import interpret
    from jaxdl.data.core import evenly_spaced
    from jaxdl.errors import ConfigError

    model, ds = s.model, s.dataset
    if model.module is None:
        raise ConfigError(f"explain: model {model.name!r} is not a Linen module; token attributions need one")
    names = list(ds.class_names) or [str(i) for i in range(ds.num_classes)]
    if args.target is not None and not 0 <= args.target < len(names):
        raise ConfigError(f"explain: --target {args.target} is not a class of {ds.name!r} (0 … {len(names) - 1})")
    idx = evenly_spaced(len(ds.test), min(args.examples, len(ds.test)))
    batch = ds.test.batch(idx)
    inputs = {k: jnp.asarray(batch[k]) for k in ds.inputs}
    full = {"params": variables["params"], **variables["model_state"]}
    outputs = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])(full, inputs)  # (N, classes)
    probs = np.asarray(jax.nn.softmax(outputs, axis=-1) if model.output == "logits" else outputs)
    pred = probs.argmax(axis=-1)
    target = np.full(len(idx), args.target) if args.target is not None else pred
    out = interpret.token_integrated_gradients(model.module, full, inputs, jnp.asarray(target, jnp.int32),
                                               baseline=args.baseline, steps=args.steps)
    tok_info = ds.info.get("tokenizer") or {}
    tokenizer = None
    if tok_info.get("json"):
        from jaxdl.data.tokenize import load_tokenizer

        tokenizer = load_tokenizer(tok_info["json"])
    out_dir = Path(args.out or Path(args.run_dir) / "explain")
    out_dir.mkdir(parents=True, exist_ok=True)
    records, html = [], ["<html><head><meta charset='utf-8'></head><body>"]
    masks = np.asarray(batch["token_mask"]) if "token_mask" in batch else None
    for i, row in enumerate(np.asarray(batch["tokens"])):
        n = int(masks[i].sum()) if masks is not None else len(row)
        ids = [int(t) for t in row[:n]]
        words = [tokenizer.id_to_token(t) or f"<{t}>" for t in ids] if tokenizer else [str(t) for t in ids]
        attr = np.asarray(out["attributions"][i, :n], np.float64)
        score, base = float(out["score"][i]), float(out["baseline_score"][i])
        label = int(np.asarray(batch["label"])[i]) if "label" in batch else None
        rec = {"index": int(idx[i]), "text": tokenizer.decode(ids) if tokenizer else None, "tokens": words,
               "attributions": attr.tolist(), "label": None if label is None else names[label],
               "predicted": names[int(pred[i])], "explained": names[int(target[i])],
               "probabilities": dict(zip(names, probs[i].astype(float).tolist())), "score": score,
               "baseline_score": base, "completeness_gap": score - base - float(attr.sum())}
        records.append(rec)
        html.append(interpret.token_attribution_html(
            words, attr, f"test passage {rec['index']}: label {rec['label']}, predicted {rec['predicted']} "
                         f"(p={probs[i, pred[i]]:.3f}); attributions to the {rec['explained']} logit"))
    html.append("</body></html>")
    meta = {"run_dir": str(args.run_dir), "method": "integrated gradients in token-embedding space",
            "baseline": args.baseline, "steps": args.steps, "score": "logit of the explained class"}
    (out_dir / "tokens.json").write_text(json.dumps({**meta, "examples": records}, indent=2))
    (out_dir / "tokens.html").write_text("\n".join(html))
    for r in records:
        top = sorted(zip(r["attributions"], r["tokens"]), reverse=True)[:5]
        print(f"passage {r['index']}: label {r['label']}, predicted {r['predicted']}; tokens for {r['explained']}: "
              f"{', '.join(f'{t} {a:+.3f}' for a, t in top)} (completeness gap {r['completeness_gap']:+.1e})")
    for name in ("tokens.json", "tokens.html"):
        print(f"wrote {out_dir / name}")
    return 0


def cmd_convert(args) -> int:
    from jaxdl import models
    from jaxdl.convert import convert_file, parse_input_shape, parse_model_fields

    # the family's example shape unless given: token models read (T,), image models (H, W, C)
    shape = parse_input_shape(args.input_shape) if args.input_shape else models.MODELS.get(args.model).example_shape
    fields = parse_model_fields(args.model, args.overrides)
    out, report = convert_file(args.src, args.dst, args.model, num_classes=args.num_classes, input_shape=shape,
                               strict=not args.allow_missing, fields=fields)
    print(report.describe())
    print(f"wrote {out}  (use it with train.init_from={out})")
    return 0


def cmd_generate(args) -> int:
    import jax

    from jaxdl import generate, gguf_import

    lm = gguf_import.load_gguf(args.gguf) if args.gguf else gguf_import.load_packaged(args.packaged)
    # every prompt in one padded batch; each stops at the end-of-sequence token or a --stop token
    texts = generate.complete_texts(lm, args.prompt, jax.random.key(args.seed), max_tokens=args.max_tokens,
                                    temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                    stop=tuple(args.stop))
    for prompt, text in zip(args.prompt, texts):
        print(prompt + text)
    return 0


def cmd_models(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from jaxdl import models

    table = Table(title="jaxdl models (10 classes)")
    for col in ("name", "input", "parameters", "description"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for name, spec in models.MODELS.items():
        model = models.get(name, num_classes=10, input_shape=spec.example_shape)
        table.add_row(name, "×".join(map(str, spec.example_shape)), f"{model.param_count():,}", spec.description)
    Console().print(table)
    return 0


def cmd_sweep(args) -> int:
    from jaxdl.experiment.runner import run_sweep

    from jaxdl.errors import PreemptedError

    try:
        result = run_sweep(args.experiment, args.overrides, sweep=args.sweep, workdir=args.workdir, fuse=args.fuse,
                           executor=args.executor, workers=args.workers, ray_address=args.ray_address,
                           dry_run=args.dry_run, max_runs=args.max_runs, force=args.force,
                           claim_timeout_s=args.claim_timeout, rebuild=args.rebuild)
    except PreemptedError as e:  # SIGTERM/SIGINT: checkpointed, claims released; rerunning continues
        print(f"preempted: {e}", file=sys.stderr)
        return 4
    return 1 if result.failed else 0


def cmd_report(args) -> int:
    from jaxdl.experiment.report import make_report

    make_report(args.sweep_dir, metric=args.metric, fmt=args.format, plots=not args.no_plots, limit=args.limit)
    return 0


def cmd_bench(args) -> int:
    from jaxdl import bench, compile_cache

    models = bench.parse_models(args.models)
    if not args.compile_cache:  # compile times are cold compiles, not loads of an earlier run's programs
        compile_cache.disable()
    result = bench.run(models, rounds=args.rounds, steps=args.steps, torch_threads=args.torch_threads, tiny=args.tiny,
                       peak_tflops=args.peak_tflops)
    bench.print_table(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxdl", description="JAX deep-learning research library")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one config")
    t.add_argument("config", help="path/to/config.py, optionally with :variant (e.g. configs/digits_mlp.py:smoke)")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=3e-4")
    t.add_argument("--workdir", help="run directory (default runs/<name>/<timestamp>)")
    t.add_argument("--restart", action="store_true",
                   help="train from step 0 even if the workdir holds a run (its checkpoints and metrics are discarded)")
    _distributed_flags(t)
    t.set_defaults(fn=cmd_train)

    r = sub.add_parser("resume", help="continue a run from its newest valid checkpoint")
    r.add_argument("run_dir")
    r.add_argument("--restart", action="store_true",
                   help="when no checkpoint can be resumed (none written, or all damaged), discard the run and train "
                        "from step 0 instead of failing")
    _distributed_flags(r)
    r.set_defaults(fn=cmd_resume)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint on its data splits")
    e.add_argument("run_dir")
    e.add_argument("--which", choices=("best", "latest"), default="best")
    e.add_argument("--splits", nargs="+", default=["val", "test"], choices=("train", "val", "test"))
    e.set_defaults(fn=cmd_eval)

    w = sub.add_parser("sweep", help="run an experiment's sweep (groups of same-shaped runs train fused)")
    w.add_argument("experiment", help="experiments/NAME.py (get_config + get_sweep) or a config file with --sweep")
    w.add_argument("overrides", nargs="*", help="dotted key=value overrides of the base config")
    w.add_argument("--sweep", help="a grid replacing the experiment's sweep, e.g. 'optim.lr=1e-3,3e-3 seed=0:4'")
    w.add_argument("--workdir", help="sweep directory (default runs/sweeps/<experiment>)")
    w.add_argument("--dry-run", action="store_true", help="print the plan only")
    w.add_argument("--fuse", choices=("auto", "always", "never"), default="auto",
                   help="train a group as one vmapped program: measured (auto), always, or never")
    w.add_argument("--executor", choices=("inline", "processes", "ray"), default="inline")
    w.add_argument("--workers", type=int, default=2, help="processes for --executor processes")
    w.add_argument("--ray-address", help="address of a running Ray cluster (default: start a local one)")
    w.add_argument("--max-runs", type=int, default=1000, help="refuse a sweep with more runs unless --force "
                                                                "(default 1000)")
    w.add_argument("--force", action="store_true", help="run a sweep larger than --max-runs")
    w.add_argument("--claim-timeout", type=float, default=None,
                   help="seconds without a heartbeat after which another driver's claim is stale and its runs may be "
                        "taken over (default JAXDL_CLAIM_TIMEOUT or 60)")
    w.add_argument("--rebuild", action="store_true",
                   help="rebuild the sweep database from the run directories first (the old one is kept aside)")
    w.set_defaults(fn=cmd_sweep)

    rp = sub.add_parser("report", help="ranked table and plots of a sweep")
    rp.add_argument("sweep_dir")
    rp.add_argument("--format", choices=("rich", "md", "csv"), default="rich")
    rp.add_argument("--metric", help="ranking metric, e.g. val/accuracy, val/rmse or val/loss (default: the runs' "
                                     "monitored validation metric; the test value is shown beside it)")
    rp.add_argument("--limit", type=int, default=40, help="rows to print (files hold all)")
    rp.add_argument("--no-plots", action="store_true")
    rp.set_defaults(fn=cmd_report)

    x = sub.add_parser("explain", help="attribution maps (saliency, SmoothGrad, integrated gradients, Grad-CAM); "
                                        "attention maps of text models; token attributions of text classifiers")
    x.add_argument("run_dir")
    x.add_argument("--image", help="an image file (PNG/JPEG), resized to the model's input")
    x.add_argument("--attention", metavar="TEXT", help="a text run: write the attention maps of every layer and "
                   "head for TEXT (attention.npz, attention.png)")
    x.add_argument("--target", type=int, help="class to explain (default: the predicted class)")
    x.add_argument("--examples", type=int, default=4,
                   help="a text classification run: test passages to attribute token by token (default 4)")
    x.add_argument("--steps", type=int, default=64, help="a text classification run: integration steps (default 64)")
    x.add_argument("--baseline", choices=("pad", "zero"), default="pad",
                   help="a text classification run: baseline embedding, [PAD] at every position or zeros")
    x.add_argument("--which", choices=("best", "latest"), default="best")
    x.add_argument("--out", help="output folder (default RUN_DIR/explain)")
    x.set_defaults(fn=cmd_explain)

    cv = sub.add_parser("convert", help="convert PyTorch weights (.pth/.pt zip or legacy, .safetensors) to .npz")
    cv.add_argument("src")
    cv.add_argument("dst")
    cv.add_argument("--model", required=True, help="jaxdl model name, e.g. resnet18, vgg11_bn, efficientnet_lite0")
    cv.add_argument("--num-classes", type=int, default=1000)
    cv.add_argument("overrides", nargs="*",
                    help="model config fields, e.g. model.cell=gru model.hidden_size=128 (recurrent models)")
    cv.add_argument("--input-shape",
                    help="per-example input shape: H,W,C for images, T for token sequences (default: the model's "
                         "example shape, e.g. 224,224,3 for resnet18, 64 for gpt2)")
    cv.add_argument("--allow-missing", action="store_true",
                    help="write the file even if some variables are missing/unexpected (they are listed)")
    cv.set_defaults(fn=cmd_convert)

    g = sub.add_parser("generate", help="continue a prompt with a pretrained GGUF language model (offline)")
    g.add_argument("--prompt", required=True, action="append", help="repeat for a batch of prompts")
    g.add_argument("--packaged", default="smollm2_135m_instruct", help="packaged weights (sha256-checked)")
    g.add_argument("--gguf", help="a Llama-architecture GGUF file instead of packaged weights")
    g.add_argument("--max-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0: all")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus: the smallest set reaching p; 1: all")
    g.add_argument("--stop", action="append", default=[],
                   help="a token (or id) that ends the continuation, besides end-of-sequence; repeatable")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(fn=cmd_generate)

    m = sub.add_parser("models", help="list registered models with parameter counts")
    m.set_defaults(fn=cmd_models)

    b = sub.add_parser("bench", help="training steps/s and compile time of each model family against the same model "
                       "in PyTorch")
    b.add_argument("--models", default=None, help="comma-separated families (default all): mlp, lenet5, resnet18, "
                   "resnet50, vgg11, efficientnet_b0, lstm, gpt, bert, t5, unet")
    b.add_argument("--rounds", type=int, default=3, help="alternating jaxdl/PyTorch rounds (medians are reported)")
    b.add_argument("--steps", type=int, default=None, help="timed steps per round and side (default: per family)")
    b.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads for the PyTorch side")
    b.add_argument("--tiny", action="store_true", help="tiny sizes (a smoke run, not a measurement)")
    b.add_argument("--peak-tflops", type=float, default=None, help="accelerator peak for MFU (default by device name)")
    b.add_argument("--compile-cache", action="store_true", help="keep JAX's persistent compilation cache on (compile "
                   "times are then loads of programs compiled before)")
    b.add_argument("--json", default=None, help="also write the full result (raw rounds, machine) to this file")
    b.set_defaults(fn=cmd_bench)
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``key=value`` overrides may come after options (``--workdir DIR k=v``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    compile_cache.enable()  # a second process loads the programs this one compiles (JAXDL_COMPILATION_CACHE=0: off)
    try:
        return args.fn(args)
    except DivergenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except PreemptedError as e:
        print(f"preempted: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except JaxdlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
