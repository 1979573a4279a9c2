"""What the dashboard shows, read from run folders (SQLite, read-only) and, live, from the supervisor actor.

``RunView`` watches one run folder's ``supervisor.db`` without ever writing
to it: a cheap ``PRAGMA data_version`` check per tick, and only when another
connection committed, queries for what is new since the last tick (reports
and findings by rowid/id, interventions whose outcome changed, trial rows).
``Hub`` merges the views (one for ``--run``; one per run the actor knows in
live mode), keeps a bounded log of events for server-sent events, and
answers the JSON API.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from supervisor.detectors.metrics_missing import MetricsMissing, blind_detectors
from supervisor.jsonsafe import js_name, json_safe
from supervisor.report.build import compute_account
from supervisor.store import Store, loads

log = logging.getLogger(__name__)

ALERT_LIMIT = 300          # newest findings/interventions kept for the feed
EVENT_LOG = 5000           # events kept for reconnecting clients (Last-Event-ID)
NEW_ROWS_PER_TICK = 5000   # bound on what one tick reads


def to_json(o: Any) -> str:
    """Non-finite floats as the strings "NaN", "Infinity", "-Infinity" (the client maps them back)."""
    return json.dumps(json_safe(o, js_name), allow_nan=False, separators=(",", ":"), default=str)


def _json_col(s: Any) -> Any:
    if not isinstance(s, str):
        return s
    try:
        return loads(s)
    except ValueError:
        return None


def _crash(findings: list[dict]) -> dict | None:
    from supervisor.report.build import _crash as crash_of

    return crash_of(findings)


def _finding(row: dict) -> dict:
    out = {"id": row["id"], "kind": "finding", "trial_id": row["trial_id"], "seq": row["seq"],
           "iteration": row["iteration"], "detector": row["detector"], "severity": row["severity"],
           "metric": row["metric"], "value": row["value"], "threshold": row["threshold"],
           "message": row["message"], "time": row["time"], "module": row.get("module")}
    if row["detector"] == MetricsMissing.name:  # which detectors it left blind: the trial page lists them
        out["blind"] = {b["detector"]: b["metrics"] for b in blind_detectors([row])}
    return out


def _intervention(row: dict) -> dict:
    params = _json_col(row["params"]) or {}
    if isinstance(params, dict):
        params = {k: v for k, v in params.items() if k != "hparams"}
    return {"id": row["id"], "kind": "intervention", "trial_id": row["trial_id"], "seq": row["seq"],
            "iteration": row["iteration"], "action": row["action"], "params": params, "reason": row["reason"],
            "detector": row["detector"], "outcome": row["outcome"],
            "verified": None if row["verified"] is None else bool(row["verified"]), "time": row["time"],
            "module": row.get("module")}


def _compute(row: dict, final: Any, spec: Any) -> dict | None:
    """The report's compute account of one store trial row (None when the row is too damaged to count)."""
    trial = {"final": json_safe(final) if isinstance(final, dict) else {}, "iterations": row["iterations"],
             "status": row["status"]}
    try:
        return compute_account(trial, spec if isinstance(spec, dict) else {})
    except (AttributeError, TypeError, ValueError, OverflowError):  # a damaged row or spec: no account
        return None


