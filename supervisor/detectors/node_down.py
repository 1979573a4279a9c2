"""node_down: a node that stopped heartbeating, or that Ray reports dead."""

from __future__ import annotations

from supervisor.detectors._cluster import ClusterDetector, short
from supervisor.findings import Finding


class NodeDown(ClusterDetector):
    """A node that was alive and missed its heartbeats for ``heartbeat_timeout_s``
    (warning while Ray still lists it alive), or that Ray reports dead
    (critical). A node seen again is reported back (info).

    ``__call__(now, nodes)`` judges silence; :meth:`dead` and :meth:`back`
    word the other two transitions, which the cluster state sees as they
    happen (``ray.nodes()``, a heartbeat).
    """

    name = "node_down"

    def silent(self, now: float, nodes) -> list:
        """The nodes (``NodeView``s) up until now that have been silent for longer than the timeout."""
        return [n for n in nodes if n.last_heartbeat is not None and n.down is None and n.ray_alive is not False
                and now - n.last_heartbeat > self.settings.heartbeat_timeout_s]

    def __call__(self, now: float, nodes) -> list[Finding]:
        """Findings for the nodes that :meth:`silent` names."""
        s = self.settings
        out = []
        for n in self.silent(now, nodes):
            silent = now - n.last_heartbeat
            out += self.latched(n, (), "warning", now, "heartbeat_age_s", silent,
                                f"node {short(n.node_id)} ({n.address}) missed its heartbeats: none for "
                                f"{silent:.1f} s (timeout {s.heartbeat_timeout_s:g} s); Ray still lists it alive",
                                threshold=s.heartbeat_timeout_s)
        return out

    def dead(self, node, now: float) -> list[Finding]:
        return self.latched(node, (), "critical", now, None, None,
                            f"node {short(node.node_id)} ({node.address}) is dead: Ray reports it gone"
                            + (f" (last heartbeat {now - node.last_heartbeat:.1f} s ago)"
                               if node.last_heartbeat else ""))

    def back(self, node) -> Finding:
        self.conditions.clear((node.node_id, self.name))
        return self.event(node, "info", None, None,
                          f"node {short(node.node_id)} ({node.address}) is heartbeating again")
