"""memory_pressure: a node's memory use at or above its warning or critical level."""

from __future__ import annotations

from supervisor.detectors._cluster import ClusterDetector, short
from supervisor.findings import Finding


class MemoryPressure(ClusterDetector):
    """Memory use at or above ``memory_warning`` percent (warning) or
    ``memory_critical`` (critical); clears ``memory_hysteresis`` points below
    the warning level (in between it stays on, no longer critical)."""

    name = "memory_pressure"

    def __call__(self, now: float, node, heartbeat: dict) -> list[Finding]:
        s = self.settings
        mem = heartbeat.get("memory_percent")
        key = (node.node_id, self.name)
        if mem is None:
            return []
        if mem >= s.memory_warning:
            sev = "critical" if mem >= s.memory_critical else "warning"
            thr = s.memory_critical if sev == "critical" else s.memory_warning
            return self.latched(node, (), sev, now, "memory_percent", mem,
                                f"node {short(node.node_id)} ({node.address}) memory at {mem:.1f}% "
                                f"(warning at {s.memory_warning:g}%, critical at {s.memory_critical:g}%)",
                                threshold=thr)
        if mem < s.memory_warning - s.memory_hysteresis:
            self.conditions.clear(key)
        elif key in self.conditions.active:  # in the hysteresis band: still on, no longer critical
            c = self.conditions.active[key]
            c.severity = c.reported_severity = "warning"
        return []
