"""Running a sweep: decide per group whether to fuse, train the groups with an executor, record everything.

``run_group(payload)`` is the unit of work — a plain function of plain data, so the same code runs inline, in a
process pool (``--workers N``) or as a Ray task (``--executor ray``).

Fuse or not is measured, never assumed: with ``--fuse=auto`` a short timed probe compares the fused (vmapped) step of
the whole group with the single-member step (times the member count), on copies of the real initial states; the
faster wins. The decision and the probe's numbers are cached per signature, member count and device kind, and stored
in the sweep database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import traceback
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import config as config_lib
from jaxdl.config import Config
from jaxdl.errors import ConfigError
from jaxdl.experiment.inputs import load_model, model_key, save_model, with_data
from jaxdl.experiment.plan import Plan, build_plan, print_plan
from jaxdl.experiment.store import FINISHED, SweepStore
from jaxdl.experiment.sweep import Grid, Spec, grid, parse_sweep, points
from jaxdl.train import rundir
from jaxdl.train import (Programs, probe_drivers, probe_key, probe_steps, race, read_cache, setup, signature,
                         speed_fields, stack_hparams, time_runner, train_group, uses_dropout, write_cache)

FUSE_MODES = ("auto", "always", "never")
EXECUTORS = ("inline", "processes", "ray")


def decide_fusion(cfgs: list[Config], fuse: str, dataset=None, *, model: Any = None) -> dict[str, Any]:
    """``{"fused": bool, "reason": str, ...}`` for a group of members sharing one signature. ``dataset``: the data
    set already loaded for this group (else the probe loads it); ``model``: a user's model instead of
    ``cfg.model``."""
    if fuse not in FUSE_MODES:
        raise ConfigError(f"--fuse: expected one of {', '.join(FUSE_MODES)}, got {fuse!r}")
    count = len(cfgs)
    if count == 1:
        return {"fused": False, "reason": "single member", "how": "trivial"}
    if fuse != "auto":
        return {"fused": fuse == "always", "reason": f"--fuse={fuse}", "how": "user"}
    key = speed_key(cfgs, model)
    cached = read_cache("fuse_probe.json").get(key)
    if cached:
        return {**cached, "how": "cached probe"}
    return {**probe_fusion(cfgs, key, dataset, model=model), "how": "probe"}


def speed_key(cfgs: list[Config], model: Any = None) -> str:
    """What the fuse-or-not decision for a group depends on: the model, input, batch size, optimizer kind, member
    count, dropout on or off, and device — not the loss, the schedule, evaluation or checkpoint settings, nor the
    members' numbers (those barely change a step's cost). ``model``: a user's model (its identity replaces
    ``cfg.model``'s fields); arrays from Python count by their content (the file name holds its fingerprint)."""
    cfg, count, dropout = cfgs[0], len(cfgs), uses_dropout(cfgs)
    device = jax.devices()[0]
    data = [cfg.data.name, cfg.data.train_limit] + ([Path(cfg.data.root).name] if cfg.data.name == "arrays" and
                                                      cfg.data.root else [])
    parts = {"model": {"user": model_key(model)} if model is not None else speed_fields(cfg.model), "data": data,
             "batch": cfg.train.batch_size, "optim": [cfg.optim.name, cfg.optim.clip_norm is not None],
             "driver": [cfg.train.driver, cfg.train.chunk_steps], "members": count, "dropout": dropout,
             "device": [device.platform, device.device_kind, len(jax.devices())], "jax": jax.__version__}
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def probe_fusion(cfgs: list[Config], cache_key: str | None = None, dataset=None, *, model: Any = None
                 ) -> dict[str, Any]:
    """Time one member's step and the fused population's step on copies of the real initial states.

    The single-member step is probed with the drivers worth trying (``train.driver=auto``: host, and scan where a
    host step is short enough for scan to gain, see :func:`jaxdl.train.probe.probe_drivers`); the fused step only with
    the driver the single member preferred (the same operations are slow or fast in both). Each timing is capped at
    a fraction of a second, and both candidates share one compiled initialisation, so the probe costs little more
    than compiling the losing candidate. Returns the decision with its numbers; the compiled programs of the winner
    are kept under ``"programs"`` (not cached) so the chosen mode trains without recompiling.
    """
    count = len(cfgs)
    seeds = [c.seed for c in cfgs]
    single_s = setup(cfgs[0], dataset, dropout=uses_dropout(cfgs), model=model)
    fused_s = dataclasses.replace(single_s, fused=True)
    single = Programs(single_s)
    fused_p = Programs(fused_s, share=single)
    hp1, hps = single_s.hparams, stack_hparams(cfgs)
    state1 = single.init(seeds[:1], hp1)
    work = count * single_s.total_steps  # member-steps the decision covers
    drivers, clocks = probe_drivers(single_s, state1, jnp.asarray(True), hp1, seeds[:1], single.runner, work)
    driver = drivers["chosen"]
    fused_clock = time_runner(fused_p.runner(driver), fused_p.init(seeds, hps), jnp.ones(count, bool), hps, seeds,
                              probe_steps(fused_s), work_steps=fused_s.total_steps)
    rounds = race([clocks[driver], fused_clock], scale=[count, 1.0])
    drivers["seconds_per_step"][driver] = clocks[driver].per_step
    fused_t = fused_clock.per_step
    single.driver = (driver, {**drivers, "how": "fusion probe"})
    write_cache("driver_probe.json", probe_key(single_s, 1), drivers)
    fused_info = {"chosen": driver, "seconds_per_step": {driver: fused_t}, "how": "fusion probe"}
    fused_p.driver = (driver, fused_info)
    write_cache("driver_probe.json", probe_key(fused_s, count), fused_info)
    seq_t = count * drivers["seconds_per_step"][driver]
    fused = fused_t < seq_t
    record = {"fused": fused, "driver": driver,
              "timings": {"fused": {driver: fused_t}, "single": drivers["seconds_per_step"]},
              "compile_s": {**{f"single/{d}": v for d, v in drivers["compile_s"].items()},
                            f"fused/{driver}": fused_clock.compile_s},
              "fused_s_per_step": fused_t, "one_by_one_s_per_step": seq_t, "race_rounds": rounds,
              "reason": f"probe: fused {fused_t * 1e3:.2f} ms vs one by one {seq_t * 1e3:.2f} ms per step of "
                        f"{count} members ({driver} driver)"}
    if "skipped" in drivers:
        record["skipped"] = drivers["skipped"]
    if cache_key:
        write_cache("fuse_probe.json", cache_key, record)
    return {**record, "programs": fused_p if fused else single}


