"""Run in a subprocess with 8 fake CPU devices by tests/train/test_mesh.py (the device count is fixed when JAX
starts, so the main test process cannot provide them). Prints one JSON line per case on stdout."""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import dataclasses  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdl import config as C  # noqa: E402
from jaxdl.data import load  # noqa: E402
from jaxdl.errors import ConfigError  # noqa: E402
from jaxdl.train import fit, train_group  # noqa: E402

DIGITS = load(C.DataConfig(name="digits"))
ROOT = Path(tempfile.mkdtemp(prefix="jaxdl-mesh-"))


def cfg(i=0, **overrides):
    # batch norm (statistics over the global batch) and dropout (keys independent of the placement); SGD with
    # momentum: Adam divides by the root of tiny second moments and amplifies float reassociation differences
    base = C.Config(name=f"m{i}", seed=i, model=C.model_config("mlp", widths=(32,), batch_norm=True, dropout=0.1),
                    data=C.DataConfig(name="digits"), optim=C.OptimConfig(name="sgd", lr=0.05, momentum=0.9),
                    train=C.TrainConfig(batch_size=32, steps=12, eval_every=6, chunk_steps=6, progress=False,
                                        plots=False, driver="scan"))
    return C.apply_overrides(base, overrides)


def leaves(state):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(jax.device_get(state))]


def diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(leaves(a), leaves(b)))


def placement(run_dir):
    return json.loads((Path(run_dir) / "config.json").read_text())["placement"]


def emit(**record):
    print(json.dumps(record), flush=True)


def single_runs():
    ref = None
    for driver, mesh in (("scan", "1x1"), ("scan", "1x2"), ("scan", "1x4"), ("scan", "auto"), ("host", "1x8")):
        if True:
            d = ROOT / f"single-{driver}-{mesh}"
            r = fit(cfg(**{"train.mesh": mesh, "train.driver": driver}), workdir=d, dataset=DIGITS)
            ref = r if ref is None else ref
            emit(case="single", driver=driver, mesh=mesh, diff=diff(ref.state, r.state),
                 val_loss=[ref.summary["val"]["loss"], r.summary["val"]["loss"]],
                 train_loss=[ref.summary["final"]["train/loss"], r.summary["final"]["train/loss"]],
                 placement=placement(d))


def populations():
    members = [cfg(i, **{"optim.lr": lr}) for i, lr in enumerate((0.05, 0.02, 0.1, 0.01))]
    ref = None
    for driver, mesh in (("scan", "1x1"), ("scan", "1x2"), ("scan", "4x1"), ("scan", "2x4"), ("host", "auto")):
        if True:
            c = [C.apply_overrides(m, {"train.mesh": mesh, "train.driver": driver}) for m in members]
            dirs = [ROOT / f"pop-{driver}-{mesh}-{i}" for i in range(4)]
            got = train_group(c, dirs, fused=True, dataset=DIGITS)
            ref = got if ref is None else ref
            emit(case="population", driver=driver, mesh=mesh,
                 diff=max(diff(a.state, b.state) for a, b in zip(ref, got)),
                 val_loss=[[a.summary["val"]["loss"], b.summary["val"]["loss"]] for a, b in zip(ref, got)],
                 placement=placement(dirs[0]))


def topologies():
    """A checkpoint written on one mesh resumes on another: each array placed for the new mesh."""
    whole = fit(cfg(**{"train.checkpoint_every": 6}), workdir=ROOT / "whole", dataset=DIGITS)
    for saved, resumed in (("1x4", "1x1"), ("1x4", "1x2"), ("1x1", "1x4")):
        d = ROOT / f"topo-{saved}-{resumed}"
        fit(cfg(**{"train.checkpoint_every": 6, "train.mesh": saved}), workdir=d, dataset=DIGITS)
        shutil.rmtree(d / "checkpoints" / "12")  # as if stopped after step 6
        r = fit(cfg(**{"train.checkpoint_every": 6, "train.mesh": resumed}), workdir=d, dataset=DIGITS, resume=True)
        shardings = {str(x.sharding.mesh.shape) if hasattr(x.sharding, "mesh") else "single"
                     for x in jax.tree.leaves(r.state)}
        emit(case="topology", saved=saved, resumed=resumed, diff=diff(whole.state, r.state),
             resumed_from=json.loads((d / "config.json").read_text()).get("resumed_from"), shardings=sorted(shardings),
             placement=placement(d))
    # a fused population saved on 4 member shards resumes on 1 device, and the reverse
    members = [cfg(i, **{"optim.lr": lr, "train.checkpoint_every": 6}) for i, lr in enumerate((0.05, 0.02, 0.1, 0.01))]
    whole = train_group(members, [ROOT / f"pw{i}" for i in range(4)], fused=True, dataset=DIGITS)
    for saved, resumed in (("4x2", "1x1"), ("1x1", "2x2")):
        dirs = [ROOT / f"ptopo-{saved}-{resumed}-{i}" for i in range(4)]
        train_group([C.apply_overrides(m, {"train.mesh": saved}) for m in members], dirs, fused=True, dataset=DIGITS)
        for d in dirs:
            shutil.rmtree(d / "checkpoints" / "12")
        got = train_group([C.apply_overrides(m, {"train.mesh": resumed}) for m in members], dirs, fused=True,
                          dataset=DIGITS, resume=True)
        emit(case="population-topology", saved=saved, resumed=resumed,
             diff=max(diff(a.state, b.state) for a, b in zip(whole, got)), placement=placement(dirs[0]))


def compiled():
    """The data axis really splits the batch: each device holds B/4 rows and the compiled step all-reduces."""
    from jaxdl.train import Programs, setup
    from jaxdl.train.drivers import advance, batch_placer
    from jaxdl import parallel

    s = setup(cfg(**{"train.mesh": "1x4"}), DIGITS)
    programs = Programs(s)
    mesh = programs.place(1)
    state = parallel.place(programs.init([0], s.hparams), mesh, parallel.state_spec(False))
    put, share = batch_placer(s)
    batch = put(DIGITS.train.batch(np.arange(32)))
    hp = parallel.place(s.hparams, mesh, parallel.state_spec(False))
    active = parallel.place(jax.numpy.asarray(True), mesh, parallel.state_spec(False))
    text = jax.jit(advance(s)).lower(state, active, batch, hp).compile().as_text()
    emit(case="compiled", rows=[int(x.data.shape[0]) for x in batch["image"].addressable_shards],
         all_reduce="all-reduce" in text, share=list(share))


def errors():
    for mesh, members in (("4x4", 1), ("3x1", 4), ("1x5", 1)):
        try:
            c = [cfg(i, **{"train.mesh": mesh}) for i in range(members)]
            train_group(c, [ROOT / f"err-{mesh}-{i}" for i in range(members)], fused=members > 1, dataset=DIGITS)
            emit(case="error", mesh=mesh, message=None)
        except ConfigError as e:
            emit(case="error", mesh=mesh, message=str(e))


if __name__ == "__main__":
    assert jax.device_count() == 8, jax.devices()
    for name in sys.argv[1:]:
        globals()[name]()
    shutil.rmtree(ROOT, ignore_errors=True)
