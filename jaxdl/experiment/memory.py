"""How much device memory a fused group needs, from the compiled train step — activations included.

The planner asks XLA rather than counting parameters: the group's real step (the vmapped, donated step the host
driver runs) is lowered and compiled abstractly — ``jax.ShapeDtypeStruct`` arguments, nothing allocated — and its
``memory_analysis()`` gives the bytes it needs::

    bytes(P members) = temp + arguments + outputs − aliased (the donated state is updated in place)

Compiling is not free (about a second per program on a CPU), so the step is compiled for 1 and 2 members only and
extrapolated linearly per member: ``bytes(n) = bytes(1) + (n − 1) · (bytes(2) − bytes(1))``. Checked on this CPU
against compiling for 4 and 8 members (``scripts/bench_compile_cache.py --memory``): the digits MLP +1 to +2 %,
ResNet-18 +4 to +5 %, the character GPT −4 %; in spot checks LeNet-5 +10 % and a small MLP at batch 128 −6 % (XLA
fuses and reuses buffers differently as the member count grows). The two numbers are cached per signature, input shapes, model and
device, in this process and in ``$JAXDL_CACHE_DIR/memory_plan.json`` (a repeated ``--dry-run`` compiles nothing).

On top comes the training split the scan driver keeps on the device (once per group: members share it). What the
estimate leaves out: the evaluation program (it runs between training segments, not beside them), the prefetched
host-driver batches, and allocator fragmentation — the budget keeps a margin for them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import numpy as np

from jaxdl.config import Config

CACHE_NAME = "memory_plan.json"
# the share of an accelerator's memory a group may plan to use: the estimate counts activations, the rest is the
# margin for evaluation, prefetched batches and fragmentation
DEVICE_FRACTION = 0.8
HOST_FRACTION = 0.25  # of host RAM on CPU, where the training shares the machine with everything else

# Buffer assignment (what memory_analysis reports) happens in XLA's HLO passes, before code generation: skipping the
# LLVM optimisations leaves the numbers unchanged (checked: identical for the MLP and LeNet-5 steps) and halves the
# compile time on a CPU.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

_ESTIMATES: dict[str, tuple[int, int]] = {}  # this process's cache: key -> (bytes for 1 member, for 2)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Device bytes of a fused group: ``total(n) = data + one + (n − 1) · per_member``.

    ``one``: the compiled step with one member; ``per_member``: what each further member adds (the step for two
    members minus the step for one); ``data``: the training split on the device (scan driver), shared by the
    members; ``source``: ``memory_analysis`` (compiled), ``state`` (parameters, optimizer state, gradients and a
    batch, from ``jax.eval_shape``: where a backend gives no memory analysis) or ``given`` (a caller's number)."""

    one: int
    per_member: int
    data: int = 0
    source: str = "memory_analysis"

    def total(self, members: int) -> int:
        return self.data + self.one + max(members - 1, 0) * self.per_member

    def fit(self, budget: int) -> int:
        """How many members fit ``budget`` bytes together (at least 1: a member that does not fit alone still
        trains, alone)."""
        room = budget - self.data - self.one
        if room < 0:
            return 1
        return 1 + (room // self.per_member if self.per_member > 0 else 1 << 30)


def as_estimate(value: MemoryEstimate | int) -> MemoryEstimate:
    """An estimate from what a memory function returned: a :class:`MemoryEstimate`, or plain bytes per member."""
    if isinstance(value, MemoryEstimate):
        return value
    return MemoryEstimate(one=int(value), per_member=int(value), source="given")


def nbytes(tree: Any) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def step_bytes(s, members: int) -> int:
    """Bytes the fused train step of ``members`` members needs, from XLA's memory analysis of the compiled program
    (lowered with abstract arguments: nothing is allocated). Returns -1 where the backend gives no analysis."""
    from jaxdl.train import abstract_batch, initial_state
    from jaxdl.train.drivers import advance

    fused = dataclasses.replace(s, fused=True)
    state = jax.eval_shape(lambda: initial_state(s))  # one member's TrainState
    stacked = lambda x: jax.ShapeDtypeStruct((members, *x.shape), x.dtype)  # noqa: E731 — (P, …)
    args = (jax.tree.map(stacked, state),
            jax.ShapeDtypeStruct((members,), np.dtype(bool)),  # active
            jax.tree.map(stacked, abstract_batch(s, s.cfg.train.batch_size)),  # (P, B, …)
            jax.tree.map(stacked, s.hparams))  # (P,) per number
    # the host driver's program, state donated as in training
    lowered = jax.jit(advance(fused), donate_argnums=0).lower(*args)
    try:
        compiled = lowered.compile(compiler_options=FAST_COMPILE)
    except Exception:  # noqa: BLE001 — a backend that rejects the options: compile as training does
        compiled = lowered.compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        return -1
    return int(analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
               - analysis.alias_size_in_bytes)


def state_bytes(s) -> int:
    """Parameters, optimizer and model state, gradients and one batch of one member (``jax.eval_shape``): a lower
    bound, activations excluded."""
    from jaxdl.train import abstract_batch, initial_state

    state = jax.eval_shape(lambda: initial_state(s))
    return nbytes(state) + nbytes(state.params) + nbytes(abstract_batch(s, s.cfg.train.batch_size))


def data_bytes(s) -> int:
    """The training split's storage, which the scan driver keeps on the device (0 when the host driver is
    configured)."""
    if s.cfg.train.driver == "host":
        return 0
    return nbytes(s.dataset.train.storage())


def estimate_key(s, model_id: str | None) -> str:
    from jaxdl.train import signature

    device = jax.devices()[0]
    parts = {"signature": signature(s.cfg), "model": model_id, "dropout": s.dropout,
             "input": {k: [list(v[0]), str(v[1])] for k, v in s.dataset.train.example_spec().items()},
             "device": [device.platform, device.device_kind], "jax": jax.__version__}
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def estimate(cfg: Config, model: Any = None) -> MemoryEstimate:
    """The memory a fused group of ``cfg``'s signature needs (see the module docstring). ``model``: a user's model
    instead of ``cfg.model``. Loads the data and compiles the step for 1 and 2 members unless cached."""
    from jaxdl.train import read_cache, setup, write_cache

    s = setup(cfg, model=model)
    model_id = None
    if model is not None:
        from jaxdl.experiment.inputs import model_key

        model_id = model_key(model)
    key = estimate_key(s, model_id)
    if key not in _ESTIMATES:
        cached = read_cache(CACHE_NAME).get(key)
        if cached:
            _ESTIMATES[key] = (int(cached["one"]), int(cached["two"]))
        else:
            one, two = step_bytes(s, 1), step_bytes(s, 2)
            _ESTIMATES[key] = (one, two)
            if one >= 0 and two >= 0:
                write_cache(CACHE_NAME, key, {"one": one, "two": two})
    one, two = _ESTIMATES[key]
    if one < 0 or two < 0:
        per = state_bytes(s)
        return MemoryEstimate(per, per, data_bytes(s), source="state")
    return MemoryEstimate(one, max(two - one, 0), data_bytes(s))


def budget() -> tuple[int, str]:
    """Bytes a fused group may use, and where the number comes from: ``JAXDL_GROUP_MEMORY`` (bytes), else
    :data:`DEVICE_FRACTION` of the accelerator's memory (``memory_stats()['bytes_limit']``), else
    :data:`HOST_FRACTION` of host RAM."""
    if os.environ.get("JAXDL_GROUP_MEMORY"):
        return int(float(os.environ["JAXDL_GROUP_MEMORY"])), "JAXDL_GROUP_MEMORY"
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return (int(stats["bytes_limit"] * DEVICE_FRACTION),
                f"{DEVICE_FRACTION:.0%} of {device.device_kind}'s {stats['bytes_limit'] / 2**30:.1f} GiB")
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return int(ram * HOST_FRACTION), f"{HOST_FRACTION:.0%} of host RAM ({ram / 2**30:.1f} GiB)"
    except (ValueError, OSError):
        return 4 << 30, "4 GiB (host RAM unknown)"


def split_sizes(members: int, fit: int) -> list[int]:
    """Sizes of the fewest sub-groups of at most ``fit`` members, as equal as possible (larger first): sub-groups
    of one size share one compiled program."""
    fit = max(1, fit)
    count = -(-members // fit)
    base, extra = divmod(members, count)
    return [base + 1] * extra + [base] * (count - extra)
