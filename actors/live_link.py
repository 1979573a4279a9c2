"""The dashboard's live mode on the Ray side: the supervisor actor's snapshot, Ray's node table, manual actions.

``supervise dashboard --address`` builds a ``LiveLink`` and hands it to the
core's ``Hub`` (``supervisor.dashboard.data``), which only knows the
``LiveSource`` protocol.
"""

from __future__ import annotations

import logging

import ray

from actors import compat
from actors.supervisor_actor import NAMESPACE, find_supervisor

log = logging.getLogger(__name__)


class LiveLink:
    """The live supervisor: the named actor's snapshot(), Ray's node table, and request_action()."""

    def __init__(self, address: str | None):
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address or "auto", namespace=NAMESPACE, log_to_driver=False,
                     logging_level=logging.WARNING)
        self.address = address or "auto"
        self._actor = None

    def actor(self):
        if self._actor is None:
            self._actor = find_supervisor()
        return self._actor

    def snapshot(self) -> dict | None:
        a = self.actor()
        if a is None:
            return None
        try:
            return self.ray.get(a.snapshot.remote(), timeout=5)
        except Exception as e:  # dead, restarting: try to find it again next tick
            log.warning("supervisor snapshot failed: %s", e)
            self._actor = None
            return None

    def ray_nodes(self) -> list[dict]:
        out = []
        try:
            for n in self.ray.nodes():
                res = n.get("Resources") or {}
                out.append({"node_id": n.get("NodeID"), "address": n.get("NodeManagerAddress"),
                            "alive": bool(n.get("Alive")), "last_seen": None,
                            "info": {"cpus": res.get("CPU"), "gpus_total": res.get("GPU"),
                                     "head": compat.is_head_node(res), "source": "ray"}})
        except Exception as e:
            log.warning("ray.nodes() failed: %s", e)
        return out

    def request_action(self, trial_id: str, action: str, params: dict, reason: str) -> bool:
        a = self.actor()
        if a is None:
            raise RuntimeError("no supervisor actor on this cluster")
        return bool(self.ray.get(a.request_action.remote(trial_id, action, params, reason), timeout=10))
