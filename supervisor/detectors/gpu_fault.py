"""gpu_fault: XID and ECC errors, pending remaps, overheating and lost GPUs on a node."""

from __future__ import annotations

from supervisor.detectors._cluster import ClusterDetector, short
from supervisor.findings import Finding

# XIDs that mean the hardware (or the GPU's link to the host) is broken, after NVIDIA's XID catalogue:
# 48 double-bit ECC, 61/62 internal micro-controller, 63/64 ECC page retirement / row remapping,
# 74 NVLink, 79 fallen off the bus, 92 high single-bit ECC rate, 94/95 contained/uncontained ECC,
# 119/120 GSP errors. The others (13, 31, 43, 45, ...) are usually the application's own faults.
CRITICAL_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120})


class GpuFault(ClusterDetector):
    """New XID errors (critical for the XIDs that mean broken hardware or a
    lost GPU, warning for the ones applications cause), new uncorrectable ECC
    errors (critical), pending row remaps or retired pages (warning),
    temperature at the GPU's slowdown threshold (warning) or near its
    shutdown threshold (critical), a GPU that disappeared (critical)."""

    name = "gpu_fault"

    def __call__(self, now: float, n, hb: dict) -> list[Finding]:
        """Findings for one heartbeat ``hb`` of node ``n`` (a ``NodeView``: its GPU count and ECC
        baselines are this detector's memory of the node)."""
        s = self.settings
        out = []
        gpus = hb.get("gpus") or []
        if n.max_gpus and len(gpus) < n.max_gpus and not hb.get("gpu_error"):
            out += self.latched(n, ("count",), "critical", now, "gpu_count", float(len(gpus)),
                                f"node {short(n.node_id)}: {n.max_gpus - len(gpus)} GPU(s) disappeared "
                                f"({len(gpus)} visible, {n.max_gpus} before)", threshold=float(n.max_gpus))
        else:
            self.conditions.clear((n.node_id, self.name, "count"))
        n.max_gpus = max(n.max_gpus, len(gpus))
        for g in gpus:
            idx = g.get("index")
            tag = f"node {short(n.node_id)} GPU {idx} ({g.get('name') or 'unknown'})"
            # XID errors: events, each one reported
            xids = g.get("xid_errors") or []
            if xids:
                sev = "critical" if any(x in CRITICAL_XIDS for x in xids) else "warning"
                out.append(self.event(n, sev, "xid", float(xids[-1]),
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
                    out.append(self.event(n, "critical" if prev is not None else "warning",
                                          "ecc_uncorrected", float(unc),
                                          f"{tag}: {new} new uncorrectable ECC error(s) (volatile total {unc})",
                                          threshold=float(prev or 0), gpu=idx))
                base["ecc_uncorrected"] = unc
            if cor is not None:
                prev = base.get("ecc_corrected")
                if prev is not None and cor > prev:
                    out.append(self.event(n, "info", "ecc_corrected", float(cor),
                                          f"{tag}: {cor - prev} corrected ECC error(s) (volatile total {cor})",
                                          threshold=float(prev), gpu=idx))
                base["ecc_corrected"] = cor
            pend = [k for k in ("remapped_rows_pending", "retired_pages_pending") if g.get(k)]
            if pend:
                out += self.latched(n, (idx, "pending"), "warning", now, pend[0], 1.0,
                                    f"{tag}: {' and '.join(p.replace('_', ' ') for p in pend)}: reset the GPU "
                                    "when its jobs allow", gpu=idx)
            else:
                self.conditions.clear((n.node_id, self.name, idx, "pending"))
            # temperature: a state, latched
            t = g.get("temperature")
            if t is not None:
                warn_at = g.get("temperature_slowdown") or s.gpu_temp_warning
                shut = g.get("temperature_shutdown")
                crit_at = shut - 5.0 if shut else s.gpu_temp_critical
                if t >= min(warn_at, crit_at):
                    sev = "critical" if t >= crit_at else "warning"
                    out += self.latched(n, (idx, "temperature"), sev, now, "temperature", t,
                                        f"{tag}: temperature {t:.0f} C (warning at {warn_at:.0f} C, critical at "
                                        f"{crit_at:.0f} C)", threshold=crit_at if sev == "critical" else warn_at,
                                        gpu=idx)
                elif t < min(warn_at, crit_at) - 3.0:
                    self.conditions.clear((n.node_id, self.name, idx, "temperature"))
        return out
