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
* :class:`ClusterWatch` lives inside the supervisor actor, on its own
  thread: it starts a monitor on every alive node (re-scanning
  ``ray.nodes()`` so that joining nodes get one), feeds heartbeats and Ray's
  view of the nodes to :class:`supervisor.cluster.ClusterState`, forgets
  nodes long gone, has nodes and findings stored in every open run's store
  (by the actor's engine thread) and updates the Prometheus metrics.
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

    Its own thread ticks every ``tick_s`` seconds: ``ray.nodes()``, a monitor
    started on every new node, nodes and stragglers judged, nodes down for
    ``node_prune_s`` forgotten, metrics exported. Heartbeats arrive on the
    actor's event loop. The state both touch is behind a lock held only for
    in-memory work (never around a Ray call or a store write). What goes to
    the runs' stores (findings, node rows) and what is read from their
    engines (trials' iteration times, health) runs on the actor's engine
    thread through ``run`` (wait for it) and ``submit`` (do not wait), so
    the engine stays the stores' single writer and a report never waits for
    the cluster: in-process, both simply call.
    """

    NODE_WRITE_EVERY_S = 10.0

    def __init__(self, service, settings=None, tick_s: float = 1.0, monitor_interval_s: float = DEFAULT_INTERVAL_S,
                 run=None, submit=None, autostart: bool = False, ray_nodes_every_s: float = 0.0):
        from supervisor.cluster import ClusterSettings, ClusterState

        self.service = service
        self.run = run or (lambda fn, *args: fn(*args))
        self.submit = submit or self.run
        self.settings = settings or ClusterSettings(heartbeat_interval_s=monitor_interval_s,
                                                    heartbeat_timeout_s=max(3 * monitor_interval_s, 5.0))
        self.state = ClusterState(self.settings)
        self.tick_s = tick_s
        self.monitor_interval_s = monitor_interval_s
        self.monitors: dict[str, Any] = {}
        self.findings_log: deque = deque(maxlen=500)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._metrics = None
        self._last_scan = 0.0
        # ray.nodes() at most this often (the heartbeats, every 2 s, are what finds a node gone within 10 s):
        # every GCS query costs the process a little memory that Ray never gives back (benchmarks/soak.py)
        self.ray_nodes_every_s = ray_nodes_every_s
        self._ray_nodes: list = []
        self._ray_nodes_at = -float("inf")
        self.ticks = 0
        self.monitors_enabled = True
        self.autostart = autostart  # the first heartbeat starts the tick thread (in the actor)

    # ------------------------------------------------------------------ lifecycle
    def ensure(self, interval_s: float | None = None, monitors: bool = True, prune_s: float | None = None) -> dict:
        """Start the tick thread (idempotent) and, unless ``monitors`` is False, node monitors."""
        self.monitors_enabled = monitors
        if interval_s:
            self.monitor_interval_s = float(interval_s)
        if prune_s is not None:
            self.settings.node_prune_s = float(prune_s)
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="cluster-watch", daemon=True)
            self._thread.start()
        return {"monitors": len(self.monitors), "tick_s": self.tick_s, "interval_s": self.monitor_interval_s,
                "prune_s": self.settings.node_prune_s}

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception as e:  # a failed tick is retried by the next one
                log.warning("cluster tick failed: %s: %s", e.__class__.__name__, e)

    # ------------------------------------------------------------------ inputs
    def heartbeat(self, report: dict) -> None:
        now = time.time()
        with self._lock:
            found = self.state.heartbeat(report, now)
            self._log(found, now)
        if found:
            self.submit(self.service.record_cluster, found, None, now)
            self._count(found)
        if self._thread is None and self.autostart:  # the actor restarted: monitors are back before anyone
            # called ensure()
            try:
                self.ensure()
            except Exception:
                pass

    def record(self, found: list[dict], now: float | None = None) -> None:
        """Findings raised outside the watch (``node_hung``, from the supervisor's hung check): listed by
        ``supervise status``, stored in every open run, alerted, counted."""
        now = time.time() if now is None else now
        with self._lock:
            self._log(found, now)
        self.submit(self.service.record_cluster, found, None, now)
        self._count(found)

    def tick(self, now: float | None = None) -> dict:
        import ray

        now = time.time() if now is None else now
        if now - self._ray_nodes_at >= self.ray_nodes_every_s:
            try:
                listed = ray.nodes()
                with self._lock:  # kept: the alive, and the dead this watch still tracks (Ray lists 1,000 more)
                    self._ray_nodes = [n for n in listed if n.get("Alive") or n.get("NodeID") in self.state.nodes]
                self._ray_nodes_at = now
            except Exception as e:
                log.warning("ray.nodes() failed: %s", e)
                self._ray_nodes = []
        ray_nodes = self._ray_nodes
        with self._lock:
            self.ticks += 1
            found = self.state.sync_ray_nodes(ray_nodes, now)
            found += self.state.check(now)
        if self.monitors_enabled:
            self._ensure_monitors(ray_nodes, now)
        times = self.run(self.service.trial_times, self.settings)
        with self._lock:
            found += self.state.stragglers(times, now)
            for nid in self.state.prune(now):
                self.monitors.pop(nid, None)
            rows = self.state.node_rows(now)
            self._log(found, now)
        self.run(self.service.record_cluster, found, rows, now, self.NODE_WRITE_EVERY_S)
        self._update_metrics(rows, found)
        return {"findings": len(found), "nodes": len(rows)}

    def _log(self, found: list[dict], now: float) -> None:
        for f in found:
            f.setdefault("time", now)
            self.findings_log.append(f)

    # ------------------------------------------------------------------ monitors
    def _ensure_monitors(self, ray_nodes: list, now: float) -> None:
        alive = {n["NodeID"] for n in ray_nodes if n.get("Alive")}
        for nid in list(self.monitors):
            if nid not in alive:
                self.monitors.pop(nid, None)
        rescan = now - self._last_scan >= 5 * self.tick_s
        for nid in alive:
            with self._lock:
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
    def _metrics_ready(self) -> bool:
        if self._metrics is None:
            self._metrics = getattr(self.service, "metrics", None) or False
        return bool(self._metrics)

    def _count(self, found: list[dict]) -> None:
        """Cluster findings, counted once where raised (not once per run that stores them)."""
        if not self._metrics_ready():
            return
        try:
            for f in found:
                self._metrics.finding(f["detector"], f["severity"])
        except Exception as e:
            log.warning("finding counters not updated: %s", e)

    def _update_metrics(self, rows: list[dict], found: list[dict]) -> None:
        self._count(found)
        if not self._metrics_ready():
            return
        m = self._metrics
        try:
            for r in rows:
                m.node(r)
            for run_id, tid, score, it_s, mods in self.run(self.service.trial_gauges):
                m.trial(run_id, tid, score, it_s)
                for mod, mod_score in mods.items():
                    m.module(run_id, tid, mod, mod_score)
        except Exception as e:
            log.warning("metrics update failed: %s", e)

    # ------------------------------------------------------------------ views
    def status(self) -> dict:
        from supervisor.cluster import build_status

        now = time.time()
        trials = self.run(self.service.trial_snapshot)  # runs that ended too (bounded)
        with self._lock:
            rows = self.state.node_rows(now)
            findings = [_public(f) for f in list(self.findings_log)[-50:]]
        st = build_status(None, rows, trials)
        st["findings"] = findings
        st["monitors"] = len(self.monitors)
        st["ticks"] = self.ticks
        try:
            import ray

            st["supervisor_node_id"] = ray.get_runtime_context().get_node_id()  # its metrics are exported there
        except Exception:
            st["supervisor_node_id"] = None
        return st

    def findings(self, since: float = 0.0) -> list[dict]:
        with self._lock:
            return [_public(f) for f in self.findings_log if f.get("time", 0) >= since]


def _public(f: dict) -> dict:
    return {k: f.get(k) for k in ("time", "detector", "severity", "node_id", "trial_id", "metric", "value",
                                  "threshold", "message")}
