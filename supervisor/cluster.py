"""Cluster health, Ray-free: node heartbeats in, node- and cluster-level findings out.

The node monitors (``actors/node_monitor.py``, one per Ray node) send a
heartbeat every few seconds with the node's CPU, memory, disk and network
figures and, where there are NVIDIA GPUs, per-GPU utilization, memory,
temperature, power and ECC/XID error counts. :class:`ClusterState` keeps the
newest heartbeat of every node and judges, with the cluster detectors of
:mod:`supervisor.detectors` (``node_down.py``, ``memory_pressure.py``,
``gpu_fault.py``, ``straggler.py``):

* ``node_down``: a node that was alive missed its heartbeats for
  ``heartbeat_timeout_s`` (warning while Ray still lists it alive), or Ray
  reports it dead (critical). A node seen again is reported back (info).
* ``memory_pressure``: memory use at or above ``memory_warning`` percent
  (warning) or ``memory_critical`` (critical); clears ``memory_hysteresis``
  points below the warning level.
* ``gpu_fault``: new XID errors (critical for the XIDs that mean broken
  hardware or a lost GPU, warning for the ones applications cause), new
  uncorrectable ECC errors (critical), pending row remaps or retired pages
  (warning), temperature at the GPU's slowdown threshold (warning) or near
  its shutdown threshold (critical), a GPU that disappeared (critical).
* ``straggler`` (per trial, :meth:`ClusterState.stragglers`): a trial whose
  recent iteration time is far above its peers' (the other running trials
  of the same run), scored against the peers' median and MAD.

A persisting condition is reported when it starts, when its severity rises,
and again every ``repeat_s`` seconds while it lasts. Findings are plain
dicts in the store's ``record_finding`` shape plus ``node_id`` (and
``trial_id`` for stragglers). Time is passed in (``now``), so everything
here is testable with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from supervisor.detectors._cluster import Conditions
from supervisor.detectors.gpu_fault import CRITICAL_XIDS, GpuFault  # noqa: F401 (CRITICAL_XIDS: a public name)
from supervisor.detectors.memory_pressure import MemoryPressure
from supervisor.detectors.node_down import NodeDown
from supervisor.detectors.straggler import Straggler, peer_score  # noqa: F401 (peer_score: a public name)
from supervisor.findings import Finding, worst
from supervisor.stats import finite

NODE_DETECTORS = (NodeDown.name, MemoryPressure.name, GpuFault.name)


@dataclass
class ClusterSettings:
    """Thresholds of the cluster-level judgments. Defaults in brackets.

    heartbeat_interval_s: how often monitors report [2.0].
    heartbeat_timeout_s: silence after which a node counts as down [6.0].
    memory_warning / memory_critical: node memory percent [90 / 97].
    memory_hysteresis: percent points below memory_warning to clear [5].
    gpu_temp_warning / gpu_temp_critical: degrees C, used when NVML does not
        give the GPU's own slowdown/shutdown thresholds [85 / 95].
    straggler_z: robust z of a trial's iteration time against its peers [4].
    straggler_ratio: and at least this many times the peers' median [1.5];
        critical at straggler_critical_ratio [4].
    straggler_min_peers: peers needed to judge [2]; straggler_window: recent
        iterations per trial [5]; straggler_min_iterations [3].
    repeat_s: a persisting condition is reported again after this long [60].
    node_prune_s: a node down this long is forgotten (its view, its conditions) [3600]; the stores keep
        its rows.
    """

    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 6.0
    memory_warning: float = 90.0
    memory_critical: float = 97.0
    memory_hysteresis: float = 5.0
    gpu_temp_warning: float = 85.0
    gpu_temp_critical: float = 95.0
    straggler_z: float = 4.0
    straggler_ratio: float = 1.5
    straggler_critical_ratio: float = 4.0
    straggler_min_peers: int = 2
    straggler_window: int = 5
    straggler_min_iterations: int = 3
    straggler_rel_floor: float = 0.1
    repeat_s: float = 60.0
    node_prune_s: float = 3600.0


# ---------------------------------------------------------------------------------- data shaping


_f = finite


def _i(x: Any) -> int | None:
    v = _f(x)
    return int(v) if v is not None else None


def _text(x: Any) -> str | None:
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    return str(x) if x is not None else None


def shape_gpu(raw: Mapping[str, Any]) -> dict:
    """One GPU as NVML gave it (native units: bytes, milliwatts; names may be bytes) -> the status shape.

    The interface keys (``index``, ``name``, ``utilization`` percent,
    ``memory_used`` / ``memory_total`` bytes, ``temperature`` degrees C) come
    first; the rest are extras: ``uuid``, ``memory_utilization``,
    ``power_w``, ``power_limit_w``, ``temperature_slowdown``,
    ``temperature_shutdown``, ``ecc_corrected``, ``ecc_uncorrected``
    (volatile counts), ``remapped_rows_pending``, ``retired_pages_pending``,
    ``xid_errors`` (new XID codes since the last heartbeat), ``errors``
    (what NVML could not tell). Anything missing or malformed becomes None.
    """
    def watts(mw):
        v = _f(mw)
        return round(v / 1000.0, 3) if v is not None else None

    util = _f(raw.get("utilization_gpu", raw.get("utilization")))
    xids = [x for x in (_i(v) for v in (raw.get("xid_errors") or [])) if x is not None]
    return {
        "index": _i(raw.get("index")),
        "name": _text(raw.get("name")),
        "utilization": util,
        "memory_used": _i(raw.get("memory_used")),
        "memory_total": _i(raw.get("memory_total")),
        "temperature": _f(raw.get("temperature")),
        "uuid": _text(raw.get("uuid")),
        "memory_utilization": _f(raw.get("utilization_memory")),
        "power_w": watts(raw.get("power_mw")) if "power_mw" in raw else _f(raw.get("power_w")),
        "power_limit_w": (watts(raw.get("power_limit_mw")) if "power_limit_mw" in raw
                          else _f(raw.get("power_limit_w"))),
        "temperature_slowdown": _f(raw.get("temperature_slowdown")),
        "temperature_shutdown": _f(raw.get("temperature_shutdown")),
        "ecc_corrected": _i(raw.get("ecc_corrected")),
        "ecc_uncorrected": _i(raw.get("ecc_uncorrected")),
        "remapped_rows_pending": raw.get("remapped_rows_pending") if isinstance(raw.get("remapped_rows_pending"),
                                                                                bool) else None,
        "retired_pages_pending": raw.get("retired_pages_pending") if isinstance(raw.get("retired_pages_pending"),
                                                                                bool) else None,
        "xid_errors": xids,
        "errors": [str(e) for e in (raw.get("errors") or [])],
    }


GPU_STATUS_KEYS = ("index", "name", "utilization", "memory_used", "memory_total", "temperature")


def shape_heartbeat(raw: Mapping[str, Any]) -> dict:
    """A monitor's heartbeat, cleaned: numbers finite or None, GPUs shaped (see :func:`shape_gpu`)."""
    gpus = raw.get("gpus")
    return {
        "node_id": _text(raw.get("node_id")),
        "address": _text(raw.get("address")),
        "hostname": _text(raw.get("hostname")),
        "time": _f(raw.get("time")),
        "cpu_percent": _f(raw.get("cpu_percent")),
        "cpu_count": _i(raw.get("cpu_count")),
        "load_1m": _f(raw.get("load_1m")),
        "memory_percent": _f(raw.get("memory_percent")),
        "memory_used": _i(raw.get("memory_used")),
        "memory_total": _i(raw.get("memory_total")),
        "swap_percent": _f(raw.get("swap_percent")),
        "disk_percent": _f(raw.get("disk_percent")),
        "disk_path": _text(raw.get("disk_path")),
        "net_sent_bytes_per_s": _f(raw.get("net_sent_bytes_per_s")),
        "net_recv_bytes_per_s": _f(raw.get("net_recv_bytes_per_s")),
        "gpus": [shape_gpu(g) for g in gpus if isinstance(g, Mapping)] if isinstance(gpus, list) else [],
        "gpu_error": _text(raw.get("gpu_error")),
    }