def _has_checkpoints(run_dir: Path) -> bool:
    return (run_dir / "checkpoints").is_dir() and any(p.name.isdigit() for p in (run_dir / "checkpoints").iterdir())


def _record(store: SweepStore, run_id: str, run_dir: Path) -> str:
    summary = rundir.read_summary(run_dir)
    store.finish(run_id, summary, rundir.MetricsLog(run_dir / rundir.METRICS_FILE).read())
    return summary["status"]


def _fail_run(store: SweepStore, run: dict[str, Any], error: str, details: str) -> None:
    """Record a failed run: status ``failed`` and ``error`` in the database, ``details`` (the traceback) in its
    ``error.txt`` — its directory is created if the failure came before training made it."""
    store.fail(run["run_id"], error)
    try:
        run_dir = Path(run["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(details)
    except OSError:  # the database row is the record; a missing error.txt must not end the sweep
        pass


def fail_group(payload: dict[str, Any], error: str, details: str, decision: dict | None = None) -> dict[str, Any]:
    """Mark every run of the group that has not finished as failed; the result ``run_group`` returns."""
    store = SweepStore(payload["store"])
    statuses = {}
    for r in payload["runs"]:
        status = (store.run(r["run_id"]) or {}).get("status")
        if status in FINISHED:
            statuses[r["run_id"]] = status
            continue
        _fail_run(store, r, error, details)
        statuses[r["run_id"]] = "failed"
    return {"group_id": payload["group_id"], "decision": decision, "statuses": statuses, "error": error}


def run_group(payload: dict[str, Any]) -> dict[str, Any]:
    """Train one group of a sweep and record its runs. ``payload``: group_id, store, fuse, runs=[{run_id, config,
    run_dir}], progress, and for a user's model either ``model`` (the object, inline) or ``model_path`` (its pickle
    in the sweep directory, for worker processes). Returns ``{"group_id", "decision", "statuses": {run_id:
    status}}`` (and ``"error"`` when the group failed). Never raises for a failure of the group's own: its runs are
    recorded as failed (status and error in the database, the traceback in ``error.txt``) and the sweep goes on
    with the other groups."""
    try:
        return _run_group(payload)
    except Exception as e:  # noqa: BLE001 — anything the per-batch handling did not catch (a bad config dict …)
        return fail_group(payload, f"{type(e).__name__}: {e}", traceback.format_exc())


def _run_group(payload: dict[str, Any]) -> dict[str, Any]:
    store = SweepStore(payload["store"])
    runs = [r for r in payload["runs"] if (store.run(r["run_id"]) or {}).get("status") not in FINISHED]
    if not runs:
        return {"group_id": payload["group_id"], "decision": None, "statuses": {}}
    cfgs = [config_lib.from_dict(r["config"]) for r in runs]
    if not payload.get("progress", True):
        cfgs = [dataclasses.replace(c, train=dataclasses.replace(c.train, progress=False)) for c in cfgs]
    dirs = [Path(r["run_dir"]) for r in runs]
    statuses: dict[str, str] = {}
    try:
        model = payload.get("model")
        if model is None and payload.get("model_path"):
            model = load_model(payload["model_path"])
        decision = decide_fusion(cfgs, payload["fuse"], model=model)
    except Exception as e:  # noqa: BLE001 — a group that cannot even be probed fails, the sweep goes on
        return fail_group({**payload, "runs": runs}, f"{type(e).__name__}: {e}", traceback.format_exc())
    programs = decision.pop("programs", None)  # compiled by the probe: reused, never stored
    store.add_group(payload["group_id"], signature=signature(cfgs[0]), members=len(cfgs), fused=decision["fused"],
                    decision=decision)
    extra = {"sweep_group": payload["group_id"], "fusion": decision}
    batches = [list(range(len(runs)))] if decision["fused"] else [[i] for i in range(len(runs))]
    errors = []
    for idx in batches:
        for i in idx:
            store.set_running(runs[i]["run_id"])
        try:
            train_group([cfgs[i] for i in idx], [dirs[i] for i in idx], fused=decision["fused"],
                        resume=any(_has_checkpoints(dirs[i]) for i in idx), on_divergence="mark",
                        extra_config=extra, title=f"{payload['group_id']} ({len(idx)})", programs=programs,
                        model=model)
            for i in idx:
                statuses[runs[i]["run_id"]] = _record(store, runs[i]["run_id"], dirs[i])
        except Exception as e:  # noqa: BLE001 — recorded per run; other groups go on
            error, details = f"{type(e).__name__}: {e}", traceback.format_exc()
            errors.append(error)
            for i in idx:
                _fail_run(store, runs[i], error, details)
                statuses[runs[i]["run_id"]] = "failed"
    result = {"group_id": payload["group_id"], "decision": decision, "statuses": statuses}
    if errors:
        result["error"] = errors[0]
    return result


# --------------------------------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------------------------------


def _inline(payloads, on_done, **_):
    for p in payloads:
        on_done(run_group(p))


def _processes(payloads, on_done, workers: int = 2, **_):
    import concurrent.futures as cf
    import multiprocessing as mp

    # spawn, not fork: a forked JAX runtime is unsafe.
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_group, {**p, "progress": False}): p for p in payloads}
        for f in cf.as_completed(futures):
            try:
                result = f.result()
            except Exception as e:  # noqa: BLE001 — the worker itself failed (killed, unpicklable …): record it
                result = fail_group(futures[f], f"{type(e).__name__}: {e}", traceback.format_exc())
            on_done(result)


