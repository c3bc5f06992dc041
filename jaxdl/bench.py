"""``jaxdl bench``: training steps/s and compile time of every zoo family, side by side with the same model in PyTorch.

For each family a small, stated size (``SIZES``) is built twice: jaxdl's own training step — ``setup(cfg)`` on a
synthetic data set of the right shape, the task's loss, gradients, Adam and the non-finite guard, jitted with the
state donated, exactly what training runs — and the same architecture in PyTorch (``jaxdl.bench_torch``, written by
hand: equal parameter counts are asserted) with ``torch.optim.Adam`` and the matching loss (cross-entropy; the
next-token, masked-token and seq2seq cross-entropies; the diffusion noise MSE). Both read the same few pre-generated
batches (NCHW for PyTorch, NHWC for jaxdl).

Measured per family:

* **compile**: the first step taken apart — ``jax.jit(step).lower(...)`` (tracing), ``.compile()`` (XLA), then the
  first call of the compiled step (a run); PyTorch's first (eager) step for comparison.
* **steps/s**: ``rounds`` rounds, each timing ``steps`` steps of jaxdl then PyTorch (the order flips every round),
  after one untimed step each; medians over rounds and the ratio jaxdl/PyTorch of the medians (> 1: jaxdl faster)
  and per round.
* **CPU time**: process CPU milliseconds per step of each side (all threads: XLA:CPU runs on every core, PyTorch on
  ``torch_threads``) — the work a step costs, which a shared machine's load disturbs far less than wall time.
* **FLOPs**: the compiled step's ``cost_analysis()`` flops per step and the achieved flops/s; on a GPU also the
  model FLOPs utilisation against ``peak_tflops`` (default by device name: dense TF32 peak, since the step is
  float32); on a CPU flops/s only.

All numbers come from one process: on a shared machine compare the ratios, not the absolute rates. Use::

    jaxdl bench [--models mlp,lenet5] [--rounds 3] [--steps N] [--torch-threads 1] [--json OUT.json]
    python scripts/bench_models.py --out scripts/results/bench_models     # the whole suite, JSON + markdown
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np

from jaxdl.errors import ConfigError

# Sizes chosen so the whole suite (11 families, 3 rounds) runs in a few minutes on 2 CPU cores. ``steps``: timed steps
# per round and side.
SIZES: dict[str, dict[str, Any]] = {
    "mlp": dict(batch=64, image=(28, 28, 1), widths=(256, 128), classes=10, steps=40),
    "lenet5": dict(batch=64, image=(32, 32, 1), classes=10, steps=20),
    "resnet18": dict(batch=16, image=(32, 32, 3), width=0.25, stem="cifar", classes=10, steps=5),
    "resnet50": dict(batch=8, image=(32, 32, 3), width=0.125, stem="cifar", classes=10, steps=5),
    "vgg11": dict(batch=2, image=(32, 32, 3), classes=10, steps=2),
    "efficientnet_b0": dict(batch=8, image=(32, 32, 3), classes=10, steps=5),
    "lstm": dict(batch=32, image=(28, 28), hidden=128, layers=1, classes=10, steps=10),
    "gpt": dict(batch=8, context=64, d_model=128, layers=2, heads=4, steps=10),
    "bert": dict(batch=8, context=64, d_model=128, layers=2, heads=4, ffn=512, steps=10),
    "t5": dict(batch=8, length=32, d_model=128, d_kv=32, d_ff=256, layers=2, heads=4, steps=10),
    "unet": dict(batch=8, image=(16, 16, 1), channels=(16, 32), attention_levels=(1,), heads=4, groups=8, steps=5),
}
# Tiny sizes for tests (--tiny): the same code paths, seconds to compile.
TINY: dict[str, dict[str, Any]] = {
    "mlp": dict(batch=4, image=(8, 8, 1), widths=(16,), classes=3, steps=2),
    "lenet5": dict(batch=4, image=(32, 32, 1), classes=3, steps=2),
    "resnet18": dict(batch=2, image=(16, 16, 3), width=0.0625, stem="cifar", classes=3, steps=2),
    "resnet50": dict(batch=2, image=(16, 16, 3), width=0.0625, stem="cifar", classes=3, steps=2),
    "vgg11": dict(batch=1, image=(32, 32, 3), classes=3, steps=1),
    "efficientnet_b0": dict(batch=2, image=(16, 16, 3), classes=3, steps=2),
    "lstm": dict(batch=4, image=(6, 5), hidden=8, layers=2, classes=3, steps=2),
    "gpt": dict(batch=2, context=8, d_model=16, layers=1, heads=2, steps=2),
    "bert": dict(batch=2, context=8, d_model=16, layers=1, heads=2, ffn=32, steps=2),
    "t5": dict(batch=2, length=8, d_model=16, d_kv=8, d_ff=32, layers=1, heads=2, steps=2),
    "unet": dict(batch=2, image=(8, 8, 1), channels=(8, 16), attention_levels=(1,), heads=2, groups=4, steps=2),
}
MODELS = tuple(SIZES)
LABELS = {"mlp": "MLP", "lenet5": "LeNet-5", "resnet18": "ResNet-18", "resnet50": "ResNet-50", "vgg11": "VGG-11",
          "efficientnet_b0": "EfficientNet-B0", "lstm": "LSTM", "gpt": "GPT", "bert": "BERT", "t5": "T5",
          "unet": "U-Net"}
N_BATCHES = 2  # pre-generated batches each side cycles through
PEAK_TFLOPS = {"H200": 494.7, "H100": 494.7, "A100": 156.0}  # dense TF32 tensor-core peaks (float32 matmuls)


def parse_models(spec: str | None) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (None or ``"all"``: every family); an unknown name raises ConfigError naming it."""
    if spec is None or spec.strip() in ("", "all"):
        return list(MODELS)
    names = [n.strip().lower().replace("-", "_") for n in spec.split(",") if n.strip()]
    aliases = {"lenet": "lenet5", "efficientnet": "efficientnet_b0", "vgg": "vgg11", "lenet_5": "lenet5",
               "resnet_18": "resnet18", "resnet_50": "resnet50", "vgg_11": "vgg11", "u_net": "unet"}
    names = [aliases.get(n, n) for n in names]
    for n in names:
        if n not in SIZES:
            from jaxdl.registry import closest

            hint = closest(n, list(MODELS), n=1)
            raise ConfigError(f"bench --models: unknown model {n!r}" + (f" (did you mean {hint[0]}?)" if hint else "")
                              + f"; expected some of {', '.join(MODELS)}")
    return list(dict.fromkeys(names))


