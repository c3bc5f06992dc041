"""Drivers: how a segment of training steps is dispatched.

A runner is ``run(state, active, hp, seeds, epoch, offset, length) -> (state, active, metrics)``; metrics are host
(numpy) arrays of shape ``(length,)`` for a single run and ``(length, P)`` for a population. Every step is masked per
member: a member whose loss or gradient norm turns non-finite, and a member that is no longer ``active`` (stopped
early, diverged), keeps its previous state — in a population and in a run trained alone alike, so a diverged run is
frozen at its last finite state and a non-finite state is never checkpointed.

- ``scan``: the training split's storage lives on the device; ``lax.scan`` runs up to ``train.chunk_steps`` steps per
  dispatch, cutting batches with the split's pure ``gather`` (windows and text blocks are cut on the device).
- ``host``: one jitted step per dispatch, fed by a background thread that prefetches device batches.

Both drivers see the same batches: the permutation of epoch ``e`` is ``epoch_permutation(n, seed, e)``, so the data
position is a function of the step alone and a resumed run continues exactly where its checkpoint left off.
"""

from __future__ import annotations

import queue
import threading

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import data as data_lib
from jaxdl import parallel
from jaxdl.errors import JaxdlError
from jaxdl.train.population import select


def advance(s):
    """One step of a single run, or of a population (vmapped), with per-member masking of non-finite updates."""
    step = jax.vmap(s.train_step) if s.fused else s.train_step

    def run(state, active, batch, hp):
        new, metrics = step(state, batch, hp)
        ok = active & metrics["finite"]
        return select(ok, new, state), ok, {**metrics, "active": active}

    return run


def epoch_orders(s, seeds: list[int], epoch: int) -> np.ndarray:
    """Epoch order of each member, (P, n) — or (n,) for a single run."""
    n = len(s.dataset.train)
    perms = np.stack([data_lib.epoch_permutation(n, seed, epoch) for seed in seeds]).astype(np.int32)
    return perms[0] if len(seeds) == 1 and not s.fused else perms


def scan_runner(s):
    """Up to K steps per dispatch with ``lax.scan``; the training split's storage lives on the device.

    The scan always has K = min(chunk_steps, steps per epoch, total steps) iterations and runs the first ``n``
    of them (a ``lax.cond`` skips the rest), so segments of every length share one compiled program.
    """
    batch_size = s.cfg.train.batch_size
    chunk_len = max(1, min(s.cfg.train.chunk_steps, s.steps_per_epoch, s.total_steps))
    split = s.dataset.train
    mesh = s.mesh
    storage = parallel.place(split.storage(), mesh, parallel.PartitionSpec())  # replicated: any device cuts its rows
    step_fn = advance(s)
    spec = parallel.batch_spec(s.fused)

    def chunk(state, active, hp, storage, perm, offset, n):
        def step(carry, i):
            st, act = carry
            start = (offset + i) * batch_size
            if perm.ndim == 2:
                idx = jax.lax.dynamic_slice(perm, (0, start), (perm.shape[0], batch_size))  # (P, B)
            else:
                idx = jax.lax.dynamic_slice(perm, (start,), (batch_size,))  # (B,)
            batch = parallel.constrain(split.gather(storage, idx), mesh, spec)
            st, act, metrics = step_fn(st, act, batch, hp)
            return (st, act), metrics

        def body(carry, i):
            shapes = jax.eval_shape(step, carry, i)[1]
            skip = lambda c, i: (c, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))  # noqa: E731
            return jax.lax.cond(i < n, step, skip, carry, i)

        (state, active), metrics = jax.lax.scan(body, (state, active), jnp.arange(chunk_len))
        return state, active, metrics

    compiled = jax.jit(chunk, donate_argnums=0, **out_placement(s))
    cache: dict[tuple, jax.Array] = {}  # epoch orders on the device: this segment's epoch and the next

    def perms(seeds, epoch):
        key = (tuple(seeds), epoch)
        if key not in cache:
            cache[key] = parallel.place(epoch_orders(s, seeds, epoch), mesh, parallel.state_spec(s.fused))
        return cache[key]

    def run(state, active, hp, seeds, epoch, offset, length):
        if length > chunk_len:
            raise JaxdlError(f"scan driver: segment of {length} steps exceeds its chunk of {chunk_len}")
        perm = perms(seeds, epoch)
        for key in [k for k in cache if k != (tuple(seeds), epoch)]:
            del cache[key]
        state, active, metrics = compiled(state, active, hp, storage, perm, np.int32(offset), np.int32(length))
        if offset + length >= s.steps_per_epoch:  # the next epoch's order is drawn while this chunk runs
            perms(seeds, epoch + 1)
        # the first `length` of the chunk's K rows, cut on the host (cutting device arrays dispatches a program per
        # metric and chunk — more than a small model's whole chunk on a CPU)
        return state, active, jax.tree.map(lambda m: m[:length], jax.device_get(metrics))

    run.compiled = compiled  # for inspection (e.g. counting compilations)
    return run


