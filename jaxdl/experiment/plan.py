"""The planner: expand a sweep into runs, split each into its static signature and dynamic numbers, and group runs
with equal signatures — each group can train as one vmapped program.

Before anything trains, the plan lists groups, members, an estimate of the memory each member needs (from
``jax.eval_shape``, nothing allocated) and how the group will be trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl import config as config_lib
from jaxdl.config import Config
from jaxdl.errors import ConfigError
from jaxdl.experiment.report import PIPE_WIDTH, make_console  # noqa: F401 — re-exported
from jaxdl.experiment.sweep import Spec
from jaxdl.train import dynamic_keys, signature


@dataclasses.dataclass
class RunSpec:
    run_id: str
    config: Config
    labels: dict[str, str]
    overrides: dict[str, Any]
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name


@dataclasses.dataclass
class Group:
    id: str
    signature: str
    runs: list[RunSpec]
    bytes_per_member: int = 0
    model_label: str | None = None  # a user's model (run_sweep(model=...)) instead of cfg.model

    @property
    def title(self) -> str:
        c = self.runs[0].config
        if self.model_label:
            return "/".join([self.model_label, c.loss.name])
        extras = ["bn"] if getattr(c.model, "batch_norm", False) else []
        return "/".join([c.model.name, c.loss.name, *extras])


@dataclasses.dataclass
class Plan:
    name: str
    groups: list[Group]
    skipped: list[tuple[dict[str, Any], str]]

    @property
    def runs(self) -> list[RunSpec]:
        return [r for g in self.groups for r in g.runs]


def config_hash(cfg: Config) -> str:
    return hashlib.sha1(json.dumps(config_lib.to_dict(cfg), sort_keys=True, default=str).encode()).hexdigest()


def run_id_for(digest: str, model_key: str | None = None) -> str:
    """A sweep run's id: its config's hash together with the jaxdl version, so a sweep rerun by other code trains
    anew instead of silently reusing results recorded by the old code — and with a user's model, its identity
    (:func:`jaxdl.experiment.inputs.model_key`)."""
    import jaxdl

    model = f" model={model_key}" if model_key else ""
    return hashlib.sha1(f"{digest}{model} jaxdl={jaxdl.__version__}".encode()).hexdigest()[:12]


def _family_fields() -> set[str]:
    from jaxdl.models import MODELS

    return {f.name for name in MODELS.names() for f in dataclasses.fields(config_lib.model_config_class(name))}


def _lookup(cfg: Config, key: str) -> Any:
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _apply(base: Config, overrides: dict[str, Any]) -> Config:
    return config_lib.apply_overrides(base, overrides)


def expand(base: Config, spec: Spec, name: str, *, model_key: str | None = None
           ) -> tuple[list[RunSpec], list[tuple[dict[str, Any], str]]]:
    """Resolve every point of ``spec`` against ``base``.

    A point that sets a model field its architecture lacks (dropout on a perceptron) is skipped with a reason; any
    other bad key or value raises ConfigError at once (a typo never silently shrinks a sweep). ``model_key``: the
    identity of a user's model, part of every run id.
    """
    runs, skipped, seen = [], [], set()
    family_fields = _family_fields()
    for point in spec.expand():
        try:
            cfg = _apply(base, point.overrides)
        except ConfigError as e:
            bad = [k for k in point.overrides if k.startswith("model.") and k.split(".", 1)[1] in family_fields
                   and f"'{k}'" in str(e)]
            if bad:
                model = point.overrides.get("model.name", base.model.name)
                skipped.append((point.overrides, f"{model} has no field {bad[0].split('.', 1)[1]}"))
                continue
            raise
        digest = config_hash(dataclasses.replace(cfg, name=name))
        if digest in seen:
            skipped.append((point.overrides, "duplicate of an earlier point"))
            continue
        seen.add(digest)
        run_id = run_id_for(digest, model_key)
        cfg = dataclasses.replace(cfg, name=f"{name}-{run_id[:8]}")
        # the swept values as the config holds them (a --sweep gives strings; the report plots numbers as numbers)
        values = {k: _lookup(cfg, k) for k in point.values}
        runs.append(RunSpec(run_id, cfg, dict(point.labels), dict(point.overrides), values))
    return runs, skipped


def member_bytes(cfg: Config, model: Any = None) -> int:
    """Estimated device bytes one member needs while training: the state (parameters, optimizer and model state),
    gradients and one batch — activations come on top (a lower bound, from ``jax.eval_shape``). ``model``: a user's
    model instead of ``cfg.model``."""
    from jaxdl.train import abstract_batch, initial_state, setup

    s = setup(cfg, model=model)
    state = jax.eval_shape(lambda: initial_state(s))
    nbytes = lambda tree: sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    batch = nbytes(abstract_batch(s, cfg.train.batch_size))
    return nbytes(state) + nbytes(state.params) + batch


def memory_budget() -> int:
    """Bytes a fused group may use: half the accelerator's memory, or a quarter of host RAM on CPU.
    ``JAXDL_GROUP_MEMORY`` (bytes) overrides it."""
    if os.environ.get("JAXDL_GROUP_MEMORY"):
        return int(float(os.environ["JAXDL_GROUP_MEMORY"]))
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"] * 0.5)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.25)
    except (ValueError, OSError):
        return 4 << 30


def group(runs: list[RunSpec], budget: int | None = None, *, model: Any = None,
          model_label: str | None = None) -> list[Group]:
    """Group runs by signature; split a group whose members do not fit ``budget`` bytes together. ``model``: a
    user's model (named ``model_label``) that every run trains instead of its ``cfg.model``."""
    by_sig: dict[str, list[RunSpec]] = {}
    for r in runs:
        by_sig.setdefault(signature(r.config), []).append(r)
    budget = memory_budget() if budget is None else budget
    groups = []
    for sig, members in by_sig.items():
        per = member_bytes(members[0].config) if model is None else member_bytes(members[0].config, model)
        fit_n = max(1, budget // max(per, 1))
        base_id = hashlib.sha1(sig.encode()).hexdigest()[:10]
        chunks = [members[i:i + fit_n] for i in range(0, len(members), fit_n)]
        for k, chunk in enumerate(chunks):
            gid = base_id if len(chunks) == 1 else f"{base_id}-{k}"
            groups.append(Group(gid, sig, chunk, per, model_label))
    return groups


def build_plan(base: Config, spec: Spec, name: str, budget: int | None = None, *, model: Any = None) -> Plan:
    """Expand and group a sweep. ``model``: a user's model every run trains instead of its ``cfg.model`` (its
    identity enters the run ids, its name the ``model`` label of every run)."""
    from jaxdl.experiment import inputs

    label = key = None
    if model is not None:
        inputs.check_model_axes(spec.expand(), model)
        label, key = inputs.model_label(model), inputs.model_key(model)
    runs, skipped = expand(base, spec, name, model_key=key)
    if not runs:
        raise ConfigError(f"sweep {name!r} has no runnable points")
    if label:
        for r in runs:
            r.labels = {"model": label, **r.labels}
    return Plan(name, group(runs, budget, model=model, model_label=label), skipped)


def swept_keys(plan: Plan) -> list[str]:
    """Dotted keys whose values differ between runs (what the sweep varies)."""
    keys: dict[str, set] = {}
    for r in plan.runs:
        for k in config_lib.all_keys(r.config):
            if k == "name":
                continue
            value = r.config
            for part in k.split("."):
                value = getattr(value, part)
            keys.setdefault(k, set()).add(json.dumps(value, default=str))
    return sorted(k for k, v in keys.items() if len(v) > 1)


def describe_dynamic(run: RunSpec) -> str:
    """The run's swept dynamic numbers, e.g. ``lr=0.003 seed=1``."""
    parts = []
    for key in dynamic_keys():
        if key in run.overrides:
            parts.append(f"{key.split('.')[-1]}={run.overrides[key]}")
    return " ".join(parts)


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def describe_member(run: RunSpec) -> str:
    """The values a sweep point sets: its labels (``model=mlp reg=l2``) and swept numbers (``lr=0.001 seed=0``)."""
    from jaxdl.experiment.report import describe_values

    return describe_values({**run.labels, **run.values})


def print_plan(plan: Plan, fuse: str, decisions: dict[str, dict] | None = None, console=None,
               members: bool = False) -> None:
    """The plan table (groups, sizes, memory, how each trains); ``members``: also every member's run id and the
    values it takes (``--dry-run``)."""
    from rich.table import Table

    console = console or make_console()
    table = Table(title=f"sweep {plan.name}: {len(plan.runs)} runs in {len(plan.groups)} groups")
    for col in ("group", "structure", "members", "mem/member", "mem/group", "training"):
        table.add_column(col, justify="right" if col.startswith(("members", "mem")) else "left")
    for g in plan.groups:
        d = (decisions or {}).get(g.id)
        if d:
            how = "fused" if d["fused"] else "one by one"
        elif len(g.runs) == 1:
            how = "alone"
        else:
            how = {"auto": "probe decides", "always": "fused", "never": "one by one"}[fuse]
        table.add_row(g.id, g.title, str(len(g.runs)), format_bytes(g.bytes_per_member),
                      format_bytes(g.bytes_per_member * len(g.runs)), how)
    console.print(table)
    if fuse == "auto":
        console.print("probe decides: a short timed run of the fused group against one member (x members) picks "
                      "the faster; decisions are cached per structure and device")
    if plan.skipped:
        reasons: dict[str, int] = {}
        for _, why in plan.skipped:
            reasons[why] = reasons.get(why, 0) + 1
        console.print(f"skipped {len(plan.skipped)} points: "
                      + "; ".join(f"{why} ({n})" for why, n in reasons.items()), soft_wrap=True)
    if members:
        for g in plan.groups:
            console.print(f"group {g.id} ({g.title}): {len(g.runs)} members", soft_wrap=True, markup=False,
                          highlight=False)
            for r in g.runs:
                console.print(f"  {r.run_id}  {describe_member(r) or '(base config)'}", soft_wrap=True,
                              markup=False, highlight=False)


def sweep_dir_for(experiment: str | Path, workdir: str | Path | None, name: str | None = None) -> Path:
    """``workdir``, else ``runs/sweeps/<name>`` (default: the experiment file's stem)."""
    return Path(workdir) if workdir else Path("runs") / "sweeps" / (name or Path(experiment).stem)
