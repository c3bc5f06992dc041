"""The sweep store: one SQLite database per sweep indexing its runs, groups and metrics.

Safe under concurrent writers (worker processes, Ray tasks): WAL journal, a busy timeout, and a fresh connection per
operation. Rerunning a sweep reads it to skip finished runs.

Tables:
  runs(id, name, group_id, config, hash, labels, swept, run_dir, status, started, finished, wall_s, final, best, val,
       test, monitor, error) — labels name the choices of label axes, swept holds the values of plain dotted-key
       axes; ``val`` and ``test`` are evaluated on the same variables (the best checkpoint when restored, else the
       final ones), ``final`` is the last evaluation during training, ``monitor`` the run's monitored metric
       (``{"name": "val/accuracy", "mode": "max"}``) when its summary names one
  groups(id, signature, members, fused, decision)
  metrics(run_id, step, key, value)

Claims (several drivers on one sweep): a driver claims runs atomically (``BEGIN IMMEDIATE``), writing ``owner``
(``host:pid:uuid``) and ``heartbeat`` (a timestamp its heartbeat thread refreshes). A claim is *live* while its
heartbeat is younger than the claim timeout and, for an owner on this host, its process exists; otherwise it is
stale and another driver may take the run over. A finished run (``completed``, ``diverged``) is never claimed.

The database is an index, not the only copy: every run directory holds ``sweep.json`` (what the sweep registered),
``config.json``, ``metrics.jsonl``, ``summary.json`` or ``error.txt``. A database that fails ``PRAGMA quick_check``
(or cannot be read at all) is moved aside to ``sweep.db.corrupt-<timestamp>`` and rebuilt from the run directories;
so is a missing one next to existing run directories.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, name TEXT, group_id TEXT, config TEXT, hash TEXT, labels TEXT, swept TEXT, run_dir TEXT,
  status TEXT NOT NULL DEFAULT 'pending', started REAL, finished REAL, wall_s REAL,
  final TEXT, best TEXT, test TEXT, error TEXT, val TEXT, monitor TEXT, owner TEXT, heartbeat REAL
);
CREATE TABLE IF NOT EXISTS groups (
  id TEXT PRIMARY KEY, signature TEXT, members INTEGER, fused INTEGER, decision TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, value REAL,
  PRIMARY KEY (run_id, step, key)
);
"""

FINISHED = ("completed", "diverged")
_JSON_COLUMNS = ("config", "labels", "swept", "final", "best", "val", "test", "monitor")
# columns added after the first release: databases written by older versions get them on open
_ADDED_COLUMNS = {"val": "TEXT", "monitor": "TEXT", "owner": "TEXT", "heartbeat": "REAL"}
RUN_RECORD = "sweep.json"  # in each run directory: what the sweep registered (rebuilds the database)
DEFAULT_CLAIM_TIMEOUT = 60.0  # seconds without a heartbeat after which a claim is stale


def claim_timeout(value: float | None = None) -> float:
    """The claim timeout: ``value``, else ``JAXDL_CLAIM_TIMEOUT`` (seconds), else 60 s."""
    if value is not None:
        return float(value)
    return float(os.environ.get("JAXDL_CLAIM_TIMEOUT") or DEFAULT_CLAIM_TIMEOUT)


