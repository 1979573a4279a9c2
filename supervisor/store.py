"""SQLite store (WAL): everything the supervisor sees and does.

One writer (the supervisor actor); any number of readers (``supervise
report`` while the run is going). Reports are keyed by (trial_id, seq), a
per-trial counter the trial assigns, so a replayed report is stored once.
All SQL is parameterized.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    started REAL NOT NULL, ended REAL, spec TEXT);
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, status TEXT NOT NULL, node_id TEXT,
    started REAL NOT NULL, ended REAL, iterations INTEGER NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT -1,
    health_score REAL NOT NULL DEFAULT 1.0, worst_severity TEXT NOT NULL DEFAULT 'ok',
    health TEXT, final TEXT, config TEXT, overrides TEXT);
CREATE TABLE IF NOT EXISTS reports (
    trial_id TEXT NOT NULL, seq INTEGER NOT NULL, iteration INTEGER NOT NULL, time REAL NOT NULL,
    node_id TEXT, metrics TEXT NOT NULL, PRIMARY KEY (trial_id, seq));
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, trial_id TEXT, seq INTEGER, iteration INTEGER,
    detector TEXT NOT NULL, severity TEXT NOT NULL, metric TEXT, value REAL, threshold REAL,
    message TEXT NOT NULL, details TEXT, time REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS findings_once ON findings (trial_id, seq, detector);
CREATE TABLE IF NOT EXISTS interventions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, trial_id TEXT NOT NULL, seq INTEGER NOT NULL, iteration INTEGER NOT NULL,
    action TEXT NOT NULL, params TEXT NOT NULL, reason TEXT NOT NULL, detector TEXT,
    outcome TEXT NOT NULL DEFAULT 'pending', applied TEXT, verified INTEGER, judged_seq INTEGER, time REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS interventions_once ON interventions (trial_id, seq, action);
CREATE TABLE IF NOT EXISTS checkpoints (
    trial_id TEXT NOT NULL, seq INTEGER NOT NULL, iteration INTEGER NOT NULL, path TEXT NOT NULL,
    hparams TEXT, time REAL NOT NULL, PRIMARY KEY (trial_id, seq));
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, address TEXT, alive INTEGER NOT NULL, last_seen REAL NOT NULL, info TEXT);
"""


TRIAL_COLUMNS = {"status", "node_id", "ended", "iterations", "last_seq", "health_score", "worst_severity",
                 "health", "final", "overrides"}


