"""Running a sweep: plan it, claim its groups, train them with an executor (``executors.py``; each group by
``groups.run_group``), record everything and report.

``run_group(payload)`` is the unit of work — a plain function of plain data, so the same code runs inline, in a
process pool (``--workers N``) or as a Ray task (``--executor ray``).

Fuse or not is measured, never assumed: with ``--fuse=auto`` a short timed probe compares the fused (vmapped) step of
the whole group with the single-member step (times the member count), on copies of the real initial states; the
faster wins. The decision and the probe's numbers are cached per signature, member count and device kind, and stored
in the sweep database.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path
from typing import Any


from jaxdl import compile_cache
from jaxdl import config as config_lib
from jaxdl.config import Config
from jaxdl.errors import ConfigError, PreemptedError
from jaxdl.experiment.inputs import save_model, with_data
from jaxdl.experiment.plan import Plan, build_plan, print_plan
from jaxdl.experiment.store import FINISHED, SweepStore, claim_timeout, write_run_record
from jaxdl.experiment.sweep import Grid, Spec, grid, parse_sweep, points
from jaxdl.experiment.executors import _EXECUTORS, _Heartbeat, _Signals, _schedule, make_owner
# re-exported: the group-level API lives in groups.py
from jaxdl.experiment.groups import (DEFAULT_MAX_RUNS, EXECUTORS, FUSE_MODES, SweepInterrupted,  # noqa: F401
                                     decide_fusion, fail_group, probe_fusion, run_group, speed_key)
from jaxdl.train import rundir

# --------------------------------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SweepResult:
    sweep_dir: Path
    plan: Plan
    store: SweepStore | None
    groups: list[dict[str, Any]]
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # run id -> error, for this sweep's runs
    report: Any = None  # the ranked report (jaxdl.experiment.report.Report) when run_sweep(report=True)


def load_experiment(experiment: str | Path, overrides: list[str] | None = None,
                    sweep: str | None = None, spec: Spec | None = None) -> tuple[Config, Spec, str]:
    """An experiment file's base config (with overrides) and sweep; ``sweep`` (CLI syntax) or ``spec`` replaces its
    own."""
    module = config_lib.load_module(experiment)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"experiment {str(experiment)!r} has no get_config() function")
    base = config_lib.apply_overrides(config_lib.call_file(experiment, module.get_config), overrides or [])
    if spec is None and sweep:
        spec = parse_sweep(sweep)
    elif spec is None and hasattr(module, "get_sweep"):
        spec = config_lib.call_file(experiment, module.get_sweep)
    elif spec is None:
        raise ConfigError(f"experiment {str(experiment)!r} has no get_sweep(); pass --sweep 'key=v1,v2 …'")
    if not isinstance(spec, Spec):
        raise ConfigError(f"{experiment}: get_sweep() returned {type(spec).__name__}, expected a jaxdl sweep spec "
                          "(grid/zip_/random/points)")
    return base, spec, Path(experiment).stem


def _as_spec(spec: Any, where: str) -> Spec:
    """A sweep spec from what a caller passes: a Spec, a dict of axes (``grid(**spec)``) or a list of points."""
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, dict):
        return grid(**spec)
    if isinstance(spec, (list, tuple)) and all(isinstance(p, dict) for p in spec):
        return points(list(spec))
    raise ConfigError(f"{where}: expected a sweep spec (grid/zip_/random/points), a dict of axes or a list of point "
                      f"dicts, got {type(spec).__name__}")


def resolve_study(experiment: str | Path | Config, spec: Any = None, *, overrides=None, sweep: str | None = None,
                  name: str | None = None) -> tuple[Config, Spec, str]:
    """The base config (with ``overrides``), the sweep and the study's name, from an experiment file or a Config.

    ``spec`` (a Spec, a dict meaning ``grid(**spec)``, or a list of point dicts) or ``sweep`` (the CLI syntax)
    replaces a file's ``get_sweep()``; a Config needs one of them (or runs its base config alone)."""
    if spec is not None and sweep:
        raise ConfigError("run_sweep: pass either a sweep spec or sweep='key=v1,v2 …', not both")
    if isinstance(experiment, Config):
        base = config_lib.apply_overrides(experiment, overrides or [])
        if sweep:
            study: Spec = parse_sweep(sweep)
        else:
            study = points([{}]) if spec is None else _as_spec(spec, "run_sweep(spec)")
        return base, study, name or base.name
    if not isinstance(experiment, (str, Path)):
        raise ConfigError(f"run_sweep: expected an experiment file or a Config, got {type(experiment).__name__}")
    study = None if spec is None else _as_spec(spec, "run_sweep(spec)")
    base, study, stem = load_experiment(experiment, overrides, sweep, study)
    return base, study, name or stem


