"""trial_hung: an iteration that runs far longer than the trial's own iterations do (an event, judged on a clock)."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

from supervisor.detectors._common import fmt
from supervisor.findings import Finding


class TrialHung:
    """Flag a trial whose current iteration has run longer than ``max(factor x its median iteration time,
    floor_s)``.

    Judged on the supervisor's own clock, never the trial's: the iteration started when the supervisor got
    the trial's previous report (or the first heartbeat naming the iteration), and the
    trial's heartbeats say which phase it is in (``sampling``, ``learning``, ``weight sync``,
    ``evaluation``) and that its process still runs. The median is of the trial's reported iteration times
    (``time_this_iter_s``); before any, the bound is ``factor x floor_s``. Critical: its ladder restarts the
    trial through Tune from its newest healthy checkpoint.

    Args:
        factor: how many median iteration times an iteration may take. Default 10.
        floor_s: the bound is never below this. Default 300 (5 minutes).
    """

    name = "trial_hung"

    def __init__(self, factor: float = 10.0, floor_s: float = 300.0):
        self.factor, self.floor_s = float(factor), float(floor_s)

    def bound(self, median_s: float | None) -> float:
        if median_s is None or not median_s > 0:
            return self.factor * self.floor_s
        return max(self.factor * median_s, self.floor_s)

    def __call__(self, now: float, started: float, median_s: float | None, iteration: int,
                 phase: str | None = None, node_id: str | None = None, last_beat: float | None = None
                 ) -> Finding | None:
        elapsed = now - started
        bound = self.bound(median_s)
        if not elapsed > bound:
            return None
        how = (f"max({fmt(self.factor)} x median {fmt(median_s)} s, floor {fmt(self.floor_s)} s)"
               if median_s else f"{fmt(self.factor)} x floor {fmt(self.floor_s)} s, no iteration finished yet")
        beat = ("no heartbeat yet" if last_beat is None else
                f"last heartbeat {fmt(now - last_beat)} s ago" + (" (the process still runs)"
                                                                 if now - last_beat <= bound / 2 else ""))
        where = f" on node {node_id[:12]}" if node_id else ""
        msg = (f"trial_hung: iteration {iteration} has run {fmt(elapsed)} s, in phase {phase or 'unknown'}{where} "
               f"(bound {fmt(bound)} s = {how}; {beat})")
        return Finding(self.name, "critical", "iteration_s", elapsed, msg, bound, iteration,
                       {"phase": phase, "node_id": node_id, "elapsed_s": elapsed, "bound_s": bound,
                        "median_s": median_s, "last_heartbeat_s": None if last_beat is None else now - last_beat})


def node_hung(hung: Iterable[Mapping], running: Mapping[str, int], min_trials: int = 2) -> list[dict]:
    """Many trials hung at once on one node is the node's fault, not theirs: a node finding (``trial_hung``
    with no trial) for every node where at least ``min_trials`` trials, and at least half of the trials
    running there, are hung. ``hung``: ``{"trial_id", "node_id", "phase"}`` each; ``running``: trials
    running per node."""
    by_node: dict[str, list] = defaultdict(list)
    for h in hung:
        if h.get("node_id"):
            by_node[h["node_id"]].append(h)
    out = []
    for node, hs in by_node.items():
        n, of = len(hs), max(running.get(node, 0), len(hs))
        if n >= min_trials and 2 * n >= of:
            phases = sorted({str(h.get("phase") or "unknown") for h in hs})
            out.append({"detector": TrialHung.name, "severity": "critical", "metric": "hung_trials", "value": float(n),
                        "threshold": float(min_trials), "node_id": node,
                        "message": (f"trial_hung: {n} of {of} trials on node {node[:12]} hung at once (phase "
                                    f"{', '.join(phases)}): the node, not the trials"),
                        "details": {"trials": sorted(str(h.get("trial_id")) for h in hs), "phases": phases}})
    return out
