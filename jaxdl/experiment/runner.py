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
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import config as config_lib
from jaxdl.config import Config
from jaxdl.errors import ConfigError, PreemptedError
from jaxdl.experiment.inputs import load_model, model_key, save_model, with_data
from jaxdl.experiment.plan import Plan, build_plan, print_plan
from jaxdl.experiment.store import FINISHED, SweepStore, claim_timeout, write_run_record
from jaxdl.experiment.sweep import Grid, Spec, grid, parse_sweep, points
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


# --------------------------------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------------------------------


def _worker_signal(signum, frame) -> None:
    """SIGTERM/SIGINT in a worker process: no new group; a group outside its training loop stops at once (inside
    it, the loop's own handler checkpoints and raises PreemptedError)."""
    _WORKER["signum"] = signum
    if _WORKER["in_group"]:
        raise SweepInterrupted(signum)


def _watch_parent(parent: int, interval: float = 0.5) -> None:
    """Exit this worker as soon as its driver is gone (SIGKILLed drivers leave no orphans training on)."""
    while True:
        time.sleep(interval)
        if os.getppid() != parent:
            os._exit(70)


def _worker_init(parent: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _worker_signal)
    threading.Thread(target=_watch_parent, args=(parent,), name="jaxdl-parent-watchdog", daemon=True).start()


class _Inline:
    """Groups one after another in this process."""

    slots = 1

    def __init__(self, **_):
        self._queue: list[dict[str, Any]] = []

    def submit(self, payload):
        self._queue.append(payload)

    def next_result(self):
        payload = self._queue.pop(0)
        return {**run_group(payload), "_key": payload.get("_key")}

    def stop(self, signum: int) -> None:
        pass

    def close(self, interrupted: bool = False) -> None:
        pass


class _Processes:
    """A spawn-based process pool (spawn, not fork: a forked JAX runtime is unsafe). Workers exit when the driver
    dies (a watchdog thread polls the parent pid) and stop on the SIGTERM the driver forwards."""

    def __init__(self, workers: int = 2, **_):
        import concurrent.futures as cf
        import multiprocessing as mp

        self.slots = workers
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                           initializer=_worker_init, initargs=(os.getpid(),))
        self.futures: dict[Any, dict[str, Any]] = {}

    def submit(self, payload):
        self.futures[self.pool.submit(run_group, {**payload, "progress": False})] = payload

    def next_result(self):
        import concurrent.futures as cf

        while True:
            done, _ = cf.wait(list(self.futures), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            if done:
                break
        f = done.pop()
        payload = self.futures.pop(f)
        try:
            result = f.result()
        except Exception as e:  # noqa: BLE001 — the worker itself failed (killed, unpicklable …): record it
            result = fail_group(payload, f"{type(e).__name__}: {e}", traceback.format_exc())
        return {**result, "_key": payload.get("_key")}

    def _processes(self):
        return [p for p in list((getattr(self.pool, "_processes", None) or {}).values()) if p is not None]

    def stop(self, signum: int) -> None:
        for proc in self._processes():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, TypeError):
                pass

    def close(self, interrupted: bool = False) -> None:
        if not interrupted:
            self.pool.shutdown(wait=True)
            return
        procs = self._processes()
        self.pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 60.0  # workers checkpoint and record their runs, then exit
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()


def _ray_token_auth() -> str:
    """Token authentication for the local cluster this sweep starts: Ray ≥ 2.52 checks a token (``~/.ray/auth_token``,
    generated when missing; ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH``) on every connection when ``RAY_AUTH_MODE=token``
    — the default for a new local cluster in recent Ray, asked for explicitly here. An explicit ``RAY_AUTH_MODE``
    is respected. Returns how the cluster is protected."""
    mode = os.environ.get("RAY_AUTH_MODE")
    try:
        from ray._private.authentication import authentication_token_setup as auth
    except ImportError:
        return "loopback only (this Ray has no token authentication)"
    if mode is not None:
        return "token authentication" if mode.lower() == "token" else f"RAY_AUTH_MODE={mode}: no token authentication"
    enable = getattr(auth, "_enable_token_auth", None)  # sets RAY_AUTH_MODE=token and refreshes Ray's config
    if enable is not None:
        try:
            enable()
        except Exception:  # noqa: BLE001 — Ray's own default applies
            pass
    return "token authentication"


