"""Multi-process (multi-host) runs: ``jax.distributed.initialize`` from the CLI or the environment.

Every process runs the same program on its own devices; together they form one global mesh (:mod:`jaxdl.parallel`).
Each process feeds only its own rows of every training batch (:func:`jaxdl.train.drivers.batch_placer`); only
process 0 writes logs, summaries, plots and reports (the others write to a scratch directory); checkpoints are
written jointly by Orbax into the shared run directory and sealed by process 0.

Where the coordinator comes from, first match wins:
1. ``jaxdl train … --coordinator HOST:PORT --num-processes N --process-id I``;
2. ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``;
3. a cluster JAX detects by itself (SLURM, Open MPI, Kubernetes/GKE, Cloud TPU …) when ``JAXDL_DISTRIBUTED=auto``.
Nothing is initialised when none applies: a single process.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import numpy as np

from jaxdl.errors import ConfigError

_SCRATCH: dict[str, str] = {}


def _checked(coordinator: str | None, num_processes: int | None, process_id: int | None) -> tuple[str, int, int]:
    if coordinator is None or num_processes is None or process_id is None:
        missing = [f for f, v in (("--coordinator", coordinator), ("--num-processes", num_processes),
                                  ("--process-id", process_id)) if v is None]
        raise ConfigError(f"multi-process run: {', '.join(missing)} missing (give --coordinator HOST:PORT "
                          "--num-processes N --process-id I, or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
                          "JAX_PROCESS_ID)")
    host, _, port = str(coordinator).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--coordinator: expected HOST:PORT (e.g. 10.0.0.1:8476), got {coordinator!r}")
    if int(num_processes) < 1:
        raise ConfigError(f"--num-processes: expected a positive number of processes, got {num_processes}")
    if not 0 <= int(process_id) < int(num_processes):
        raise ConfigError(f"--process-id: expected 0 … {int(num_processes) - 1} for {num_processes} processes, "
                          f"got {process_id}")
    return str(coordinator), int(num_processes), int(process_id)


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Join a multi-process run before anything touches a device. Returns whether one was joined."""
    if jax.distributed.is_initialized():
        return True
    env = os.environ
    if coordinator is None and num_processes is None and process_id is None:
        if env.get("JAX_COORDINATOR_ADDRESS"):
            coordinator = env["JAX_COORDINATOR_ADDRESS"]
            num_processes = int(env["JAX_NUM_PROCESSES"]) if env.get("JAX_NUM_PROCESSES") else None
            process_id = int(env["JAX_PROCESS_ID"]) if env.get("JAX_PROCESS_ID") else None
        elif env.get("JAXDL_DISTRIBUTED") == "auto":
            jax.distributed.initialize()  # the cluster's own variables (SLURM, Open MPI, …)
            return True
        else:
            return False
    coordinator, num_processes, process_id = _checked(coordinator, num_processes, process_id)
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    return True


def is_primary() -> bool:
    """Whether this process writes logs, summaries and reports (process 0; always true for a single process)."""
    return jax.process_index() == 0


def agree(value: Any) -> Any:
    """Process 0's ``value`` (JSON-serialisable) on every process, e.g. a run directory named by the clock."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    data = json.dumps(value).encode()
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    buf = np.zeros(size, np.uint8)
    if is_primary():
        buf[:] = np.frombuffer(data, np.uint8)
    return json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf))).decode())


def barrier(name: str) -> None:
    """Wait until every process reaches ``name``."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def files_dir(run_dir) -> str:
    """Where this process writes a run's logs and reports: the run directory on process 0, a scratch directory on
    the others (their records equal process 0's; checkpoints still go to the run directory, jointly)."""
    if is_primary():
        return str(run_dir)
    key = str(run_dir)
    if key not in _SCRATCH:
        _SCRATCH[key] = tempfile.mkdtemp(prefix=f"jaxdl-process{jax.process_index()}-")
    return _SCRATCH[key]