# ---------------------------------------------------------------------------------- state


@dataclass
class NodeView:
    node_id: str
    address: str | None = None
    ray_alive: bool | None = None  # what ray.nodes() says; None: not seen there yet
    resources: dict = field(default_factory=dict)
    report: dict | None = None  # newest shaped heartbeat
    last_heartbeat: float | None = None
    first_seen: float = 0.0
    seen_alive: bool = False  # alive at some point while we watched (only those can go down)
    down: str | None = None  # None, "silent" or "dead"
    gpu_baseline: dict = field(default_factory=dict)  # index -> {"ecc_uncorrected", "ecc_corrected"}
    max_gpus: int = 0
    gone_since: float | None = None  # when it was first seen down (prune)

    @property
    def alive(self) -> bool:
        if self.down == "dead" or self.ray_alive is False:
            return False
        return self.down is None


class ClusterState:
    def __init__(self, settings: ClusterSettings | None = None):
        self.settings = settings or ClusterSettings()
        self.nodes: dict[str, NodeView] = {}
        # the cluster detectors, latching their conditions in one place (node health reads them)
        self.conditions = Conditions(self.settings.repeat_s)
        self._conditions = self.conditions.active
        self.node_down = NodeDown(self.settings, self.conditions)
        self.memory_pressure = MemoryPressure(self.settings, self.conditions)
        self.gpu_fault = GpuFault(self.settings, self.conditions)
        self.straggler = Straggler(self.settings, self.conditions)
        self._last_check: float | None = None

    # ------------------------------------------------------------------ inputs
    def _node(self, node_id: str, now: float) -> NodeView:
        n = self.nodes.get(node_id)
        if n is None:
            n = self.nodes[node_id] = NodeView(node_id, first_seen=now)
        return n

    def heartbeat(self, raw: Mapping[str, Any], now: float) -> list[dict]:
        """Take one monitor heartbeat; return the findings it raises (memory, GPUs, a node back)."""
        hb = shape_heartbeat(raw)
        if not hb["node_id"]:
            return []
        n = self._node(hb["node_id"], now)
        n.report, n.last_heartbeat = hb, now
        n.address = hb["address"] or n.address
        out: list[dict] = []
        if n.down is not None and n.ray_alive is not False:
            out.append(_row(self.node_down.back(n)))
            n.down = None
        n.seen_alive = True
        out += map(_row, self.memory_pressure(now, n, hb))
        out += map(_row, self.gpu_fault(now, n, hb))
        return out

    def sync_ray_nodes(self, ray_nodes: Iterable[Mapping[str, Any]], now: float) -> list[dict]:
        """Take ``ray.nodes()``; return node_down findings for nodes Ray now reports dead."""
        out = []
        for rn in ray_nodes:
            nid = rn.get("NodeID")
            if not nid:
                continue
            alive = bool(rn.get("Alive"))
            if not alive and nid not in self.nodes:
                continue  # dead before we watched it, or forgotten (prune): history, not a node to track
            n = self._node(nid, now)
            n.address = n.address or rn.get("NodeManagerAddress")
            n.resources = {k: v for k, v in (rn.get("Resources") or {}).items()
                           if k in ("CPU", "GPU", "memory", "object_store_memory")}
            n.ray_alive = alive
            if alive:
                n.seen_alive = True
            elif n.seen_alive and n.down != "dead":
                n.down = "dead"
                out += map(_row, self.node_down.dead(n, now))
        return out

    def check(self, now: float) -> list[dict]:
        """Periodic judgment: nodes silent for longer than the heartbeat timeout."""
        s = self.settings
        late = self._last_check is not None and now - self._last_check > s.heartbeat_timeout_s / 2
        self._last_check = now
        if late:  # we were stalled ourselves: queued heartbeats have not been taken yet
            return []
        out = [_row(f) for f in self.node_down(now, self.nodes.values())]
        for n in self.node_down.silent(now, self.nodes.values()):
            n.down = "silent"
        return out

    def prune(self, now: float) -> list[str]:
        """Forget the nodes down for ``node_prune_s`` (their views and latched conditions), so that a
        long-lived supervisor on a cluster whose nodes come and go stays the same size; returns their ids."""
        gone = []
        for nid, n in list(self.nodes.items()):
            if n.alive:
                n.gone_since = None
            elif n.gone_since is None:
                n.gone_since = now
            elif now - n.gone_since >= self.settings.node_prune_s:
                gone.append(nid)
                del self.nodes[nid]
        if gone:
            dropped = set(gone)
            for key in [k for k in self._conditions if k[0] in dropped]:
                self.conditions.clear(key)
        return gone

    # ------------------------------------------------------------------ judgments
    def stragglers(self, trials: Mapping[str, Mapping[str, Any]], now: float) -> list[dict]:
        """Per-trial straggler findings (see :class:`~supervisor.detectors.straggler.Straggler`).

        ``trials``: ``{trial_id: {"run_id", "node_id", "times": [recent iteration seconds]}}``,
        running trials only (the latched conditions of trials no longer among them are dropped).
        """
        for key in [k for k in self._conditions if k[0] == "trial" and k[1] not in trials]:
            self.conditions.clear(key)
        return [_row(f) for f in self.straggler(now, trials)]

    # ------------------------------------------------------------------ views
    def node_health(self, node_id: str) -> str:
        sev = [c.severity for k, c in self._conditions.items() if k[0] == node_id]
        n = self.nodes.get(node_id)
        if n is not None and (n.down == "dead" or n.ray_alive is False):
            sev.append("critical")
        return worst(sev)

    def node_rows(self, now: float) -> list[dict]:
        """Every node known (heartbeating or listed by Ray), in the status shape plus extras."""
        rows = []
        for n in sorted(self.nodes.values(), key=lambda v: (v.first_seen, v.node_id)):
            rep = n.report or {}
            rows.append({
                "node_id": n.node_id,
                "address": n.address,
                "alive": n.alive,
                "cpu_percent": rep.get("cpu_percent"),
                "memory_percent": rep.get("memory_percent"),
                "gpus": [dict(g) for g in rep.get("gpus") or []],
                "health": self.node_health(n.node_id),
                "monitor": n.last_heartbeat is not None,
                "heartbeat_age_s": round(now - n.last_heartbeat, 3) if n.last_heartbeat is not None else None,
                "hostname": rep.get("hostname"),
                "disk_percent": rep.get("disk_percent"),
                "net_sent_bytes_per_s": rep.get("net_sent_bytes_per_s"),
                "net_recv_bytes_per_s": rep.get("net_recv_bytes_per_s"),
                "resources": dict(n.resources),
                "gpu_error": rep.get("gpu_error"),
            })
        return rows


