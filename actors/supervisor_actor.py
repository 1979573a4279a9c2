"""The supervisor actor: one named, detached actor per cluster, on the head node.

A thin Ray wrapper around ``supervisor.engine.Engine``; it can serve several
runs at once (each with its own SQLite store in its own run folder). Ray
restarts it if it dies (``max_restarts=-1``); it then rebuilds each trial's
state from the store when the trial next registers or reports.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from supervisor import modules
from supervisor.alerts import AlertSender
from supervisor.config import SupervisorConfig
from supervisor.engine import Engine, json_or_empty
from supervisor.storage import StoreSnapshots, store_snapshots
from supervisor.store import Store
from supervisor.verdict import Verdict

from actors import run_registry

NAMESPACE = "rl_supervisor"
ACTOR_NAME = "supervisor"


class StoreUnavailable(RuntimeError):
    """A report was not stored (the run's database could not commit); the caller must send it again."""


class SupervisorService:
    def __init__(self):
        self.runs: dict[str, Engine] = {}
        self.run_of: dict[str, str] = {}  # trial_id -> run_id
        self.specs: dict[str, dict] = {}
        self.alerts: dict[str, AlertSender] = {}  # per run with ``supervisor.alerts``: sent off the report path
        self.started = time.time()
        self._queue: list = []  # (run_id, report, future) awaiting the next batch
        # The final state of the trials of closed runs, newest kept: `supervise status` still lists a run
        # that just ended, and the actor's memory stays bounded however many runs it serves.
        self.closed_trials: deque = deque(maxlen=256)
        self._latency_ms: deque = deque(maxlen=65536)  # recent verdict latencies inside the actor
        self._busy_s, self._batches, self._judged = 0.0, 0, 0  # judging time, batches and reports since reset
        self.snapshots: dict[str, StoreSnapshots] = {}  # runs whose storage is not their folder: copies of the store

    def open_run(self, run_id: str, run_dir: str, name: str, kind: str, settings: dict | None = None,
                 spec: dict | None = None, profile: dict | None = None, alert_env: dict | None = None,
                 storage: str | None = None) -> dict:
        """Attach a run (idempotent; the driver calls it again after an actor restart). ``alert_env``: the
        driver's values of the ``${VAR}`` names in alert URLs (kept in memory only, never stored)."""
        if run_id not in self.runs:
            store = Store(Path(run_dir) / "supervisor.db", background_checkpoints=True)
            store.upsert_run(run_id, name, kind, "running", spec)
            cfg = _validated(settings or {})
            self.runs[run_id] = Engine(store, cfg, profile)
            self.specs[run_id] = {"run_dir": run_dir, "name": name, "kind": kind, "settings": settings or {},
                                  "spec": spec, "profile": profile, "started": time.time(), "storage": storage}
            snaps = store_snapshots(run_dir, storage, cfg.store_snapshot_s)
            if snaps is not None:
                self.snapshots[run_id] = snaps
            if cfg.alerts:
                # its own connection: deliveries are recorded from the sender's thread
                rec = Store(Path(run_dir) / "supervisor.db")
                sender = AlertSender(cfg.alerts, rec.record_alert, run=name, dashboard_url=cfg.dashboard_url,
                                     quiet=cfg.alert_quiet, env=alert_env)
                sender.record_store = rec
                self.alerts[run_id] = sender
        elif alert_env and run_id in self.alerts:
            self.alerts[run_id].env.update(alert_env)
        return {"run_id": run_id, "pid": _pid()}

    def close_run(self, run_id: str, status: str) -> None:
        """The run is over: record it and forget it (its engine, database connection, checkpoint thread
        and trials), so that a long-lived actor serving many runs stays the same size."""
        run_registry.withdraw(run_id)  # a checkpoint of this run restored later trains unsupervised
        eng = self.runs.get(run_id)
        if eng is not None:
            eng.flush(force=True)
            spec = self.specs[run_id]
            eng.store.upsert_run(run_id, spec["name"], spec["kind"], status, ended=time.time())
            sender = self.alerts.get(run_id)
            if sender is not None:
                trials = [{**t, "final_return": (json_or_empty(t.get("final")) or {}).get("episode_return_mean")}
                          for t in eng.store.trials() if t.get("run_id") == run_id]
                sender.summary(status, trials, spec.get("started"))
                # the driver waits 10 s; a dead destination is recorded as failed. The run is over: its
                # sender's thread and connection go (a reopened run alerts no more).
                sender.flush(timeout_s=8.0)
                self.alerts.pop(run_id, None)
                if sender.close(timeout_s=0):  # a delivery still retrying keeps its connection
                    sender.record_store.close()
            self.closed_trials.extend(eng.snapshot())
            snaps = self.snapshots.get(run_id)
            if snaps is not None:
                snaps.final()  # on its own thread; the driver waits for it with wait_snapshot
                for rid in [r for r in self.snapshots if r not in self.runs and r != run_id][:-64]:
                    del self.snapshots[rid]  # bounded: the final copies nobody waited for
            self.runs.pop(run_id, None)
            self.specs.pop(run_id, None)
            for tid in [t for t, r in self.run_of.items() if r == run_id]:
                del self.run_of[tid]
            eng.store.close()

    async def wait_snapshot(self, run_id: str, timeout_s: float = 60.0) -> dict | None:
        """After ``close_run``: wait (off the event loop) for the run's last store snapshot in its storage;
        ``{"ok", "uri", "error"}``, or None for a run whose storage is its folder (nothing to copy)."""
        import asyncio

        snaps = self.snapshots.get(run_id)
        if snaps is None:
            return None
        out = await asyncio.get_running_loop().run_in_executor(None, snaps.wait, timeout_s)
        if out["ok"] and run_id not in self.runs:
            self.snapshots.pop(run_id, None)
        return out

    def _engine(self, trial_id: str, run_id: str | None = None) -> Engine | None:
        run_id = run_id or self.run_of.get(trial_id)
        return self.runs.get(run_id) if run_id else None

    def register_trial(self, trial_id: str, run_id: str, node_id: str | None = None,
                       config: dict | None = None, run_info: dict | None = None) -> dict:
        if run_id not in self.runs and run_info:  # the actor restarted: trials carry what it needs to reopen
            self.open_run(run_id, **run_info)
        eng = self.runs[run_id]
        self.run_of[trial_id] = run_id
        return eng.register_trial(trial_id, run_id, node_id, config)

    async def report(self, run_id: str, report: dict) -> dict:
        """One trial's iteration. Calls that arrive while a batch is being judged wait for the
        next batch: under load they share one store transaction, with no added delay when idle."""
        import asyncio

        t0 = time.perf_counter()
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((run_id, report, fut))
        if len(self._queue) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        verdict = await fut
        self._latency_ms.append(1000.0 * (time.perf_counter() - t0))
        return verdict

    def verdict_latency(self, reset: bool = False) -> dict:
        """Percentiles (ms) of the recent verdict latencies inside the actor: from a report's
        arrival to its verdict (waiting for the batch in progress, judging, storing)."""
        xs = sorted(self._latency_ms)
        busy = {"judging_ms_per_report": 1000 * self._busy_s / max(self._judged, 1),
                "reports_per_batch": self._judged / max(self._batches, 1)}
        if reset:
            self._latency_ms.clear()
            self._busy_s, self._batches, self._judged = 0.0, 0, 0
        if not xs:
            return {"n": 0, **busy}

        def q(p: float) -> float:
            return xs[min(len(xs) - 1, int(p * len(xs)))]
        return {"n": len(xs), "p50": q(0.5), "p99": q(0.99), "max": xs[-1], **busy}

    def _flush(self) -> None:
        t0 = time.perf_counter()
        items, self._queue = self._queue, []
        self._batches += 1
        self._judged += len(items)
        by_run: dict[str, list] = {}
        for run_id, rep, fut in items:
            by_run.setdefault(run_id, []).append((rep, fut))
        for run_id, group in by_run.items():
            try:
                verdicts = self.report_batch(run_id, [r for r, _ in group])
            except Exception as e:
                # Nothing of this batch is stored (disk full, database locked): every caller hears the
                # error, keeps its report and sends it again; no verdict for what is not durable.
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(StoreUnavailable(f"{e.__class__.__name__}: {e}"))
                continue
            for (_, fut), v in zip(group, verdicts):
                if not fut.done():
                    fut.set_result(v)
        self._busy_s += time.perf_counter() - t0

    def report_batch(self, run_id: str, reports: list) -> list[dict]:
        """One verdict per report, in its wire form (``Verdict.to_dict``)."""
        eng = self.runs.get(run_id)
        if eng is None:
            return [Verdict(reported=False, unknown_run=True).to_dict() for _ in reports]
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
        return [v.to_dict() for v in verdicts]

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
        self.run_of.setdefault(trial_id, run_id)
        eng.acknowledge(trial_id, applied)
        return True

    def finish_trial(self, run_id: str, trial_id: str, status: str) -> str:
        eng = self.runs.get(run_id)
        return eng.finish_trial(trial_id, status) if eng is not None else status

    def trial_overrides(self, run_id: str, trial_id: str) -> dict:
        eng = self.runs.get(run_id)
        st = eng.trials.get(trial_id) if eng else None
        return modules.packed(st.overrides) if st else {}  # per module when several (supervisor.modules)

    def request_action(self, trial_id: str, action: str, params: dict | None = None,
                       reason: str = "manual request") -> bool:
        eng = self._engine(trial_id)
        if eng is None:  # after a restart, before the trial reports again: the run whose store knows it
            eng = next((e for e in self.runs.values() if e.store.trial(trial_id) is not None), None)
        return eng.request_action(trial_id, action, params, reason) if eng else False

    def snapshot(self) -> dict:
        """Runs and live trial state, for ``supervise status`` and the dashboard."""
        return {"runs": [{"run_id": r, **{k: v for k, v in self.specs[r].items() if k in ("run_dir", "name", "kind")}}
                         for r in self.runs],
                "trials": [t for eng in self.runs.values() for t in eng.snapshot()] + list(self.closed_trials)}

    def ping(self) -> dict:
        return {"pid": _pid(), "runs": list(self.runs), "uptime_s": time.time() - self.started}

    # ---- cluster health: node monitors, heartbeats, node findings, status (actors/node_monitor.py)
    def ensure_cluster_monitoring(self, interval_s: float | None = None, monitors: bool = True) -> dict:
        """Start the cluster watch (idempotent): a monitor on every node, a tick every second."""
        return self._cluster_watch().ensure(interval_s, monitors)

    def node_heartbeat(self, report: dict) -> None:
        """A node monitor's heartbeat (fire-and-forget)."""
        self._cluster_watch().heartbeat(report)

    def cluster_tick(self) -> dict:
        """Re-scan ray.nodes(), start monitors on new nodes, judge nodes and stragglers, export metrics."""
        for eng in self.runs.values():  # trial summary rows that a quiet spell left unwritten
            eng.flush()
        return self._cluster_watch().tick()

    def cluster_status(self) -> dict:
        """``{"nodes": [...], "trials": [...], "findings": [...]}`` for ``supervise status``."""
        return self._cluster_watch().status()

    def cluster_findings(self, since: float = 0.0) -> list:
        """Node- and cluster-level findings (node_down, memory_pressure, gpu_fault, straggler) since a time."""
        return self._cluster_watch().findings(since)

    def _cluster_watch(self):
        watch = getattr(self, "_watch", None)
        if watch is None:
            from actors.node_monitor import ClusterWatch

            watch = self._watch = ClusterWatch(self)
        return watch


def _validated(settings: dict) -> SupervisorConfig:
    """The driver validated these settings, ``${VAR}`` in alert URLs included, with its environment; this
    process may lack those variables (they come as ``alert_env``), so URL checks are not redone here."""
    from supervisor.config import AlertDestination

    alerts = [AlertDestination.model_construct(**a) for a in settings.get("alerts") or []]
    cfg = SupervisorConfig.model_validate({k: v for k, v in settings.items() if k != "alerts"})
    cfg.alerts = alerts
    return cfg


def _pid() -> int:
    import os

    return os.getpid()


SupervisorActor = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=1000)(SupervisorService)


def head_node_id() -> str | None:
    for n in ray.nodes():
        if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {}):
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
    """Fire-and-forget: node monitors on every node (RL_SUPERVISOR_NODE_MONITORS=0: the watch without them)."""
    import os

    try:
        actor.ensure_cluster_monitoring.remote(None, os.environ.get("RL_SUPERVISOR_NODE_MONITORS", "1") != "0")
    except Exception:
        pass


def find_supervisor():
    try:
        return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