def describe(name: str, z: dict[str, Any], batch: dict[str, np.ndarray] | None = None) -> str:
    """The stated size of a case, one short line (T5's padded widths are read from a ``batch`` when given)."""
    if name == "t5" and batch is not None:
        return (f"batch {z['batch']}, source {batch['source'].shape[1]} / target {batch['target'].shape[1]} BPE "
                f"tokens, d {z['d_model']}, {z['layers']}+{z['layers']} layers, {z['heads']} heads")
    if "image" in z and name != "lstm":
        extra = {"mlp": f"widths {z.get('widths')}", "resnet18": f"width {z.get('width')}, {z.get('stem')} stem",
                 "resnet50": f"width {z.get('width')}, {z.get('stem')} stem",
                 "unet": f"channels {z.get('channels')}, attention at {z.get('attention_levels')}"}.get(name, "")
        return f"batch {z['batch']}, {'×'.join(map(str, z['image']))}" + (f", {extra}" if extra else "")
    if name == "lstm":
        return f"batch {z['batch']}, {z['image'][0]} steps × {z['image'][1]}, hidden {z['hidden']} × {z['layers']}"
    seq = z.get("context", z.get("length"))
    return f"batch {z['batch']} × {seq} tokens, d {z['d_model']}, {z['layers']} layers, {z['heads']} heads"


# --------------------------------------------------------------------------------------------------------------------
# The two sides of a case
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Pair:
    """One family at one size on both sides: jaxdl's setup and batches, PyTorch's module, batches and loss."""

    name: str
    sizes: dict[str, Any]
    setup: Any  # jaxdl.train.setup.Setup
    batches: list[dict[str, np.ndarray]]  # jaxdl's, host arrays
    net: Any  # torch.nn.Module
    torch_batches: list[Any]
    torch_loss: Callable[[Any, Any], Any]  # (net, torch batch) -> scalar loss


