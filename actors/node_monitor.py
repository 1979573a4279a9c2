"""Node monitors and the supervisor's cluster watch.

* :func:`collect_node` and :class:`GpuProbe` measure one machine: CPU,
  memory, disk, network (psutil) and, where NVIDIA GPUs and NVML exist
  (``nvidia-ml-py``, imported as ``pynvml``), per-GPU utilization, memory,
  temperature, power, ECC counts and XID events. Without the library, the
  driver or any GPU they return ``[]`` and say why (``gpu_error``); nothing
  here ever raises because of a GPU.
* :class:`NodeMonitor` is a tiny actor (``num_cpus=0``) pinned to one node
  (``NodeAffinitySchedulingStrategy(soft=False)``); a thread in it sends a
  heartbeat to the supervisor every ``interval_s`` seconds, fire-and-forget
  with at most a few calls in flight.
* :class:`ClusterWatch` lives inside the supervisor actor: it starts a
  monitor on every alive node (re-scanning ``ray.nodes()`` so that joining
  nodes get one), feeds heartbeats and Ray's view of the nodes to
  :class:`supervisor.cluster.ClusterState`, stores nodes and findings in
  every active run's store, and updates the Prometheus metrics.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
from collections import deque
from typing import Any

import psutil

log = logging.getLogger(__name__)

NAMESPACE = "rl_supervisor"
MONITOR_PREFIX = "node_monitor:"
DEFAULT_INTERVAL_S = 2.0
DISABLE_ENV = "RL_SUPERVISOR_NODE_MONITORS"  # "0": no node monitors


# ---------------------------------------------------------------------------------- measuring


class NetRate:
    """Bytes per second sent/received between successive calls."""

    def __init__(self):
        self._last: tuple[float, int, int] | None = None

    def __call__(self) -> tuple[float | None, float | None]:
        try:
            c = psutil.net_io_counters()
        except Exception:
            return None, None
        now = time.monotonic()
        last, self._last = self._last, (now, c.bytes_sent, c.bytes_recv)
        if last is None or now <= last[0]:
            return None, None
        dt = now - last[0]
        return max(c.bytes_sent - last[1], 0) / dt, max(c.bytes_recv - last[2], 0) / dt


def collect_node(net: NetRate | None = None, disk_path: str | None = None) -> dict:
    """CPU, memory, disk and network of this machine (psutil). ``cpu_percent`` is since the previous
    call (the first call of a process reads 0: call once to prime it)."""
    disk_path = disk_path or tempfile.gettempdir()
    out: dict[str, Any] = {"hostname": socket.gethostname(), "time": time.time()}
    out["cpu_percent"] = psutil.cpu_percent(interval=None)
    out["cpu_count"] = psutil.cpu_count()
    try:
        out["load_1m"] = os.getloadavg()[0]
    except (OSError, AttributeError):
        out["load_1m"] = None
    vm = psutil.virtual_memory()
    out.update(memory_percent=vm.percent, memory_used=vm.total - vm.available, memory_total=vm.total)
    try:
        out["swap_percent"] = psutil.swap_memory().percent
    except Exception:
        out["swap_percent"] = None
    try:
        du = psutil.disk_usage(disk_path)
        out.update(disk_percent=du.percent, disk_path=disk_path)
    except Exception:
        out.update(disk_percent=None, disk_path=disk_path)
    sent, recv = net() if net is not None else (None, None)
    out.update(net_sent_bytes_per_s=sent, net_recv_bytes_per_s=recv)
    return out


class GpuProbe:
    """NVML, defensively: every query on its own, a failed one recorded and skipped.

    ``sample()`` returns one raw dict per GPU in NVML's own units (bytes,
    milliwatts, degrees C; see :func:`supervisor.cluster.shape_gpu` for the
    shaped form), or ``[]`` with ``self.error`` saying why (no ``pynvml``,
    no driver, no GPU).
    """

    def __init__(self):
        self.nvml = None
        self.error: str | None = None
        self.count = 0
        self._events = None
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            self.error = "pynvml not installed (pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
            self.count = int(pynvml.nvmlDeviceGetCount())
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.error = f"NVML unavailable: {e}"
            return
        self.nvml = pynvml
        if self.count == 0:
            self.error = "no NVIDIA GPU"
        self._register_xid_events()

    def _register_xid_events(self) -> None:
        nv = self.nvml
        try:
            es = nv.nvmlEventSetCreate()
        except Exception:
            return
        registered = 0
        for i in range(self.count):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
                nv.nvmlDeviceRegisterEvents(h, nv.nvmlEventTypeXidCriticalError, es)
                registered += 1
            except Exception:  # NotSupported on some boards: XIDs stay unknown there
                pass
        self._events = es if registered else None

    def _drain_xids(self) -> dict[int, list[int]]:
        """New XID events since the last call, per GPU index (non-blocking)."""
        out: dict[int, list[int]] = {}
        if self._events is None:
            return out
        nv = self.nvml
        for _ in range(1000):  # bounded
            try:
                data = nv.nvmlEventSetWait_v2(self._events, 0)
            except Exception:  # NVMLError_Timeout: nothing pending
                break
            try:
                idx = int(nv.nvmlDeviceGetIndex(data.device))
            except Exception:
                idx = -1
            out.setdefault(idx, []).append(int(data.eventData))
        return out

    def sample(self) -> list[dict]:
        if self.nvml is None:
            return []
        nv = self.nvml
        try:
            count = int(nv.nvmlDeviceGetCount())
        except Exception as e:
            self.error = f"NVML: {e}"
            return []
        xids = self._drain_xids()
        gpus = []
        for i in range(count):
            g: dict[str, Any] = {"index": i, "errors": [], "xid_errors": xids.get(i, []) + xids.get(-1, [])}
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
            except Exception as e:
                g["errors"].append(f"handle: {e}")
                gpus.append(g)
                continue

            def q(key, fn, *args, _g=g):
                try:
                    return fn(*args)
                except Exception as e:  # NVMLError_NotSupported and friends
                    _g["errors"].append(f"{key}: {e}")
                    return None

            g["name"] = q("name", nv.nvmlDeviceGetName, h)
            g["uuid"] = q("uuid", nv.nvmlDeviceGetUUID, h)
            util = q("utilization", nv.nvmlDeviceGetUtilizationRates, h)
            if util is not None:
                g["utilization_gpu"], g["utilization_memory"] = util.gpu, util.memory
            mem = q("memory", nv.nvmlDeviceGetMemoryInfo, h)
            if mem is not None:
                g["memory_used"], g["memory_total"] = mem.used, mem.total
            g["temperature"] = q("temperature", nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
            g["temperature_slowdown"] = q("temperature_slowdown", nv.nvmlDeviceGetTemperatureThreshold, h,
                                          nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
            g["temperature_shutdown"] = q("temperature_shutdown", nv.nvmlDeviceGetTemperatureThreshold, h,
                                          nv.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)
            g["power_mw"] = q("power", nv.nvmlDeviceGetPowerUsage, h)
            g["power_limit_mw"] = q("power_limit", nv.nvmlDeviceGetEnforcedPowerLimit, h)
            g["ecc_uncorrected"] = q("ecc_uncorrected", nv.nvmlDeviceGetTotalEccErrors, h,
                                     nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC)
            g["ecc_corrected"] = q("ecc_corrected", nv.nvmlDeviceGetTotalEccErrors, h,
                                   nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_VOLATILE_ECC)
            rows = q("remapped_rows", nv.nvmlDeviceGetRemappedRows, h)
            if rows is not None and len(rows) >= 3:
                g["remapped_rows_pending"] = bool(rows[2])
            gpus.append(g)
        return gpus

    def close(self) -> None:
        if self.nvml is not None:
            try:
                if self._events is not None:
                    self.nvml.nvmlEventSetFree(self._events)
                self.nvml.nvmlShutdown()
            except Exception:
                pass
            self.nvml = None


def heartbeat(node_id: str | None, address: str | None, probe: GpuProbe | None, net: NetRate | None) -> dict:
    """One heartbeat: this node's figures plus its GPUs (raw NVML units)."""
    rep = collect_node(net)
    rep.update(node_id=node_id, address=address)
    rep["gpus"] = probe.sample() if probe is not None else []
    rep["gpu_error"] = probe.error if probe is not None and not rep["gpus"] else None
    return rep