def _row(f: Finding) -> dict:
    """A cluster finding in the store's ``record_finding`` shape plus ``node_id`` (and ``address``,
    or ``trial_id`` for stragglers)."""
    details = dict(f.details)
    row = {"detector": f.detector, "severity": f.severity, "metric": f.metric, "value": f.value,
           "threshold": f.threshold, "message": f.message}
    ids = {"node_id": details.get("node_id"), "address": details.get("address")}
    if "trial_id" in details:  # a trial's finding: the ids are the row's, not the details'
        row["details"] = details
        row["trial_id"], row["node_id"] = details.pop("trial_id"), details.pop("node_id")
    elif "since" in details:  # a latched condition (keys in the order they always had)
        row.update(details=details, **ids)
    else:
        row.update(ids, details=details)
    return row


# ---------------------------------------------------------------------------------- status


def node_row_from_ray(rn: Mapping[str, Any]) -> dict:
    """A status row for a node nobody monitors: what ``ray.nodes()`` knows."""
    res = rn.get("Resources") or {}
    return {"node_id": rn.get("NodeID"), "address": rn.get("NodeManagerAddress"), "alive": bool(rn.get("Alive")),
            "cpu_percent": None, "memory_percent": None, "gpus": [],
            "health": "ok" if rn.get("Alive") else "critical", "monitor": False, "heartbeat_age_s": None,
            "hostname": rn.get("NodeManagerHostname"), "disk_percent": None, "net_sent_bytes_per_s": None,
            "net_recv_bytes_per_s": None,
            "resources": {k: v for k, v in res.items() if k in ("CPU", "GPU", "memory", "object_store_memory")},
            "gpu_error": None}


