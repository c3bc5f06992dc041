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
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, name TEXT, group_id TEXT, config TEXT, hash TEXT, labels TEXT, swept TEXT, run_dir TEXT,
  status TEXT NOT NULL DEFAULT 'pending', started REAL, finished REAL, wall_s REAL,
  final TEXT, best TEXT, test TEXT, error TEXT, val TEXT, monitor TEXT
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
_ADDED_COLUMNS = {"val": "TEXT", "monitor": "TEXT"}


class SweepStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
                       "ON CONFLICT(id) DO UPDATE SET group_id=excluded.group_id, name=excluded.name",
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

    def finish(self, run_id: str, summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
        """Record a finished run: status, timings, metrics (replacing any partial ones)."""
        with self._connect() as db:
            db.execute("UPDATE runs SET status=?, finished=?, wall_s=?, final=?, best=?, val=?, test=?, monitor=?, "
                       "error=NULL WHERE id=?",
                       (summary.get("status", "completed"), time.time(), summary.get("wall_time_s"),
                        json.dumps(summary.get("final")), json.dumps(summary.get("best")),
                        json.dumps(summary.get("val")), json.dumps(summary.get("test")),
                        json.dumps(summary.get("monitor")), run_id))
            db.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            rows = [(run_id, int(r["step"]), k, float(v)) for r in records for k, v in r.items()
                    if k != "step" and isinstance(v, (int, float))]
            db.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?)", rows)

    def fail(self, run_id: str, error: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status='failed', finished=?, error=? WHERE id=?", (time.time(), error, run_id))

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
