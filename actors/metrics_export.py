"""Prometheus metrics of the supervisor, through ``ray.util.metrics``.

The supervisor actor updates them (``ClusterWatch`` in
``actors/node_monitor.py``, once a tick); Ray exports them, prefixed
``ray_``, on the Prometheus endpoint of the node the supervisor runs on (the
head node): ``ray.nodes()[i]["MetricsExportPort"]``, or the port given to
``ray start --metrics-export-port``. Ray's Prometheus service discovery
file (``/tmp/ray/prom_metrics_service_discovery.json``) lists every node's
endpoint. ``cluster_configs/grafana_dashboard.json`` charts them.

Names as scraped (``ray_`` + the name here; counters may carry ``_total``):

| metric | type | tags |
| --- | --- | --- |
| ``rl_supervisor_trial_health_score`` | gauge 0..1 | run_id, trial_id |
| ``rl_supervisor_trial_iteration_time_s`` | gauge | run_id, trial_id |
| ``rl_supervisor_module_health_score`` | gauge 0..1 | run_id, trial_id, module |
| ``rl_supervisor_findings`` | counter | detector, severity, module ("" for the trial's own) |
| ``rl_supervisor_interventions`` | counter | action, module ("" for the whole trial) |
| ``rl_supervisor_node_alive`` | gauge 0/1 | node_id, address |
| ``rl_supervisor_node_health`` | gauge 0 ok, 1 info, 2 warning, 3 critical | node_id, address |
| ``rl_supervisor_node_cpu_percent`` / ``_memory_percent`` / ``_disk_percent`` | gauge | node_id, address |
| ``rl_supervisor_gpu_utilization`` | gauge percent | node_id, gpu, name |
| ``rl_supervisor_gpu_memory_used_bytes`` / ``_memory_total_bytes`` | gauge | node_id, gpu, name |
| ``rl_supervisor_gpu_temperature_c`` / ``_power_w`` | gauge | node_id, gpu, name |
| ``rl_supervisor_gpu_ecc_uncorrected`` | gauge (volatile count) | node_id, gpu, name |
"""

from __future__ import annotations

from typing import Any, Mapping

from supervisor.findings import severity_rank
from supervisor.stats import finite

PREFIX = "rl_supervisor_"
NODE_TAGS = ("node_id", "address")
GPU_TAGS = ("node_id", "gpu", "name")


class SupervisorMetrics:
    """The supervisor's metrics; create it inside a Ray worker (the supervisor actor)."""

    def __init__(self):
        from ray.util.metrics import Counter, Gauge

        def g(name, desc, tags):
            return Gauge(PREFIX + name, description=desc, tag_keys=tags)

        self.health = g("trial_health_score", "Trial health score (1 healthy .. 0 critical)", ("run_id", "trial_id"))
        self.iter_time = g("trial_iteration_time_s", "Trial's last iteration time in seconds", ("run_id", "trial_id"))
        self.module_health = g("module_health_score", "Health score of one module (policy) of a trial",
                               ("run_id", "trial_id", "module"))
        self.findings = Counter(PREFIX + "findings", description="Findings by detector, severity and module",
                                tag_keys=("detector", "severity", "module"))
        self.interventions = Counter(PREFIX + "interventions", description="Interventions by action and module",
                                     tag_keys=("action", "module"))
        self.node_alive = g("node_alive", "1 if the node is alive", NODE_TAGS)
        self.node_health = g("node_health", "Node health: 0 ok, 1 info, 2 warning, 3 critical", NODE_TAGS)
        self.node_cpu = g("node_cpu_percent", "Node CPU utilization percent", NODE_TAGS)
        self.node_mem = g("node_memory_percent", "Node memory use percent", NODE_TAGS)
        self.node_disk = g("node_disk_percent", "Node disk use percent (Ray's temp dir)", NODE_TAGS)
        self.gpu_util = g("gpu_utilization", "GPU utilization percent", GPU_TAGS)
        self.gpu_mem = g("gpu_memory_used_bytes", "GPU memory used, bytes", GPU_TAGS)
        self.gpu_mem_total = g("gpu_memory_total_bytes", "GPU memory total, bytes", GPU_TAGS)
        self.gpu_temp = g("gpu_temperature_c", "GPU temperature, degrees C", GPU_TAGS)
        self.gpu_power = g("gpu_power_w", "GPU power draw, watts", GPU_TAGS)
        self.gpu_ecc = g("gpu_ecc_uncorrected", "GPU uncorrectable ECC errors (volatile)", GPU_TAGS)

    def trial(self, run_id: str, trial_id: str, score: float, iteration_time_s: float | None = None) -> None:
        tags = {"run_id": str(run_id), "trial_id": str(trial_id)}
        self.health.set(float(score), tags=tags)
        if _num(iteration_time_s) is not None:
            self.iter_time.set(float(iteration_time_s), tags=tags)

    def module(self, run_id: str, trial_id: str, module: str, score: float) -> None:
        self.module_health.set(float(score), tags={"run_id": str(run_id), "trial_id": str(trial_id),
                                                   "module": str(module)})

    def finding(self, detector: str, severity: str, n: int = 1, module: str | None = None) -> None:
        self.findings.inc(n, tags={"detector": str(detector), "severity": str(severity), "module": module or ""})

    def intervention(self, action: str, n: int = 1, module: str | None = None) -> None:
        self.interventions.inc(n, tags={"action": str(action), "module": module or ""})

    def node(self, row: Mapping[str, Any]) -> None:
        tags = {"node_id": str(row.get("node_id")), "address": str(row.get("address") or "")}
        self.node_alive.set(1.0 if row.get("alive") else 0.0, tags=tags)
        self.node_health.set(float(severity_rank(row.get("health") or "ok")), tags=tags)
        for gauge, key in ((self.node_cpu, "cpu_percent"), (self.node_mem, "memory_percent"),
                           (self.node_disk, "disk_percent")):
            if _num(row.get(key)) is not None:
                gauge.set(float(row[key]), tags=tags)
        for gpu in row.get("gpus") or []:
            gt = {"node_id": tags["node_id"], "gpu": str(gpu.get("index")), "name": str(gpu.get("name") or "")}
            for gauge, key in ((self.gpu_util, "utilization"), (self.gpu_mem, "memory_used"),
                               (self.gpu_mem_total, "memory_total"), (self.gpu_temp, "temperature"),
                               (self.gpu_power, "power_w"), (self.gpu_ecc, "ecc_uncorrected")):
                if _num(gpu.get(key)) is not None:
                    gauge.set(float(gpu[key]), tags=gt)


_num = finite
