"""SQLite store (WAL): everything the supervisor sees and does.

One writer (the supervisor actor); any number of readers (``supervise
report`` while the run is going). Reports are keyed by (trial_id, seq), a
per-trial counter the trial assigns, so a replayed report is stored once.
All SQL is parameterized.
"""

from __future__ import annotations

import atexit
import json
import os
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

import orjson

from supervisor.jsonsafe import json_safe

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
    message TEXT NOT NULL, details TEXT, time REAL NOT NULL, module TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS findings_once_per_module ON findings (trial_id, seq, detector, IFNULL(module, ''));
CREATE TABLE IF NOT EXISTS interventions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, trial_id TEXT NOT NULL, seq INTEGER NOT NULL, iteration INTEGER NOT NULL,
    action TEXT NOT NULL, params TEXT NOT NULL, reason TEXT NOT NULL, detector TEXT,
    outcome TEXT NOT NULL DEFAULT 'pending', applied TEXT, verified INTEGER, judged_seq INTEGER, time REAL NOT NULL,
    module TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS interventions_once_per_module ON interventions (trial_id, seq, action,
    IFNULL(module, ''));
CREATE TABLE IF NOT EXISTS checkpoints (
    trial_id TEXT NOT NULL, seq INTEGER NOT NULL, iteration INTEGER NOT NULL, path TEXT NOT NULL,
    hparams TEXT, time REAL NOT NULL, PRIMARY KEY (trial_id, seq));
CREATE TABLE IF NOT EXISTS best_checkpoints (
    trial_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, iteration INTEGER NOT NULL, path TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL NOT NULL, hparams TEXT, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, kind TEXT NOT NULL, trial_id TEXT, iteration INTEGER,
    detector TEXT, severity TEXT, destination TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
    error TEXT, title TEXT, items INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, address TEXT, alive INTEGER NOT NULL, last_seen REAL NOT NULL, info TEXT);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, trial_id TEXT NOT NULL, action TEXT NOT NULL,
    params TEXT NOT NULL, reason TEXT NOT NULL, time REAL NOT NULL, taken_seq INTEGER);
