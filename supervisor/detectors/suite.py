"""A trial's detectors, run as one (Ray Tune's ``CombinedStopper``, SB3's ``CallbackList``).

The one place that builds the detectors from overrides and a learned profile,
runs them on an iteration, and keeps a detector's bug from taking its caller
down: the engine, ``supervise scan`` and the synthetic benchmark all go
through :class:`DetectorSuite`.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Iterable, Iterator, Mapping

from supervisor.detectors.base import LOUD, Alarm, Detector
from supervisor.findings import Finding
from supervisor.history import History


_ON = attrgetter("on")


class DetectorSuite:
    """Detectors judged in order; a sequence of them.

    Args:
        detectors: the detectors, in the order they run.
        catch_errors: a detector that raises becomes an ``info`` finding
            ("detector error: ...") and the others still run, so that a
            detector bug never takes the supervisor down. False lets the
            error through (tests and benchmarks, where a bug must show).
    """

    def __init__(self, detectors: Iterable[Detector], catch_errors: bool = True):
        self.detectors: list[Detector] = list(detectors)
        self.catch_errors = catch_errors
        self._table: tuple | None = None  # see _alarm_table
        self._calls: tuple = (None, None, [], [])  # see _schedule

    @classmethod
    def build(cls, overrides: Mapping[str, Mapping] | None = None,
              profile: Mapping[str, Mapping[str, float]] | None = None, priors=None,
              algorithm: str | None = None, scopes=None) -> "DetectorSuite":
        """Every registered detector that applies to the trial's algorithm (``algorithm``, else the priors';
        all when unknown; only those of ``scopes`` when given) with its defaults, the ``overrides``, the
        ``profile`` and the ``priors`` (see
        :func:`supervisor.detectors.build_detectors`)."""
        from supervisor.detectors import build_detectors

        return build_detectors(overrides, profile, priors, algorithm, scopes)

    def __call__(self, iteration: int, metrics: Mapping[str, float], history: History) -> list[Finding]:
        """Every detector's findings on this iteration (``history`` is the past before it)."""
        out: list[Finding] = []
        every, schema, dets, calls = self._calls
        keys = tuple(metrics)
        if keys != schema or every != self.detectors:  # new metrics, or a detector added or replaced
            every, schema, dets, calls = self._calls = self._schedule(keys)
        if not self.catch_errors:
            for call in calls:
                found = call(iteration, metrics, history)
                if found:
                    out += found
        else:
            for det, call in zip(dets, calls):
                try:
                    found = call(iteration, metrics, history)
                    if found:
                        out += found
                except Exception as e:  # a detector bug must never take the supervisor down
                    out.append(Finding(det.name, "info", None, None,
                                       f"detector error: {e.__class__.__name__}: {e}", iteration=iteration))
        return self._corroborate(out) if out else out

    def _schedule(self, keys: tuple) -> tuple[list, tuple, list, list]:
        """``(the detectors, keys, the detectors to call on reports of these keys, their bound __call__)``:
        a detector none of whose ``called_with`` keys a report has does nothing on it (another algorithm's,
        or a feature the trial does not use), so it is not called (bound methods: cheaper to call)."""
        dets = [d for d in self.detectors if not d.called_with or not set(d.called_with).isdisjoint(keys)]
        return list(self.detectors), keys, dets, [d.__call__ for d in dets]

    def _corroborate(self, found: list[Finding]) -> list[Finding]:
        """A one-report spike (``details["unconfirmed"]``, info) is a warning when another detector
        reports a warning, a critical or a one-report spike on the same iteration: two signals agree."""
        pending = [f for f in found if f.details.get("unconfirmed")]
        if not pending:
            return found
        loud = {f.detector for f in found if f.severity in ("warning", "critical") or f.details.get("unconfirmed")}
        if len(loud) < 2:
            return found
        by_name = {d.name: d for d in self.detectors}
        return [by_name[f.detector].corroborate(f) if f.details.get("unconfirmed") and loud - {f.detector} else f
                for f in found]

    def observe(self, iteration: int, metrics: Mapping[str, float], history: History) -> list[Finding]:
        """Judge the iteration against the history before it, then append it to the history."""
        found = self(iteration, metrics, history)
        history.append(metrics)
        return found

    def alarmed(self) -> set[str]:
        """The detectors whose warning or critical alarm is still on (see :meth:`Detector.alarmed`)."""
        alarms, custom, latches, _ = self._alarm_table()
        # most reports find every alarm off: said at C speed before the alarms are looked at one by one
        out = {name for name, a, latch in alarms if latch.on and a.reported in LOUD} if any(
            map(_ON, latches)) else set()
        for d in custom:
            if d.alarmed():
                out.add(d.name)
        return out

    def streak(self, name: str) -> int:
        """The evidence behind detector ``name``'s alarm, in consecutive reports (see :meth:`Detector.streak`)."""
        return max((d.streak() for d in self.detectors if d.name == name), default=0)

    def _alarm_table(self) -> tuple:
        """Every detector's alarms as ``(detector name, alarm, its latch)``, the detectors that judge ``alarmed``
        their own way, the latches alone, and what the table was read from. The engine asks ``alarmed``
        several times per report: reading the alarms from every detector's attributes each time was most of
        its cost.
        Alarms are made in ``reset``: the table is read again when an attribute that held them holds
        another object (a detector reset on its own)."""
        t = self._table
        if t is not None:
            attrs, keys, held = t[3]
            if list(map(dict.get, attrs, keys)) != held:  # at C speed: an attribute holds another object
                t = None
        if t is None:
            alarms, custom, attrs, keys, held = [], [], [], [], []
            for d in self.detectors:
                if type(d).alarmed is not Detector.alarmed:
                    custom.append(d)
                    continue
                for k, v in d._alarms_held():
                    attrs.append(d.__dict__)
                    keys.append(k)
                    held.append(v)
                    alarms += [(d.name, a, a.latch) for a in (v.values() if isinstance(v, dict) else (v,))
                               if isinstance(a, Alarm)]
            t = self._table = (alarms, custom, [latch for _, _, latch in alarms], (attrs, keys, held))
        return t

    def reset(self) -> None:
        """Forget every detector's state (after a rollback the stream starts over)."""
        for det in self.detectors:
            det.reset()
        self._table = None

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.detectors]

    def __iter__(self) -> Iterator[Detector]:
        return iter(self.detectors)

    def __len__(self) -> int:
        return len(self.detectors)

    def __getitem__(self, i: int) -> Detector:
        return self.detectors[i]

    def __repr__(self) -> str:
        return f"DetectorSuite({', '.join(self.names)})"