def _ray(payloads, on_done, ray_address: str | None = None, cpus_per_task: float = 1.0,
         gpus_per_task: float = 0.0, workers: int = 2, **_):
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'jaxdl[ray]'") from None
    started = False
    if not ray.is_initialized():
        # A local instance started here is private to this sweep: no dashboard, loopback as its node address, and
        # ``workers`` CPUs (concurrent tasks) rather than every core of the machine. (Ray 2.x may still resolve the
        # loopback address to the node's IP and its gRPC servers listen on all interfaces; token auth guards them.)
        kwargs = ({"address": ray_address} if ray_address else
                  {"include_dashboard": False, "_node_ip_address": "127.0.0.1",
                   "num_cpus": max(1, int(workers))})
        ray.init(**kwargs, ignore_reinit_error=True, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(run_group)
        refs = {task.remote({**p, "progress": False}): p for p in payloads}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 — the task itself failed (worker died …): record it
                result = fail_group(refs[done[0]], f"{type(e).__name__}: {e}", traceback.format_exc())
            on_done(result)
    finally:
        if started:
            ray.shutdown()


_EXECUTORS = {"inline": _inline, "processes": _processes, "ray": _ray}


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
    base = config_lib.apply_overrides(module.get_config(), overrides or [])
    if spec is None and sweep:
        spec = parse_sweep(sweep)
    elif spec is None and hasattr(module, "get_sweep"):
        spec = module.get_sweep()
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
              console=None) -> SweepResult:
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
    base, study, name = resolve_study(experiment, spec, overrides=overrides, sweep=sweep, name=name)
    sweep_dir = Path(workdir) if workdir else Path("runs") / "sweeps" / name
    base = with_data(base, data, sweep_dir)  # written before planning: the plan loads it to size the members
    plan = build_plan(base, study, name, model=model)
    print_plan(plan, fuse, console=console, members=dry_run)
    if dry_run:
        return SweepResult(sweep_dir, plan, None, [])
    carry: dict[str, Any] = {}
    if model is not None:  # inline: the object itself; worker processes and Ray tasks: its pickle
        carry = {"model": model} if executor == "inline" else {"model_path": str(save_model(model, sweep_dir,
                                                                                               executor))}
    store = SweepStore(sweep_dir / "sweep.db")
    payloads = []
    for g in plan.groups:
        store.add_group(g.id, signature=g.signature, members=len(g.runs))
        items = []
        for r in g.runs:
            run_dir = sweep_dir / "runs" / r.run_id
            store.add_run(r.run_id, name=r.name, group_id=g.id, config=config_lib.to_dict(r.config),
                          config_hash=r.run_id, labels=r.labels, swept=r.values, run_dir=str(run_dir))
            items.append({"run_id": r.run_id, "config": config_lib.to_dict(r.config), "run_dir": str(run_dir)})
        todo = [i for i in items if (store.run(i["run_id"]) or {}).get("status") not in FINISHED]
        if todo:
            payloads.append({"group_id": g.id, "store": str(store.path), "fuse": fuse, "runs": todo, **carry})
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
        if result.get("error") and not d:
            line += f"failed before training: {result['error'].splitlines()[0]}"
        else:
            line += f"{'fused' if d.get('fused') else 'one by one'} — {d.get('reason', '')}"
            if result.get("error"):
                line += f"; failed: {result['error'].splitlines()[0]}"
        console.print(line, soft_wrap=True, markup=False, highlight=False)

    _EXECUTORS[executor](payloads, on_done, workers=workers, ray_address=ray_address)
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