# ---------------------------------------------------------------------------------- the monitor actor


class NodeMonitor:
    """Measures its node and heartbeats to the supervisor from a thread."""

    def __init__(self, node_id: str, interval_s: float = DEFAULT_INTERVAL_S, supervisor_name: str = "supervisor",
                 namespace: str = NAMESPACE, max_in_flight: int = 3):
        import ray

        self.node_id, self.interval_s = node_id, float(interval_s)
        self.supervisor_name, self.namespace, self.max_in_flight = supervisor_name, namespace, max_in_flight
        ctx = ray.get_runtime_context()
        self.actual_node_id = ctx.get_node_id()
        self.address = ray.util.get_node_ip_address()
        self.net = NetRate()
        self.net()
        self.probe = GpuProbe()
        self.sent = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._in_flight: deque = deque()
        self._thread = threading.Thread(target=self._loop, name="node-monitor", daemon=True)
        self._thread.start()

    def _supervisor(self):
        import ray

        try:
            return ray.get_actor(self.supervisor_name, namespace=self.namespace)
        except ValueError:
            return None

    def _loop(self) -> None:
        import ray

        sup = None
        psutil.cpu_percent(interval=None)  # psutil keeps its last sample per thread: prime this one
        while not self._stop.wait(self.interval_s):
            try:
                rep = heartbeat(self.actual_node_id, self.address, self.probe, self.net)
                rep["interval_s"] = self.interval_s
                # backpressure: never more than a few unanswered heartbeats
                while self._in_flight:
                    ready, _ = ray.wait([self._in_flight[0]], timeout=0)
                    if not ready:
                        break
                    self._in_flight.popleft()
                if len(self._in_flight) >= self.max_in_flight:
                    self.skipped += 1
                    if len(self._in_flight) >= 2 * self.max_in_flight:  # stuck handle: look it up again
                        self._in_flight.clear()
                        sup = None
                    continue
                sup = sup or self._supervisor()
                if sup is None:
                    continue
                self._in_flight.append(sup.node_heartbeat.remote(rep))
                self.sent += 1
            except Exception as e:  # the supervisor restarting, a dying node: try again next round
                log.debug("heartbeat failed: %s", e)
                sup = None

    def sample(self) -> dict:
        """One heartbeat, returned instead of sent (for tests and ad-hoc checks)."""
        return heartbeat(self.actual_node_id, self.address, self.probe, self.net)

    def info(self) -> dict:
        return {"node_id": self.actual_node_id, "address": self.address, "interval_s": self.interval_s,
                "sent": self.sent, "skipped": self.skipped, "gpu_error": self.probe.error, "pid": os.getpid()}

    def stop(self) -> None:
        self._stop.set()
        self.probe.close()