def _num(x: Any) -> float | None:
    """Floats for SQL; non-finite values stored as NULL here (the JSON keeps them as strings)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def dumps(obj: Any) -> str:
    """JSON that survives NaN/inf (as strings), so stored evidence is never lost."""
    try:  # the common case: orjson, which writes non-finite floats as null (checked for below)
        out = orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)
        if b"null" not in out:
            return out.decode()
    except (TypeError, orjson.JSONEncodeError):  # e.g. an int beyond 64 bits
        pass

    def fix(o):
        if isinstance(o, float) and not math.isfinite(o):
            return str(o)
        if isinstance(o, dict):
            return {str(k): fix(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [fix(v) for v in o]
        return o
    return json.dumps(fix(obj), allow_nan=False, default=str)


def loads(s: str | None) -> Any:
    if s is None:
        return None
    def fix(o):
        if isinstance(o, str) and o in ("nan", "inf", "-inf"):
            return float(o)
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, list):
            return [fix(v) for v in o]
        return o
    return fix(orjson.loads(s))


class Store:
    """``background_checkpoints``: copy the WAL back into the database from a thread with its own
    connection every ``CHECKPOINT_S``, instead of inside whichever commit crosses SQLite's
    auto-checkpoint size: the checkpoint's fsync then never stalls the writer (the supervisor
    actor, which answers trials only after its commit)."""

    CHECKPOINT_S = 1.0

    def __init__(self, path: str | Path, readonly: bool = False, background_checkpoints: bool = False):
        self.path = str(path)
        self._depth = 0
        self._checkpointer: threading.Thread | None = None
        self._closed = threading.Event()
        self._queued: list[tuple] = []  # quiet reports waiting for the enclosing transaction's commit
        if readonly:
            uri = Path(self.path).resolve().as_uri() + "?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            if background_checkpoints:
                self.db.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="wal-checkpoint",
                                                      daemon=True)
                self._checkpointer.start()
        self.db.row_factory = sqlite3.Row

    def _checkpoint_loop(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        try:
            while not self._closed.wait(self.CHECKPOINT_S):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # never blocks the writer
                except sqlite3.Error:
                    pass  # busy or locked: the next round catches up
        finally:
            db.close()

    def close(self) -> None:
        self._closed.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
        self.db.close()

    @contextmanager
    def transaction(self):
        """One transaction, however deeply nested: only the outermost commits.
        Batching many reports into one commit is what makes ingestion fast."""
        self._depth += 1
        try:
            if self._depth == 1:
                with self.db:
                    yield
                    if self._queued:
                        self.db.executemany(
                            "INSERT OR IGNORE INTO reports (trial_id, seq, iteration, time, node_id, metrics) "
                            "VALUES (?,?,?,?,?,?)", self._queued)
            else:
                yield
        finally:
            self._depth -= 1
            if not self._depth:
                self._queued.clear()

    # ---- writes (one transaction per call: written before the caller is answered)
    def upsert_run(self, run_id: str, name: str, kind: str, status: str, spec: dict | None = None,
                   started: float | None = None, ended: float | None = None) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO runs (run_id, name, kind, status, started, ended, spec) VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT(run_id) DO UPDATE SET status=excluded.status, ended=excluded.ended",
                (run_id, name, kind, status, started or time.time(), ended, dumps(spec) if spec else None))

    def upsert_trial(self, trial_id: str, run_id: str, status: str, node_id: str | None = None,
                     config: dict | None = None) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO trials (trial_id, run_id, status, node_id, started, config) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(trial_id) DO UPDATE SET status=excluded.status, "
                "node_id=COALESCE(excluded.node_id, trials.node_id)",
                (trial_id, run_id, status, node_id, time.time(), dumps(config) if config else None))

    def _update(self, table: str, key: str, allowed: set[str], ident: Any, cols: dict[str, Any]) -> None:
        bad = set(cols) - allowed  # column names are never taken from input: SQL stays parameterized
        if bad:
            raise ValueError(f"unknown {table} columns {sorted(bad)}")
        vals = [dumps(v) if isinstance(v, (dict, list)) else v for v in cols.values()]
        with self.transaction():
            self.db.execute(f"UPDATE {table} SET {', '.join(f'{c}=?' for c in cols)} WHERE {key}=?", (*vals, ident))

    def set_trial(self, trial_id: str, **cols: Any) -> None:
        self._update("trials", "trial_id", TRIAL_COLUMNS, trial_id, cols)

    def record_iteration(self, report: dict, seq: int, findings: Iterable[dict], interventions: Iterable[dict]
                         ) -> list[int]:
        """Store one report with its findings and decided interventions atomically; return intervention ids.
        Inside an enclosing transaction a quiet report (nothing found, nothing decided) is queued and
        written with the others in one ``executemany`` before that transaction commits."""
        row = (report["trial_id"], seq, report["iteration"], report.get("time") or time.time(),
               report.get("node_id"), dumps(report["metrics"]))
        if self._depth and not findings and not interventions:
            self._queued.append(row)
            return []
        tid = report["trial_id"]
        ids = []
        with self.transaction():
            cur = self.db.execute(
                "INSERT OR IGNORE INTO reports (trial_id, seq, iteration, time, node_id, metrics) VALUES (?,?,?,?,?,?)",
                row)
            if cur.rowcount == 0:
                return []  # a replay of a report already stored
            for f in findings:
                self.db.execute(
                    "INSERT OR IGNORE INTO findings (trial_id, seq, iteration, detector, severity, metric, value, "
                    "threshold, message, details, time) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (tid, seq, f["iteration"], f["detector"], f["severity"], f.get("metric"), _num(f.get("value")),
                     _num(f.get("threshold")), f["message"], dumps(f.get("details") or {}), time.time()))
            for iv in interventions:
                c = self.db.execute(
                    "INSERT OR IGNORE INTO interventions (trial_id, seq, iteration, action, params, reason, detector, "
                    "time) VALUES (?,?,?,?,?,?,?,?)",
                    (tid, seq, iv["iteration"], iv["action"], dumps(iv.get("params") or {}), iv["reason"],
                     iv.get("detector"), time.time()))
                ids.append(c.lastrowid)
        return ids

    def record_finding(self, trial_id: str | None, f: dict, seq: int | None = None) -> None:
        """A finding outside the per-iteration path (node_down, gpu_fault, ...)."""
        with self.transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO findings (trial_id, seq, iteration, detector, severity, metric, value, threshold,"
                " message, details, time) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (trial_id, seq, f.get("iteration", -1), f["detector"], f["severity"], f.get("metric"),
                 _num(f.get("value")), _num(f.get("threshold")), f["message"], dumps(f.get("details") or {}),
                 time.time()))

    def set_intervention(self, iv_id: int, **cols: Any) -> None:
        self._update("interventions", "id", {"outcome", "applied", "verified", "judged_seq"}, iv_id, cols)

    def record_checkpoint(self, trial_id: str, seq: int, iteration: int, path: str, hparams: dict | None) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO checkpoints (trial_id, seq, iteration, path, hparams, time) VALUES (?,?,?,?,?,?)",
                (trial_id, seq, iteration, path, dumps(hparams or {}), time.time()))

    def upsert_node(self, node_id: str, address: str | None, alive: bool, info: dict) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO nodes (node_id, address, alive, last_seen, info) VALUES (?,?,?,?,?) "
                "ON CONFLICT(node_id) DO UPDATE SET address=excluded.address, alive=excluded.alive, "
                "last_seen=excluded.last_seen, info=excluded.info",
                (node_id, address, int(alive), time.time(), dumps(info)))

    # ---- reads
    def _rows(self, sql: str, args: tuple = ()) -> list[dict]:
        return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def runs(self) -> list[dict]:
        return self._rows("SELECT * FROM runs ORDER BY started")

    def trials(self) -> list[dict]:
        return self._rows("SELECT * FROM trials ORDER BY started, trial_id")

    def trial(self, trial_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM trials WHERE trial_id=?", (trial_id,))
        return rows[0] if rows else None

    def reports(self, trial_id: str, since_seq: int = -1) -> list[dict]:
        rows = self._rows("SELECT * FROM reports WHERE trial_id=? AND seq>? ORDER BY seq", (trial_id, since_seq))
        for r in rows:
            r["metrics"] = loads(r["metrics"])
        return rows

    def _events(self, table: str, trial_id: str | None, json_cols: tuple[str, ...]) -> list[dict]:
        """Findings or interventions, of one trial (in seq order) or all (in time order)."""
        if trial_id is None:
            rows = self._rows(f"SELECT * FROM {table} ORDER BY time, id")
        else:
            rows = self._rows(f"SELECT * FROM {table} WHERE trial_id=? ORDER BY seq, id", (trial_id,))
        for r in rows:
            for c in json_cols:
                r[c] = loads(r[c])
        return rows

    def findings(self, trial_id: str | None = None) -> list[dict]:
        return self._events("findings", trial_id, ("details",))

    def interventions(self, trial_id: str | None = None) -> list[dict]:
        return self._events("interventions", trial_id, ("params", "applied"))

    def undelivered(self, trial_id: str, seq: int) -> list[dict]:
        """Actions decided at ``seq`` that no trial has said it applied yet (alerts need no applying)."""
        rows = self._rows("SELECT id, action, params, reason, detector, iteration FROM interventions "
                          "WHERE trial_id=? AND seq=? AND applied IS NULL AND action!='alert' ORDER BY id",
                          (trial_id, seq))
        for r in rows:
            r["params"] = loads(r["params"])
        return rows

    def checkpoints(self, trial_id: str) -> list[dict]:
        rows = self._rows("SELECT * FROM checkpoints WHERE trial_id=? ORDER BY seq", (trial_id,))
        for r in rows:
            r["hparams"] = loads(r["hparams"])
        return rows

    def nodes(self) -> list[dict]:
        rows = self._rows("SELECT * FROM nodes ORDER BY node_id")
        for r in rows:
            r["info"] = loads(r["info"])
        return rows
