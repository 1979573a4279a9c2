"""Shared pieces of the cluster detectors (node_down, memory_pressure, gpu_fault, straggler).

They judge a cluster-level stream (node heartbeats, ``ray.nodes()``, trials'
iteration times) rather than one trial's metrics; time is passed in
(``now``), so they are testable with a fake clock. A persisting condition is
latched in :class:`Conditions` (shared by the detectors of one
:class:`supervisor.cluster.ClusterState`): reported when it starts, when its
severity rises, and again every ``repeat_s`` seconds while it lasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from supervisor.findings import Finding, severity_rank


@dataclass
class Condition:
    severity: str
    since: float
    reported_at: float
    reported_severity: str


class Conditions:
    """Latched conditions, by key (``(node_id, detector, ...)`` or ``("trial", trial_id, detector)``)."""

    def __init__(self, repeat_s: float):
        self.repeat_s = repeat_s
        self.active: dict[tuple, Condition] = {}

    def due(self, key: tuple, severity: str, now: float) -> Condition | None:
        """Feed the condition's current severity; the condition when a finding is due now."""
        c = self.active.get(key)
        due = False
        if c is None:
            c = self.active[key] = Condition(severity, now, now, severity)
            due = True
        else:
            c.severity = severity
            if severity_rank(severity) > severity_rank(c.reported_severity) or now - c.reported_at >= self.repeat_s:
                due = True
        if not due:
            return None
        c.reported_at, c.reported_severity = now, severity
        return c

    def clear(self, key: tuple) -> None:
        self.active.pop(key, None)


def short(node_id: str | None) -> str:
    return (node_id or "?")[:12]


class ClusterDetector:
    """Base class: ``settings`` is a :class:`supervisor.cluster.ClusterSettings`."""

    name: ClassVar[str] = ""

    def __init__(self, settings, conditions: Conditions):
        self.settings = settings
        self.conditions = conditions

    def event(self, node, severity: str, metric: str | None, value: float | None, message: str,
              threshold: float | None = None, **details: Any) -> Finding:
        """A finding reported each time it happens (not latched)."""
        return Finding(self.name, severity, metric, value, message, threshold,
                       details={"node_id": node.node_id, "address": node.address, **details})

    def latched(self, node, key: tuple, severity: str, now: float, metric, value, message: str,
                threshold=None, **details: Any) -> list[Finding]:
        """A node's condition ``(node_id, name, *key)``: a finding when the latch says one is due."""
        found = self.raise_key((node.node_id, self.name, *key), severity, now, metric, value, message,
                               threshold, **details)
        for f in found:
            f.details.update(node_id=node.node_id, address=node.address)
        return found

    def raise_key(self, key: tuple, severity: str, now: float, metric, value, message: str, threshold=None,
                  **details: Any) -> list[Finding]:
        c = self.conditions.due(key, severity, now)
        if c is None:
            return []
        return [Finding(self.name, severity, metric, value, message, threshold,
                        details={**details, "since": c.since})]
