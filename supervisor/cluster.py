"""Cluster health, Ray-free: node heartbeats in, node- and cluster-level findings out.

The node monitors (``actors/node_monitor.py``, one per Ray node) send a
heartbeat every few seconds with the node's CPU, memory, disk and network
figures and, where there are NVIDIA GPUs, per-GPU utilization, memory,
temperature, power and ECC/XID error counts. :class:`ClusterState` keeps the
newest heartbeat of every node and judges:

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

from supervisor.findings import severity_rank, worst
from supervisor.stats import finite, median as _median, peer_score

# XIDs that mean the hardware (or the GPU's link to the host) is broken, after NVIDIA's XID catalogue:
# 48 double-bit ECC, 61/62 internal micro-controller, 63/64 ECC page retirement / row remapping,
# 74 NVLink, 79 fallen off the bus, 92 high single-bit ECC rate, 94/95 contained/uncontained ECC,
# 119/120 GSP errors. The others (13, 31, 43, 45, ...) are usually the application's own faults.
CRITICAL_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120})

NODE_DETECTORS = ("node_down", "memory_pressure", "gpu_fault")


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
class _Condition:
    severity: str
    since: float
    reported_at: float
    reported_severity: str


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

    @property
    def alive(self) -> bool:
        if self.down == "dead" or self.ray_alive is False:
            return False
        return self.down is None


class ClusterState:
    def __init__(self, settings: ClusterSettings | None = None):
        self.settings = settings or ClusterSettings()
        self.nodes: dict[str, NodeView] = {}
        self._conditions: dict[tuple, _Condition] = {}
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
            out.append(self._finding(n, "node_down", "info", None, None,
                                     f"node {_short(n.node_id)} ({n.address}) is heartbeating again"))
            n.down = None
            self._clear((n.node_id, "node_down"))
        n.seen_alive = True
        out += self._judge_memory(n, hb, now)
        out += self._judge_gpus(n, hb, now)
        return out

    def sync_ray_nodes(self, ray_nodes: Iterable[Mapping[str, Any]], now: float) -> list[dict]:
        """Take ``ray.nodes()``; return node_down findings for nodes Ray now reports dead."""
        out = []
        for rn in ray_nodes:
            nid = rn.get("NodeID")
            if not nid:
                continue
            n = self._node(nid, now)
            alive = bool(rn.get("Alive"))
            n.address = n.address or rn.get("NodeManagerAddress")
            n.resources = {k: v for k, v in (rn.get("Resources") or {}).items()
                           if k in ("CPU", "GPU", "memory", "object_store_memory")}
            n.ray_alive = alive
            if alive:
                n.seen_alive = True
            elif n.seen_alive and n.down != "dead":
                n.down = "dead"
                f = self._raise(n, ("node_down",), "critical", now, None, None,
                                f"node {_short(nid)} ({n.address}) is dead: Ray reports it gone"
                                + (f" (last heartbeat {now - n.last_heartbeat:.1f} s ago)"
                                   if n.last_heartbeat else ""))
                out += f
        return out

    def check(self, now: float) -> list[dict]:
        """Periodic judgment: nodes silent for longer than the heartbeat timeout."""
        s = self.settings
        late = self._last_check is not None and now - self._last_check > s.heartbeat_timeout_s / 2
        self._last_check = now
        if late:  # we were stalled ourselves: queued heartbeats have not been taken yet
            return []
        out = []
        for n in self.nodes.values():
            if n.last_heartbeat is None or n.down is not None or n.ray_alive is False:
                continue
            silent = now - n.last_heartbeat
            if silent > s.heartbeat_timeout_s:
                n.down = "silent"
                out += self._raise(n, ("node_down",), "warning", now, "heartbeat_age_s", silent,
                                   f"node {_short(n.node_id)} ({n.address}) missed its heartbeats: none for "
                                   f"{silent:.1f} s (timeout {s.heartbeat_timeout_s:g} s); Ray still lists it alive",
                                   threshold=s.heartbeat_timeout_s)
        return out

    # ------------------------------------------------------------------ judgments
    def _judge_memory(self, n: NodeView, hb: dict, now: float) -> list[dict]:
        s = self.settings
        mem = hb.get("memory_percent")
        key = (n.node_id, "memory_pressure")
        if mem is None:
            return []
        if mem >= s.memory_warning:
            sev = "critical" if mem >= s.memory_critical else "warning"
            thr = s.memory_critical if sev == "critical" else s.memory_warning
            return self._raise(n, key[1:], sev, now, "memory_percent", mem,
                               f"node {_short(n.node_id)} ({n.address}) memory at {mem:.1f}% "
                               f"(warning at {s.memory_warning:g}%, critical at {s.memory_critical:g}%)",
                               threshold=thr)
        if mem < s.memory_warning - s.memory_hysteresis:
            self._clear(key)
        elif key in self._conditions:  # in the hysteresis band: still on, no longer critical
            c = self._conditions[key]
            c.severity = c.reported_severity = "warning"
        return []

    def _judge_gpus(self, n: NodeView, hb: dict, now: float) -> list[dict]:
        s = self.settings
        out = []
        gpus = hb.get("gpus") or []
        if n.max_gpus and len(gpus) < n.max_gpus and not hb.get("gpu_error"):
            out += self._raise(n, ("gpu_fault", "count"), "critical", now, "gpu_count", float(len(gpus)),
                               f"node {_short(n.node_id)}: {n.max_gpus - len(gpus)} GPU(s) disappeared "
                               f"({len(gpus)} visible, {n.max_gpus} before)", threshold=float(n.max_gpus))
        else:
            self._clear((n.node_id, "gpu_fault", "count"))
        n.max_gpus = max(n.max_gpus, len(gpus))
        for g in gpus:
            idx = g.get("index")
            tag = f"node {_short(n.node_id)} GPU {idx} ({g.get('name') or 'unknown'})"
            # XID errors: events, each one reported
            xids = g.get("xid_errors") or []
            if xids:
                sev = "critical" if any(x in CRITICAL_XIDS for x in xids) else "warning"
                out.append(self._finding(n, "gpu_fault", sev, "xid", float(xids[-1]),
                                         f"{tag}: XID error(s) {', '.join(map(str, xids))}"
                                         + (" (hardware fault)" if sev == "critical" else ""),
                                         gpu=idx, xids=xids))
            # ECC counters: judged by their increase since the last heartbeat
            base = n.gpu_baseline.setdefault(idx, {})
            unc, cor = g.get("ecc_uncorrected"), g.get("ecc_corrected")
            if unc is not None:
                prev = base.get("ecc_uncorrected")
                if (prev is None and unc > 0) or (prev is not None and unc > prev):
                    new = unc - (prev or 0)
                    out.append(self._finding(n, "gpu_fault", "critical" if prev is not None else "warning",
                                             "ecc_uncorrected", float(unc),
                                             f"{tag}: {new} new uncorrectable ECC error(s) (volatile total {unc})",
                                             threshold=float(prev or 0), gpu=idx))
                base["ecc_uncorrected"] = unc
            if cor is not None:
                prev = base.get("ecc_corrected")
                if prev is not None and cor > prev:
                    out.append(self._finding(n, "gpu_fault", "info", "ecc_corrected", float(cor),
                                             f"{tag}: {cor - prev} corrected ECC error(s) (volatile total {cor})",
                                             threshold=float(prev), gpu=idx))
                base["ecc_corrected"] = cor
            pend = [k for k in ("remapped_rows_pending", "retired_pages_pending") if g.get(k)]
            if pend:
                out += self._raise(n, ("gpu_fault", idx, "pending"), "warning", now, pend[0], 1.0,
                                   f"{tag}: {' and '.join(p.replace('_', ' ') for p in pend)}: reset the GPU "
                                   "when its jobs allow", gpu=idx)
            else:
                self._clear((n.node_id, "gpu_fault", idx, "pending"))
            # temperature: a state, latched
            t = g.get("temperature")
            if t is not None:
                warn_at = g.get("temperature_slowdown") or s.gpu_temp_warning
                shut = g.get("temperature_shutdown")
                crit_at = shut - 5.0 if shut else s.gpu_temp_critical
                if t >= min(warn_at, crit_at):
                    sev = "critical" if t >= crit_at else "warning"
                    out += self._raise(n, ("gpu_fault", idx, "temperature"), sev, now, "temperature", t,
                                       f"{tag}: temperature {t:.0f} C (warning at {warn_at:.0f} C, critical at "
                                       f"{crit_at:.0f} C)", threshold=crit_at if sev == "critical" else warn_at,
                                       gpu=idx)
                elif t < min(warn_at, crit_at) - 3.0:
                    self._clear((n.node_id, "gpu_fault", idx, "temperature"))
        return out

    def stragglers(self, trials: Mapping[str, Mapping[str, Any]], now: float) -> list[dict]:
        """Per-trial straggler findings.

        ``trials``: ``{trial_id: {"run_id", "node_id", "times": [recent iteration seconds]}}``,
        running trials only. A trial's level is the median of its last
        ``straggler_window`` times; its peers are the other trials of the same
        run with at least ``straggler_min_iterations`` times. It is a
        straggler when its robust z against the peers' levels (median, 1.4826 x
        MAD, floored at ``straggler_rel_floor`` x the median) is at least
        ``straggler_z`` and its level is at least ``straggler_ratio`` times the
        peers' median.
        """
        s = self.settings
        levels: dict[str, float] = {}
        for tid, t in trials.items():
            times = [v for v in (_f(x) for x in (t.get("times") or [])[-s.straggler_window:]) if v is not None]
            if len(times) >= s.straggler_min_iterations:
                levels[tid] = _median(times)
        out = []
        for tid, own in levels.items():
            run = trials[tid].get("run_id")
            peers = [levels[p] for p in levels if p != tid and trials[p].get("run_id") == run]
            key = ("trial", tid, "straggler")
            if len(peers) < s.straggler_min_peers:
                self._clear(key)
                continue
            z, ratio, med = peer_score(own, peers, s.straggler_rel_floor)
            if z >= s.straggler_z and ratio >= s.straggler_ratio:
                sev = "critical" if ratio >= s.straggler_critical_ratio else "warning"
                node = trials[tid].get("node_id")
                msg = (f"straggler: trial {tid} takes {own:.2f} s per iteration, {ratio:.1f}x its "
                       f"{len(peers)} peers' median {med:.2f} s (robust z={z:.1f}; needs z>={s.straggler_z:g} and "
                       f"ratio>={s.straggler_ratio:g})" + (f"; on node {_short(node)}" if node else ""))
                for f in self._raise_key(key, sev, now, "straggler", "iteration_time_s", own, msg,
                                         threshold=med * s.straggler_ratio, z=z, ratio=ratio,
                                         peers_median=med, peers=len(peers)):
                    f["trial_id"], f["node_id"] = tid, node
                    out.append(f)
            else:
                self._clear(key)
        return out

    # ------------------------------------------------------------------ latching
    def _finding(self, n: NodeView, detector: str, severity: str, metric: str | None, value: float | None,
                 message: str, threshold: float | None = None, **details) -> dict:
        return {"detector": detector, "severity": severity, "metric": metric, "value": value,
                "threshold": threshold, "message": message, "node_id": n.node_id, "address": n.address,
                "details": {"node_id": n.node_id, "address": n.address, **details}}

    def _raise(self, n: NodeView, key: tuple, severity: str, now: float, metric, value, message,
               threshold=None, **details) -> list[dict]:
        out = self._raise_key((n.node_id, *key), severity, now, key[0], metric, value, message, threshold,
                              **details)
        for f in out:
            f.update(node_id=n.node_id, address=n.address)
            f["details"].update(node_id=n.node_id, address=n.address)
        return out

    def _raise_key(self, key: tuple, severity: str, now: float, detector: str, metric, value, message,
                   threshold=None, **details) -> list[dict]:
        c = self._conditions.get(key)
        due = False
        if c is None:
            c = self._conditions[key] = _Condition(severity, now, now, severity)
            due = True
        else:
            c.severity = severity
            if severity_rank(severity) > severity_rank(c.reported_severity) or now - c.reported_at >= \
                    self.settings.repeat_s:
                due = True
        if not due:
            return []
        c.reported_at, c.reported_severity = now, severity
        return [{"detector": detector, "severity": severity, "metric": metric, "value": value,
                 "threshold": threshold, "message": message,
                 "details": {**details, "since": c.since}}]

    def _clear(self, key: tuple) -> None:
        self._conditions.pop(key, None)

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


def _short(node_id: str | None) -> str:
    return (node_id or "?")[:12]


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
        out_trials.append({"trial_id": t.get("trial_id"), "status": t.get("status"), "health": health,
                           "node_id": t.get("node_id"), "run_id": t.get("run_id"),
                           "iteration": t.get("iteration"), "iteration_time_s": t.get("iteration_time_s"),
                           "episode_return_mean": t.get("episode_return_mean")})
    return {"nodes": nodes, "trials": out_trials}
