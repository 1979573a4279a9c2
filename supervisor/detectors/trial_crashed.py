"""trial_crashed: the trial raised out of its training step (an event, not a metric stream)."""

from __future__ import annotations

from typing import Mapping, Sequence

from supervisor import crash
from supervisor.findings import Finding


class TrialCrashed:
    """Explain a crash: one critical finding per crash, with its cause and evidence.

    Judges a crash report (``supervisor/crash.py``: the exception's type and message, its frames, the node,
    the iteration) against what the supervisor saw of the trial before it died: the newest reports'
    metrics and findings. The finding's message names the exception's type and message first, then the
    iteration, the node and the classified cause (:func:`supervisor.crash.classify`); ``details`` hold the
    cause with its evidence, the innermost frames split by origin (user env/code, RLlib, Ray, torch, other
    libraries) and the crash's signature (two crashes with the same signature "repeat the same way").

    Not part of the per-iteration suite: the engine calls it when a trial reports a crash
    (``Engine.crash``), and its ladder decides between a restart with a fix and a stop.

    Args:
        own_roots: folders of the supervisor's own code, whose frames are left out of the origins.
    """

    name = "trial_crashed"

    def __init__(self, own_roots: Sequence[str] = ()):
        self.own_roots = tuple(own_roots)

    def __call__(self, report: Mapping, recent_metrics: Sequence[Mapping] = (),
                 recent_findings: Sequence[Mapping] = ()) -> tuple[Finding, crash.Cause]:
        rep = dict(report)
        rep["frames"] = crash.tag(rep.get("frames") or [], self.own_roots)
        cause = crash.classify(rep, recent_metrics, recent_findings)
        it = rep.get("iteration")
        details = {"exception": rep.get("exception"), "exception_type": rep.get("exception_type"),
                   "exception_message": rep.get("message"), "cause": cause.to_dict(),
                   "frames": crash.by_origin(rep["frames"]), "node_id": rep.get("node_id"),
                   "phase": rep.get("phase"), "signature": crash.signature(rep, cause),
                   "source": rep.get("source", "trial")}
        return Finding(self.name, "critical", None, None, crash.message(rep, cause), None,
                       it if isinstance(it, int) else -1, details), cause