def run_sweep(experiment: str | Path | Config, spec: Spec | dict | list | None = None, *, overrides=None,
              sweep: str | None = None, data: Any = None, model: Any = None, name: str | None = None,
              workdir: str | Path | None = None, fuse: str = "auto", executor: str = "inline", workers: int = 2,
              ray_address: str | None = None, dry_run: bool = False, report: bool = True,
              console=None, max_runs: int | None = DEFAULT_MAX_RUNS, force: bool = False,
              claim_timeout_s: float | None = None, rebuild: bool = False) -> SweepResult:
    """Plan, print and run a sweep; finished runs (in the sweep database) are skipped, partial ones resumed.

    Args:
      experiment: an experiment file (``get_config()``, ``get_sweep()``) or a base :class:`~jaxdl.config.Config`.
      spec: the points — a Spec (``grid``/``zip_``/``random``/``points``), a dict (``grid(**spec)``) or a list of
        point dicts; replaces a file's ``get_sweep()``. (A list of ``key=value`` strings in this place is taken as
        ``overrides``, the older positional form.)
      overrides: ``key=value`` strings (or a dict) applied to the base config.
      sweep: the points in the CLI syntax (``'optim.lr=1e-3,3e-3 seed=0:3'``) instead of ``spec``.
      data: in-memory data, :func:`jaxdl.data.from_arrays` — written once to ``SWEEP_DIR/data/<fingerprint>.npz``
        and read by every run as ``data.name=arrays`` (a split Dataset is refused: workers and reruns must split
        the same arrays themselves).
      model: a user's model (Linen module, NNX module or constructor, jaxdl Model) every run trains instead of
        ``cfg.model``; pickled to ``SWEEP_DIR/model.pkl`` for the process and Ray executors.
      name: the study's name (run names, default sweep directory ``runs/sweeps/<name>``); default the file's stem
        or the Config's name.
      workdir: the sweep directory. fuse, executor, workers, ray_address, dry_run, report: see ``jaxdl sweep``.
      max_runs: a sweep with more runs is refused unless ``force=True`` (a typo in a grid can mean thousands of
        runs); None: no cap.
      claim_timeout_s: seconds without a heartbeat after which another driver's claim on a run is stale (default
        ``JAXDL_CLAIM_TIMEOUT`` or 60).
      rebuild: rebuild the sweep database from the run directories first (the old one is kept aside).

    Several drivers may run the same sweep (same directory, one machine or several sharing a file system): each
    claims a group's runs atomically in the database before training them, skips runs other live drivers hold,
    and at the end waits for them before reporting. SIGTERM/SIGINT stop the sweep: runs being trained checkpoint
    and are recorded ``preempted``, claims are released, and :class:`~jaxdl.errors.PreemptedError` is raised; the
    next sweep resumes them.

    Returns:
      SweepResult: the sweep directory, the plan, the store, each group's result and the failed runs.
    """
    from jaxdl.experiment.plan import make_console

    if isinstance(spec, (list, tuple)) and all(isinstance(o, str) for o in spec):  # [] too: no overrides
        if overrides is not None and spec:
            raise ConfigError("run_sweep: overrides given twice (positionally and as overrides=)")
        spec, overrides = None, list(spec) if spec else overrides
    console = console or make_console()
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if fuse not in FUSE_MODES:
        raise ConfigError(f"--fuse: expected one of {', '.join(FUSE_MODES)}, got {fuse!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers: expected a positive number of workers, got {workers!r}")
    if max_runs is not None and max_runs < 1:
        raise ConfigError(f"--max-runs: expected a positive number, got {max_runs!r}")
    timeout = claim_timeout(claim_timeout_s)
    if timeout <= 0:
        raise ConfigError(f"--claim-timeout: expected a positive number of seconds, got {timeout!r}")
    base, study, name = resolve_study(experiment, spec, overrides=overrides, sweep=sweep, name=name)
    sweep_dir = Path(workdir) if workdir else Path("runs") / "sweeps" / name
    if workdir:
        rundir.ensure_dir(sweep_dir, "--workdir")
    base = with_data(base, data, sweep_dir)  # written before planning: the plan loads it to size the members
    plan = build_plan(base, study, name, model=model)
    print_plan(plan, fuse, console=console, members=dry_run)
    too_many = max_runs is not None and len(plan.runs) > max_runs and not force
    if too_many and not dry_run:
        raise ConfigError(f"sweep {name!r} has {len(plan.runs)} runs, more than --max-runs {max_runs}: check the "
                          "grid, then pass --force (force=True) or a larger --max-runs to run them all")
    if dry_run:
        if too_many:
            console.print(f"{len(plan.runs)} runs: more than --max-runs {max_runs}; running it needs --force",
                          soft_wrap=True, markup=False, highlight=False)
        if rebuild:
            SweepStore(sweep_dir / "sweep.db", rebuild=True)
        return SweepResult(sweep_dir, plan, None, [])
    carry: dict[str, Any] = {}
    if model is not None:  # inline: the object itself; worker processes and Ray tasks: its pickle
        carry = {"model": model} if executor == "inline" else {"model_path": str(save_model(model, sweep_dir,
                                                                                               executor))}
    store = SweepStore(sweep_dir / "sweep.db", rebuild=rebuild)
    payloads = []
    index = 0
    for g in plan.groups:
        store.add_group(g.id, signature=g.signature, members=len(g.runs))
        items = []
        for r in g.runs:
            run_dir = sweep_dir / "runs" / r.run_id
            config = config_lib.to_dict(r.config)
            store.add_run(r.run_id, name=r.name, group_id=g.id, config=config, config_hash=r.run_id, labels=r.labels,
                          swept=r.values, run_dir=str(run_dir))
            # the run's own record of what the sweep registered: the database can be rebuilt from it
            write_run_record(run_dir, {"id": r.run_id, "name": r.name, "index": index, "config": config,
                                       "hash": r.run_id, "labels": r.labels, "swept": r.values,
                                       "run_dir": str(run_dir),
                                       "group": {"id": g.id, "signature": g.signature, "members": len(g.runs)}})
            index += 1
            items.append({"run_id": r.run_id, "config": config, "run_dir": str(run_dir)})
        # worker processes follow this process's choice (the CLI enables the cache; from Python, enable() does)
        payloads.append({"group_id": g.id, "store": str(store.path), "fuse": fuse, "runs": items,
                         "compile_cache": compile_cache.enabled(), **carry})
    lost = store.reconcile()  # finished in the database, but the run directory is gone: train again
    if lost:
        console.print(f"{len(lost)} runs recorded as finished have no summary.json any more (run directory "
                      f"deleted?): training them again: {', '.join(lost)}", soft_wrap=True, markup=False,
                      highlight=False)
    status = {r["id"]: r["status"] for r in store.runs()}
    for p in payloads:
        p["runs"] = [i for i in p["runs"] if status.get(i["run_id"]) not in FINISHED]
    payloads = [p for p in payloads if p["runs"]]
    skipped = len(plan.runs) - sum(len(p["runs"]) for p in payloads)
    if skipped:
        console.print(f"{skipped} runs already finished in {store.path}: skipped")
    t0 = time.perf_counter()
    done: list[dict[str, Any]] = []

    def on_done(result):
        done.append(result)
        d = result.get("decision") or {}
        statuses = result["statuses"]
        line = (f"group {result['group_id']}: {len(statuses)} runs "
                f"({', '.join(sorted(set(statuses.values()))) or 'nothing to do'}); ")
        if result.get("preempted"):
            line += f"stopped by {result['preempted']}"
        elif result.get("error") and not d:
            line += f"failed before training: {result['error'].splitlines()[0]}"
        else:
            line += f"{'fused' if d.get('fused') else 'one by one'} — {d.get('reason', '')}"
            if result.get("error"):
                line += f"; failed: {result['error'].splitlines()[0]}"
        console.print(line, soft_wrap=True, markup=False, highlight=False)

    owner = make_owner()
    beat = _Heartbeat(store, owner, interval=min(15.0, max(0.05, timeout / 4)))
    preempted: list[str] = []
    pool = None
    with _Signals() as stop:
        try:
            beat.start()
            pool = _EXECUTORS[executor](workers=workers, ray_address=ray_address)
            stop.pool = pool
            preempted = _schedule(payloads, pool, store, owner, timeout, on_done, console, stop,
                                  poll=min(2.0, max(0.05, timeout / 10)))
        except SweepInterrupted as e:
            preempted.append(str(e))
        finally:
            interrupted = bool(preempted) or stop.signum is not None
            try:
                if pool is not None:
                    try:
                        pool.close(interrupted=interrupted)
                    except SweepInterrupted as e:  # a second signal while the workers wind down
                        preempted.append(str(e))
                        pool.close(interrupted=True)
            finally:
                beat.done.set()
                store.release(owner)  # running -> preempted; claims on unfinished runs dropped
    if stop.signum is not None and not preempted:
        preempted.append(signal.Signals(stop.signum).name)
    if preempted:
        counts = store.counts()
        raise PreemptedError(f"sweep {name}: stopped by {preempted[0]} ({counts}); runs being trained were "
                             f"checkpointed and recorded as preempted — rerun the same sweep to continue",
                             signal=stop.signum)
    counts = store.counts()
    console.print(f"sweep {name}: {counts} in {time.perf_counter() - t0:.1f} s → {sweep_dir}", soft_wrap=True)
    ranked = None
    if report:
        from jaxdl.experiment.report import make_report

        ranked = make_report(sweep_dir, console=console)
    ids = {r.run_id for r in plan.runs}
    failed = {r["id"]: r.get("error") or "" for r in store.runs() if r["id"] in ids and r["status"] == "failed"}
    if failed:
        console.print(f"{len(failed)} of {len(ids)} runs failed (details in each run's error.txt):", soft_wrap=True,
                      markup=False, highlight=False)
        for run_id, error in failed.items():
            line = (error.strip().splitlines() or ["unknown error"])[-1]
            console.print(f"  {run_id}  {sweep_dir / 'runs' / run_id / 'error.txt'}  {line}", soft_wrap=True,
                          markup=False, highlight=False)
    return SweepResult(sweep_dir, plan, store, done, failed, ranked)


__all__ = ["EXECUTORS", "FUSE_MODES", "Grid", "SweepResult", "decide_fusion", "load_experiment", "probe_fusion",
           "resolve_study", "run_group", "run_sweep"]