"""


# PRAGMA user_version of a store this code writes. 0: a store from before versions were recorded (its
# tables are those of version 1). Each migration brings a store from the version before it to its own.
SCHEMA_VERSION = 3
MIGRATIONS = {
    1: "",  # the unversioned stores of earlier releases: SCHEMA as it was, nothing to change
    2: """CREATE TABLE IF NOT EXISTS requests (
              id INTEGER PRIMARY KEY AUTOINCREMENT, trial_id TEXT NOT NULL, action TEXT NOT NULL,
              params TEXT NOT NULL, reason TEXT NOT NULL, time REAL NOT NULL, taken_seq INTEGER);""",
    # the module (a multi-agent trial's policy) a finding or an intervention is about; NULL: the trial
    3: """ALTER TABLE findings ADD COLUMN module TEXT;
          ALTER TABLE interventions ADD COLUMN module TEXT;
          DROP INDEX IF EXISTS findings_once;
          DROP INDEX IF EXISTS interventions_once;
          CREATE UNIQUE INDEX IF NOT EXISTS findings_once_per_module ON findings (trial_id, seq, detector,
              IFNULL(module, ''));
          CREATE UNIQUE INDEX IF NOT EXISTS interventions_once_per_module ON interventions (trial_id, seq, action,
              IFNULL(module, ''));""",
}


class SchemaError(sqlite3.DatabaseError):
    """The file is a SQLite database but not one this version can read."""


def _schema_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite3.Connection) -> int:
    """Bring an existing store to SCHEMA_VERSION, all in one transaction; returns the version it had."""
    had = _schema_version(db)
    if had > SCHEMA_VERSION:
        raise SchemaError(f"written by a newer rl-supervisor (schema version {had}; this one reads up to "
                          f"{SCHEMA_VERSION})")
    if had < SCHEMA_VERSION:
        with db:
            for v in range(max(had, 0) + 1, SCHEMA_VERSION + 1):
                for stmt in filter(str.strip, MIGRATIONS[v].split(";")):
                    db.execute(stmt)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return had


def backup_to(db_path: str | Path, dest: str | Path) -> None:
    """Copy a live store (another connection may be writing it) into ``dest`` with SQLite's online
    backup: one consistent moment, in steps so the writer is never held up for the whole copy."""
    src = sqlite3.connect(Path(db_path).resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst, pages=1024)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            dst.close()
    finally:
        src.close()


TRIAL_COLUMNS = {"status", "node_id", "ended", "iterations", "last_seq", "health_score", "worst_severity",
                 "health", "final", "overrides"}


def _num(x: Any) -> float | None:
    """Floats for SQL; non-finite values stored as NULL here (the JSON keeps them as strings)."""
    return None if x is None else json_safe(float(x))


def dumps(obj: Any) -> str:
    """JSON that survives NaN/inf (as strings), so stored evidence is never lost."""
    try:  # the common case: orjson, which writes non-finite floats as null (checked for below)
        out = orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)
        if b"null" not in out:
            return out.decode()
    except (TypeError, orjson.JSONEncodeError):  # e.g. an int beyond 64 bits
        pass
    return json.dumps(json_safe(obj, str), allow_nan=False, default=str)


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


class _Nested:
    """A transaction inside another: nothing to commit (``Store.transaction``)."""

    __slots__ = ("store",)

    def __init__(self, store: "Store"):
        self.store = store

    def __enter__(self) -> None:
        self.store._depth += 1

    def __exit__(self, *exc) -> bool:
        self.store._depth -= 1
        return False


#: Stores whose background checkpointer runs (the thread holds its store: entries leave when it ends).
_checkpointing: "weakref.WeakSet[Store]" = weakref.WeakSet()


@atexit.register
def _stop_checkpointers() -> None:
    """At interpreter exit, the checkpointers of stores nobody closed (a ``Supervisor`` left open, a process
    ending on an error) stop first: a daemon thread still inside SQLite while the interpreter tears its modules
    down can crash the process on its way out."""
    for store in list(_checkpointing):
        store._stop_checkpointer()


class Store:
    """``background_checkpoints``: copy the WAL back into the database from a thread with its own
    connection every ``CHECKPOINT_S``, instead of inside whichever commit crosses SQLite's
    auto-checkpoint size: the checkpoint's fsync then never stalls the writer (the supervisor
    actor, which answers trials only after its commit)."""

    CHECKPOINT_S = 1.0
    # Past this the writer resets the WAL (TRUNCATE checkpoint), and SQLite trims the file back to it
    # whenever the log restarts: the WAL stays bounded under saturating writes (see _bound_wal).
    WAL_LIMIT_BYTES = 64 << 20
    SYNCHRONOUS = "FULL"  # a verdict goes out only for what is durable; see benchmarks/results/ingestion.md
    # How long a write waits for a lock another connection holds before it fails (and the report is
    # answered with an error, kept by the trial, and sent again).
    BUSY_TIMEOUT_S = float(os.environ.get("RL_SUPERVISOR_DB_BUSY_S") or 10.0)

    def __init__(self, path: str | Path, readonly: bool = False, background_checkpoints: bool = False):
        self.path = str(path)
        self._depth = 0
        self._checkpointer: threading.Thread | None = None
        self.migrated_from: int | None = None  # the schema version an older store was migrated from
        self.readonly = readonly
        self._commits = 0
        self.commit_s = 0.0  # time spent committing (synchronous=FULL: an fsync each)
        self._closed = threading.Event()
        if readonly:
            self.db = self._connect_readonly()
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=self.BUSY_TIMEOUT_S)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={self.SYNCHRONOUS}")
            self.db.execute(f"PRAGMA journal_size_limit={self.WAL_LIMIT_BYTES}")
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' LIMIT 1").fetchone() is None:
                self.db.executescript(SCHEMA)  # a new store
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            else:
                self.migrated_from = migrate(self.db)
                self.db.executescript(SCHEMA)
            if background_checkpoints:
                self.db.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="wal-checkpoint",
                                                      daemon=True)
                self._checkpointer.start()
                _checkpointing.add(self)
        self.db.row_factory = sqlite3.Row

    def _connect_readonly(self) -> sqlite3.Connection:
        """Read-only; a store in a folder we cannot write (no -shm can be made there) is opened immutable.
        A store from an older version is migrated in memory, never on disk."""
        base = Path(self.path).resolve().as_uri()
        try:
            db = sqlite3.connect(base + "?mode=ro", uri=True, check_same_thread=False, timeout=self.BUSY_TIMEOUT_S)
            version = _schema_version(db)
        except sqlite3.OperationalError:
            db = sqlite3.connect(base + "?immutable=1", uri=True, check_same_thread=False)
            version = _schema_version(db)
        if version > SCHEMA_VERSION:
            db.close()
            raise SchemaError(f"written by a newer rl-supervisor (schema version {version}; this one reads up "
                              f"to {SCHEMA_VERSION})")
        if version < SCHEMA_VERSION and db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='reports'").fetchone():
            mem = sqlite3.connect(":memory:", check_same_thread=False)
            db.backup(mem)
            db.close()
            self.migrated_from = migrate(mem)
            return mem
        return db

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

    def _stop_checkpointer(self) -> None:
        self._closed.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)

    def close(self) -> None:
        self._stop_checkpointer()
        self.db.close()

    def transaction(self):
        """One transaction, however deeply nested: only the outermost commits.
        Batching many reports into one commit is what makes ingestion fast."""
        if self._depth:  # inside one already (every report of a batch): a plain object, no generator
            return _Nested(self)
        return self._transaction()

    @contextmanager
    def _transaction(self):
        self._depth += 1
        try:
            if self._depth == 1:
                with self.db:
                    yield
                    t0 = time.perf_counter()
                self.commit_s += time.perf_counter() - t0  # the commit: its fsync (benchmarks/ingestion.py)
                self._commits += 1
                if self._commits % 64 == 0 and not self.readonly:
                    self._bound_wal()
            else:
                yield
        finally:
            self._depth -= 1

    def _bound_wal(self) -> None:
        """A WAL past WAL_LIMIT_BYTES is reset here, by the writer between its transactions: a checkpoint
        from another connection cannot win the writer lock from a busy writer, and PASSIVE ones copy the
        frames but never reset the file, which then grows without end (1.3 GB for a 77 MB database).
        The frames are already copied (background PASSIVE checkpoints), so this mostly truncates; it
        waits at most 0.25 s for readers still on an old snapshot, and tries again later otherwise."""
        try:
            if os.path.getsize(self.path + "-wal") <= self.WAL_LIMIT_BYTES:
                return
        except OSError:
            return
        try:
            self.db.execute("PRAGMA busy_timeout=250")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass
        finally:
            self.db.execute(f"PRAGMA busy_timeout={int(self.BUSY_TIMEOUT_S * 1000)}")

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
                         ) -> list[int] | None:
        """Store one report with its findings and decided interventions atomically; return intervention
        ids, or None when (trial_id, seq) is already stored: the insert's row count, not anyone's memory,
        says what is a replay."""
        row = (report["trial_id"], seq, report["iteration"], report.get("time") or time.time(),
               report.get("node_id"), dumps(report["metrics"]))
        if self._depth:  # inside the caller's transaction (the engine's, per report or per batch)
            return self._record_iteration(row, seq, findings, interventions)
        with self.transaction():
            return self._record_iteration(row, seq, findings, interventions)

    def _record_iteration(self, row: tuple, seq: int, findings: Iterable[dict], interventions: Iterable[dict]
                          ) -> list[int] | None:
        tid = row[0]
        ids = []
        cur = self.db.execute(
            "INSERT OR IGNORE INTO reports (trial_id, seq, iteration, time, node_id, metrics) VALUES (?,?,?,?,?,?)",
            row)
        if cur.rowcount == 0:
            return None  # a replay of a report already stored
        for f in findings:
            self.db.execute(
                "INSERT OR IGNORE INTO findings (trial_id, seq, iteration, detector, severity, metric, value, "
                "threshold, message, details, time, module) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (tid, seq, f["iteration"], f["detector"], f["severity"], f.get("metric"), _num(f.get("value")),
                 _num(f.get("threshold")), f["message"], dumps(f.get("details") or {}), time.time(),
                 f.get("module")))
        for iv in interventions:
            c = self.db.execute(
                "INSERT OR IGNORE INTO interventions (trial_id, seq, iteration, action, params, reason, detector, "
                "time, module) VALUES (?,?,?,?,?,?,?,?,?)",
                (tid, seq, iv["iteration"], iv["action"], dumps(iv.get("params") or {}), iv["reason"],
                 iv.get("detector"), time.time(), iv.get("module")))
            ids.append(c.lastrowid)
        return ids

    def record_event(self, trial_id: str, seq: int, findings: Iterable[dict], interventions: Iterable[dict]
                     ) -> list[int]:
        """Findings and decided interventions of an event between reports (a crash, a hang) at ``seq``, a
        sequence number of its own (no report row: the iteration never reported); intervention ids."""
        ids = []
        with self.transaction():
            for f in findings:
                self.db.execute(
                    "INSERT OR IGNORE INTO findings (trial_id, seq, iteration, detector, severity, metric, value, "
                    "threshold, message, details, time) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (trial_id, seq, f["iteration"], f["detector"], f["severity"], f.get("metric"),
                     _num(f.get("value")), _num(f.get("threshold")), f["message"], dumps(f.get("details") or {}),
                     time.time()))
            for iv in interventions:
                c = self.db.execute(
                    "INSERT OR IGNORE INTO interventions (trial_id, seq, iteration, action, params, reason, detector, "
                    "applied, time) VALUES (?,?,?,?,?,?,?,?,?)",
                    (trial_id, seq, iv["iteration"], iv["action"], dumps(iv.get("params") or {}), iv["reason"],
                     iv.get("detector"), dumps(iv["applied"]) if iv.get("applied") is not None else None,
                     time.time()))
                ids.append(c.lastrowid)
        return ids

    def last_event_seq(self, trial_id: str) -> int:
        """The highest seq of the trial's findings and interventions (events take seqs of their own)."""
        row = self.db.execute("SELECT MAX(s) FROM (SELECT MAX(seq) AS s FROM findings WHERE trial_id=? UNION ALL "
                              "SELECT MAX(seq) FROM interventions WHERE trial_id=?)", (trial_id, trial_id)).fetchone()
        return -1 if row is None or row[0] is None else int(row[0])

    def add_request(self, trial_id: str, action: str, params: dict, reason: str) -> int:
        """A manual action (dashboard) waiting for the trial's next verdict: kept across actor restarts."""
        with self.transaction():
            return self.db.execute("INSERT INTO requests (trial_id, action, params, reason, time) VALUES (?,?,?,?,?)",
                                   (trial_id, action, dumps(params or {}), reason, time.time())).lastrowid

    def take_requests(self, ids: Iterable[int], seq: int) -> None:
        with self.transaction():
            self.db.executemany("UPDATE requests SET taken_seq=? WHERE id=?", [(seq, i) for i in ids])

    def pending_requests(self, trial_id: str) -> list[dict]:
        rows = self._rows("SELECT id, action, params, reason FROM requests WHERE trial_id=? AND taken_seq IS NULL "
                          "ORDER BY id", (trial_id,))
        return [{"rid": r["id"], "action": r["action"], "params": loads(r["params"]) or {}, "reason": r["reason"]}
                for r in rows]

    def record_finding(self, trial_id: str | None, f: dict, seq: int | None = None) -> None:
        """A finding outside the per-iteration path (node_down, gpu_fault, ...)."""
        with self.transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO findings (trial_id, seq, iteration, detector, severity, metric, value, threshold,"
                " message, details, time, module) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (trial_id, seq, f.get("iteration", -1), f["detector"], f["severity"], f.get("metric"),
                 _num(f.get("value")), _num(f.get("threshold")), f["message"], dumps(f.get("details") or {}),
                 time.time(), f.get("module")))

    def set_intervention(self, iv_id: int, **cols: Any) -> None:
        self._update("interventions", "id", {"outcome", "applied", "verified", "judged_seq"}, iv_id, cols)

    def record_checkpoint(self, trial_id: str, seq: int, iteration: int, path: str, hparams: dict | None) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO checkpoints (trial_id, seq, iteration, path, hparams, time) VALUES (?,?,?,?,?,?)",
                (trial_id, seq, iteration, path, dumps(hparams or {}), time.time()))

    def record_best_checkpoint(self, trial_id: str, seq: int, iteration: int, path: str, metric: str, value: float,
                               hparams: dict | None) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO best_checkpoints (trial_id, seq, iteration, path, metric, value, hparams, time) "
                "VALUES (?,?,?,?,?,?,?,?)", (trial_id, seq, iteration, path, metric, value, dumps(hparams or {}),
                                             time.time()))

    def record_alert(self, a: dict) -> None:
        """One alert delivery (sent, failed or dropped); the destination comes already masked."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO alerts (time, kind, trial_id, iteration, detector, severity, destination, status, "
                "attempts, error, title, items) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (a["time"], a["kind"], a.get("trial_id"), a.get("iteration"), a.get("detector"), a.get("severity"),
                 a["destination"], a["status"], a.get("attempts", 0), a.get("error"), a.get("title"),
                 a.get("items", 1)))

    def upsert_node(self, node_id: str, address: str | None, alive: bool, info: dict) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO nodes (node_id, address, alive, last_seen, info) VALUES (?,?,?,?,?) "
                "ON CONFLICT(node_id) DO UPDATE SET address=excluded.address, alive=excluded.alive, "
                "last_seen=excluded.last_seen, info=excluded.info",
                (node_id, address, int(alive), time.time(), dumps(info)))

    # ---- reads (decoded: JSON columns as Python values; ``raw=True``: as stored, for readers that decode
    # leniently, like the dashboard polling a live run)
    @classmethod
    def open_readonly(cls, path: str | Path) -> "Store":
        """A read-only view of a store another process may be writing (``supervise report``, the dashboard);
        raises ``sqlite3.Error`` when the file is not a supervisor store (yet)."""
        st = cls(path, readonly=True)
        try:
            st.db.execute("SELECT 1 FROM reports LIMIT 1").fetchall()  # the schema is there
        except sqlite3.Error:
            st.close()
            raise
        return st

    def _rows(self, sql: str, args: tuple = ()) -> list[dict]:
        return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def _decode(self, rows: list[dict], json_cols: tuple[str, ...], raw: bool) -> list[dict]:
        if not raw:
            for r in rows:
                for c in json_cols:
                    r[c] = loads(r[c])
        return rows

    def data_version(self) -> int:
        """Changes when another connection commits (a cheap "anything new?" for pollers)."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def runs(self) -> list[dict]:
        return self._rows("SELECT * FROM runs ORDER BY started")

    def trials(self) -> list[dict]:
        return self._rows("SELECT * FROM trials ORDER BY started, trial_id")

    def trial(self, trial_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM trials WHERE trial_id=?", (trial_id,))
        return rows[0] if rows else None

    def reports(self, trial_id: str, since_seq: int = -1, raw: bool = False, limit: int = -1) -> list[dict]:
        rows = self._rows("SELECT * FROM reports WHERE trial_id=? AND seq>? ORDER BY seq LIMIT ?",
                          (trial_id, since_seq, limit))
        return self._decode(rows, ("metrics",), raw)

    def latest_report(self, trial_id: str, raw: bool = False) -> dict | None:
        rows = self._rows("SELECT * FROM reports WHERE trial_id=? ORDER BY seq DESC LIMIT 1", (trial_id,))
        return self._decode(rows, ("metrics",), raw)[0] if rows else None

    def reports_after(self, rowid: int, limit: int = -1, raw: bool = False) -> list[dict]:
        """Reports of every trial stored after ``rowid``, in storing order, each with its ``rid``."""
        rows = self._rows("SELECT rowid AS rid, * FROM reports WHERE rowid>? ORDER BY rowid LIMIT ?", (rowid, limit))
        return self._decode(rows, ("metrics",), raw)

    def last_report_rowid(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(rowid), 0) FROM reports").fetchone()[0]

    def last_report_times(self) -> dict[str, float]:
        """Per trial, the time of its newest report."""
        return {r[0]: r[1] for r in self.db.execute("SELECT trial_id, MAX(time) FROM reports GROUP BY trial_id")}

    def _events(self, table: str, trial_id: str | None, json_cols: tuple[str, ...], raw: bool) -> list[dict]:
        """Findings or interventions, of one trial (in seq order) or all (in time order)."""
        if trial_id is None:
            rows = self._rows(f"SELECT * FROM {table} ORDER BY time, id")
        else:
            rows = self._rows(f"SELECT * FROM {table} WHERE trial_id=? ORDER BY seq, id", (trial_id,))
        return self._decode(rows, json_cols, raw)

    def findings(self, trial_id: str | None = None, raw: bool = False) -> list[dict]:
        return self._events("findings", trial_id, ("details",), raw)

    def interventions(self, trial_id: str | None = None, raw: bool = False) -> list[dict]:
        return self._events("interventions", trial_id, ("params", "applied"), raw)

    def findings_after(self, finding_id: int, limit: int = -1, trials_only: bool = False,
                       exclude_detectors: Iterable[str] = (), raw: bool = False) -> list[dict]:
        """Findings stored after id ``finding_id``, in id order; ``trials_only`` drops cluster-wide ones."""
        ex = tuple(exclude_detectors)
        sql = "SELECT * FROM findings WHERE id>?"
        if trials_only:
            sql += " AND trial_id IS NOT NULL"
        if ex:
            sql += f" AND detector NOT IN ({','.join('?' * len(ex))})"
        rows = self._rows(sql + " ORDER BY id LIMIT ?", (finding_id, *ex, limit))
        return self._decode(rows, ("details",), raw)

    def interventions_after(self, iv_id: int, limit: int = -1, raw: bool = False) -> list[dict]:
        """Interventions stored after id ``iv_id``, in id order (``iv_id=0``: all of them)."""
        rows = self._rows("SELECT * FROM interventions WHERE id>? ORDER BY id LIMIT ?", (iv_id, limit))
        return self._decode(rows, ("params", "applied"), raw)

    def newest_findings(self, limit: int, raw: bool = False) -> list[dict]:
        """The ``limit`` newest findings, newest first."""
        rows = self._rows("SELECT * FROM findings ORDER BY id DESC LIMIT ?", (limit,))
        return self._decode(rows, ("details",), raw)

    def newest_interventions(self, limit: int, raw: bool = False) -> list[dict]:
        """The ``limit`` newest interventions, newest first."""
        rows = self._rows("SELECT * FROM interventions ORDER BY id DESC LIMIT ?", (limit,))
        return self._decode(rows, ("params", "applied"), raw)

    def last_finding_id(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(id), 0) FROM findings").fetchone()[0]

    def intervention_states(self) -> dict[int, tuple]:
        """Per intervention id, ``(outcome, verified)``: what changes after it is decided."""
        return {r[0]: tuple(r[1:]) for r in self.db.execute("SELECT id, outcome, verified FROM interventions")}

    def newest_finding_per_trial(self, raw: bool = False) -> dict[str, dict]:
        rows = self._rows("SELECT * FROM findings WHERE id IN (SELECT MAX(id) FROM findings "
                          "WHERE trial_id IS NOT NULL GROUP BY trial_id)")
        return {r["trial_id"]: r for r in self._decode(rows, ("details",), raw)}

    def severity_counts_per_trial(self) -> dict[str, dict]:
        """Per trial, ``{"critical": n, "warning": n}`` of its findings."""
        return {r["trial_id"]: r for r in self._rows(
            "SELECT trial_id, SUM(severity='critical') AS critical, SUM(severity='warning') AS warning "
            "FROM findings WHERE trial_id IS NOT NULL GROUP BY trial_id")}

    def intervention_counts_per_trial(self) -> dict[str, int]:
        return {r["trial_id"]: r["n"] for r in self._rows(
            "SELECT trial_id, COUNT(*) AS n FROM interventions GROUP BY trial_id")}

    def undelivered(self, trial_id: str, seq: int) -> list[dict]:
        """Actions decided at ``seq`` that no trial has said it applied yet (alerts need no applying)."""
        rows = self._rows("SELECT id, action, params, reason, detector, iteration, module FROM interventions "
                          "WHERE trial_id=? AND seq=? AND applied IS NULL AND action!='alert' ORDER BY id",
                          (trial_id, seq))
        return self._decode(rows, ("params",), False)

    def checkpoints(self, trial_id: str, raw: bool = False) -> list[dict]:
        rows = self._rows("SELECT * FROM checkpoints WHERE trial_id=? ORDER BY seq", (trial_id,))
        return self._decode(rows, ("hparams",), raw)

    def best_checkpoint(self, trial_id: str) -> dict | None:
        try:
            rows = self._rows("SELECT * FROM best_checkpoints WHERE trial_id=?", (trial_id,))
        except sqlite3.OperationalError:  # a store written before this table existed, opened read-only
            return None
        return self._decode(rows, ("hparams",), False)[0] if rows else None

    def metric_series(self, trial_id: str, name: str) -> list[tuple[int, float]]:
        """(iteration, value) of one metric over a trial's reports, where it was reported (the evaluation
        return: only on evaluation iterations)."""
        return [(r[0], r[1]) for r in self.db.execute(
            """SELECT iteration, json_extract(metrics, '$."' || ? || '"') AS v FROM reports WHERE trial_id=? """
            "AND v IS NOT NULL ORDER BY seq", (name, trial_id))]

    def alerts(self) -> list[dict]:
        try:
            return self._rows("SELECT * FROM alerts ORDER BY id")
        except sqlite3.OperationalError:
            return []

    def nodes(self, raw: bool = False) -> list[dict]:
        rows = self._rows("SELECT * FROM nodes ORDER BY node_id")
        return self._decode(rows, ("info",), raw)
