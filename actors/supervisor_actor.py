"""The supervisor actor: one named, detached actor per cluster, on the head node.

Two layers:

* :class:`SupervisorService`: the state and the logic, single-threaded. It
  serves several runs at once (each an ``Engine`` with its own SQLite store in
  its own run folder), sends their alerts, closes the runs whose driver died
  (``lost``) and stores what the cluster watch finds.
* :class:`SupervisorActorImpl`: the Ray actor around it. Its methods are
  coroutines on the actor's event loop, which only receives calls and hands
  the work on: every engine and store call runs on one engine thread (the
  store's single writer, in call order); rebuilding a trial from the store
  (after an actor restart) reads on loader threads; the cluster watch polls
  Ray from its own thread; alert deliveries and the flush at a run's end wait
  on theirs. So a report never waits behind ``ray.nodes()``, a rebuild of
  another trial, or an alert destination.

Ray restarts the actor if it dies (``max_restarts=-1``); it then rebuilds each
trial's state from the store when the trial next registers or reports (the
driver's and the trials' calls carry what it needs to reopen their run).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from supervisor import modules
from supervisor.alerts import AlertSender
from supervisor.config import SupervisorConfig
from supervisor.engine import Engine, json_or_empty
from supervisor.storage import StoreSnapshots, store_snapshots
from supervisor.store import Store
from supervisor.verdict import Verdict

from actors import compat, run_registry

log = logging.getLogger(__name__)

NAMESPACE = "rl_supervisor"
ACTOR_NAME = "supervisor"
LOST = "lost"  # the trial and run status of a run whose driver went away without closing it


class StoreUnavailable(RuntimeError):
    """A report was not stored (the run's database could not commit); the caller must send it again."""


def _run_entry(run_id: str, spec: dict) -> dict:
    """A run as ``snapshot`` lists it: its id, folder, name and kind."""
    return {"run_id": run_id, **{k: v for k, v in spec.items() if k in ("run_dir", "name", "kind")}}


class SupervisorService:
    """The actor's state and logic. Not thread-safe by design: in the actor every call runs on its one
    engine thread; in a test, call it from one thread."""

    def __init__(self):
        self.runs: dict[str, Engine] = {}
        self.run_of: dict[str, str] = {}  # trial_id -> run_id
        self.specs: dict[str, dict] = {}
        self.alerts: dict[str, AlertSender] = {}  # per run with ``supervisor.alerts``: sent off the report path
        self.last_seen: dict[str, float] = {}  # run_id -> time of the newest call about it (lost runs)
        self.node_written: dict[str, dict[str, tuple[float, bool]]] = {}  # run -> node -> (time, alive) stored
        self.started = time.time()
        # The final state of the trials of closed runs, newest kept: `supervise status` still lists a run
        # that just ended, and the actor's memory stays bounded however many runs it serves.
        self.closed_trials: deque = deque(maxlen=256)
        # finished runs, by their folder: the dashboard still opens their history (reports, findings, charts)
        self.closed_runs: deque = deque(maxlen=64)
        self.snapshots: dict[str, StoreSnapshots] = {}  # runs whose storage is not their folder: copies of the store
        self.trial_handles: dict[str, bytes] = {}  # trial id -> its Tune actor, pickled (a hung one is ended through it)
        self.to_end: deque = deque()  # (trial id, pickled handle) of hung trials to end (end_hung)
        # Trials found hung, each kept for its own hang bound: hangs that far apart on one node are "at
        # once" (their iterations started at different times); and the nodes already found (one finding
        # until their hangs age out).
        self.recent_hung: deque = deque(maxlen=4096)
        self.hung_nodes: set[str] = set()
        # Set by the actor: the Prometheus counters (findings and interventions are counted as their
        # verdicts go out), and how to run a function on the engine thread (alert deliveries are
        # recorded there, by the store's one writer).
        self.metrics = None
        self.defer: Callable[[Callable[[], Any]], Any] | None = None

    def _touch(self, run_id: str) -> None:
        if run_id in self.runs:
            self.last_seen[run_id] = time.time()

    # ------------------------------------------------------------------ runs
    def open_run(self, run_id: str, run_dir: str, name: str, kind: str, settings: dict | None = None,
                 spec: dict | None = None, profile: dict | None = None, alert_env: dict | None = None,
                 storage: str | None = None, store: Store | None = None) -> dict:
        """Attach a run (idempotent; the driver calls it again after an actor restart). ``alert_env``: the
        driver's values of the ``${VAR}`` names in alert URLs (kept in memory only, never stored).
        ``store``: the run's store, already opened (the actor opens it off the engine thread); closed here
        if the run is open already."""
        if run_id in self.runs and store is not None:
            store.close()
        if run_id not in self.runs:
            store = store or open_store(run_dir)
            store.upsert_run(run_id, name, kind, "running", spec)
            cfg = _validated(settings or {})
            self.runs[run_id] = Engine(store, cfg, profile)
            self.specs[run_id] = {"run_dir": run_dir, "name": name, "kind": kind, "settings": settings or {},
                                  "spec": spec, "profile": profile, "started": time.time(), "storage": storage}
            snaps = store_snapshots(run_dir, storage, cfg.store_snapshot_s)
            if snaps is not None:
                self.snapshots[run_id] = snaps
            if cfg.alerts:
                if self.defer is not None:  # recorded by the engine thread, on the run's own connection
                    def record(a, run_id=run_id, run_dir=run_dir):
                        self.defer(lambda: self._record_alert(run_id, run_dir, a))
                    rec = None
                else:  # its own connection: deliveries are recorded from the sender's thread
                    rec = Store(Path(run_dir) / "supervisor.db")
                    record = rec.record_alert
                sender = AlertSender(cfg.alerts, record, run=name, dashboard_url=cfg.dashboard_url,
                                     quiet=cfg.alert_quiet, env=alert_env)
                sender.record_store = rec
                self.alerts[run_id] = sender
        elif alert_env and run_id in self.alerts:
            self.alerts[run_id].env.update(alert_env)
        self._touch(run_id)
        return {"run_id": run_id, "pid": _pid()}

    def _record_alert(self, run_id: str, run_dir: str, a: dict) -> None:
        """One alert delivery, into its run's store (opened for it when the run has closed meanwhile)."""
        eng = self.runs.get(run_id)
        if eng is not None:
            eng.store.record_alert(a)
            return
        st = Store(Path(run_dir) / "supervisor.db")
        try:
            st.record_alert(a)
        finally:
            st.close()

    def end_run(self, run_id: str, status: str, close_store: bool = True) -> tuple[AlertSender | None, Store | None]:
        """The run is over: record it and forget it (its engine, database connection, checkpoint thread,
        trials and caches), so that a long-lived actor serving many runs stays the same size. Returns its
        alert sender, the run-end summary queued, for the caller to flush and close, and (``close_store``
        False) its store, for the caller to close: both may wait, so the actor does it off this thread."""
        run_registry.withdraw(run_id)  # a checkpoint of this run restored later trains unsupervised
        eng = self.runs.get(run_id)
        if eng is None:
            return None, None
        sender = self.alerts.pop(run_id, None)
        try:
            eng.flush(force=True)
            spec = self.specs[run_id]
            eng.store.upsert_run(run_id, spec["name"], spec["kind"], status, ended=time.time())
            self.closed_runs.append({**_run_entry(run_id, spec), "status": status})
            if sender is not None:
                trials = [{**t, "final_return": (json_or_empty(t.get("final")) or {}).get("episode_return_mean")}
                          for t in eng.store.trials() if t.get("run_id") == run_id]
                sender.summary(status, trials, spec.get("started"))
            self.closed_trials.extend(eng.snapshot())
            snaps = self.snapshots.get(run_id)
            if snaps is not None:
                snaps.final()  # on its own thread; the driver waits for it with wait_snapshot
                for rid in [r for r in self.snapshots if r not in self.runs and r != run_id][:-64]:
                    del self.snapshots[rid]  # bounded: the final copies nobody waited for
        finally:
            self.runs.pop(run_id, None)
            self.specs.pop(run_id, None)
            self.last_seen.pop(run_id, None)
            self.node_written.pop(run_id, None)
            for tid in [t for t, r in self.run_of.items() if r == run_id]:
                del self.run_of[tid]
            if close_store:
                eng.store.close()
        return sender, (None if close_store else eng.store)

    def close_run(self, run_id: str, status: str) -> None:
        """``end_run`` and, in this thread, wait (at most 8 s: the driver waits 10) for the run's alerts
        to go out; a dead destination is recorded as failed."""
        _close_sender(self.end_run(run_id, status)[0])

    # ------------------------------------------------------------------ trials
    def load_trial(self, run_id: str, trial_id: str, eng: Engine):
        """A trial's state rebuilt from its run's store, read on a connection of the calling thread (the
        actor's loader threads); None when the store does not know it. Changes nothing: ``adopt_trial``
        installs it on the engine thread."""
        spec = self.specs.get(run_id)
        load = getattr(eng, "load_trial", None)
        if spec is None or load is None:
            return None
        reader = Store.open_readonly(Path(spec["run_dir"]) / "supervisor.db")
        try:
            return load(trial_id, run_id, reader)
        finally:
            reader.close()

    def adopt_trial(self, run_id: str, eng: Engine, state) -> None:
        if self.runs.get(run_id) is eng and state is not None:
            eng.adopt(state)

    def register_trial(self, trial_id: str, run_id: str, node_id: str | None = None,
                       config: dict | None = None, run_info: dict | None = None) -> dict:
        if run_id not in self.runs and run_info:  # the actor restarted: trials carry what it needs to reopen
            self.open_run(run_id, **run_info)
        eng = self.runs.get(run_id)
        if eng is None:
            raise KeyError(f"run {run_id} is not open here (closed, lost, or the actor restarted): open it again")
        self.run_of[trial_id] = run_id
        self._touch(run_id)
        return eng.register_trial(trial_id, run_id, node_id, config)

    def report_batch(self, run_id: str, reports: list) -> list[dict]:
        """One verdict per report, in its wire form (``Verdict.to_dict``)."""
        eng = self.runs.get(run_id)
        if eng is None:
            return [Verdict(reported=False, unknown_run=True).to_dict() for _ in reports]
        self._touch(run_id)
        for r in reports:
            if isinstance(r, dict):
                self.run_of.setdefault(str(r.get("trial_id")), run_id)
        verdicts = eng.observe_batch(reports)
        snaps = self.snapshots.get(run_id)
        if snaps is not None:
            snaps.maybe()  # never blocks: a due snapshot runs on its own thread
        sender = self.alerts.get(run_id)
        if sender is not None:  # cheap latch bookkeeping here; sending is on the sender's thread
            for r, v in zip(reports, verdicts):
                if isinstance(r, dict) and v.findings:
                    sender.observe(str(r.get("trial_id") or "default"), v.seq,
                                   v.findings[0].get("iteration", r.get("iteration", 0)), v.findings, v.actions)
        if self.metrics:
            self._count(verdicts)
        return [v.to_dict() for v in verdicts]

    def _count(self, verdicts: list[Verdict]) -> None:
        """The findings and interventions counters, as the verdicts that carry them go out (a replay's
        verdict hands out again what was counted once)."""
        try:
            for v in verdicts:
                if v.duplicate:
                    continue
                for f in v.findings:
                    self.metrics.finding(f["detector"], f["severity"], module=f.get("module"))
                for a in v.actions:
                    self.metrics.intervention(a["action"], module=a.get("module"))
        except Exception as e:  # metrics never cost a verdict
            log.warning("finding/intervention counters not updated: %s", e)

    def record_checkpoint(self, run_id: str, trial_id: str, seq: int, iteration: int, path: str,
                          hparams: dict | None) -> dict:
        """A trial's new health-gated checkpoint; the answer acknowledges it (``{"target": path}``: the
        rollback target the trial must keep), ``unknown_run`` (reopen and resend) or ``error`` (resend)."""
        return self._record(run_id, "record_checkpoint", trial_id, seq, iteration, path, hparams)

    def record_best_checkpoint(self, run_id: str, trial_id: str, seq: int, iteration: int, path: str, metric: str,
                               value: float, hparams: dict | None) -> dict:
        """A trial's new best checkpoint; answered as ``record_checkpoint`` (``{"best": path}``)."""
        return self._record(run_id, "record_best_checkpoint", trial_id, seq, iteration, path, metric, value, hparams)

    def _record(self, run_id: str, method: str, trial_id: str, *args) -> dict:
        eng = self.runs.get(run_id)
        if eng is None:
            return {"unknown_run": True}
        self._touch(run_id)
        try:
            out = getattr(eng, method)(trial_id, *args)
        except Exception as e:  # the store could not take it (locked, disk full): the trial sends it again
            return {"error": f"{e.__class__.__name__}: {e}"}
        return out if out is not None else {"error": f"unknown trial {trial_id}"}

    def acknowledge(self, run_id: str, trial_id: str, applied: list) -> bool:
        """What a trial did with the actions it was handed (``Engine.acknowledge``). False: the run is
        unknown here (the actor restarted): the trial reopens it and sends this again."""
        eng = self.runs.get(run_id)
        if eng is None:
            return False
        self._touch(run_id)
        self.run_of.setdefault(trial_id, run_id)
        eng.acknowledge(trial_id, applied)
        return True

    def finish_trial(self, run_id: str, trial_id: str, status: str) -> str:
        self.trial_handles.pop(trial_id, None)
        eng = self.runs.get(run_id)
        self._touch(run_id)
        return eng.finish_trial(trial_id, status) if eng is not None else status

    # ---- crashes and hangs (supervisor/engine.py: Engine.crash, Engine.heartbeat, Engine.hung)
    def trial_crashed(self, run_id: str, trial_id: str, report: dict, run_info: dict | None = None) -> dict | None:
        """A trial crashed (told by the trial itself just before its process ends, or by the driver from
        Tune's error): the ``trial_crashed`` finding and the decision (``restart`` with the ladder's change,
        or ``stop`` with the cause)."""
        if run_id not in self.runs and run_info:
            self.open_run(run_id, **run_info)
        eng = self.runs.get(run_id)
        if eng is None or not isinstance(report, dict):
            return None
        self.run_of[trial_id] = run_id
        self._touch(run_id)
        out = eng.crash(trial_id, report, run_id, own_roots=tuple(report.get("own_roots") or ()))
        self._alert_event(run_id, trial_id, out)
        return json_safe_event(out)

    def trial_heartbeat(self, run_id: str, trial_id: str, beat: dict, handle=None) -> dict:
        """A trial's heartbeat (its phase and iteration; its actor handle, pickled, when it is a Tune trial:
        ``actors.heartbeat._own_actor``). A long iteration's heartbeats keep its run from counting as lost."""
        eng = self.runs.get(run_id)
        if eng is None:
            return {}
        self._touch(run_id)
        if handle is not None:
            self.trial_handles[trial_id] = handle
        return eng.heartbeat(trial_id, beat)

    def check_hung(self, now: float | None = None) -> tuple[list[dict], list[dict]]:
        """Every run's hung trials (``Engine.hung``): alerted, and ended through their Tune actor so Tune
        restarts them (a trial trained in a driver hears it in its next heartbeat's answer). Returns them
        and the node findings (many trials hung on one node within their hang bound: ``node_hung``, once
        per node until those hangs age out) for the cluster watch to store and list."""
        from supervisor.detectors.trial_hung import node_hung

        now = time.time() if now is None else now
        found, running = [], {}
        for run_id, eng in list(self.runs.items()):
            try:
                hung = eng.hung(now)
            except Exception as e:
                log.warning("hung check of run %s failed: %s", run_id, e)
                continue
            for node, n in eng.running_per_node().items():
                running[node] = running.get(node, 0) + n
            for h in hung:
                self._alert_event(run_id, h["trial_id"], h)
                handle = self.trial_handles.pop(h["trial_id"], None)
                if handle is not None:
                    self.to_end.append((h["trial_id"], handle))  # ended by end_hung, off the engine thread
                found.append(h)
                bound = float(((h.get("finding") or {}).get("details") or {}).get("bound_s") or 0.0)
                self.recent_hung.append((now + bound, h))
        self.recent_hung = deque(((until, h) for until, h in self.recent_hung if until >= now), maxlen=4096)
        recent = list({h["trial_id"]: h for _, h in self.recent_hung}.values())
        nodes = node_hung(recent, running)
        self.hung_nodes &= {f["node_id"] for f in nodes}
        new = [f for f in nodes if f["node_id"] not in self.hung_nodes]
        self.hung_nodes |= {f["node_id"] for f in new}
        return found, new

    def end_hung(self) -> list[str]:
        """End the hung trials ``check_hung`` found through their Tune actors, so Tune restarts them; the
        trial ids ended. Unpickling a trial's handle may load its trainable class (RLlib, torch: seconds), so
        the actor calls this from its housekeeping thread, never from the engine thread or the event loop."""
        ended = []
        while self.to_end:
            trial_id, handle = self.to_end.popleft()
            try:
                ray.kill(pickle.loads(handle), no_restart=True)
                ended.append(trial_id)
            except Exception as e:
                log.warning("could not end hung trial %s: %s", trial_id, e)
        return ended

    def _alert_event(self, run_id: str, trial_id: str, out: dict | None) -> None:
        sender = self.alerts.get(run_id)
        f = (out or {}).get("finding")
        if sender is None or not f:
            return
        try:
            sender.observe(trial_id, out.get("seq", 0), f.get("iteration", -1), [f], out.get("actions") or [])
        except Exception as e:
            log.warning("could not queue an alert for %s: %s", trial_id, e)

    def trial_overrides(self, run_id: str, trial_id: str) -> dict:
        eng = self.runs.get(run_id)
        st = eng.trials.get(trial_id) if eng else None
        return modules.packed(st.overrides) if st else {}  # per module when several (supervisor.modules)

    def request_action(self, trial_id: str, action: str, params: dict | None = None,
                       reason: str = "manual request") -> bool:
        run_id = self.run_of.get(trial_id)
        eng = self.runs.get(run_id) if run_id else None
        if eng is None:  # after a restart, before the trial reports again: the run whose store knows it
            eng = next((e for e in self.runs.values() if e.store.trial(trial_id) is not None), None)
        return eng.request_action(trial_id, action, params, reason) if eng else False

    def snapshot(self) -> dict:
        """Runs and live trial state, for ``supervise status`` and the dashboard."""
        return {"runs": [_run_entry(r, self.specs[r]) for r in self.runs]
                + [r for r in self.closed_runs if r["run_id"] not in self.runs],
                "trials": self.trial_snapshot()}

    def trial_snapshot(self) -> list[dict]:
        return [t for eng in self.runs.values() for t in eng.snapshot()] + list(self.closed_trials)

    def ping(self) -> dict:
        return {"pid": _pid(), "runs": list(self.runs), "uptime_s": time.time() - self.started}

    # ------------------------------------------------------------------ lost runs, periodic upkeep
    def lost_after_s(self, run_id: str) -> float:
        """How long a run may go without a call about it before it counts as lost: 10 times its trials'
        median iteration time, at least the run's ``lost_after_s``."""
        import numpy as np

        eng = self.runs[run_id]
        times = [x for st in eng.trials.values() if st.status == "running"
                 for x in st.history.series("time_this_iter_s", last=20).tolist()]
        times = [x for x in times if x == x and 0 <= x < float("inf")]
        return max(10.0 * float(np.median(times)) if times else 0.0, eng.settings.lost_after_s)

    def housekeeping(self, now: float | None = None, close_stores: bool = True) -> list[tuple]:
        """Every second or so: write the trial summary rows a quiet spell left unwritten, and close as
        ``lost`` the runs whose driver went away (no call about them for ``lost_after_s``): their running
        trials end ``lost``, their engines and connections go. Returns ``end_run``'s answer for each run
        closed (alert sender, store left to close), for the caller to finish off this thread."""
        now = time.time() if now is None else now
        out = []
        for run_id in list(self.runs):
            eng = self.runs[run_id]
            try:
                eng.flush()
            except Exception as e:
                log.warning("trial rows of run %s not written: %s", run_id, e)
            if now - self.last_seen.get(run_id, now) <= self.lost_after_s(run_id):
                continue
            log.warning("run %s: nothing heard for %.0f s, its driver is gone: closed as lost", run_id,
                        now - self.last_seen[run_id])
            try:
                for st in list(eng.trials.values()):
                    if st.status == "running":
                        eng.finish_trial(st.trial_id, LOST)
            except Exception as e:
                log.warning("run %s: trials not all closed as lost: %s", run_id, e)
            out.append(self.end_run(run_id, LOST, close_stores))
        return out

    # ------------------------------------------------------------------ the cluster watch's side
    def trial_times(self, settings) -> dict:
        """Recent iteration times of the running trials, per run (only runs with enough peers to judge)."""
        out = {}
        need = settings.straggler_min_peers + 1
        for run_id, eng in self.runs.items():
            running = {tid: st for tid, st in eng.trials.items() if st.status == "running"}
            if len(running) < need:
                continue
            for tid, st in running.items():
                times = st.history.series("time_this_iter_s", last=settings.straggler_window).tolist()
                if times:
                    out[tid] = {"run_id": run_id, "times": times, "node_id": st.node_id}
        return out

    def trial_gauges(self) -> list[tuple]:
        """(run, trial, health score, iteration time, {module: its health score}) of every trial held."""
        out = []
        for run_id, eng in self.runs.items():
            for t in eng.trials.values():
                h = t.health(t.last_seq)
                out.append((run_id, t.trial_id, h["score"], t.last_metrics.get("time_this_iter_s"),
                            {m: mh["score"] for m, mh in (h.get("modules") or {}).items()}))
        return out

    def record_cluster(self, found: list[dict], rows: list[dict] | None, now: float, write_every_s: float = 10.0
                       ) -> None:
        """Store node- and cluster-level findings (and queue their alerts) in every open run, and the
        node rows (each node at most every ``write_every_s`` unless it changed alive/dead): one
        transaction per run."""
        for run_id, eng in list(self.runs.items()):
            sender = self.alerts.get(run_id)
            try:
                with eng.store.transaction():
                    for f in found:
                        self._record_finding(eng, sender, f, now)
                    if rows:
                        self._write_nodes(run_id, eng, rows, now, write_every_s)
            except Exception as e:
                log.warning("could not store cluster findings/nodes in run %s: %s", run_id, e)

    @staticmethod
    def _record_finding(eng: Engine, sender: AlertSender | None, f: dict, now: float) -> None:
        rec = {k: f.get(k) for k in ("detector", "severity", "metric", "value", "threshold", "message")}
        rec["details"] = f.get("details") or {}
        tid = f.get("trial_id")
        if sender is not None and (not tid or tid in eng.trials):
            try:  # node findings latch by the minute (they have no iterations)
                who = tid or f"node {str(f.get('node_id') or '?')[:12]}"
                sender.observe(who, int(now // 60), -1, [{**rec, "iteration": -1}], [])
            except Exception as e:
                log.warning("could not queue an alert for a cluster finding: %s", e)
        if tid:
            if tid in eng.trials:
                eng.store.record_finding(tid, rec)
            return
        eng.store.record_finding(None, rec)
        if f["detector"] == "node_down" and f["severity"] == "critical":
            # the trials that were running there see it in their own findings too, once Ray says the node is
            # gone (late heartbeats alone are the node's: on a busy node the monitor is just slow)
            for st in eng.trials.values():
                if st.node_id == f.get("node_id") and st.status == "running":
                    eng.store.record_finding(st.trial_id, rec)

    def _write_nodes(self, run_id: str, eng: Engine, rows: list[dict], now: float, every_s: float) -> None:
        written = self.node_written.get(run_id, {})
        kept = {}
        for r in rows:
            last = written.get(r["node_id"])
            if last is not None and last[1] == r["alive"] and now - last[0] < every_s:
                kept[r["node_id"]] = last
                continue
            info = {k: v for k, v in r.items() if k not in ("node_id", "address", "alive")}
            eng.store.upsert_node(r["node_id"], r["address"], r["alive"], info)
            kept[r["node_id"]] = (now, r["alive"])
        self.node_written[run_id] = kept  # only the nodes still known: bounded by the cluster's size


def open_store(run_dir: str | Path) -> Store:
    """A run's store as the actor writes it: WAL checkpoints from a thread of its own."""
    return Store(Path(run_dir) / "supervisor.db", background_checkpoints=True)


def _finish_run(sender: AlertSender | None, store: Store | None) -> None:
    """What is left of a closed run: its store's connection closed, its alerts flushed."""
    if store is not None:
        store.close()
    _close_sender(sender)


def _close_sender(sender: AlertSender | None, timeout_s: float = 8.0) -> None:
    """Wait for a finished run's alerts (a dead destination is recorded as failed), then end its thread
    (a reopened run alerts no more); a delivery still retrying keeps its connection."""
    if sender is None:
        return
    if sender.close(timeout_s=timeout_s) and sender.record_store is not None:
        sender.record_store.close()


def _validated(settings: dict) -> SupervisorConfig:
    """The driver validated these settings, ``${VAR}`` in alert URLs included, with its environment; this
    process may lack those variables (they come as ``alert_env``), so URL checks are not redone here."""
    from supervisor.config import AlertDestination

    alerts = [AlertDestination.model_construct(**a) for a in settings.get("alerts") or []]
    cfg = SupervisorConfig.model_validate({k: v for k, v in settings.items() if k != "alerts"})
    cfg.alerts = alerts
    return cfg


def json_safe_event(out: dict) -> dict:
    """An event decision as plain data for the trial (findings' details may hold numpy or odd types)."""
    from supervisor.jsonsafe import json_safe

    return json_safe(out, str)


def _pid() -> int:
    import os

    return os.getpid()


class SupervisorActorImpl:
    """The supervisor actor (see the module's docstring). Every method is a coroutine on the event loop,
    which never blocks: engine and store work goes to the engine thread, rebuilds to the loader threads."""

    HOUSEKEEPING_S = 1.0

    def __init__(self):
        self.core = SupervisorService()
        self._engine = ThreadPoolExecutor(1, thread_name_prefix="supervisor-engine")  # the single writer
        self._loader = ThreadPoolExecutor(2, thread_name_prefix="supervisor-rebuild")
        self._closer = ThreadPoolExecutor(2, thread_name_prefix="supervisor-alerts")  # run-end alert flushes
        self.core.defer = lambda fn: self._engine.submit(fn)
        if ray.is_initialized():
            try:
                from actors.metrics_export import SupervisorMetrics

                self.core.metrics = SupervisorMetrics()
            except Exception as e:  # no metrics: the supervisor works on
                log.warning("metrics export unavailable: %s", e)
        self._queue: list = []  # (run_id, report, future) awaiting the next batch
        self._judging = False
        self._loading: dict[tuple[str, str], asyncio.Future] = {}  # (run, trial) -> its rebuild in progress
        self._latency_ms: deque = deque(maxlen=65536)  # recent verdict latencies inside the actor
        self._busy_s, self._batches, self._judged = 0.0, 0, 0  # judging time, batches and reports since reset
        self._cpu_s = 0.0  # of the judging time, the engine thread's CPU (the rest: the fsyncs, waiting for a core)
        self._commit_s0 = 0.0  # the stores' commit time at the last reset
        self._watch = None
        self._stop = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="supervisor-housekeeping", daemon=True)
        self._housekeeper.start()

    # ------------------------------------------------------------------ plumbing
    async def _on_engine(self, fn, *args):
        return await asyncio.wrap_future(self._engine.submit(fn, *args))

    def _run_on_engine(self, fn, *args):
        """From another thread: run ``fn`` on the engine thread and wait for it."""
        return self._engine.submit(fn, *args).result()

    async def _ready(self, run_id: str, trial_ids) -> None:
        """Trials the engine does not hold yet (the actor restarted, or a store error dropped them) are
        rebuilt from the store on a loader thread, then installed on the engine thread: a long history
        replayed never holds up the other trials' reports. Their own calls wait for it."""
        eng = self.core.runs.get(run_id)
        if eng is None:
            return
        for tid in dict.fromkeys(trial_ids):
            if tid in eng.trials:
                continue
            task = self._loading.get((run_id, tid))
            if task is None:
                task = self._loading[(run_id, tid)] = asyncio.ensure_future(self._load(run_id, tid, eng))
            await asyncio.shield(task)

    async def _load(self, run_id: str, trial_id: str, eng: Engine) -> None:
        try:
            state = await asyncio.wrap_future(self._loader.submit(self.core.load_trial, run_id, trial_id, eng))
            if state is not None:
                await self._on_engine(self.core.adopt_trial, run_id, eng, state)
        except Exception as e:  # the engine thread rebuilds it itself on the trial's next call
            log.warning("trial %s not rebuilt off the report path: %s: %s", trial_id, e.__class__.__name__, e)
        finally:
            self._loading.pop((run_id, trial_id), None)

    def _housekeeping(self) -> None:
        while not self._stop.wait(self.HOUSEKEEPING_S):
            try:
                for sender, store in self._run_on_engine(self.core.housekeeping, time.time(), False):
                    _finish_run(sender, store)
            except Exception as e:
                log.warning("housekeeping failed: %s", e)
            try:
                _, node_found = self._run_on_engine(self.core.check_hung)
                self.core.end_hung()
                if node_found:  # many trials hung on one node: stored and listed as the node's finding
                    self._cluster_watch().record(node_found)
            except Exception as e:
                log.warning("hung check failed: %s", e)

    def shutdown(self) -> None:
        """Stop the threads (in-process use; the actor's threads end with its process)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._engine.shutdown(wait=True)
        self._loader.shutdown(wait=True)
        self._closer.shutdown(wait=True)

    # ------------------------------------------------------------------ runs
    async def open_run(self, run_id: str, run_dir: str, name: str, kind: str, settings: dict | None = None,
                       spec: dict | None = None, profile: dict | None = None, alert_env: dict | None = None,
                       storage: str | None = None) -> dict:
        store = None
        if run_id not in self.core.runs:  # opening a database (schema, migrations) is no work for the engine
            store = await asyncio.wrap_future(self._loader.submit(open_store, run_dir))
        return await self._on_engine(self.core.open_run, run_id, run_dir, name, kind, settings, spec, profile,
                                     alert_env, storage, store)

    async def close_run(self, run_id: str, status: str) -> None:
        sender, store = await self._on_engine(self.core.end_run, run_id, status, False)
        if sender is not None or store is not None:  # the driver waits for its alerts; other runs do not
            await asyncio.wrap_future(self._closer.submit(_finish_run, sender, store))

    async def wait_snapshot(self, run_id: str, timeout_s: float = 60.0) -> dict | None:
        """After ``close_run``: wait (off the engine thread) for the run's last store snapshot in its storage;
        ``{"ok", "uri", "error"}``, or None for a run whose storage is its folder (nothing to copy)."""
        snaps = self.core.snapshots.get(run_id)
        if snaps is None:
            return None
        out = await asyncio.wrap_future(self._closer.submit(snaps.wait, timeout_s))
        if out["ok"] and run_id not in self.core.runs:
            self.core.snapshots.pop(run_id, None)
        return out

    async def register_trial(self, trial_id: str, run_id: str, node_id: str | None = None,
                             config: dict | None = None, run_info: dict | None = None) -> dict:
        if run_id not in self.core.runs and run_info:
            await self.open_run(run_id, **run_info)
        await self._ready(run_id, (trial_id,))
        return await self._on_engine(self.core.register_trial, trial_id, run_id, node_id, config, run_info)

    # ------------------------------------------------------------------ the hot path
    async def report(self, run_id: str, report: dict) -> dict:
        """One trial's iteration. Calls that arrive while a batch is being judged wait for the
        next batch: under load they share one store transaction, with no added delay when idle."""
        t0 = time.perf_counter()
        await self._ready(run_id, (_trial_of(report),))
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((run_id, report, fut))
        if not self._judging:
            self._judging = True
            loop.create_task(self._judge_queue())
        verdict = await fut
        self._latency_ms.append(1000.0 * (time.perf_counter() - t0))
        return verdict

    async def report_batch(self, run_id: str, reports: list) -> list[dict]:
        """A trial's buffered reports (replayed after the supervisor was unreachable), judged in one go."""
        reports = reports if isinstance(reports, list) else []
        await self._ready(run_id, [_trial_of(r) for r in reports])
        return await self._on_engine(self.core.report_batch, run_id, reports)

    async def _judge_queue(self) -> None:
        try:
            while self._queue:
                items, self._queue = self._queue, []
                t0 = time.perf_counter()
                try:
                    results, cpu = await self._on_engine(self._judge, items)
                except BaseException as e:  # the engine thread is gone (shutdown): nobody waits forever
                    results, cpu = [(fut, e) for _, _, fut in items], 0.0
                self._busy_s += time.perf_counter() - t0
                self._cpu_s += cpu  # here, with the other counters: verdict_latency resets them on this thread
                self._batches += 1
                self._judged += len(items)
                for fut, out in results:
                    if fut.done():
                        continue
                    if isinstance(out, BaseException):
                        fut.set_exception(out)
                    else:
                        fut.set_result(out)
        finally:
            self._judging = False

    def _judge(self, items: list) -> tuple[list[tuple], float]:
        """On the engine thread: one ``report_batch`` per run of the queued reports; (the futures with their
        verdicts or errors, the engine thread's CPU seconds for it)."""
        c0 = time.thread_time()
        results = self._judge_runs(items)
        return results, time.thread_time() - c0

    def _judge_runs(self, items: list) -> list[tuple]:
        by_run: dict[str, list] = {}
        for run_id, rep, fut in items:
            by_run.setdefault(run_id, []).append((rep, fut))
        out = []
        for run_id, group in by_run.items():
            try:
                verdicts = self.core.report_batch(run_id, [r for r, _ in group])
            except Exception as e:
                # Nothing of this batch is stored (disk full, database locked): every caller hears the
                # error, keeps its report and sends it again; no verdict for what is not durable.
                err = StoreUnavailable(f"{e.__class__.__name__}: {e}")
                out += [(fut, err) for _, fut in group]
                continue
            out += [(fut, v) for (_, fut), v in zip(group, verdicts)]
        return out

    def verdict_latency(self, reset: bool = False) -> dict:
        """Percentiles (ms) of the recent verdict latencies inside the actor: from a report's
        arrival to its verdict (waiting for the batch in progress, judging, storing)."""
        xs = sorted(self._latency_ms)
        commit_s = sum(e.store.commit_s for e in list(self.core.runs.values()))
        busy = {"judging_ms_per_report": 1000 * self._busy_s / max(self._judged, 1),
                "judging_cpu_ms_per_report": 1000 * self._cpu_s / max(self._judged, 1),
                "reports_per_batch": self._judged / max(self._batches, 1),
                # of the judging time, the store's commits (an fsync each): what more CPU does not shorten
                "commit_ms_per_report": 1000 * max(commit_s - self._commit_s0, 0.0) / max(self._judged, 1)}
        if reset:
            self._latency_ms.clear()
            self._busy_s, self._batches, self._judged, self._cpu_s = 0.0, 0, 0, 0.0
            self._commit_s0 = commit_s
        if not xs:
            return {"n": 0, **busy}

        def q(p: float) -> float:
            return xs[min(len(xs) - 1, int(p * len(xs)))]
        return {"n": len(xs), "p50": q(0.5), "p99": q(0.99), "max": xs[-1], **busy}

    # ------------------------------------------------------------------ trial calls
    async def record_checkpoint(self, run_id: str, trial_id: str, seq: int, iteration: int, path: str,
                                hparams: dict | None) -> dict:
        await self._ready(run_id, (trial_id,))
        return await self._on_engine(self.core.record_checkpoint, run_id, trial_id, seq, iteration, path, hparams)

    async def record_best_checkpoint(self, run_id: str, trial_id: str, seq: int, iteration: int, path: str,
                                     metric: str, value: float, hparams: dict | None) -> dict:
        await self._ready(run_id, (trial_id,))
        return await self._on_engine(self.core.record_best_checkpoint, run_id, trial_id, seq, iteration, path, metric,
                              value, hparams)

    async def acknowledge(self, run_id: str, trial_id: str, applied: list) -> bool:
        await self._ready(run_id, (trial_id,))
        return await self._on_engine(self.core.acknowledge, run_id, trial_id, applied)

    async def finish_trial(self, run_id: str, trial_id: str, status: str) -> str:
        await self._ready(run_id, (trial_id,))
        return await self._on_engine(self.core.finish_trial, run_id, trial_id, status)

    async def trial_crashed(self, run_id: str, trial_id: str, report: dict, run_info: dict | None = None
                            ) -> dict | None:
        if run_id not in self.core.runs and run_info:
            await self.open_run(run_id, **run_info)
        await self._ready(run_id, (trial_id,))
        return await self._on_engine(self.core.trial_crashed, run_id, trial_id, report, run_info)

    async def trial_heartbeat(self, run_id: str, trial_id: str, beat: dict, handle=None) -> dict:
        await self._ready(run_id, (trial_id,))
        return await self._on_engine(self.core.trial_heartbeat, run_id, trial_id, beat, handle)

    async def trial_overrides(self, run_id: str, trial_id: str) -> dict:
        await self._ready(run_id, (trial_id,))
        return await self._on_engine(self.core.trial_overrides, run_id, trial_id)

    async def request_action(self, trial_id: str, action: str, params: dict | None = None,
                             reason: str = "manual request") -> bool:
        return await self._on_engine(self.core.request_action, trial_id, action, params, reason)

    async def snapshot(self) -> dict:
        return await self._on_engine(self.core.snapshot)

    def ping(self) -> dict:
        return self.core.ping()

    # ---- cluster health: node monitors, heartbeats, node findings, status (actors/node_monitor.py)
    def ensure_cluster_monitoring(self, interval_s: float | None = None, monitors: bool = True,
                                  prune_s: float | None = None) -> dict:
        """Start the cluster watch (idempotent): a monitor on every node, a tick every second, nodes down
        for ``prune_s`` (default an hour) forgotten."""
        return self._cluster_watch().ensure(interval_s, monitors, prune_s)

    def node_heartbeat(self, report: dict) -> None:
        """A node monitor's heartbeat (fire-and-forget): judged here, stored on the engine thread."""
        self._cluster_watch().heartbeat(report)

    async def cluster_status(self) -> dict:
        """``{"nodes": [...], "trials": [...], "findings": [...]}`` for ``supervise status``."""
        return await asyncio.get_running_loop().run_in_executor(None, self._cluster_watch().status)

    def cluster_findings(self, since: float = 0.0) -> list:
        """Node- and cluster-level findings (node_down, memory_pressure, gpu_fault, straggler) since a time."""
        return self._cluster_watch().findings(since)

    def _cluster_watch(self):
        if self._watch is None:
            from actors.node_monitor import ClusterWatch

            self._watch = ClusterWatch(self.core, run=self._run_on_engine,
                                       submit=lambda fn, *a: self._engine.submit(fn, *a), autostart=True,
                                       ray_nodes_every_s=5.0)
        return self._watch


def _trial_of(report: Any) -> str:
    return str(report.get("trial_id") or "default") if isinstance(report, dict) else "default"


SupervisorActor = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=1000)(SupervisorActorImpl)


def head_node_id() -> str | None:
    for n in ray.nodes():
        if n.get("Alive") and compat.is_head_node(n.get("Resources")):
            return n["NodeID"]
    return None


def get_or_create_supervisor():
    """Find the cluster's supervisor actor, or start it pinned to the head node."""
    try:
        actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
        _start_cluster_watch(actor)
        return actor
    except ValueError:
        pass
    head = head_node_id()
    opts = dict(name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True)
    if head:
        # strict: a supervisor on a worker would die with that node and miss its node_down
        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=head, soft=False)
    actor = SupervisorActor.options(**opts).remote()
    _start_cluster_watch(actor)
    return actor


def _start_cluster_watch(actor) -> None:
    """Fire-and-forget: node monitors on every node (RL_SUPERVISOR_NODE_MONITORS=0: the watch without them;
    RL_SUPERVISOR_NODE_PRUNE_S: how long a node is down before it is forgotten, default an hour)."""
    import os

    try:
        prune = os.environ.get("RL_SUPERVISOR_NODE_PRUNE_S")
        actor.ensure_cluster_monitoring.remote(None, os.environ.get("RL_SUPERVISOR_NODE_MONITORS", "1") != "0",
                                               float(prune) if prune else None)
    except Exception:
        pass


def find_supervisor():
    try:
        return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