def out_placement(s) -> dict:
    """``jit`` keyword arguments that keep a runner's outputs where its inputs live — state and masks as placed,
    metrics replicated (every process can read them) — so the next dispatch reuses the same compiled program."""
    options = remat_options(s)
    if s.mesh is None:
        return options
    per_member = parallel.sharding(s.mesh, parallel.state_spec(s.fused))
    return {**options,
            "out_shardings": (per_member, per_member, parallel.sharding(s.mesh, parallel.PartitionSpec()))}


def remat_options(s) -> dict:
    """``model.remat=blocks`` on XLA:CPU: keep ``jax.checkpoint``'s optimisation barriers. The CPU pipeline's
    ``cse_barrier_expander`` removes them and common-subexpression elimination then merges the recomputation back
    into the forward pass, so the saving would vanish (``scripts/results/remat.md``). GPU/TPU keep the barriers."""
    if getattr(s.cfg.model, "remat", "none") != "blocks" or jax.default_backend() != "cpu":
        return {}
    return {"compiler_options": {"xla_disable_hlo_passes": "cse_barrier_expander"}}


class Prefetcher:
    """Iterate ``batches`` in a background thread, keeping up to ``size`` device batches in flight (``put`` places
    each one: default device, or sharded over a mesh)."""

    _DONE = object()

    def __init__(self, batches, size: int, put=jax.device_put):
        self._put = put
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(iter(batches),), daemon=True)
        self._thread.start()

    def _work(self, it):
        try:
            for batch in it:
                self._queue.put(self._put(batch))
        except BaseException as e:  # noqa: BLE001 — re-raised in the consumer
            self._error = e
        self._queue.put(self._DONE)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item


def host_batches(split, batch_size: int, perm: np.ndarray, offset: int, length: int, share: tuple[int, int] = (0, 1)):
    """Batches ``offset … offset+length-1`` of an epoch order ``perm`` ((n,) or per member (P, n)), on the host.

    ``share = (i, n)``: only rows ``i*B/n … (i+1)*B/n - 1`` of each batch (process ``i`` of ``n`` reads its own share
    of the data)."""
    part, parts = share
    rows = batch_size // parts
    for i in range(offset, offset + length):
        idx = perm[..., i * batch_size:(i + 1) * batch_size]  # (B,) or (P, B)
        yield split.batch(idx[..., part * rows:(part + 1) * rows])


def batch_placer(s):
    """How host batches reach the devices: the default device; sharded over the mesh; or, with several processes,
    assembled from each process's own rows (``make_array_from_process_local_data``)."""
    if s.mesh is None:
        return jax.device_put, (0, 1)
    spec = parallel.batch_spec(s.fused)
    if jax.process_count() == 1:
        return (lambda b: parallel.place(b, s.mesh, spec)), (0, 1)
    axis = 1 if s.fused else 0
    procs = jax.process_count()

    def put(b):
        def global_shape(x):
            return x.shape[:axis] + (x.shape[axis] * procs,) + x.shape[axis + 1:]
        return parallel.place_local(b, s.mesh, spec, global_shape)

    return put, (jax.process_index(), procs)


def host_runner(s):
    """One jitted step per dispatch, fed by a prefetching host iterator."""
    step = jax.jit(advance(s), donate_argnums=0, **out_placement(s))
    put, share = batch_placer(s)

    def run(state, active, hp, seeds, epoch, offset, length):
        perm = epoch_orders(s, seeds, epoch)
        batches = Prefetcher(host_batches(s.dataset.train, s.cfg.train.batch_size, perm, offset, length, share),
                             s.cfg.train.prefetch, put)
        metrics = []
        for batch in batches:
            state, active, m = step(state, active, batch, hp)
            metrics.append(m)
        # stacked on the host: one fetch, no device program per metric and segment length
        return state, active, jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(metrics))

    return run


RUNNERS = {"scan": scan_runner, "host": host_runner}
