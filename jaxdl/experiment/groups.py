"""Training one group of a sweep: the fusion decision (a timed probe, cached) and ``run_group(payload)`` — a plain
function of plain data, so the same code runs inline, in a process pool or as a Ray task — recording every run in
the sweep database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import traceback
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import compile_cache
from jaxdl import config as config_lib
from jaxdl.config import Config
from jaxdl.errors import ConfigError, PreemptedError
from jaxdl.experiment.inputs import load_model, model_key
from jaxdl.experiment.store import FINISHED, SweepStore
from jaxdl.train import rundir
from jaxdl.train import (Programs, probe_drivers, probe_key, probe_steps, race, read_cache, setup, signature,
                         speed_fields, stack_hparams, time_runner, train_group, uses_dropout, write_cache)


FUSE_MODES = ("auto", "always", "never")
EXECUTORS = ("inline", "processes", "ray")
DEFAULT_MAX_RUNS = 1000  # a sweep with more runs needs force=True (--force)


class SweepInterrupted(BaseException):
    """Raised by the sweep's SIGTERM/SIGINT handler outside a run's own training loop (which checkpoints and raises
    PreemptedError instead). A BaseException: a group's ``except Exception`` must not record it as a failure."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# in a worker process: the signal received (the next group is not started), and whether a group is running
_WORKER = {"signum": None, "in_group": False}


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


def _record_preempted(store: SweepStore, run: dict[str, Any]) -> str:
    """A run stopped by a signal: its ``summary.json`` (status ``preempted``, written by the training loop after it
    checkpointed) when there is one, else status ``preempted`` in the database. Never finished: the next sweep
    resumes it."""
    run_dir = Path(run["run_dir"])
    try:
        summary = rundir.read_summary(run_dir)
    except (OSError, ValueError):
        summary = None
    if summary is not None and summary.get("status") == "preempted":
        store.finish(run["run_id"], summary, rundir.MetricsLog(run_dir / rundir.METRICS_FILE).read())
    else:
        store.release_one_preempted(run["run_id"])
    return "preempted"


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
    store = SweepStore(payload["store"], check=False)
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
    run_dir}], progress, owner (the claim the driver holds on these runs), and for a user's model either ``model``
    (the object, inline) or ``model_path`` (its pickle in the sweep directory, for worker processes). Returns
    ``{"group_id", "decision", "statuses": {run_id: status}}`` (and ``"error"`` when the group failed,
    ``"preempted"``: the signal's name when a SIGTERM/SIGINT stopped it). Never raises for a failure of the group's
    own: its runs are recorded as failed (status and error in the database, the traceback in ``error.txt``) and the
    sweep goes on with the other groups. A signal stops it: runs being trained checkpoint and are recorded
    ``preempted`` (resumed by the next sweep), the others stay pending."""
    if _WORKER["signum"] is not None:  # a worker told to stop takes no new group
        return {"group_id": payload["group_id"], "decision": None, "statuses": {},
                "preempted": signal.Signals(_WORKER["signum"]).name}
    if payload.get("compile_cache"):  # the sweep's process uses the cache: so does a worker, before the probe compiles
        compile_cache.enable()
    _WORKER["in_group"] = True
    try:
        return _run_group(payload)
    except SweepInterrupted as e:  # outside a training loop (probe, compilation, recording)
        store = SweepStore(payload["store"], check=False)
        statuses = {}
        for r in payload["runs"]:
            if (store.run(r["run_id"]) or {}).get("status") == "running":
                statuses[r["run_id"]] = _record_preempted(store, r)
        return {"group_id": payload["group_id"], "decision": None, "statuses": statuses, "preempted": str(e)}
    except Exception as e:  # noqa: BLE001 — anything the per-batch handling did not catch (a bad config dict …)
        return fail_group(payload, f"{type(e).__name__}: {e}", traceback.format_exc())
    finally:
        _WORKER["in_group"] = False


def _run_group(payload: dict[str, Any]) -> dict[str, Any]:
    store = SweepStore(payload["store"], check=False)
    owner = payload.get("owner")
    runs = []
    for r in payload["runs"]:
        row = store.run(r["run_id"]) or {}
        if row.get("status") in FINISHED or (owner and row.get("owner") not in (None, owner)):
            continue  # finished meanwhile, or taken over by another driver (our claim went stale)
        runs.append(r)
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
    if owner:
        extra["sweep_owner"] = owner
    batches = [list(range(len(runs)))] if decision["fused"] else [[i] for i in range(len(runs))]
    errors = []
    preempted = None
    for idx in batches:
        for i in idx:
            store.set_running(runs[i]["run_id"])
        try:
            train_group([cfgs[i] for i in idx], [dirs[i] for i in idx], fused=decision["fused"],
                        resume=any(_has_checkpoints(dirs[i]) for i in idx), on_divergence="mark",
                        extra_config=extra, title=f"{payload['group_id']} ({len(idx)})", programs=programs,
                        model=model,
                        # the database says these runs are not finished: what a directory holds beyond a valid
                        # checkpoint (logs of a failed attempt, damaged steps) is discarded, never resumed from
                        restart=True)
            for i in idx:
                statuses[runs[i]["run_id"]] = _record(store, runs[i]["run_id"], dirs[i])
        except PreemptedError as e:  # the training loop checkpointed on SIGTERM/SIGINT: resumed by the next sweep
            preempted = signal.Signals(e.signal).name if e.signal else "signal"
            for i in idx:
                statuses[runs[i]["run_id"]] = _record_preempted(store, runs[i])
            break
        except Exception as e:  # noqa: BLE001 — recorded per run; other groups go on
            error, details = f"{type(e).__name__}: {e}", traceback.format_exc()
            errors.append(error)
            for i in idx:
                _fail_run(store, runs[i], error, details)
                statuses[runs[i]["run_id"]] = "failed"
    result = {"group_id": payload["group_id"], "decision": decision, "statuses": statuses}
    if errors:
        result["error"] = errors[0]
    if preempted:
        result["preempted"] = preempted
    return result


