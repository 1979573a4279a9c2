"""What the supervisor decided about one report: the ``Verdict``.

The engine (``supervisor/engine.py``) builds one per report; the trial side reads it (the RLlib
callback, the Python API, the integrations). Between the supervisor actor and a trial it travels as a
plain dict (``to_dict`` / ``from_dict``), so a trial and an actor of slightly different versions still
understand each other: unknown keys are ignored, missing ones take their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from operator import itemgetter
from typing import Any, Iterable, Mapping


@dataclass
class Verdict:
    """One report's verdict. Plain data.

    Attributes:
        iteration: the iteration reported.
        findings: as in the report JSON (``detector``, ``severity``, ``metric``, ``value``, ``message``, ...).
        actions: ``{"action", "params", "reason", "id", "detector", "iteration", "rung"}`` each, to apply
            before the next iteration (``Supervisor.apply`` does it through an applier).
        stop: the supervisor judged the run unrecoverable; end training.
        restart: the supervisor asked for a restart from the last healthy checkpoint.
        checkpoint: this iteration is healthy enough to save now (then record it as a checkpoint).
        health: ``{"score": 0..1, "worst_severity", "components"}``; empty when unknown (a replay
            of a report the supervisor no longer holds in memory).
        reported: False when the report did not reach the supervisor (or it could not judge it).
        seq: the report's sequence number in its trial.
        best: ``{"metric", "value"}`` when this iteration is the trial's best healthy one so far (save it
            as the best checkpoint).
        repairing: a repair is inside its outcome window (an early-stopping scheduler waits).
        duplicate: the report was a replay of one already stored; ``actions`` are those decided for it
            that the trial never confirmed hearing.
        error: why the supervisor could not judge this report (it was not stored; send it again).
        unknown_run: the supervisor does not know the run (it restarted): reopen it, then resend.
    """

    iteration: int = 0
    findings: list[dict] = field(default_factory=list)
    actions: list[dict] = field(default_factory=list)
    stop: bool = False
    restart: bool = False
    checkpoint: bool = False
    health: dict = field(default_factory=dict)
    reported: bool = True
    seq: int = -1
    best: dict | None = None
    repairing: bool = False
    duplicate: bool = False
    error: str | None = None
    unknown_run: bool = False

    @property
    def rollback(self) -> dict | None:
        """The rollback action's params (``checkpoint`` path, ``to_iteration``, ``hparams``), if any."""
        for a in self.actions:
            if a["action"] == "rollback":
                return a.get("params") or {}
        return None

    # ------------------------------------------------------------------ the wire
    def to_dict(self) -> dict:
        # one per report: the fields read at C speed, in their order
        return dict(zip(_FIELDS, _VALUES(self.__dict__)))

    @classmethod
    def from_dict(cls, d: Any) -> "Verdict":
        """A verdict from its wire form; anything that is not a dict is a report that got no verdict."""
        if isinstance(d, Verdict):
            return d
        if not isinstance(d, Mapping):
            return cls(reported=False)
        known = {f.name for f in fields(cls)}
        v = cls(**{k: d[k] for k in known & d.keys()})
        v.findings, v.actions = list(v.findings or []), list(v.actions or [])
        v.health = dict(v.health or {})
        if v.error:
            v.reported = False
        return v

    @classmethod
    def merged(cls, verdicts: Iterable["Verdict"]) -> "Verdict | None":
        """Verdicts of replayed or late-answered reports (oldest first) as one: their actions were decided
        while the trial could not hear them and still apply (stop is stop, a rollback target is still
        healthy); findings, health, checkpoint and best are the newest report's."""
        vs = list(verdicts)
        if not vs:
            return None
        last = vs[-1]
        out = cls(**{f.name: getattr(last, f.name) for f in fields(cls)})
        out.actions = [a for v in vs for a in v.actions]
        out.stop = any(v.stop for v in vs)
        out.restart = any(v.restart for v in vs)
        return out


_FIELDS = tuple(f.name for f in fields(Verdict))
_VALUES = itemgetter(*_FIELDS)