class RunView:
    """One run folder's store, read-only, polled for changes."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.db_path = self.run_dir / "supervisor.db" if not str(run_dir).endswith(".db") else Path(run_dir)
        self.store: Store | None = None
        self.lock = threading.Lock()
        self.data_version: int | None = None
        self.report_rowid = 0
        self.finding_id = 0
        self.iv_state: dict[int, tuple] = {}
        self.last_time: dict[str, float] = {}
        self.error: str | None = None
        # cached lists, refreshed on change
        self.runs: list[dict] = []
        self.trials: list[dict] = []
        self.nodes: list[dict] = []
        self.alerts: deque = deque(maxlen=ALERT_LIMIT)

    # ------------------------------------------------------------------ plumbing
    def _open(self) -> bool:
        if self.store is not None:
            return True
        if not self.db_path.is_file():
            self.error = f"waiting for {self.db_path} (not there yet, or not visible from this machine)"
            return False
        try:
            st = Store.open_readonly(self.db_path)
        except sqlite3.Error as e:
            self.error = f"cannot read {self.db_path}: {e}"
            return False
        try:
            report_rowid = st.last_report_rowid()
            last_time = st.last_report_times()
            rows = st.newest_findings(ALERT_LIMIT, raw=True)
            ivs = st.newest_interventions(ALERT_LIMIT, raw=True)
            finding_id = st.last_finding_id()
            iv_state = st.intervention_states()
        except sqlite3.Error as e:  # damaged past its first pages
            st.close()
            self.error = f"cannot read {self.db_path}: {e}"
            return False
        self.store, self.error = st, None
        self.report_rowid, self.last_time, self.finding_id, self.iv_state = report_rowid, last_time, finding_id, iv_state
        items = [_finding(r) for r in rows] + [_intervention(r) for r in ivs]
        items.sort(key=lambda a: (a["time"] or 0, a["id"]))
        self.alerts.extend(items)
        self._refresh_lists()
        return True

    def close(self) -> None:
        with self.lock:
            if self.store is not None:
                self.store.close()
                self.store = None

    def _refresh_lists(self) -> None:
        st = self.store
        runs = st.runs()
        self.runs = [{"run_id": r["run_id"], "name": r["name"], "kind": r["kind"], "status": r["status"],
                      "started": r["started"], "ended": r["ended"], "run_dir": str(self.run_dir)}
                     for r in runs]
        specs = {r["run_id"]: _json_col(r["spec"]) for r in runs}
        newest_spec = specs.get(runs[-1]["run_id"]) if runs else None  # what `supervise report` reads
        newest = {tid: _finding(r) for tid, r in st.newest_finding_per_trial(raw=True).items()}
        counts = st.severity_counts_per_trial()
        ivn = st.intervention_counts_per_trial()
        trials = []
        for t in st.trials():
            tid = t["trial_id"]
            final = _json_col(t["final"]) or {}
            c = counts.get(tid) or {}
            trials.append({
                "trial_id": tid, "run_id": t["run_id"], "status": t["status"], "node_id": t["node_id"],
                "iteration": t["iterations"], "seq": t["last_seq"], "health_score": t["health_score"],
                "worst_severity": t["worst_severity"],
                "return": final.get("episode_return_mean") if isinstance(final, dict) else None,
                "started": t["started"], "ended": t["ended"], "updated": self.last_time.get(tid),
                "newest_finding": newest.get(tid), "critical": c.get("critical") or 0,
                "warning": c.get("warning") or 0, "interventions": ivn.get(tid, 0),
                "compute": _compute(t, final, specs.get(t["run_id"]) or newest_spec),
                "run_dir": str(self.run_dir)})
        self.trials = trials
        nodes = []
        for n in st.nodes(raw=True):
            info = _json_col(n["info"])
            nodes.append({"node_id": n["node_id"], "address": n["address"], "alive": bool(n["alive"]),
                          "last_seen": n["last_seen"], "info": info if isinstance(info, dict) else {}})
        self.nodes = nodes

    # ------------------------------------------------------------------ polling
    def poll(self) -> list[tuple[str, dict]]:
        """Events since the last poll: ("report"|"finding"|"intervention", data). Lists are refreshed too."""
        with self.lock:
            opened_now = self.store is None
            if not self._open():
                return []
            st = self.store
            try:
                dv = st.data_version()
                if dv == self.data_version and not opened_now:
                    return []
                self.data_version = dv
                events: list[tuple[str, dict]] = []
                for r in st.reports_after(self.report_rowid, NEW_ROWS_PER_TICK, raw=True):
                    self.report_rowid = r["rid"]
                    self.last_time[r["trial_id"]] = r["time"]
                    events.append(("report", {"trial_id": r["trial_id"], "seq": r["seq"], "iteration": r["iteration"],
                                              "time": r["time"], "metrics": _json_col(r["metrics"]) or {}}))
                for r in st.findings_after(self.finding_id, NEW_ROWS_PER_TICK, raw=True):
                    self.finding_id = r["id"]
                    f = _finding(r)
                    self.alerts.append(f)
                    events.append(("finding", f))
                for r in st.interventions_after(0, raw=True):
                    key = (r["outcome"], r["verified"])
                    old = self.iv_state.get(r["id"])
                    if old == key:
                        continue
                    self.iv_state[r["id"]] = key
                    iv = _intervention(r)
                    if old is None:
                        self.alerts.append(iv)
                    else:
                        for i, a in enumerate(self.alerts):
                            if a["kind"] == "intervention" and a["id"] == iv["id"]:
                                self.alerts[i] = iv
                    events.append(("intervention", iv))
                self._refresh_lists()
                return events
            except sqlite3.Error as e:
                self.error = f"read error: {e}"
                log.warning("reading %s: %s", self.db_path, e)
                return []

    # ------------------------------------------------------------------ trial detail
    def has_trial(self, trial_id: str) -> bool:
        return any(t["trial_id"] == trial_id for t in self.trials)

    def trial_detail(self, trial_id: str, since_seq: int = -1, limit: int = -1) -> dict | None:
        """One trial; its reports one page at a time (seq > since_seq, at most ``limit``; -1: all)."""
        with self.lock:
            if self.store is None and not self._open():
                return None
            row = self.store.trial(trial_id)
            if row is None:
                return None
            reports = self.store.reports(trial_id, since_seq, raw=True, limit=limit + 1 if limit > 0 else -1)
            more = 0 < limit < len(reports)
            reports = reports[:limit] if more else reports
            rows = self.store.findings(trial_id, raw=True)
            findings = [_finding(r) for r in rows]
            ivs = [_intervention(r) for r in self.store.interventions(trial_id, raw=True)]
            cps = [{"seq": c["seq"], "iteration": c["iteration"], "path": c["path"], "time": c["time"]}
                   for c in self.store.checkpoints(trial_id, raw=True)]
        cols: dict[str, list] = {"seq": [], "iteration": [], "time": []}
        metrics: dict[str, list] = {}
        for i, r in enumerate(reports):
            cols["seq"].append(r["seq"])
            cols["iteration"].append(r["iteration"])
            cols["time"].append(r["time"])
            m = _json_col(r["metrics"]) or {}
            for k, v in m.items():
                metrics.setdefault(k, [None] * i).append(v)
            for k, arr in metrics.items():
                if len(arr) < i + 1:
                    arr.append(None)
        summary = next((t for t in self.trials if t["trial_id"] == trial_id), None)
        health = _json_col(row["health"]) or {}
        crash = _crash([{**f, "details": _json_col(f.get("details")) or {}} for f in rows])
        return {"trial": summary or {"trial_id": trial_id, "status": row["status"]},
                "config": _json_col(row["config"]) or {}, "overrides": _json_col(row["overrides"]) or {},
                "health": health if isinstance(health, dict) else {},
                "reports": {**cols, "metrics": metrics}, "findings": findings, "interventions": ivs,
                "blind": blind_detectors(rows),
                "checkpoints": cps, "history": True, "crash": crash,
                "page": {"since_seq": since_seq, "limit": limit, "more": more,
                         "next_since_seq": cols["seq"][-1] if more else None}}

    def latest_metric(self, trial_id: str, name: str) -> float | None:
        with self.lock:
            if self.store is None:
                return None
            r = self.store.latest_report(trial_id, raw=True)
        m = _json_col(r["metrics"]) if r else None
        v = m.get(name) if isinstance(m, dict) else None
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


class StorageRunView(RunView):
    """A run read from its storage URI (``supervise dashboard --run s3://...``): the snapshot of its store
    that the supervisor copies there, fetched again whenever it changes (checked every ``refresh_s``).
    The cursors carry over from one snapshot to the next: only what is new is published.

    Args:
        uri: the run's storage.
        cache_dir: a local folder for the downloaded snapshots.
    """

    def __init__(self, uri: str, cache_dir: str | Path, refresh_s: float = 5.0):
        from supervisor.storage import Storage, display

        super().__init__(Path(cache_dir) / "none.db")
        self.uri, self.label = uri, display(uri)
        self.run_dir = self.label  # what the lists name the run by
        self.storage = Storage(uri)
        self.cache_dir, self.refresh_s = Path(cache_dir), refresh_s
        self._checked = float("-inf")
        self._seen: tuple | None = None  # (mtime, size) of the snapshot we hold
        self._n = 0

    def poll(self) -> list[tuple[str, dict]]:
        self.refresh()
        return super().poll()

    def _open(self) -> bool:
        return (self.store is not None or self._seen is not None) and super()._open()

    def refresh(self) -> None:
        """Fetch the snapshot if it changed since the last one; never raises (the error is shown)."""
        import pyarrow.fs as pafs

        from supervisor.storage import SNAPSHOT_NAME, one_line

        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        try:
            info = self.storage.info(SNAPSHOT_NAME)
            if info.type != pafs.FileType.File:
                if self.store is None:
                    self.error = f"waiting for {self.label}/{SNAPSHOT_NAME} (no snapshot of the store there yet)"
                return
            key = (info.mtime_ns, info.size)
            if key == self._seen:
                return
            self._n += 1
            new = self.storage.download(self.cache_dir / f"snapshot-{self._n}.db", SNAPSHOT_NAME)
            fresh = Store.open_readonly(new)
        except Exception as e:  # the storage is unreachable for now: keep showing what we have
            self.error = f"cannot read {self.label}: {one_line(e)}"
            return
        with self.lock:
            old, old_path = self.store, self.db_path
            self.db_path, self._seen = new, key
            if old is None:
                fresh.close()  # _open reads the first one, cursors and all
            else:
                self.store, self.data_version, self.error = fresh, None, None
                old.close()
                old_path.unlink(missing_ok=True)


class LiveSource(Protocol):
    """What live mode reads; ``actors.live_link.LiveLink`` (the Ray side) provides it for a running supervisor."""

    def snapshot(self) -> dict | None: ...

    def ray_nodes(self) -> list[dict]: ...


class Hub:
    """Merges the views, diffs the merged lists, logs events for SSE clients."""

    def __init__(self, mode: str, source: str, views: list[RunView] | None = None, live: LiveSource | None = None,
                 poll_s: float = 0.5, live_poll_s: float = 2.0):
        self.mode, self.source = mode, source
        self.views: dict[str, RunView] = {str(v.run_dir): v for v in (views or [])}
        self.live = live
        self.poll_s, self.live_poll_s = poll_s, live_poll_s
        self.cond = threading.Condition()
        self.events: deque = deque(maxlen=EVENT_LOG)
        self.next_id = 1
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self._trials: dict[str, dict] = {}
        self._nodes: list[dict] = []
        self._runs: list[dict] = []
        self._snap: dict | None = None
        self._ray_nodes: list[dict] = []
        self._live_at = 0.0
        self.supervisor_ok: bool | None = None
        self.ticks = 0

    # ------------------------------------------------------------------ loop
    def start(self) -> None:
        self.tick()
        self.thread = threading.Thread(target=self._loop, name="dashboard-poll", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        if self.thread:
            self.thread.join(timeout=5)
        for v in list(self.views.values()):
            v.close()

    def _loop(self) -> None:
        while not self.stopping.wait(self.poll_s):
            try:
                self.tick()
            except Exception:  # never let the poller die
                log.exception("dashboard poll failed")

    def tick(self) -> None:
        if self.live is not None and time.monotonic() - self._live_at >= self.live_poll_s:
            self._live_at = time.monotonic()
            self._poll_live()
        evs: list[tuple[str, dict]] = []
        for key, v in list(self.views.items()):
            for typ, data in v.poll():
                data["run_dir"] = key
                evs.append((typ, data))
        trials = {t["trial_id"]: t for t in self._merged_trials()}
        for tid, t in trials.items():
            if self._trials.get(tid) != t:
                evs.append(("trial", t))
        self._trials = trials
        nodes = self._merged_nodes()
        if nodes != self._nodes:
            self._nodes = nodes
            evs.append(("nodes", {"nodes": nodes}))
        runs = self._merged_runs()
        if runs != self._runs:
            self._runs = runs
            evs.append(("runs", {"runs": runs, "supervisor": self.supervisor_ok}))
        if evs:
            self.publish(evs)
        self.ticks += 1

    def _poll_live(self) -> None:
        snap = self.live.snapshot()
        self.supervisor_ok = snap is not None
        if snap is not None:
            self._snap = snap
            for r in snap.get("runs") or []:
                d = r.get("run_dir")
                if d and d not in self.views:
                    self.views[d] = RunView(d)
        self._ray_nodes = self.live.ray_nodes()

    def _merged_trials(self) -> list[dict]:
        out: dict[str, dict] = {}
        for v in self.views.values():
            for t in v.trials:
                out[t["trial_id"]] = t
        for s in (self._snap or {}).get("trials") or []:  # live state the stores cannot show (e.g. remote run_dir)
            tid = s.get("trial_id")
            if tid is None or tid in out:
                continue
            h = s.get("health") or {}
            out[tid] = {"trial_id": tid, "run_id": s.get("run_id"), "status": s.get("status"),
                        "node_id": s.get("node_id"), "iteration": s.get("iteration"), "seq": s.get("seq"),
                        "health_score": h.get("score"), "worst_severity": h.get("worst_severity"),
                        "return": s.get("episode_return_mean"), "started": None, "ended": None, "updated": None,
                        "newest_finding": None, "critical": 0, "warning": 0, "interventions": 0, "compute": None,
                        "run_dir": None}
        return list(out.values())

    def _merged_nodes(self) -> list[dict]:
        out: dict[str, dict] = {}
        for v in self.views.values():
            for n in v.nodes:
                out.setdefault(n["node_id"], n)
        snap_nodes = (self._snap or {}).get("nodes")
        if isinstance(snap_nodes, list):
            for n in snap_nodes:
                if isinstance(n, dict) and n.get("node_id") and n["node_id"] not in out:
                    info = {k: v for k, v in n.items() if k not in ("node_id", "address", "alive", "last_seen")}
                    out[n["node_id"]] = {"node_id": n["node_id"], "address": n.get("address"),
                                         "alive": bool(n.get("alive", True)), "last_seen": n.get("last_seen"),
                                         "info": info}
        if not out:
            for n in self._ray_nodes:
                out[n["node_id"]] = n
        return sorted(out.values(), key=lambda n: str(n["node_id"]))

    def _merged_runs(self) -> list[dict]:
        out = []
        for key, v in self.views.items():
            if v.runs:
                out.extend(v.runs)
            else:
                snap_run = next((r for r in (self._snap or {}).get("runs") or [] if r.get("run_dir") == key), None)
                out.append({"run_id": (snap_run or {}).get("run_id"), "name": (snap_run or {}).get("name")
                            or Path(key).name, "kind": (snap_run or {}).get("kind"), "status": "waiting",
                            "started": None, "ended": None, "run_dir": key, "error": v.error})
        return out

    # ------------------------------------------------------------------ events
    def publish(self, evs: list[tuple[str, dict]]) -> None:
        with self.cond:
            for typ, data in evs:
                self.events.append((self.next_id, typ, to_json(data)))
                self.next_id += 1
            self.cond.notify_all()

    def last_event_id(self) -> int:
        with self.cond:
            return self.next_id - 1

    def wait_events(self, after: int, timeout: float) -> list[tuple[int, str, str]] | None:
        """Events with id > after (waiting up to timeout); None when the client is too far behind (reset)."""
        with self.cond:
            if after > self.next_id - 1:
                return None
            if self.events and after < self.events[0][0] - 1:
                return None
            if after >= self.next_id - 1:
                self.cond.wait(timeout)
            return [e for e in self.events if e[0] > after]

    # ------------------------------------------------------------------ API
    def state(self) -> dict:
        alerts: list[dict] = []
        for key, v in list(self.views.items()):
            with v.lock:
                items = list(v.alerts)
            alerts.extend({**a, "run_dir": key} for a in items)
        alerts.sort(key=lambda a: (a.get("time") or 0, a["id"]))
        return {"mode": self.mode, "source": self.source, "runs": self._runs, "trials": list(self._trials.values()),
                "nodes": self._nodes, "alerts": alerts[-ALERT_LIMIT:], "supervisor": self.supervisor_ok,
                "errors": [v.error for v in self.views.values() if v.error], "cursor": self.last_event_id(),
                "now": time.time()}

    def view_of(self, trial_id: str) -> RunView | None:
        for v in list(self.views.values()):
            if v.has_trial(trial_id):
                return v
        return None

    def trial(self, trial_id: str, since_seq: int = -1, limit: int = -1) -> dict | None:
        v = self.view_of(trial_id)
        if v is not None:
            d = v.trial_detail(trial_id, since_seq, limit)
            if d is not None:
                d["run_dir"] = str(v.run_dir)
                return d
        t = self._trials.get(trial_id)
        if t is None:
            return None
        return {"trial": t, "config": {}, "overrides": {}, "health": {},
                "reports": {"seq": [], "iteration": [], "time": [], "metrics": {}}, "findings": [],
                "interventions": [], "checkpoints": [], "history": False, "run_dir": None, "blind": [],
                "page": {"since_seq": since_seq, "limit": limit, "next_since_seq": None, "more": False}}

