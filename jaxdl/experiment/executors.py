"""Executors (inline, process pool, Ray), the claim heartbeat, signal handling and the scheduler that hands a
sweep's claimed groups to them."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import traceback
import uuid
from typing import Any


from jaxdl.errors import ConfigError
from jaxdl.experiment.store import SweepStore

from jaxdl.experiment.groups import _WORKER, SweepInterrupted, fail_group, run_group

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