_MONITOR_CLS = None


def monitor_name(node_id: str) -> str:
    return MONITOR_PREFIX + node_id


def start_monitor(node_id: str, interval_s: float = DEFAULT_INTERVAL_S):
    """Start (or find) the monitor of ``node_id``: pinned there, no CPU reserved. Detached, so that it
    outlives a supervisor restart (its heartbeats then restart the supervisor's watch); it dies with its node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    global _MONITOR_CLS
    if _MONITOR_CLS is None:
        _MONITOR_CLS = ray.remote(NodeMonitor)
    return _MONITOR_CLS.options(
        name=monitor_name(node_id), namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        num_cpus=0, max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(node_id, interval_s)


# ---------------------------------------------------------------------------------- in the supervisor


class ClusterWatch:
    """The supervisor actor's cluster side; the actor's cluster methods delegate here.

    Everything runs in the actor's own (single) execution thread: a small
    thread only *enqueues* ``cluster_tick`` calls on the actor every
    ``tick_s`` seconds, so no state is shared across threads.
    """

    NODE_WRITE_EVERY_S = 10.0

    def __init__(self, service, settings=None, tick_s: float = 1.0, monitor_interval_s: float = DEFAULT_INTERVAL_S):
        from supervisor.cluster import ClusterSettings, ClusterState

        self.service = service
        self.settings = settings or ClusterSettings(heartbeat_interval_s=monitor_interval_s,
                                                    heartbeat_timeout_s=max(3 * monitor_interval_s, 5.0))
        self.state = ClusterState(self.settings)
        self.tick_s = tick_s
        self.monitor_interval_s = monitor_interval_s
        self.monitors: dict[str, Any] = {}
        self.findings_log: deque = deque(maxlen=500)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._node_written: dict[tuple[str, str], tuple[float, bool]] = {}  # (run, node) -> (time, alive)
        self._counted: dict[str, tuple[int, int]] = {}  # run_id -> (last finding id, last intervention id)
        self._closed: set[str] = set()
        self._metrics = None
        self._last_scan = 0.0
        self.ticks = 0
        self.monitors_enabled = True

    # ------------------------------------------------------------------ lifecycle
    def ensure(self, interval_s: float | None = None, monitors: bool = True) -> dict:
        """Start the tick loop (idempotent) and, unless ``monitors`` is False, node monitors."""
        import ray

        self.monitors_enabled = monitors
        if interval_s:
            self.monitor_interval_s = float(interval_s)
        if self._thread is None or not self._thread.is_alive():
            me = ray.get_runtime_context().current_actor
            self._thread = threading.Thread(target=self._loop, args=(me,), name="cluster-watch", daemon=True)
            self._thread.start()
        return {"monitors": len(self.monitors), "tick_s": self.tick_s, "interval_s": self.monitor_interval_s}

    def _loop(self, me) -> None:
        import ray

        ref = None
        while not self._stop.wait(self.tick_s):
            try:
                if ref is not None:
                    ready, _ = ray.wait([ref], timeout=0)
                    if not ready:
                        continue  # the previous tick is still queued: do not pile up
                ref = me.cluster_tick.remote()
            except Exception as e:
                log.debug("cluster tick failed: %s", e)
                ref = None

    # ------------------------------------------------------------------ inputs
    def heartbeat(self, report: dict) -> None:
        now = time.time()
        found = self.state.heartbeat(report, now)
        self._emit(found, now)
        if self._thread is None:  # the actor restarted: monitors are back before anyone called ensure()
            try:
                self.ensure()
            except Exception:
                pass

    def tick(self) -> dict:
        import ray

        now = time.time()
        self.ticks += 1
        try:
            ray_nodes = ray.nodes()
        except Exception as e:
            log.warning("ray.nodes() failed: %s", e)
            ray_nodes = []
        found = self.state.sync_ray_nodes(ray_nodes, now)
        if self.monitors_enabled:
            self._ensure_monitors(ray_nodes, now)
        found += self.state.check(now)
        engines = self._active_engines()
        found += self.state.stragglers(self._trial_times(engines), now)
        self._emit(found, now, engines)
        self._write_nodes(now, engines)
        self._update_metrics(engines)
        return {"findings": len(found), "nodes": len(self.state.nodes)}

    # ------------------------------------------------------------------ monitors
    def _ensure_monitors(self, ray_nodes: list, now: float) -> None:
        alive = {n["NodeID"] for n in ray_nodes if n.get("Alive")}
        for nid in list(self.monitors):
            if nid not in alive:
                self.monitors.pop(nid, None)
        rescan = now - self._last_scan >= 5 * self.tick_s
        for nid in alive:
            view = self.state.nodes.get(nid)
            silent = view is not None and view.last_heartbeat is not None and \
                now - view.last_heartbeat > self.settings.heartbeat_timeout_s
            if nid in self.monitors and not (silent and rescan):
                continue
            try:
                self.monitors[nid] = start_monitor(nid, self.monitor_interval_s)
            except Exception as e:
                log.warning("could not start a node monitor on %s: %s", nid, e)
        if rescan:
            self._last_scan = now

    # ------------------------------------------------------------------ outputs
    def _active_engines(self) -> dict:
        """The runs still going (a closed run is remembered as closed: one store read per run per tick)."""
        out = {}
        for run_id, eng in self.service.runs.items():
            if run_id in self._closed:
                continue
            try:
                mine = [r for r in eng.store.runs() if r["run_id"] == run_id]
            except Exception:
                continue
            if mine and mine[-1]["status"] != "running":
                self._closed.add(run_id)
                self._count(run_id, eng)  # its last findings and interventions still count
                continue
            out[run_id] = eng
        return out

    def _trial_times(self, engines: dict) -> dict:
        """Recent iteration times of the running trials, per run (only runs with enough peers to judge)."""
        out = {}
        need = self.settings.straggler_min_peers + 1
        for run_id, eng in engines.items():
            running = {tid: st for tid, st in eng.trials.items() if st.status == "running"}
            if len(running) < need:
                continue
            try:
                nodes = {t["trial_id"]: t["node_id"] for t in eng.store.trials()}
            except Exception:
                nodes = {}
            for tid, st in running.items():
                times = st.history.series("time_this_iter_s", last=self.settings.straggler_window).tolist()
                if times:
                    out[tid] = {"run_id": run_id, "times": times, "node_id": nodes.get(tid)}
        return out

    def _emit(self, found: list[dict], now: float, engines: dict | None = None) -> None:
        if not found:
            return
        engines = self._active_engines() if engines is None else engines
        for f in found:
            f.setdefault("time", now)
            self.findings_log.append(f)
            rec = {k: f.get(k) for k in ("detector", "severity", "metric", "value", "threshold", "message")}
            rec["details"] = f.get("details") or {}
            tid = f.get("trial_id")
            if not tid and self._metrics_ready():
                self._metrics.finding(f["detector"], f["severity"])
            for run_id, eng in engines.items():
                sender = getattr(self.service, "alerts", {}).get(run_id)
                if sender is not None and (not tid or tid in eng.trials):
                    try:  # node findings latch by the minute (they have no iterations)
                        who = tid or f"node {str(f.get('node_id') or '?')[:12]}"
                        sender.observe(who, int(now // 60), -1, [{**rec, "iteration": -1}], [])
                    except Exception as e:
                        log.warning("could not queue an alert for a cluster finding: %s", e)
                try:
                    if tid:
                        if tid in eng.trials:
                            eng.store.record_finding(tid, rec)
                        continue
                    eng.store.record_finding(None, rec)
                    if f["detector"] == "node_down" and f["severity"] != "info":
                        # the trials that were running there see it in their own findings too
                        for t in eng.store.trials():
                            if t["node_id"] == f.get("node_id") and t["status"] == "running":
                                eng.store.record_finding(t["trial_id"], rec)
                except Exception as e:
                    log.warning("could not store a cluster finding in run %s: %s", run_id, e)

    def _write_nodes(self, now: float, engines: dict) -> None:
        if not engines:
            return
        rows = self.state.node_rows(now)
        for run_id, eng in engines.items():
            for r in rows:
                key = (run_id, r["node_id"])
                last = self._node_written.get(key)
                if last is not None and last[1] == r["alive"] and now - last[0] < self.NODE_WRITE_EVERY_S:
                    continue
                info = {k: v for k, v in r.items() if k not in ("node_id", "address", "alive")}
                try:
                    eng.store.upsert_node(r["node_id"], r["address"], r["alive"], info)
                    self._node_written[key] = (now, r["alive"])
                except Exception as e:
                    log.warning("could not store node %s in run %s: %s", r["node_id"], run_id, e)

    def _metrics_ready(self) -> bool:
        if self._metrics is None:
            try:
                from actors.metrics_export import SupervisorMetrics

                self._metrics = SupervisorMetrics()
            except Exception as e:  # no metrics: the supervisor works on
                log.warning("metrics export unavailable: %s", e)
                self._metrics = False
        return bool(self._metrics)

    def _count(self, run_id: str, eng) -> None:
        """Findings and interventions stored since the last count -> the counters (node-level findings
        are counted once where they are raised, not once per run)."""
        if not self._metrics_ready():
            return
        m = self._metrics
        try:
            last_f, last_i = self._counted.get(run_id, (0, 0))
            rows_f = eng.store.findings_after(last_f, trials_only=True, raw=True,
                                              exclude_detectors=("node_down", "memory_pressure", "gpu_fault"))
            for r in rows_f:
                m.finding(r["detector"], r["severity"], module=r.get("module"))
            rows_i = eng.store.interventions_after(last_i, raw=True)
            for r in rows_i:
                m.intervention(r["action"], module=r.get("module"))
            self._counted[run_id] = (rows_f[-1]["id"] if rows_f else last_f, rows_i[-1]["id"] if rows_i else last_i)
        except Exception as e:
            log.warning("finding/intervention counters of run %s not updated: %s", run_id, e)

    def _update_metrics(self, engines: dict) -> None:
        if not self._metrics_ready():
            return
        m = self._metrics
        try:
            for r in self.state.node_rows(time.time()):
                m.node(r)
        except Exception as e:
            log.warning("node metrics update failed: %s", e)
        try:
            for run_id, eng in self.service.runs.items():
                for t in eng.trials.values():
                    h = t.health(t.last_seq)
                    m.trial(run_id, t.trial_id, h["score"], t.last_metrics.get("time_this_iter_s"))
                    for mod, mh in (h.get("modules") or {}).items():
                        m.module(run_id, t.trial_id, mod, mh["score"])
        except Exception as e:
            log.warning("trial metrics update failed: %s", e)
        for run_id, eng in engines.items():
            self._count(run_id, eng)

    # ------------------------------------------------------------------ views
    def status(self) -> dict:
        from supervisor.cluster import build_status

        now = time.time()
        trials = []
        for run_id, eng in self.service.runs.items():
            trials.extend(eng.snapshot())
        trials.extend(getattr(self.service, "closed_trials", ()))  # runs that ended (bounded)
        st = build_status(None, self.state.node_rows(now), trials)
        st["findings"] = [_public(f) for f in list(self.findings_log)[-50:]]
        st["monitors"] = len(self.monitors)
        st["ticks"] = self.ticks
        try:
            import ray

            st["supervisor_node_id"] = ray.get_runtime_context().get_node_id()  # its metrics are exported there
        except Exception:
            st["supervisor_node_id"] = None
        return st

    def findings(self, since: float = 0.0) -> list[dict]:
        return [_public(f) for f in self.findings_log if f.get("time", 0) >= since]


def _public(f: dict) -> dict:
    return {k: f.get(k) for k in ("time", "detector", "severity", "node_id", "trial_id", "metric", "value",
                                  "threshold", "message")}
