"""A per-trial health score in 0..1 with named components.

Each detector is a component; its penalty is the weight of its newest
finding's severity, decaying by ``decay`` per iteration since, down to that
severity's floor. The score is the product of (1 - penalty) over components,
so one critical finding alone takes it to 0 and health recovers as the trial
stays clean, but never all the way: a trial that had a critical finding scores
at most 0.75, one that had a warning at most 0.95, so the score never
contradicts the worst severity it reports.
"""

from __future__ import annotations

from supervisor.findings import worst

WEIGHTS = {"info": 0.05, "warning": 0.4, "critical": 1.0}
FLOORS = {"info": 0.0, "warning": 0.05, "critical": 0.25}


class HealthScore:
    def __init__(self, decay: float = 0.85):
        self.decay = decay
        self.last: dict[str, tuple[int, str]] = {}  # detector -> (seq, severity)
        self.worst_ever = "ok"

    def observe(self, seq: int, findings) -> None:
        for f in findings:
            self.last[f.detector] = (seq, f.severity)
            self.worst_ever = worst((self.worst_ever, f.severity))

    def components(self, seq: int) -> dict[str, float]:
        return {d: round(max(FLOORS.get(sev, 0.0), WEIGHTS.get(sev, 0.0) * self.decay ** max(0, seq - s)), 4)
                for d, (s, sev) in self.last.items()}

    def score(self, seq: int) -> float:
        return _score(self.components(seq))

    def snapshot(self, seq: int) -> dict:
        if not self.last:  # never a finding (most streams): nothing to decay
            return {"score": 1.0, "worst_severity": self.worst_ever, "components": {}}
        comps = self.components(seq)
        return {"score": _score(comps), "worst_severity": self.worst_ever, "components": comps}


def _score(components: dict[str, float]) -> float:
    out = 1.0
    for p in components.values():
        out *= 1.0 - min(1.0, p)
    return round(out, 4)
