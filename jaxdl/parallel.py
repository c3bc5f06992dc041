"""Device placement: a 2-D mesh ``("pop", "data")`` over the devices.

Uses ``jit`` + ``Mesh``/``NamedSharding`` (no ``pmap``). A fused population's stacked state, per-member
hyperparameters and masks are placed with ``PartitionSpec("pop")`` on their member axis; training batches are split
over ``data`` on their example axis (``("pop", "data")`` for a population's (members, batch, …) batches); a single
run's state is replicated. The compiled program follows that placement: each device trains its members' share of
the batch, batch-norm statistics and metrics are reduced over the global batch by the compiler. Nothing in the step
depends on the device count, so results equal the one-device run's up to the order of float additions.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

POP_AXIS = "pop"
DATA_AXIS = "data"


def parse_mesh(spec: str) -> tuple[int, int] | None:
    """``train.mesh`` as ``(pop, data)`` axis sizes, or None for ``auto``."""
    from jaxdl.errors import ConfigError

    text = str(spec).strip().lower()
    if text == "auto":
        return None
    parts = text.split("x")
    if len(parts) == 2 and all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        return int(parts[0]), int(parts[1])
    raise ConfigError(f"train.mesh: expected auto or POPxDATA with positive sizes (e.g. 1x8 for one run's batch over "
                      f"8 devices, 4x2 for 4 member shards of 2 devices each), got {spec!r}")


def _largest_divisor(n: int, of: int) -> int:
    """The largest divisor of ``n`` that also divides ``of``."""
    return max(d for d in range(1, n + 1) if n % d == 0 and of % d == 0)


def make_mesh(pop: int, data: int, devices=None) -> jax.sharding.Mesh:
    """A ``("pop", "data")`` mesh over the first ``pop * data`` of ``devices`` (default: every device)."""
    devices = list(devices if devices is not None else jax.devices())[:pop * data]
    types = (jax.sharding.AxisType.Auto,) * 2
    if jax.process_count() > 1:
        # process-major order: process i's devices hold rows i*B/n … of every batch (each process feeds its own)
        devices = sorted(devices, key=lambda d: (d.process_index, d.id))
        return jax.sharding.Mesh(np.array(devices).reshape(pop, data), (POP_AXIS, DATA_AXIS), axis_types=types)
    return jax.make_mesh((pop, data), (POP_AXIS, DATA_AXIS), devices=devices, axis_types=types)


def resolve_mesh(spec: str, members: int, batch_size: int, devices=None) -> jax.sharding.Mesh | None:
    """The mesh of ``train.mesh`` for a group of ``members`` (1 for a run trained alone) whose per-device work is
    cut from batches of ``batch_size`` (the micro-batch under ``train.accumulate``); None means one device.

    ``auto`` uses every device: the pop axis takes the largest share that divides the members (members need no
    communication), the data axis the largest share of the rest that divides the batch. Devices neither axis can
    use stay idle (e.g. 3 members with a batch of 6 on 8 devices train on 1 × 6).
    """
    from jaxdl.errors import ConfigError

    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    parsed = parse_mesh(spec)
    procs = jax.process_count()
    if parsed is None:
        pop = 1 if procs > 1 else _largest_divisor(n, members)
        data = _largest_divisor(n // pop, batch_size)
        if procs > 1 and data % procs:
            raise ConfigError(f"train.mesh=auto: with {procs} processes the batch ({batch_size}) must split over "
                              f"the {n} devices' data axis; choose a batch divisible by {n}")
    else:
        pop, data = parsed
        if pop * data > n:
            raise ConfigError(f"train.mesh={spec}: a {pop} x {data} mesh needs {pop * data} devices, "
                              f"{n} are available")
        if members % pop:
            raise ConfigError(f"train.mesh={spec}: the pop axis ({pop}) must divide the group's members ({members}; "
                              "a run trained alone has 1)")
        if batch_size % data:
            raise ConfigError(f"train.mesh={spec}: the data axis ({data}) must divide the batch of {batch_size} "
                              "(train.batch_size / train.accumulate)")
        if procs > 1 and (pop != 1 or data != n):
            raise ConfigError(f"train.mesh={spec}: a run of {procs} processes splits every batch over all {n} "
                              f"devices (1x{n}); member shards across processes are not supported")
    if pop * data == 1:
        return None
    return make_mesh(pop, data, devices)


def axis_size(mesh: jax.sharding.Mesh | None, axis: str) -> int:
    return 1 if mesh is None else int(mesh.shape[axis])


def state_spec(fused: bool) -> PartitionSpec:
    """Per-member trees (state, hyperparameters, masks): member axis over ``pop``; a single run's are replicated."""
    return PartitionSpec(POP_AXIS) if fused else PartitionSpec()


def batch_spec(fused: bool) -> PartitionSpec:
    """Training batches: examples over ``data`` (a population's batches are (members, batch, …))."""
    return PartitionSpec(POP_AXIS, DATA_AXIS) if fused else PartitionSpec(DATA_AXIS)


def sharding(mesh: jax.sharding.Mesh | None, spec: PartitionSpec) -> NamedSharding | None:
    return None if mesh is None else NamedSharding(mesh, spec)


def place(tree: Any, mesh: jax.sharding.Mesh | None, spec: PartitionSpec) -> Any:
    """``tree`` placed on ``mesh`` with ``spec`` on every leaf (a no-op without a mesh). In a multi-process run every
    process passes the same global host values (or its own share: see :func:`place_local`)."""
    if mesh is None:
        return tree
    target = NamedSharding(mesh, spec)
    if jax.process_count() > 1:
        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, target, lambda index: x[index])
        return jax.tree.map(put, jax.device_get(tree))
    return jax.device_put(tree, target)


def place_local(tree: Any, mesh: jax.sharding.Mesh | None, spec: PartitionSpec, global_shape_of) -> Any:
    """Assemble global arrays from each process's own rows (multi-process data feeding): ``tree`` holds this
    process's share of a batch; ``global_shape_of(x)`` gives the global shape of a leaf."""
    target = NamedSharding(mesh, spec)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(target, np.asarray(x), global_shape_of(x)),
                        tree)


def constrain(tree: Any, mesh: jax.sharding.Mesh | None, spec: PartitionSpec) -> Any:
    """Inside a jitted function: ask for ``spec`` on every leaf (a no-op without a mesh)."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))


def describe(mesh: jax.sharding.Mesh | None, spec: str = "auto") -> dict[str, Any]:
    """The placement recorded in ``config.json``: the mesh requested and the one resolved."""
    info = {"mesh": spec, "processes": jax.process_count()}
    if mesh is None:
        return {**info, "devices": 1, "sharded": False, "shape": {POP_AXIS: 1, DATA_AXIS: 1}}
    return {**info, "devices": int(mesh.devices.size), "sharded": True,
            "shape": {k: int(v) for k, v in mesh.shape.items()},
            "platform": mesh.devices.flat[0].platform}
