"""The compiled pieces of one signature — initialisation, drivers, evaluation — and evaluation over splits."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import parallel
from jaxdl.train.drivers import RUNNERS
from jaxdl.train.population import member, stack_members, to_host
from jaxdl.train.probe import choose_driver
from jaxdl.train.setup import Setup, example_batch
from jaxdl.train.step import TrainState, init_state


def make_evaluator(s: Setup, fused: bool = False):
    """``evaluate(params, model_state, split, hp) -> [{metric: value}, …]`` (one dict per member).

    Batches of ``train.eval_batch_size`` cut by index from the split (windows and text blocks included); the last one
    is padded with repeats of example 0 and masked, so every batch has one shape and counts only real examples. The
    task's ``(sum, weight)`` statistics are summed over the batches in float64 on the host and finalised once
    (:meth:`jaxdl.tasks.Task.finalize`): class-weighted and per-token losses aggregate exactly.
    """
    mesh = s.mesh
    # one batch shape for every split: a single compilation
    bs = max(1, min(s.cfg.train.eval_batch_size, max(len(s.dataset.val), len(s.dataset.test), 1)))
    spread = mesh is not None and bs % parallel.axis_size(mesh, parallel.DATA_AXIS) == 0
    spec = parallel.PartitionSpec(parallel.DATA_AXIS) if spread else parallel.PartitionSpec()
    out = {} if mesh is None else {"out_shardings": parallel.sharding(mesh, parallel.PartitionSpec())}
    step = jax.jit(jax.vmap(s.eval_step, in_axes=(0, 0, None, 0)) if fused else s.eval_step, **out)

    def evaluate(params, model_state, split, hp) -> list[dict[str, float]]:
        n = len(split)
        outs = []
        for start in range(0, n, bs):
            idx = np.arange(start, min(start + bs, n))
            mask = np.zeros(bs, np.float32)
            mask[:len(idx)] = 1.0
            idx = np.concatenate([idx, np.zeros(bs - len(idx), idx.dtype)])
            batch = parallel.place({**split.batch(idx), "mask": mask}, mesh, spec)  # examples over the data axis
            outs.append(step(params, model_state, batch, hp))
        if not outs:
            return []
        totals = jax.tree.map(lambda *xs: np.sum(np.stack([np.asarray(x, np.float64) for x in xs]), axis=0),
                              *jax.device_get(outs))
        count = np.atleast_1d(next(iter(totals.values()))[1]).shape[0]
        return [s.task.finalize({k: (np.atleast_1d(sw[0])[i], np.atleast_1d(sw[1])[i]) for k, sw in totals.items()})
                for i in range(count)]

    return evaluate


def evaluate_splits(s: Setup, params, model_state, splits=("val", "test")) -> dict[str, dict[str, float]]:
    """Metrics of one model on each named split."""
    evaluate = make_evaluator(s)
    return {name: evaluate(params, model_state, getattr(s.dataset, name), s.hparams)[0] for name in splits
            if len(getattr(s.dataset, name))}


class Programs:
    """The compiled pieces of one signature — initialisation, drivers, evaluation — built once and shared by every
    run of a group (hyperparameters and seeds are arguments, so members never recompile)."""

    def __init__(self, s: Setup, share: Programs | None = None):
        self.s = s
        self.runners: dict[str, Any] = {}
        self.driver: tuple[str, dict[str, Any]] | None = None
        self.evaluate = make_evaluator(s, s.fused)
        if share is not None:  # same task and optimizers (e.g. the single and the fused candidates of a probe)
            self._init = share._init
        else:
            example = example_batch(s)
            self._init = jax.jit(lambda key, hp: init_state(s.task, s.optimizers, example, key, hp))

    def place(self, members: int) -> jax.sharding.Mesh | None:
        """Resolve ``train.mesh`` for a unit of ``members`` runs (fused) or one run; the drivers and the evaluator
        are rebuilt when the mesh changes."""
        t = self.s.cfg.train
        mesh = parallel.resolve_mesh(t.mesh, members if self.s.fused else 1, t.batch_size // t.accumulate)
        if mesh != self.s.mesh:
            self.s.mesh = mesh
            self.runners.clear()
            self.driver = None
            self.evaluate = make_evaluator(self.s, self.s.fused)
        return mesh

    def init(self, seeds: list[int], hp) -> TrainState:
        """The initial state of one run, or of a population: each member initialised by the single-run program
        (so a fused member starts exactly where its standalone run starts, and both modes share one compilation),
        stacked on the host."""
        if not self.s.fused:
            return self._init(jax.random.PRNGKey(seeds[0]), hp)
        host_hp = to_host(hp)
        each = [self._init(jax.random.PRNGKey(seed), jax.tree.map(jnp.asarray, member(host_hp, i)))
                for i, seed in enumerate(seeds)]
        return jax.device_put(stack_members(each))

    def runner(self, name: str):
        if name not in self.runners:
            self.runners[name] = RUNNERS[name](self.s)
        return self.runners[name]

    def choose_driver(self, state, active, hp, seeds: list[int], work_steps: int | None = None,
                      recorded: str | None = None) -> tuple[str, dict[str, Any]]:
        """The driver to run: ``recorded`` (a resumed run keeps the driver its ``config.json`` names), the
        configured one, or the probe's choice (cached)."""
        if recorded in RUNNERS:
            return recorded, {"chosen": recorded, "how": "recorded in config.json (resume)"}
        if self.driver is None:
            self.driver = choose_driver(self.s, state, active, hp, seeds, self.runner, work_steps)
        return self.driver
