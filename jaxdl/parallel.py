"""Device placement for populations: the member axis of a fused group is sharded over the devices.

Uses ``jit`` + ``Mesh``/``NamedSharding`` (no ``pmap``): the stacked state, the per-member hyperparameters and masks
are placed with ``PartitionSpec("pop")`` on their leading axis and the compiled program follows that placement, so
each device trains its share of the members. Nothing in the step itself depends on the device count.
"""

from __future__ import annotations

from typing import Any

import jax
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


def population_mesh(members: int, devices=None) -> jax.sharding.Mesh | None:
    """A 1-D mesh over the devices for ``members`` members, or None when there is one device or the members do not
    divide evenly over them (then the population stays on the default device)."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if n <= 1 or members % n:
        return None
    return jax.make_mesh((n,), (POP_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def shard_population(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
    """Place every leaf's leading (member) axis over ``mesh``; a no-op without a mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(POP_AXIS)))


def describe(mesh: jax.sharding.Mesh | None) -> dict[str, Any]:
    if mesh is None:
        return {"devices": 1, "sharded": False}
    return {"devices": int(mesh.devices.size), "sharded": True, "axis": POP_AXIS}