class _Ray:
    """Each group a Ray task requesting one CPU. Without ``ray_address`` a private local instance is started
    (loopback, no dashboard, ``workers`` CPUs, token authentication) and shut down at the end."""

    def __init__(self, workers: int = 2, ray_address: str | None = None, cpus_per_task: float = 1.0,
                 gpus_per_task: float = 0.0, **_):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'jaxdl[ray]'") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if ray_address:
                kwargs = {"address": ray_address}
            else:
                self.auth = _ray_token_auth()
                kwargs = {"include_dashboard": False, "_node_ip_address": "127.0.0.1", "num_cpus": max(1, int(workers))}
            ray.init(**kwargs, ignore_reinit_error=True, log_to_driver=False)
            self.started = True
        cpus = ray.cluster_resources().get("CPU", workers)
        self.slots = max(1, int(cpus // max(cpus_per_task, 1e-9)))
        self.task = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(run_group)
        self.refs: dict[Any, dict[str, Any]] = {}

    def submit(self, payload):
        self.refs[self.task.remote({**payload, "progress": False})] = payload

    def next_result(self):
        done = []
        while not done:
            done, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=0.5)
        payload = self.refs.pop(done[0])
        try:
            result = self.ray.get(done[0])
        except Exception as e:  # noqa: BLE001 — the task itself failed (worker died …): record it
            result = fail_group(payload, f"{type(e).__name__}: {e}", traceback.format_exc())
        return {**result, "_key": payload.get("_key")}

    def stop(self, signum: int) -> None:
        for ref in list(self.refs):
            try:
                self.ray.cancel(ref)  # a KeyboardInterrupt in the task; its runs are released as preempted
            except Exception:  # noqa: BLE001
                pass

    def close(self, interrupted: bool = False) -> None:
        if self.started:
            self.ray.shutdown()


_EXECUTORS = {"inline": _Inline, "processes": _Processes, "ray": _Ray}


class _Heartbeat(threading.Thread):
    """Refreshes the heartbeat of this driver's claims while it runs."""

    def __init__(self, store: SweepStore, owner: str, interval: float):
        super().__init__(name="jaxdl-sweep-heartbeat", daemon=True)
        self.store, self.owner, self.interval = store, owner, interval
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.store.heartbeat(self.owner)
            except Exception:  # noqa: BLE001 — a busy database: the next beat will do
                pass


class _Signals:
    """SIGTERM/SIGINT in the driver (main thread only): forward SIGTERM to the workers, then stop the sweep
    (``SweepInterrupted``; a run's own training loop, when it holds the signal, checkpoints first)."""

    def __init__(self):
        self.signum: int | None = None
        self.pool = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        first = self.signum is None
        self.signum = signum
        if self.pool is not None:
            self.pool.stop(signum)
        if first:
            raise SweepInterrupted(signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def make_owner() -> str:
    """A driver's claim owner: ``host:pid:uuid``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _schedule(payloads, pool, store: SweepStore, owner: str, timeout: float, on_done, console, stop: _Signals,
              poll: float) -> list[str]:
    """Claim and train groups until every run is finished or attempted; wait (polling) for runs other live drivers
    hold. Returns the names of the signals that preempted groups (empty when none)."""
    queue = [dict(p) for p in payloads]
    inflight: dict[str, list[str]] = {}  # group id -> claimed run ids
    since = time.time()
    preempted: list[str] = []
    waiting_said = False
    while True:
        i = 0
        while len(inflight) < pool.slots and i < len(queue) and stop.signum is None and not preempted:
            p = queue[i]
            claimed, still_open = store.claim([r["run_id"] for r in p["runs"]], owner, timeout, since=since)
            if claimed:
                key = f"{p['group_id']}#{len(inflight)}#{time.monotonic()}"
                pool.submit({**p, "runs": [r for r in p["runs"] if r["run_id"] in claimed], "owner": owner,
                             "_key": key})
                inflight[key] = claimed
            rest = [r for r in p["runs"] if r["run_id"] in still_open and r["run_id"] not in claimed]
            if rest:
                queue[i] = {**p, "runs": rest}
                i += 1
            else:
                queue.pop(i)
        if inflight:
            result = pool.next_result()
            ids = inflight.pop(result.get("_key"), None) or inflight.pop(next(iter(inflight)))
            store.release(owner, ids)
            on_done(result)
            if result.get("preempted"):
                preempted.append(result["preempted"])
            continue
        if not queue or stop.signum is not None or preempted:
            break
        if not waiting_said:
            held = store.holders([r["run_id"] for p in queue for r in p["runs"]])
            console.print(f"waiting for {sum(len(p['runs']) for p in queue)} runs held by other drivers "
                          f"({', '.join(sorted(set(held.values()))) or 'finishing'})", soft_wrap=True, markup=False,
                          highlight=False)
            waiting_said = True
        time.sleep(poll)
    return preempted




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
        payloads.append({"group_id": g.id, "store": str(store.path), "fuse": fuse, "runs": items, **carry})
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