def _owner_alive(owner: str | None) -> bool | None:
    """False when ``owner`` (``host:pid:uuid``) is a process of this host that no longer exists; None when that
    cannot be told (another host, a malformed owner)."""
    try:
        host, pid, _ = (owner or "").rsplit(":", 2)
        pid_n = int(pid)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid_n, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_run_record(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Write ``run_dir/sweep.json`` atomically (unless it already holds ``record``)."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_RECORD
    text = json.dumps(record, indent=1, sort_keys=True, default=str)
    try:
        if path.is_file() and path.read_text() == text:
            return
    except OSError:
        pass
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{RUN_RECORD}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover — non-POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_database(path: str | Path) -> str | None:
    """None when ``path`` is a readable SQLite database passing ``PRAGMA quick_check``, else what is wrong."""
    try:
        db = sqlite3.connect(path, timeout=60.0)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
            if [tuple(r) for r in rows] != [("ok",)]:
                return "; ".join(str(r[0]) for r in rows[:3])
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        return f"{type(e).__name__}: {e}"
    return None


class SweepStore:
    """The sweep database at ``path``. ``check``: verify it first (``PRAGMA quick_check``) and rebuild it from the
    run directories next to it when it is damaged, or missing while run directories exist; ``rebuild``: rebuild it
    in any case (the old file is kept as ``sweep.db.old-<timestamp>``). Worker processes open it with
    ``check=False``."""

    def __init__(self, path: str | Path, *, check: bool = True, rebuild: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rebuilt: str | None = None  # why the database was rebuilt on open, if it was
        if check or rebuild:
            with _file_lock(self.path.with_name(self.path.name + ".lock")):
                why = "--rebuild" if rebuild else None
                if why is None and self.path.exists():
                    problem = check_database(self.path)
                    why = f"damaged ({problem})" if problem else None
                elif why is None and self._run_dirs():
                    why = "missing"
                if why:
                    moved = self._move_aside("old" if rebuild else "corrupt") if self.path.exists() else None
                    self._create()
                    n = self.rebuild_from_runs()
                    self.rebuilt = why
                    print(f"sweep database {self.path} {why}: "
                          + (f"moved to {moved.name}; " if moved else "")
                          + f"rebuilt from {n} run directories", file=sys.stderr)
                    return
                self._create()
        else:
            self._create()

    def _run_dirs(self) -> list[Path]:
        runs = self.path.parent / "runs"
        if not runs.is_dir():
            return []
        return sorted(d for d in runs.iterdir() if d.is_dir() and ((d / RUN_RECORD).is_file()
                                                                   or (d / "config.json").is_file()))

    def _move_aside(self, why: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.{why}-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.{why}-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):  # a stale WAL must never be replayed into the new database
            src = self.path.with_name(self.path.name + suffix)
            if src.exists():
                os.replace(src, target.with_name(target.name + suffix))
        return target

    def _create(self) -> None:
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            for column, kind in _ADDED_COLUMNS.items():
                if column not in have:
                    try:
                        db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
                    except sqlite3.OperationalError as e:  # another process added it first
                        if "duplicate column" not in str(e):
                            raise

    @contextlib.contextmanager
    def _immediate(self):
        """A write transaction taken at once (``BEGIN IMMEDIATE``): no other writer runs between its reads and
        writes."""
        db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=60000")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    @contextlib.contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=60.0)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=60000")
        try:
            with db:  # one transaction
                yield db
        finally:
            db.close()

    # ---------------------------------------------------------------------------------------------------------------
    def add_run(self, run_id: str, *, name: str, group_id: str, config: dict, config_hash: str,
                labels: dict[str, str], swept: dict[str, Any], run_dir: str) -> None:
        """Register a run (pending) unless it is already known; its group may change between sweeps."""
        with self._connect() as db:
            db.execute("INSERT INTO runs (id, name, group_id, config, hash, labels, swept, run_dir) "
                       "VALUES (?,?,?,?,?,?,?,?) "
                       "ON CONFLICT(id) DO UPDATE SET group_id=excluded.group_id, name=excluded.name, "
                       "run_dir=excluded.run_dir",
                       (run_id, name, group_id, json.dumps(config), config_hash, json.dumps(labels),
                        json.dumps(swept, default=str), run_dir))

    def add_group(self, group_id: str, *, signature: str, members: int, fused: bool | None = None,
                  decision: dict | None = None) -> None:
        with self._connect() as db:
            db.execute("INSERT INTO groups (id, signature, members, fused, decision) VALUES (?,?,?,?,?) "
                       "ON CONFLICT(id) DO UPDATE SET members=excluded.members, "
                       "fused=COALESCE(excluded.fused, groups.fused), decision=COALESCE(excluded.decision, "
                       "groups.decision)",
                       (group_id, signature, members, None if fused is None else int(fused),
                        None if decision is None else json.dumps(decision)))

    def set_running(self, run_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status='running', started=COALESCE(started, ?), error=NULL WHERE id=?",
                       (time.time(), run_id))

    def finish(self, run_id: str, summary: dict[str, Any], records: list[dict[str, Any]], *,
               finished: float | None = None) -> None:
        """Record a finished run: status, timings, metrics (replacing any partial ones)."""
        with self._connect() as db:
            db.execute("UPDATE runs SET status=?, finished=?, wall_s=?, final=?, best=?, val=?, test=?, monitor=?, "
                       "error=NULL WHERE id=?",
                       (summary.get("status", "completed"), finished or time.time(), summary.get("wall_time_s"),
                        json.dumps(summary.get("final")), json.dumps(summary.get("best")),
                        json.dumps(summary.get("val")), json.dumps(summary.get("test")),
                        json.dumps(summary.get("monitor")), run_id))
            db.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            rows = [(run_id, int(r["step"]), k, float(v)) for r in records for k, v in r.items()
                    if k != "step" and isinstance(v, (int, float))]
            db.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?)", rows)

    def fail(self, run_id: str, error: str, *, finished: float | None = None) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status='failed', finished=?, error=? WHERE id=?",
                       (finished or time.time(), error, run_id))

    # ---------------------------------------------------------------------------------------------------------------
    # Claims: several drivers on one sweep
    # ---------------------------------------------------------------------------------------------------------------
    def claim(self, run_ids: list[str], owner: str, timeout: float, *, since: float | None = None
              ) -> tuple[list[str], list[str]]:
        """Claim what ``owner`` may train of ``run_ids``, atomically. Returns ``(claimed, open)``: the runs now
        claimed by ``owner`` and the runs still to be trained by someone (claimed ones included). Not open: finished
        runs, and runs that failed after ``since`` (attempted in this round; a later sweep retries them). Claimable:
        open runs without an owner, owned by ``owner``, or whose claim is stale (heartbeat older than ``timeout``
        seconds, or an owner process of this host that no longer exists)."""
        now = time.time()
        claimed, still_open = [], []
        with self._immediate() as db:
            marks = ",".join("?" * len(run_ids))
            rows = db.execute(f"SELECT id, status, owner, heartbeat, finished FROM runs WHERE id IN ({marks})",
                              run_ids).fetchall() if run_ids else []
            by_id = {r["id"]: r for r in rows}
            for run_id in run_ids:
                r = by_id.get(run_id)
                if r is None or r["status"] in FINISHED:
                    continue
                if r["status"] == "failed" and since is not None and (r["finished"] or 0) >= since:
                    continue
                still_open.append(run_id)
                held = r["owner"] and r["owner"] != owner
                stale = (not held or r["heartbeat"] is None or now - r["heartbeat"] > timeout
                         or _owner_alive(r["owner"]) is False)
                if stale:
                    claimed.append(run_id)
            if claimed:
                marks = ",".join("?" * len(claimed))
                db.execute(f"UPDATE runs SET owner=?, heartbeat=? WHERE id IN ({marks})", [owner, now, *claimed])
        return claimed, still_open

    def release_one_preempted(self, run_id: str) -> None:
        """A run stopped by a signal before it wrote a summary: ``preempted`` (resumed by the next sweep)."""
        with self._connect() as db:
            db.execute("UPDATE runs SET status='preempted' WHERE id=? AND status NOT IN ('completed', 'diverged')",
                       (run_id,))

    def heartbeat(self, owner: str) -> int:
        """Refresh the heartbeat of ``owner``'s claims (the runs it has not finished); returns how many."""
        with self._connect() as db:
            cur = db.execute("UPDATE runs SET heartbeat=? WHERE owner=? AND heartbeat IS NOT NULL",
                             (time.time(), owner))
            return cur.rowcount

    def release(self, owner: str, run_ids: list[str] | None = None) -> None:
        """Release ``owner``'s claims (on ``run_ids``, else all): a run still ``running`` becomes ``preempted``
        (to be resumed), an unfinished run loses its owner; a finished run keeps its owner as a record of who
        trained it."""
        where, args = "owner=?", [owner]
        if run_ids is not None:
            if not run_ids:
                return
            where += f" AND id IN ({','.join('?' * len(run_ids))})"
            args += list(run_ids)
        done = ",".join(f"'{s}'" for s in FINISHED)
        with self._immediate() as db:
            db.execute(f"UPDATE runs SET status='preempted' WHERE {where} AND status='running'", args)
            db.execute(f"UPDATE runs SET heartbeat=NULL, owner=CASE WHEN status IN ({done}) THEN owner ELSE NULL "
                       f"END WHERE {where}", args)

    def holders(self, run_ids: list[str]) -> dict[str, str]:
        """``{run_id: owner}`` of the given runs that are claimed and not finished."""
        if not run_ids:
            return {}
        done = ",".join(f"'{s}'" for s in FINISHED)
        with self._connect() as db:
            rows = db.execute(f"SELECT id, owner FROM runs WHERE id IN ({','.join('?' * len(run_ids))}) "
                              f"AND owner IS NOT NULL AND status NOT IN ({done})", run_ids).fetchall()
        return {r[0]: r[1] for r in rows}

    # ---------------------------------------------------------------------------------------------------------------
    # The run directories are the record: reconcile with them, rebuild from them
    # ---------------------------------------------------------------------------------------------------------------
    def _summary_path(self, run: dict[str, Any]) -> list[Path]:
        """Where the run's summary lives: ``runs/<id>`` next to the database (the sweep directory's layout; a
        copied or moved sweep directory is checked where it is now), else its recorded directory."""
        own = self.path.parent / "runs" / run["id"]
        if own.is_dir() or not run.get("run_dir") or (self.path.parent / "runs").is_dir():
            return [own / "summary.json"]
        return [Path(run["run_dir"]) / "summary.json"]

    def reconcile(self) -> list[str]:
        """Finished runs whose ``summary.json`` is gone (the run directory deleted) become ``pending`` again, their
        results and metrics dropped, so the next sweep trains them anew. Returns their ids."""
        lost = [r["id"] for r in self.runs() if r["status"] in FINISHED
                and not any(p.is_file() for p in self._summary_path(r))]
        if lost:
            marks = ",".join("?" * len(lost))
            with self._connect() as db:
                db.execute(f"UPDATE runs SET status='pending', started=NULL, finished=NULL, wall_s=NULL, final=NULL, "
                           f"best=NULL, val=NULL, test=NULL, error=NULL, owner=NULL, heartbeat=NULL "
                           f"WHERE id IN ({marks})", lost)
                db.execute(f"DELETE FROM metrics WHERE run_id IN ({marks})", lost)
        return lost

    def rebuild_from_runs(self) -> int:
        """Index every run directory under ``runs/`` (``sweep.json``, else ``config.json``): a finished summary
        gives its status, results and metrics; else ``error.txt`` (newer than any summary) makes it ``failed``; a
        ``preempted`` summary, ``preempted``; anything else is ``pending``. Returns how many runs were indexed."""
        from jaxdl.train import rundir

        entries = []
        for d in self._run_dirs():
            record = _read_json(d / RUN_RECORD) or {}
            config_file = _read_json(d / "config.json") or {}
            config = record.get("config") or config_file.get("config")
            if config is None:
                continue
            group = record.get("group") or {}
            entries.append((record.get("index", 1 << 30), d.name, d, record, config_file, config, group))
        entries.sort(key=lambda e: (e[0], e[1]))
        members: dict[str, int] = {}
        for *_, config_file, config, group in entries:
            gid = group.get("id") or config_file.get("sweep_group") or "rebuilt"
            members[gid] = members.get(gid, 0) + 1
        for _, run_id, d, record, config_file, config, group in entries:
            gid = group.get("id") or config_file.get("sweep_group") or "rebuilt"
            fusion = config_file.get("fusion")
            self.add_group(gid, signature=group.get("signature", ""), members=group.get("members", members[gid]),
                           fused=None if not isinstance(fusion, dict) else fusion.get("fused"),
                           decision=fusion if isinstance(fusion, dict) else None)
            self.add_run(record.get("id", run_id), name=record.get("name") or config.get("name", run_id),
                         group_id=gid, config=config, config_hash=record.get("hash", run_id),
                         labels=record.get("labels") or {}, swept=record.get("swept") or {},
                         run_dir=record.get("run_dir") or str(d))
            run_id = record.get("id", run_id)
            summary_file, error_file = d / "summary.json", d / "error.txt"
            summary = _read_json(summary_file)
            s_time = summary_file.stat().st_mtime if summary is not None else None
            e_time = error_file.stat().st_mtime if error_file.is_file() else None
            status = (summary or {}).get("status")
            if summary is not None and (status in FINISHED or e_time is None or s_time >= e_time):
                self.finish(run_id, summary, rundir.MetricsLog(d / rundir.METRICS_FILE).read(), finished=s_time)
            elif e_time is not None:
                self.fail(run_id, _error_line(error_file.read_text(errors="replace")), finished=e_time)
        return len(entries)

    # ---------------------------------------------------------------------------------------------------------------
    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM runs" + (" WHERE status=?" if status else "") + " ORDER BY rowid"
        with self._connect() as db:
            rows = db.execute(query, (status,) if status else ()).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            for col in _JSON_COLUMNS:
                item[col] = json.loads(item[col]) if item[col] else None
            out.append(item)
        return out

    def run(self, run_id: str) -> dict[str, Any] | None:
        return next((r for r in self.runs() if r["id"] == run_id), None)

    def groups(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM groups ORDER BY rowid").fetchall()]
        for r in rows:
            r["decision"] = json.loads(r["decision"]) if r["decision"] else None
            r["fused"] = None if r["fused"] is None else bool(r["fused"])
        return rows

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        """The run's evaluation records, ``[{"step": …, "val/loss": …}, …]`` ordered by step."""
        with self._connect() as db:
            rows = db.execute("SELECT step, key, value FROM metrics WHERE run_id=? ORDER BY step", (run_id,)).fetchall()
        records: dict[int, dict[str, Any]] = {}
        for step, key, value in rows:
            records.setdefault(step, {"step": step})[key] = value
        return list(records.values())

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            return {r[0]: r[1] for r in db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()}


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _error_line(text: str) -> str:
    """The error of a traceback as the sweep records it: its last line, ``Type: message`` without the module."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    return re.sub(r"^(?:[A-Za-z_][\w]*\.)+(?=[A-Za-z_]\w*(?::|$))", "", lines[-1])