def _train_cfg(name: str, model, batch: int, task: str = "auto", **extra):
    from jaxdl.config import Config, OptimConfig, TrainConfig

    return Config(name=f"bench_{name}", task=task, model=model, optim=OptimConfig(name="adam", lr=1e-3),
                  train=TrainConfig(batch_size=batch, steps=1000, driver="host", checkpoints=False, plots=False,
                                    progress=False), **extra)


def _image_dataset(shape: tuple[int, ...], classes: int, n: int, seed: int):
    """Random images (N, *shape) float32 and labels, in every split (the timings do not depend on the values)."""
    from jaxdl.data import Dataset, Split

    rng = np.random.default_rng(seed)

    def split(m):
        return Split(rng.standard_normal((m, *shape)).astype(np.float32), rng.integers(0, classes, m).astype(np.int32))

    return Dataset("synthetic", split(n), split(2), split(2), classes, tuple(map(str, range(classes))), tuple(shape),
                   None, None, description="random images")


def _text_dataset(block: int, blocks: int, seed: int):
    from jaxdl.config import DataConfig
    from jaxdl.data import TextSource, load

    rng = np.random.default_rng(seed)
    alphabet = np.asarray(list("abcdefghijklmnopqrstuvwxyz .,"))
    chars = int((blocks + 4) * (block + 1) / 0.9) + 30 * (block + 1)
    text = "".join(alphabet[rng.integers(0, len(alphabet), chars)])
    return load(DataConfig(name="text", block_size=block, val_fraction=0.05, test_fraction=0.05),
                source=TextSource(text, name="random_chars"))


def _host_batches(ds, batch: int) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v) for k, v in ds.train.batch(np.arange(i * batch, (i + 1) * batch)).items()}
            for i in range(N_BATCHES)]


def build_pair(name: str, z: dict[str, Any], seed: int = 0, *, model_only: bool = False) -> Pair:
    """Both sides of family ``name`` at sizes ``z`` (an entry of :data:`SIZES`). ``model_only``: jaxdl's side is just
    the model sized for the data (``pair.setup.model``, no task, optimizer or shape-checking trace of the step) and
    PyTorch's parameters live on the ``meta`` device (shapes, no storage) — enough to compare parameter counts."""
    import torch

    if model_only:
        with torch.device("meta"):
            return _build_pair(name, z, seed, model_only)
    return _build_pair(name, z, seed, model_only)


