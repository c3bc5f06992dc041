"""The planner: expand a sweep into runs, split each into its static signature and dynamic numbers, and group runs
with equal signatures — each group can train as one vmapped program.

Before anything trains, the plan lists groups, members, the memory a group needs — from the compiled step's
``memory_analysis()``, activations included (:mod:`jaxdl.experiment.memory`) — and how the group will be trained. A
group whose members do not fit the memory budget together is split into sub-groups that do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from jaxdl import config as config_lib
from jaxdl.config import Config
from jaxdl.errors import ConfigError
from jaxdl.experiment import memory
from jaxdl.experiment.memory import MemoryEstimate, as_estimate
from jaxdl.experiment.report import PIPE_WIDTH, make_console  # noqa: F401 — re-exported
from jaxdl.experiment.sweep import Spec
from jaxdl.train import dynamic_keys, signature, uses_dropout


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
    memory: MemoryEstimate | None = None
    split_of: str | None = None  # the id of the signature's whole group when the budget split it

    @property
    def bytes_total(self) -> int:
        """Estimated device bytes of the group trained fused."""
        return self.memory.total(len(self.runs)) if self.memory else self.bytes_per_member * len(self.runs)

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
    budget: int | None = None  # bytes a fused group may use
    budget_source: str = ""

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


def member_bytes(cfg: Config, model: Any = None) -> MemoryEstimate:
    """Estimated device bytes of a fused group of ``cfg``'s signature: the compiled step's ``memory_analysis()`` for
    1 and 2 members, extrapolated linearly per member (:func:`jaxdl.experiment.memory.estimate`; cached).
    ``model``: a user's model instead of ``cfg.model``. (A replacement returning plain bytes per member is taken as
    a flat estimate.)"""
    return memory.estimate(cfg, model)


def memory_budget() -> int:
    """Bytes a fused group may use (see :func:`jaxdl.experiment.memory.budget`); ``JAXDL_GROUP_MEMORY`` (bytes)
    overrides it."""
    return memory.budget()[0]


def group(runs: list[RunSpec], budget: int | None = None, *, model: Any = None,
          model_label: str | None = None) -> list[Group]:
    """Group runs by signature; split a group whose members do not fit ``budget`` bytes together (default
    :func:`memory_budget`) into the fewest sub-groups that do, of sizes as equal as possible. ``model``: a user's
    model (named ``model_label``) that every run trains instead of its ``cfg.model``."""
    by_sig: dict[str, list[RunSpec]] = {}
    for r in runs:
        by_sig.setdefault(signature(r.config), []).append(r)
    budget = memory_budget() if budget is None else budget
    groups = []
    for sig, members in by_sig.items():
        # a member that draws dropout masks, if any does: the group's step draws them for everyone
        probe = next((r.config for r in members if uses_dropout([r.config])), members[0].config)
        est = as_estimate(member_bytes(probe) if model is None else member_bytes(probe, model))
        base_id = hashlib.sha1(sig.encode()).hexdigest()[:10]
        sizes = memory.split_sizes(len(members), est.fit(budget))
        start = 0
        for k, size in enumerate(sizes):
            chunk = members[start:start + size]
            start += size
            split = len(sizes) > 1
            groups.append(Group(f"{base_id}-{k}" if split else base_id, sig, chunk, est.per_member, model_label,
                                est, base_id if split else None))
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
    source = "given"
    if budget is None:
        budget, source = memory.budget()
    return Plan(name, group(runs, budget, model=model, model_label=label), skipped, budget, source)


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
        table.add_row(g.id, g.title, str(len(g.runs)), format_bytes(g.bytes_per_member), format_bytes(g.bytes_total),
                      how)
    console.print(table)
    print_memory(plan, console)
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


def print_memory(plan: Plan, console) -> None:
    """Where the memory columns come from, the budget, and the groups the budget split."""
    say = lambda text: console.print(text, soft_wrap=True, markup=False, highlight=False)  # noqa: E731
    sources = {g.memory.source for g in plan.groups if g.memory}
    if "memory_analysis" in sources:
        say("memory: from the compiled train step's memory_analysis() (temp + arguments + outputs - donated), "
            "compiled for 1 and 2 members and extrapolated linearly per member; mem/group adds the training split "
            "the scan driver keeps on the device")
    if "state" in sources:
        say("memory (groups without a compiled analysis on this backend): parameters, optimizer state, gradients "
            "and a batch per member (activations not counted)")
    if plan.budget is not None:
        say(f"memory budget per group: {format_bytes(plan.budget)} ({plan.budget_source})")
    splits: dict[str, list[Group]] = {}
    for g in plan.groups:
        if g.split_of:
            splits.setdefault(g.split_of, []).append(g)
    for base_id, parts in splits.items():
        n = sum(len(g.runs) for g in parts)
        est = parts[0].memory
        whole = format_bytes(est.total(n)) if est else "?"
        sizes: dict[int, list[Group]] = {}
        for g in parts:
            sizes.setdefault(len(g.runs), []).append(g)
        each = ", ".join(f"{len(gs)} of {size} ({format_bytes(gs[0].bytes_total)} each)" for size, gs in sizes.items())
        say(f"split: group {base_id} ({parts[0].title}, {n} members, {whole} fused) exceeds the budget: "
            f"{len(parts)} sub-groups {parts[0].id} … {parts[-1].id}: {each}")
    if plan.budget:
        for g in plan.groups:
            if g.memory and g.memory.total(1) > plan.budget and (g.split_of is None or g.id.endswith("-0")):
                say(f"warning: one member of group {g.split_of or g.id} alone needs "
                    f"{format_bytes(g.memory.total(1))}, more than the budget; it trains anyway, one member at a time")


def sweep_dir_for(experiment: str | Path, workdir: str | Path | None, name: str | None = None) -> Path:
    """``workdir``, else ``runs/sweeps/<name>`` (default: the experiment file's stem)."""
    return Path(workdir) if workdir else Path("runs") / "sweeps" / (name or Path(experiment).stem)
