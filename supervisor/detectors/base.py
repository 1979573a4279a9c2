"""The detector base class: a small class with one stated rule and one ``__call__``.

A detector is a pure function of a trial's metric stream (plus its own
hysteresis state): ``detector(iteration, metrics, history) -> [Finding]``.
``metrics`` is the current iteration's normalized metrics; ``history`` is the
run's own past, not including the current iteration. No Ray, no I/O.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from supervisor.detectors.options import DetectorOptions
from supervisor.findings import Finding, severity_rank
from supervisor.history import History
from supervisor.priors import Priors


class Latch:
    """Hysteresis: on after ``enter`` consecutive triggers, off after ``exit`` consecutive clears.

    While on, ``due()`` is true at entry and then every ``repeat`` iterations,
    so a persisting fault is reported again without flapping every iteration.
    """

    def __init__(self, enter: int = 1, exit: int = 3, repeat: int = 10):
        self.enter, self.exit, self.repeat = enter, exit, repeat
        self.reset()

    def reset(self) -> None:
        self.on = False
        self._hits = 0
        self._clears = 0
        self._since = 0

    def update(self, triggered: bool) -> bool:
        """Feed one iteration; return True when a finding is due now."""
        if triggered:
            self._hits += 1
            self._clears = 0
        else:
            self._hits = 0
            self._clears += 1
        if not self.on:
            if self._hits >= self.enter:
                self.on, self._since = True, 0
                return True
            return False
        if self._clears >= self.exit:
            self.on = False
            return False
        self._since += 1
        return triggered and self._since % self.repeat == 0


LOUD = ("warning", "critical")  # the severities an alarm acts at


class Alarm:
    """A Latch that also re-reports at once when the severity rises while it is on."""

    def __init__(self, enter: int = 1, exit: int = 3, repeat: int = 10):
        self.latch = Latch(enter, exit, repeat)
        self.reported: str | None = None

    def reset(self) -> None:
        self.latch.reset()
        self.reported = None

    @property
    def on(self) -> bool:
        return self.latch.on

    def quiet(self) -> bool:
        """``update(False)``, cheaply: an alarm that is off stays off (and owes no finding)."""
        latch = self.latch
        if latch.on or latch.enter < 1:
            return self.update(False)
        latch._hits = 0
        return False

    def update(self, triggered: bool, severity: str = "warning") -> bool:
        """Feed one iteration (with the severity it would have); True when a finding is due now."""
        if not triggered and not self.latch.on and self.latch.enter >= 1:  # stays off
            self.latch._hits = 0
            self.reported = None
            return False
        due = self.latch.update(triggered)
        if not self.latch.on:
            self.reported = None
            return False
        if due:
            self.reported = severity if self.reported is None else max(
                self.reported, severity, key=severity_rank)
            return True
        if triggered and self.reported is not None and severity_rank(severity) > severity_rank(self.reported):
            self.reported = severity
            return True
        return False


_BUILT: dict[tuple, tuple] = {}  # see Detector.__init__


def _plain(x: Any) -> bool:
    """Made of str, int, float, bool, None, tuples, lists and str-keyed dicts only (so ``repr`` says all)."""
    c = x.__class__
    if c is str or c is float or c is int or c is bool or x is None:
        return True
    if c is tuple or c is list:
        return all(map(_plain, x))
    if c is dict:
        return all(k.__class__ is str and _plain(v) for k, v in x.items())
    return False


class Detector:
    """Base class. Subclasses set ``name`` and ``Options`` (their declared options, with defaults
    and ranges) and implement ``__call__``.

    ``Detector(**options)`` validates the options (:class:`DetectorOptionError` on a bad one),
    keeps them as ``self.options`` and copies each onto the detector (``self.window``, ...).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[DetectorOptions]] = DetectorOptions
    warmup: int = 0  # iterations of a metric's history needed before judging it
    #: Which stream of a trial it judges (``supervisor.engine``): ``"module"``, a policy's learner (each module
    #: of a multi-agent trial has its own suite); ``"trial"``, the trial's env runners and evaluation;
    #: ``"any"``, whichever stream it is given (a module's return, and a multi-agent trial's team return);
    #: ``"every"``, one in every judged stream, about that stream's own detectors (``metrics_missing``).
    scope: ClassVar[str] = "module"
    #: The metrics it judges, as groups of alternatives (it reads any one of a group): while no metric of a
    #: group it needs has arrived, it is blind (``metrics_missing`` says so). Empty: it judges whatever comes.
    needs: ClassVar[tuple[tuple[str, ...], ...]] = ()
    #: Keys of a report one of which it must have to do anything on it: on a report with none of them its
    #: call returns no finding and changes no state, so the suite skips it. Empty: it is always called.
    called_with: ClassVar[tuple[str, ...]] = ()
    #: What the trial's config and spaces say before any history (set by the suite; empty when unknown).
    priors: Priors = Priors()

    def __init__(self, **options: Any):
        # Options of plain values are validated once per process and shared (read-only): every trial
        # builds ~30 detectors, mostly with the same options, and validating them was most of that cost
        key = (self.Options, self.name, repr(sorted(options.items()))) if _plain(options) else None
        built = _BUILT.get(key) if key is not None else None
        if built is None:
            opts = self.Options.build(self.name, options)
            built = (opts, dict(opts))
            if key is not None and len(_BUILT) < 4096:
                _BUILT[key] = built
        self.options = built[0]
        self.__dict__.update(built[1])

    def __call__(self, iteration: int, metrics: Mapping[str, float], history: History) -> list[Finding]:
        raise NotImplementedError

    def needed(self) -> tuple[tuple[str, ...], ...]:
        """:attr:`needs`, for this instance (a detector whose options pick its metrics says which)."""
        return self.needs

    def alarmed(self) -> bool:
        """True while one of this detector's alarms is on at warning or worse, between its repeated
        reports too: a fault that persists is still a fault in the iterations it is not re-reported."""
        return any(a.reported in LOUD and a.latch.on for a in self.alarms())

    def _alarms_held(self) -> list[tuple[str, Any]]:
        """``(attribute, value)`` of the attributes that hold this detector's :class:`Alarm` objects,
        directly or as a dict's values. Detectors create their alarms in ``reset``. Type checks only:
        probing every attribute for ``reported`` goes through the options' (pydantic) slow path."""
        return [(k, v) for k, v in self.__dict__.items() if isinstance(v, Alarm) or (
            isinstance(v, dict) and any(isinstance(a, Alarm) for a in v.values()))]

    def alarms(self) -> list[Alarm]:
        """This detector's alarms (see :meth:`_alarms_held`)."""
        out = []
        for _, v in self._alarms_held():
            out += [a for a in v.values() if isinstance(a, Alarm)] if isinstance(v, dict) else [v]
        return out

    def corroborate(self, finding: Finding) -> Finding:
        """``finding`` (this detector's, ``details["unconfirmed"]``) as a warning, now that another
        detector agrees on the same report. Detectors that report unconfirmed findings override it."""
        return finding

    def streak(self) -> int:
        """How many consecutive reports back the alarm that is on now (at warning or worse): the
        evidence behind it, a rule's own patience included. 0 when none is on."""
        return max((a.latch._hits for a in self.alarms() if a.reported in LOUD and a.latch.on), default=0)

    def reset(self) -> None:
        """Forget hysteresis state (after a rollback the stream starts over)."""

    def finding(self, iteration: int, severity: str, metric: str | None, value: float | None,
                message: str, threshold: float | None = None, **details) -> Finding:
        return Finding(self.name, severity, metric, value, message, threshold, iteration, details)