def _build_pair(name: str, z: dict[str, Any], seed: int, model_only: bool) -> Pair:
    import types

    import torch
    import torch.nn.functional as F

    from jaxdl import bench_torch as T
    from jaxdl.config import DataConfig, LossConfig, model_config
    from jaxdl.train.setup import build_model, setup as full_setup

    def setup(cfg, dataset):
        if not model_only:
            return full_setup(cfg, dataset=dataset)
        from jaxdl import tasks

        model, _ = build_model(cfg, dataset, tasks.resolve(cfg.task, dataset))
        return types.SimpleNamespace(cfg=cfg, dataset=dataset, model=model)

    torch.manual_seed(seed)
    B = z["batch"]
    ce = lambda net, b: F.cross_entropy(net(b[0]), b[1])  # noqa: E731
    if name in ("mlp", "lenet5", "resnet18", "resnet50", "vgg11", "efficientnet_b0", "lstm"):
        shape, classes = tuple(z["image"]), z["classes"]
        ds = _image_dataset(shape, classes, N_BATCHES * B, seed)
        c = shape[-1]
        model, net = {
            "mlp": lambda: (model_config("mlp", widths=tuple(z["widths"])), T.mlp(int(np.prod(shape)), z["widths"],
                                                                                  classes)),
            "lenet5": lambda: (model_config("lenet5", activation="relu", pool="max"), T.lenet5(c, classes)),
            "resnet18": lambda: (model_config(f"resnet18{'_cifar' if z['stem'] == 'cifar' else ''}",
                                              width=z["width"]), T.ResNet(18, z["width"], z["stem"], c, classes)),
            "resnet50": lambda: (model_config(f"resnet50{'_cifar' if z['stem'] == 'cifar' else ''}",
                                              width=z["width"]), T.ResNet(50, z["width"], z["stem"], c, classes)),
            "vgg11": lambda: (model_config("vgg11", dropout=0.0), T.VGG(11, c, classes)),
            "efficientnet_b0": lambda: (model_config("efficientnet_b0", drop_connect=0.0, dropout=0.0),
                                        T.EfficientNet("b0", c, classes)),
            "lstm": lambda: (model_config("rnn_classifier", cell="lstm", hidden_size=z["hidden"],
                                          num_layers=z["layers"]),
                             T.LSTMClassifier(shape[1], z["hidden"], z["layers"], classes)),
        }[name]()
        s = setup(_train_cfg(name, model, B, "classification"), dataset=ds)
        batches = _host_batches(ds, B)

        def to_torch(b):
            x = torch.from_numpy(b["image"])
            return (x.permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else x), torch.from_numpy(b["label"]).long()

        return Pair(name, z, s, batches, net, [to_torch(b) for b in batches], ce)
    if name in ("gpt", "bert"):
        L = z["context"]
        ds = _text_dataset(L, N_BATCHES * B, seed)
        if name == "gpt":
            model = model_config("gpt", context_length=L, d_model=z["d_model"], num_layers=z["layers"],
                                 num_heads=z["heads"], dropout=0.0)
            s = setup(_train_cfg(name, model, B, "language_model"), dataset=ds)
            net = T.torch_gpt({"layers": z["layers"], "d_model": z["d_model"], "heads": z["heads"], "context": L},
                              s.dataset.num_classes)
            batches = _host_batches(ds, B)

            def lm(net, tokens):
                logits = net(tokens[:, :-1])  # (B, T, V)
                return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

            return Pair(name, z, s, batches, net, [torch.from_numpy(b["tokens"]).long() for b in batches], lm)
        from jaxdl.tasks import MaskedLM

        vocab = MaskedLM.outputs_needed(ds)
        model = model_config("bert", head="mlm", vocab_size=vocab, max_positions=L, d_model=z["d_model"],
                             num_layers=z["layers"], num_heads=z["heads"], ffn_dim=z["ffn"], dropout=0.0,
                             attention_dropout=0.0)
        s = setup(_train_cfg(name, model, B, "masked_lm"), dataset=ds)
        net = T.BertMLM(vocab, L, z["d_model"], z["layers"], z["heads"], z["ffn"])
        batches = _host_batches(ds, B)
        rng = np.random.default_rng(seed)

        def masked(b):  # 15% of the positions replaced by the last id (the same work as the task's corruption)
            tokens = torch.from_numpy(b["tokens"][:, :L]).long()
            chosen = torch.from_numpy(rng.random(tokens.shape) < 0.15)
            return tokens.masked_fill(chosen, vocab - 1), torch.where(chosen, tokens, torch.full_like(tokens, -100))

        def mlm(net, b):
            logits = net(b[0])
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[1].reshape(-1), ignore_index=-100)

        return Pair(name, z, s, batches, net, [masked(b) for b in batches], mlm)
    if name == "t5":
        from jaxdl.data import load
        from jaxdl.data.parallel import ParallelSource
        from jaxdl.tasks.seq2seq import Seq2Seq

        L, rng = z["length"], np.random.default_rng(seed)
        words = np.asarray([a + b for a in "bcdfgklmnprst" for b in "aeiou"])  # 65 two-letter words
        texts = [" ".join(words[rng.integers(0, len(words), max(1, L // 3))]) for _ in range(2 * N_BATCHES * B + 8)]
        src = ParallelSource(tuple(texts[::2]), tuple(texts[1::2]), name="random_pairs", source_lang="xx",
                             target_lang="yy")
        ds = load(DataConfig(tokenizer="bpe", vocab_size=400, max_source_len=L, max_target_len=L, val_fraction=0.1,
                             test_fraction=0.1), source=src)
        model = model_config("t5", d_model=z["d_model"], d_kv=z["d_kv"], d_ff=z["d_ff"], num_layers=z["layers"],
                             num_heads=z["heads"])
        s = setup(_train_cfg(name, model, B, "seq2seq"), dataset=ds)
        net = T.T5(Seq2Seq.outputs_needed(ds), z["d_model"], z["d_kv"], z["d_ff"], z["layers"], z["heads"])
        batches = _host_batches(ds, B)

        def tb(b):
            tgt = torch.from_numpy(b["target"]).long()
            target_in = torch.cat([torch.zeros_like(tgt[:, :1]), tgt[:, :-1]], 1)  # shifted right, start 0
            return (torch.from_numpy(b["source"]).long(), torch.from_numpy(b["source_mask"]), target_in,
                    tgt.masked_fill(torch.from_numpy(b["target_mask"]) == 0, -100))

        def s2s(net, b):
            logits = net(b[0], b[1], b[2])
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[3].reshape(-1), ignore_index=-100)

        return Pair(name, z, s, batches, net, [tb(b) for b in batches], s2s)
    if name == "unet":
        shape = tuple(z["image"])
        ds = _image_dataset(shape, 2, N_BATCHES * B, seed)
        model = model_config("unet", channels=tuple(z["channels"]), attention_levels=tuple(z["attention_levels"]),
                             heads=z["heads"], groups=z["groups"])
        s = setup(_train_cfg(name, model, B, "diffusion", loss=LossConfig(timesteps=1000, score_samples=0)),
                  dataset=ds)
        net = T.UNet(shape[-1], tuple(z["channels"]), 1, tuple(z["attention_levels"]), z["heads"], z["groups"])
        batches = _host_batches(ds, B)
        rng = np.random.default_rng(seed)

        def noisy(b):  # x_t = √ᾱ x + √(1-ᾱ) ε at a random t; the target is ε
            x = torch.from_numpy(b["image"]).permute(0, 3, 1, 2).contiguous()
            t = torch.from_numpy(rng.integers(0, 1000, B))
            a = torch.from_numpy(rng.random(B).astype(np.float32))[:, None, None, None]
            eps = torch.randn_like(x)
            return a.sqrt() * x + (1 - a).sqrt() * eps, t, eps

        return Pair(name, z, s, batches, net, [noisy(b) for b in batches],
                    lambda net, b: F.mse_loss(net(b[0], b[1]), b[2]))
    raise ConfigError(f"bench: no builder for model {name!r}")


def param_counts(pair: Pair) -> tuple[int, int]:
    """(jaxdl, PyTorch) trainable parameter counts of a pair, jaxdl's from shapes only."""
    from jaxdl.bench_torch import count

    return pair.setup.model.param_count(), count(pair.net)


# --------------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------------


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 — some backends cannot say; flops are then not reported
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


class JaxSide:
    """jaxdl's compiled step and state; :meth:`compile` times lowering, compiling and the first run apart."""

    def __init__(self, pair: Pair):
        import jax

        from jaxdl.train.setup import example_batch
        from jaxdl.train.step import init_state

        self.s = s = pair.setup
        # initialised from an RBG key: its initialisers compile several times faster than threefry's (the values do
        # not matter for timing); the step then runs on its usual threefry key
        self.state = jax.jit(lambda: init_state(s.task, s.optimizers, example_batch(s), jax.random.key(0, impl="rbg"),
                                                s.hparams))().replace(rng=jax.random.PRNGKey(s.cfg.seed))
        self.batches = [jax.device_put(b) for b in pair.batches]
        self.compiled = None

    def compile(self) -> dict[str, Any]:
        import jax

        step = jax.jit(self.s.train_step, donate_argnums=0)
        t0 = time.perf_counter()
        lowered = step.lower(self.state, self.batches[0], self.s.hparams)
        t1 = time.perf_counter()
        self.compiled = lowered.compile()
        t2 = time.perf_counter()
        self.state, metrics = self.compiled(self.state, self.batches[0], self.s.hparams)
        jax.block_until_ready((self.state, metrics))
        t3 = time.perf_counter()
        return {"lower_s": t1 - t0, "compile_s": t2 - t1, "first_run_s": t3 - t2, "first_step_s": t3 - t0,
                "flops_per_step": _flops(self.compiled), "first_loss": float(metrics["loss"])}

    def run(self, steps: int) -> tuple[float, float]:
        """Wall and process CPU seconds of ``steps`` steps."""
        import jax

        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(steps):
            self.state, metrics = self.compiled(self.state, self.batches[i % N_BATCHES], self.s.hparams)
        jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - t0, time.process_time() - c0


class TorchSide:
    """PyTorch's module, ``torch.optim.Adam`` (lr 1e-3) and ``threads`` intra-op threads."""

    def __init__(self, pair: Pair, threads: int):
        import torch

        self.pair, self.threads = pair, threads
        self.net = pair.net.train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def one(self, i: int):
        loss = self.pair.torch_loss(self.net, self.pair.torch_batches[i % N_BATCHES])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss

    def first(self) -> dict[str, Any]:
        import torch

        torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        loss = self.one(0)
        return {"first_step_s": time.perf_counter() - t0, "first_loss": float(loss.detach())}

    def run(self, steps: int) -> tuple[float, float]:
        """Wall and process CPU seconds of ``steps`` steps."""
        import torch

        torch.set_num_threads(self.threads)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(steps):
            self.one(i)
        return time.perf_counter() - t0, time.process_time() - c0


def peak_tflops_for(device_kind: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k.lower() in device_kind.lower()), None)


def bench_one(name: str, z: dict[str, Any], rounds: int, steps: int | None, torch_threads: int,
              peak_tflops: float | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build, compile and time one family; returns its record (see :func:`run`)."""
    import jax

    steps = steps or z["steps"]
    t_build = time.perf_counter()
    pair = build_pair(name, z)
    n_jax, n_torch = param_counts(pair)
    if n_jax != n_torch:
        raise AssertionError(f"bench {name}: jaxdl has {n_jax:,} parameters, the PyTorch model {n_torch:,}")
    jx, tr = JaxSide(pair), TorchSide(pair, torch_threads)
    build_s = time.perf_counter() - t_build
    comp = jx.compile()
    tfirst = tr.first()
    jx.run(1)  # one untimed step each: caches, allocator
    tr.run(1)
    raw: dict[str, list[float]] = {"jaxdl": [], "torch": []}
    cpu: dict[str, list[float]] = {"jaxdl": [], "torch": []}  # process CPU ms per step (all threads)
    for r in range(rounds):
        for side in (("jaxdl", "torch") if r % 2 == 0 else ("torch", "jaxdl")):
            wall, cpu_s = (jx if side == "jaxdl" else tr).run(steps)
            raw[side].append(steps / wall)
            cpu[side].append(1000 * cpu_s / steps)
        log(f"  {name:>16} round {r + 1}/{rounds}: jaxdl {raw['jaxdl'][-1]:8.2f} steps/s, "
            f"torch {raw['torch'][-1]:8.2f} steps/s (load {os.getloadavg()[0]:.1f})")
    med = {k: statistics.median(v) for k, v in raw.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    flops = comp["flops_per_step"]
    dev = jax.devices()[0]
    rec = {"model": name, "label": LABELS[name], "sizes": {k: v for k, v in z.items() if k != "steps"},
           "size": describe(name, z, pair.batches[0]), "params": n_jax, "params_torch": n_torch, "steps_per_round": steps,
           "rounds": rounds, "raw_steps_per_s": raw, "steps_per_s": med,
           "ratio": med["jaxdl"] / med["torch"],
           "ratio_per_round": [a / b for a, b in zip(raw["jaxdl"], raw["torch"])],
           "raw_cpu_ms_per_step": cpu, "cpu_ms_per_step": cpu_med,
           "compile": comp, "torch_first": tfirst, "build_s": build_s,
           "flops_per_step": flops, "flops_per_s": None if flops is None else flops * med["jaxdl"]}
    if dev.platform == "gpu":
        peak = peak_tflops if peak_tflops is not None else peak_tflops_for(dev.device_kind)
        rec["peak_tflops"] = peak
        rec["mfu"] = None if peak is None or flops is None else rec["flops_per_s"] / (peak * 1e12)
    del pair, jx, tr
    return rec


def machine(torch_threads: int) -> dict[str, Any]:
    import jax
    import torch

    dev = jax.devices()[0]
    return {"platform": dev.platform, "device_kind": dev.device_kind, "devices": jax.device_count(),
            "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch_threads,
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            # with JAX's persistent compilation cache on, compile times of programs compiled before are cache loads
            "compilation_cache_dir": jax.config.jax_compilation_cache_dir}


def run(models: list[str] | None = None, rounds: int = 3, steps: int | None = None, torch_threads: int = 1,
        tiny: bool = False, peak_tflops: float | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Benchmark ``models`` (default: all of :data:`MODELS`) and return ``{"machine", "results", ...}``; each result
    has ``steps_per_s`` ``{"jaxdl", "torch"}`` (medians), ``ratio`` (jaxdl / torch), ``compile`` (``lower_s``,
    ``compile_s``, ``first_run_s``, ``first_step_s``, ``flops_per_step``), ``params`` and the raw rounds."""
    if rounds < 1:
        raise ConfigError(f"bench --rounds: expected a positive number of rounds, got {rounds}")
    if steps is not None and steps < 1:
        raise ConfigError(f"bench --steps: expected a positive number of steps per round, got {steps}")
    names = list(models) if models is not None else list(MODELS)
    for n in names:
        if n not in SIZES:
            parse_models(n)  # raises naming it
    table = TINY if tiny else SIZES
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    results = [bench_one(n, table[n], rounds, steps, torch_threads, peak_tflops, log) for n in names]
    info = machine(torch_threads)
    info.update(loadavg_start=load0, loadavg_end=os.getloadavg(), total_s=round(time.perf_counter() - t0, 1))
    return {"machine": info, "rounds": rounds, "tiny": tiny, "results": results}


# --------------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------------

COLUMNS = ("model", "size", "params", "jaxdl steps/s", "torch steps/s", "jaxdl/torch", "CPU ms/step jaxdl / torch",
           "lower s", "compile s", "first run s", "torch first s", "GFLOP/step", "GFLOP/s")


def _f(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def rows(result: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Column names and one row of strings per model (MFU added on a GPU)."""
    gpu = any("mfu" in r for r in result["results"])
    cols = COLUMNS + (("MFU",) if gpu else ())
    out = []
    for r in result["results"]:
        c, f = r["compile"], r["flops_per_step"]
        row = (r["label"], r["size"], f"{r['params']:,}", _f(r["steps_per_s"]["jaxdl"], ".2f"),
               _f(r["steps_per_s"]["torch"], ".2f"), _f(r["ratio"], ".2f"),
               f"{r['cpu_ms_per_step']['jaxdl']:.1f} / {r['cpu_ms_per_step']['torch']:.1f}", _f(c["lower_s"], ".2f"),
               _f(c["compile_s"], ".2f"), _f(c["first_run_s"], ".3f"), _f(r["torch_first"]["first_step_s"], ".3f"),
               _f(None if f is None else f / 1e9, ".3f"),
               _f(None if r["flops_per_s"] is None else r["flops_per_s"] / 1e9, ".2f"))
        if gpu:
            row += (_f(None if r.get("mfu") is None else 100 * r["mfu"], ".1f") + "%",)
        out.append(row)
    return cols, out


def markdown(result: dict[str, Any]) -> str:
    cols, body = rows(result)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def print_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    from jaxdl.experiment.report import make_console

    cols, body = rows(result)
    m = result["machine"]
    table = Table(title=f"jaxdl vs PyTorch — {m['platform']} ({m['device_kind']}), torch {m['torch_threads']} "
                        f"thread(s), {result['rounds']} round(s), load {m['loadavg_start'][0]:.1f}")
    for i, c in enumerate(cols):
        table.add_column(c, justify="left" if i < 2 else "right")
    for r in body:
        table.add_row(*r)
    console = make_console()
    console.print(table)
    if m.get("compilation_cache_dir"):
        console.print(f"JAX's persistent compilation cache is on ({m['compilation_cache_dir']}): programs compiled "
                      "by an earlier run load from it; JAXDL_COMPILATION_CACHE=0 times cold compiles.",
                      markup=False, highlight=False)