def build_status(ray_nodes: Iterable[Mapping[str, Any]] | None, node_rows: Iterable[Mapping[str, Any]] | None,
                 trials: Iterable[Mapping[str, Any]] | None) -> dict:
    """The ``supervise status --format json`` object.

    ``ray_nodes`` (``ray.nodes()``, as the caller sees it) is authoritative on
    which nodes exist and whether Ray counts them alive; ``node_rows`` (the
    supervisor's, from heartbeats) adds the measurements; a node without a
    monitor is still listed, with None measurements. Dead nodes Ray forgot
    about but the supervisor remembers are kept (alive false).
    """
    by_id: dict[str, dict] = {}
    for r in node_rows or []:
        if r.get("node_id"):
            by_id[r["node_id"]] = dict(r)
    order = list(by_id)
    for rn in ray_nodes or []:
        nid = rn.get("NodeID")
        if not nid:
            continue
        base = node_row_from_ray(rn)
        if nid in by_id:
            row = by_id[nid]
            row["alive"] = bool(rn.get("Alive")) and row.get("alive", True)
            if not row["alive"]:
                row["health"] = "critical"
            row["address"] = row.get("address") or base["address"]
            row["resources"] = row.get("resources") or base["resources"]
        else:
            if not rn.get("Alive") and not base["address"]:
                continue
            by_id[nid] = base
            order.append(nid)
    nodes = [by_id[n] for n in order]
    nodes.sort(key=lambda r: (not r["alive"], r["node_id"]))
    out_trials = []
    for t in trials or []:
        h = t.get("health")
        if isinstance(h, Mapping):
            health = {"score": h.get("score"), "worst_severity": h.get("worst_severity")}
        else:
            health = {"score": h, "worst_severity": None}
        per = h.get("modules") if isinstance(h, Mapping) and isinstance(h.get("modules"), Mapping) else {}
        out_trials.append({"trial_id": t.get("trial_id"), "status": t.get("status"), "health": health,
                           "node_id": t.get("node_id"), "run_id": t.get("run_id"),
                           "iteration": t.get("iteration"), "iteration_time_s": t.get("iteration_time_s"),
                           "episode_return_mean": t.get("episode_return_mean"),
                           # each module (a multi-agent trial's policy) with its own health
                           "modules": [{"module": m, "trained": bool(mh.get("trained", True)),
                                        "health": {"score": mh.get("score"), "worst_severity": mh.get("worst_severity")}}
                                       for m, mh in sorted(per.items()) if isinstance(mh, Mapping)]})
    return {"nodes": nodes, "trials": out_trials}
