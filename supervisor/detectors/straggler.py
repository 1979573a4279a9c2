"""straggler: a trial whose recent iteration time is far above its peers'."""

from __future__ import annotations

import math
from typing import Any, Mapping

from supervisor.detectors._cluster import ClusterDetector, short
from supervisor.findings import Finding
from supervisor.stats import finite, median as _median, peer_score  # noqa: F401 (peer_score: a public name)


class Straggler(ClusterDetector):
    """Per-trial: a trial's level is the median of its last ``straggler_window``
    iteration times; its peers are the other trials of the same run with at
    least ``straggler_min_iterations`` times. It is a straggler when its
    robust z against the peers' levels (median, 1.4826 x MAD, floored at
    ``straggler_rel_floor`` x the median) is at least ``straggler_z`` and its
    level is at least ``straggler_ratio`` times the peers' median; critical at
    ``straggler_critical_ratio``. Findings carry ``trial_id`` and ``node_id``
    in their details.
    """

    name = "straggler"

    def __call__(self, now: float, trials: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
        """``trials``: ``{trial_id: {"run_id", "node_id", "times": [recent iteration seconds]}}``,
        running trials only."""
        s = self.settings
        levels: dict[str, float] = {}
        for tid, t in trials.items():
            times = [v for v in (finite(x) for x in (t.get("times") or [])[-s.straggler_window:]) if v is not None]
            if len(times) >= s.straggler_min_iterations:
                levels[tid] = _median(times)
        out = []
        for tid, own in levels.items():
            run = trials[tid].get("run_id")
            peers = [levels[p] for p in levels if p != tid and trials[p].get("run_id") == run]
            key = ("trial", tid, self.name)
            if len(peers) < s.straggler_min_peers:
                self.conditions.clear(key)
                continue
            z, ratio, med = peer_score(own, peers, s.straggler_rel_floor)
            if z >= s.straggler_z and ratio >= s.straggler_ratio:
                sev = "critical" if ratio >= s.straggler_critical_ratio else "warning"
                node = trials[tid].get("node_id")
                msg = (f"straggler: trial {tid} takes {own:.2f} s per iteration, {ratio:.1f}x its "
                       f"{len(peers)} peers' median {med:.2f} s (robust z={z:.1f}; needs z>={s.straggler_z:g} and "
                       f"ratio>={s.straggler_ratio:g})" + (f"; on node {short(node)}" if node else ""))
                for f in self.raise_key(key, sev, now, "iteration_time_s", own, msg,
                                        threshold=med * s.straggler_ratio, z=z, ratio=ratio,
                                        peers_median=med, peers=len(peers)):
                    f.details.update(trial_id=tid, node_id=node)
                    out.append(f)
            else:
                self.conditions.clear(key)
        return out
