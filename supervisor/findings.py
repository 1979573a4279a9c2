"""What detectors return: a finding, with the severity and the threshold it used."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SEVERITIES = ("ok", "info", "warning", "critical")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    return _RANK[severity]


def worst(severities) -> str:
    return max(severities, key=_RANK.__getitem__, default="ok")


@dataclass(frozen=True)
class Finding:
    detector: str
    severity: str  # info | warning | critical
    metric: str | None
    value: float | None
    message: str
    threshold: float | None = None
    iteration: int = -1
    details: dict = field(default_factory=dict)
    #: The module (a multi-agent trial's policy) whose stream it judged; None for the trial's own findings
    #: (env runners, nodes, crashes). Set by the engine, which knows the stream; detectors never do.
    module: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)
