"""Shared pieces of the training detectors (no detector lives here).

* :func:`value_of` reads one metric of the current iteration, or ``None`` when
  it is absent or not a finite number (``non_finite`` reports those).
* :func:`reference` is "what is normal for this metric": the robust center
  and scale of the run's own recent history, or, while that history is still
  shorter than the warm-up, of a band learned from healthy runs (calibration).
* :class:`EpisodePoints` folds reported returns into points backed by enough
  new episodes (:func:`new_episodes`): the unit of evidence of the rules that
  judge returns.
* :class:`Alarm` wraps :class:`~supervisor.detectors.base.Latch` so that a
  persisting fault is reported at entry, every ``repeat`` iterations after,
  and at once when it escalates (warning -> critical).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import repeat
from operator import mul as _mul, sub as _sub
from typing import Mapping

from pydantic import Field, model_validator

from supervisor.detectors.base import Alarm, Detector, Latch  # noqa: F401 (Alarm re-exported to detectors)
from supervisor.detectors.options import BandOption, Count, DetectorOptions, Metrics, Number, at_least, positive
from supervisor.findings import Finding, severity_rank
from supervisor.history import LOG_EPS, LOG_LOG_EPS, History
from supervisor.stats import MAD_TO_SIGMA, center_scale, finite, median  # noqa: F401 (re-exported to detectors)

# A learned band [low, high] is read as median +- BAND_SIGMAS sigma.
BAND_SIGMAS = 2.0
# Floor for a log-space scale (5 % multiplicative noise at least).
LOG_SCALE_FLOOR = 0.05

Band = Mapping[str, float]


def value_of(metrics: Mapping[str, float], name: str) -> float | None:
    """The current value of ``name`` as a float, or None if absent, non-numeric or non-finite."""
    v = metrics.get(name)
    if v.__class__ is float:  # the common case, without the general checks
        return v if v - v == 0.0 else None
    if v is None:  # absent (another algorithm's metric): ~a third of the calls
        return None
    return finite(v)


def band_for(band, metric: str) -> Band | None:
    """``band`` is either one band (``{"low", "high", "median"}``) or ``{metric: band}``."""
    if not band:
        return None
    if "median" in band and not isinstance(band.get("median"), Mapping):
        return band
    b = band.get(metric)
    return b if isinstance(b, Mapping) else None


def check_band(band, where: str) -> None:
    """Raise ValueError unless ``band`` is None, one band, or ``{metric: band}``."""
    if band is None:
        return
    if not isinstance(band, Mapping):
        raise ValueError(f"{where}: band must be a mapping, got {type(band).__name__}")
    bands = [band] if "median" in band and not isinstance(band.get("median"), Mapping) else list(band.values())
    for b in bands:
        if not isinstance(b, Mapping) or not all(k in b for k in ("low", "high", "median")):
            raise ValueError(f"{where}: a band needs numeric 'low', 'high' and 'median', got {b!r}")
        try:
            lo, hi, med = float(b["low"]), float(b["high"]), float(b["median"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: a band needs numeric 'low', 'high' and 'median', got {b!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(med)) or lo > hi:
            raise ValueError(f"{where}: a band needs finite low <= high, got {b!r}")


@dataclass(frozen=True)
class Reference:
    """What is normal for a metric: center and scale (log space if ``log``), and where they came from."""

    center: float
    scale: float
    magnitude: float  # typical |x| in linear units (for ratio floors)
    n: int
    source: str  # "history" | "profile"
    log: bool

    @property
    def typical(self) -> float:
        """The center in linear units."""
        return math.exp(self.center) if self.log else self.center

    def z(self, value: float) -> float:
        v = math.log(max(value, LOG_EPS)) if self.log else value
        return (v - self.center) / self.scale


def _abs_dev(xs, c) -> list[float]:
    """``[abs(v - c) for v in xs]``, at C speed."""
    return list(map(abs, map(_sub, xs, repeat(c))))


_SQRT2 = math.sqrt(2.0)


def noise_scale(xs) -> float:
    """Per-iteration noise sigma from successive differences (robust to trends):
    1.4826 MAD(diff) / sqrt 2. 0 for fewer than 3 values."""
    if len(xs) < 3:
        return 0.0
    d = list(map(_sub, xs[1:], xs[:-1]))  # b - a for successive a, b
    md = median(d)
    return median(_abs_dev(d, md)) * MAD_TO_SIGMA / _SQRT2


_CENTERED: dict[int, list[float]] = {}


def lslope(xs) -> float:
    """Least-squares slope per step; 0 for fewer than 2 values."""
    n = len(xs)
    if n < 2:
        return 0.0
    t = _CENTERED.get(n)
    if t is None:
        tm = (n - 1) / 2.0
        t = [i - tm for i in range(n)]
        if n <= 4096:
            _CENTERED[n] = t
    xm = sum(xs) / n
    num = sum(map(_mul, t, map(_sub, xs, repeat(xm))))
    return num / (n * (n * n - 1) / 12.0)


def _transform(v: float, log) -> float:
    """``log``: False (as is), True (log, floored at LOG_EPS), or "abs"."""
    if not log:
        return v
    if log == "abs":
        return abs(v)
    return math.log(v) if v > LOG_EPS else LOG_LOG_EPS


def window_of(values, window: int, exclude_last: int = 0):
    """The reference window: the last ``window`` values before the last ``exclude_last``."""
    n = len(values)
    e = min(exclude_last, n)
    return values[max(n - window - e, 0): n - e]


def reference_from(values, metric: str, *, window: int, warmup: int, band=None, log: bool = False,
                   exclude_last: int = 0, rel_floor: float = 0.05, band_at: str = "median") -> Reference | None:
    """As :func:`reference`, from the metric's stored history values (already in log space when
    ``log``), oldest first."""
    x = window_of(values, window, exclude_last)
    if log and len(x) and min(x) <= LOG_LOG_EPS:
        # exact zeros (a frozen policy's KL, a dead gradient) say nothing about the normal scale
        x = [v for v in x if v > LOG_LOG_EPS]
    if len(x) >= max(warmup, 1):
        if log:
            c, s = center_scale(x, 0.0, LOG_SCALE_FLOOR)
            mag = math.exp(c)
        else:
            c, s = center_scale(x, rel_floor, 1e-12)
            mag = max(abs(c), median(list(map(abs, x))), 1e-12)
        return Reference(c, s, mag, len(x), "history", log)
    b = band_for(band, metric)
    if b is None:
        return None
    lo, hi = float(b["low"]), float(b["high"])
    at = float(b[band_at])
    if log:
        if at <= 0:
            return None
        c = math.log(at)
        s = max((math.log(max(hi, LOG_EPS)) - math.log(max(lo, LOG_EPS))) / (2 * BAND_SIGMAS), LOG_SCALE_FLOOR)
        return Reference(c, s, at, 0, "profile", log)
    s = max((hi - lo) / (2 * BAND_SIGMAS), rel_floor * abs(at), 1e-12)
    return Reference(at, s, max(abs(at), 1e-12), 0, "profile", log)


def reference(history: History, metric: str, *, window: int, warmup: int, band=None, log: bool = False,
              exclude_last: int = 0, rel_floor: float = 0.05, band_at: str = "median") -> Reference | None:
    """Robust reference of ``metric``: its last ``window`` values in history (minus the last
    ``exclude_last``, the ones already judged anomalous), once there are at least ``warmup``;
    before that the learned ``band`` if there is one (centred on its ``band_at``: "median" for
    rules that look for values far above normal, "low" for rules that look for values far below
    it, since a band spans a whole healthy run, trends included); else None (too early)."""
    x = history.view(metric, log)
    return reference_from(x, metric, window=window, warmup=warmup, band=band, log=log,
                          exclude_last=exclude_last, rel_floor=rel_floor, band_at=band_at)


class RollingMedian:
    """Rolling medians (width ``width``) of the metric's stored history: the medians of every full
    window, oldest first (``count - width + 1`` of them).

    For readers that fold the medians incrementally: ``added`` counts the values the metric's
    history took in since the last rebuild, and ``rebuilds`` the times the reader must start over
    (the first call, or a history that is not the one seen last time plus one iteration, e.g. after
    a rollback)."""

    def __init__(self, metric: str, width: int):
        self.metric = metric
        self.width = width
        self.reset()

    def reset(self) -> None:
        self.rebuilds = 0  # times everything was recomputed
        self.added = 0     # values taken in incrementally since the last rebuild
        self._hist_id: int | None = None
        self._iters = -1
        self._pushed = 0

    def update(self, history: History, metrics: Mapping[str, float] | None = None) -> list[float]:
        view = history.rolling(self.metric, self.width)
        pushed = view.pushed if view is not None else 0
        if self._hist_id == id(history) and history.iterations == self._iters + 1:
            self.added += pushed - self._pushed
        else:
            self.rebuilds += 1
            self.added = 0
        self._hist_id, self._iters, self._pushed = id(history), history.iterations, pushed
        return view.out if view is not None else []


class AlarmOptions(DetectorOptions):
    """Hysteresis of a one-rule detector: on after ``patience`` consecutive triggers, off after ``exit``
    clear ones, reported again every ``repeat`` iterations while it lasts."""

    patience: Count = at_least(1, 3)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(20)


class OneRuleDetector(Detector):
    """A detector with one rule and one :class:`Alarm` (options :class:`AlarmOptions`)."""

    Options = AlarmOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(self.patience, self.exit, self.repeat)
        self._streak = 0

    def _due(self, triggered: bool, severity: str = "warning") -> bool:
        """Feed one iteration; True when a finding is due. ``self._streak`` counts consecutive triggers."""
        self._streak = self._streak + 1 if triggered else 0
        return self._alarm.update(triggered, severity)


def fmt(x: float | None) -> str:
    """Compact number for messages."""
    if x is None:
        return "n/a"
    if x == 0 or (1e-3 <= abs(x) < 1e5):
        return f"{x:.4g}"
    return f"{x:.3e}"


# --- a shared "far above its own history" rule ---------------------------------------------


class SpikeOptions(DetectorOptions):
    """Options of the "far above its own history" rule (see :class:`SpikeDetector`)."""

    metrics: Metrics = None
    z: Number = positive(8.0)
    ratio: Number = Field(5.0, gt=1)
    critical_ratio: Number = 100.0
    window: Count = Field(30, ge=2)
    warmup: Count = at_least(0, 10)
    enter: Count = at_least(0, 1)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)
    band: BandOption = None

    @model_validator(mode="after")
    def _ratios(self):
        if self.critical_ratio < self.ratio:
            raise ValueError(f"need critical_ratio >= ratio (got critical_ratio={self.critical_ratio:g}, "
                             f"ratio={self.ratio:g})")
        return self


class SustainedSpikeOptions(SpikeOptions):
    """Plus a floor on the value and the sustained rule (``sustain`` > 0)."""

    min_value: Number | None = None
    sustain: Count = at_least(0, 0)
    sustain_ratio: Number | None = Field(None, gt=1)
    sustain_z: Number | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _sustained(self):
        if self.sustain:
            sr = self.ratio if self.sustain_ratio is None else self.sustain_ratio
            sz = self.z if self.sustain_z is None else self.sustain_z
            if sr > self.ratio or sz > self.z:
                raise ValueError(f"need sustain_ratio <= ratio and sustain_z <= z (got sustain_ratio={sr:g}, "
                                 f"ratio={self.ratio:g}, sustain_z={sz:g}, z={self.z:g})")
        return self


class SpikeDetector(Detector):
    """Base of loss_explosion, gradient_explosion and kl_spike: a value far above its robust history.

    For each watched metric present and finite this iteration, against the
    reference of :func:`reference` (its last ``window`` values, not counting
    the ones already judged anomalous, so a persisting explosion does not
    become the new normal), it triggers when BOTH

    * robust z = (value - median) / (1.4826 * MAD) >= ``z`` (log space when
      ``log``), and
    * ratio >= ``ratio``, where ratio = value / median in log mode, and
      1 + (value - median) / typical|x| otherwise (how many typical
      magnitudes above; works for losses that cross zero).

    The ratio floor keeps a near-constant history (tiny MAD) from firing on a
    harmless wiggle. Severity warning, critical when ratio >= ``critical_ratio``.

    Optional sustained rule (``sustain`` > 0): it also triggers when the value
    has been at least ``sustain_ratio`` x above (same ratio) with robust z >=
    ``sustain_z`` on ``sustain`` consecutive iterations (this one included):
    a rise that is held, or that builds up over a few iterations, without
    any single value being a spike.
    """

    log: bool = False
    default_metrics: tuple[str, ...] = ()
    what: str = "value"
    Options = SpikeOptions
    # the sustained rule's options, for the detectors whose Options declare them
    min_value: float | None = None
    sustain: int = 0
    sustain_ratio: float | None = None
    sustain_z: float | None = None

    def __init__(self, **options):
        super().__init__(**options)
        self.metrics = tuple(self.metrics) if self.metrics is not None else self.default_metrics
        self.sustain_ratio = self.ratio if self.sustain_ratio is None else self.sustain_ratio
        self.sustain_z = self.z if self.sustain_z is None else self.sustain_z
        self._latch_args = (self.enter, self.exit, self.repeat)
        # the lowest ratio any rule needs
        self._min_ratio = min(self.ratio, self.sustain_ratio) if self.sustain else self.ratio
        self._log_ratio = math.log(self._min_ratio)
        self.reset()

    def reset(self) -> None:
        self._alarms = {m: Alarm(*self._latch_args) for m in self.metrics}
        self._streak = {m: 0 for m in self.metrics}
        self._held = {m: 0 for m in self.metrics}  # consecutive iterations at the sustained level
        self._kind = "log" if self.log else None
        self._vetoes = {m: Alarm(1, self.exit, 10 * self.repeat) for m in self.metrics}

    def _veto(self, metric: str, value: float, metrics, history: History) -> str | None:
        """Why a value that triggers the rule is nonetheless no fault (then it is an ``info`` finding, and
        it joins the reference as a normal value); None: it is one. Subclasses override."""
        return None

    def needed(self) -> tuple[tuple[str, ...], ...]:
        return (self.metrics,)

    def _ratio(self, v: float, ref: Reference) -> float:
        if ref.log:
            return v / ref.typical if ref.typical > 0 else math.inf
        return 1.0 + (v - ref.center) / ref.magnitude

    def _threshold(self, ref: Reference, ratio: float, z: float | None = None) -> float:
        """The smallest value that would trigger at this ``ratio`` (and robust ``z``, default ``self.z``)."""
        z = self.z if z is None else z
        if ref.log:
            return max(math.exp(ref.center + z * ref.scale), ratio * ref.typical, self.min_value or 0.0)
        return max(ref.center + z * ref.scale, ref.center + (ratio - 1.0) * ref.magnitude)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        out = []
        kind, window, need = self._kind, self.window, max(self.warmup, 1)
        view = history.view
        for m in self.metrics:
            v = metrics.get(m)
            if v.__class__ is not float or v - v != 0.0:
                v = value_of(metrics, m)
                if v is None:
                    continue
            vals = view(m, kind)
            streak = self._streak[m]
            if streak:
                w = window_of(vals, window, streak)
            else:
                n = len(vals)
                w = vals[n - window:] if n > window else vals
            if len(w) >= need:
                # an exact shortcut (no sorting): v cannot reach the lowest ratio any rule needs,
                # whatever the window's median (this is the per-report hot path). Log: ratio =
                # v / median and median >= min(w). Linear: ratio = 1 + (v - c) / mag with mag >= |c|,
                # so reaching it needs v >= 0 when ratio >= 2, and v >= ratio * min(w) when min(w) >= 0
                if kind:
                    lo = min(w)
                    quiet = (math.log(v) if v > LOG_EPS else LOG_LOG_EPS) - lo < self._log_ratio
                    if not quiet:
                        # the ratio needs only the median, not the MAD: exactly reference_from's
                        x = w if lo > LOG_LOG_EPS else [u for u in w if u > LOG_LOG_EPS]
                        if len(x) >= need:
                            typical = math.exp(median(x))
                            quiet = (v / typical if typical > 0 else math.inf) < self._min_ratio
                elif v < 0 and self._min_ratio >= 2:
                    quiet = True
                else:
                    lo = min(w)
                    quiet = lo >= 0 and v < self._min_ratio * lo
                    if not quiet:
                        # the ratio needs only the median and the typical magnitude, not the MAD:
                        # exactly reference_from's center and magnitude (no rel_floor involved)
                        c = median(w)
                        mag = max(abs(c), median(list(map(abs, w))), 1e-12)
                        quiet = 1.0 + (v - c) / mag < self._min_ratio
                if quiet:
                    if streak:
                        self._streak[m] = 0
                    if self.sustain:
                        self._held[m] = 0
                    latch = self._alarms[m].latch
                    if latch.on or latch._hits or latch.enter < 1:
                        self._alarms[m].update(False)
                    continue
            ref = reference_from(vals, m, window=window, warmup=self.warmup, band=self.band,
                                 log=self.log, exclude_last=streak)
            triggered, held, sev, z, r = False, False, "warning", 0.0, 1.0
            if ref is not None:
                z, r = ref.z(v), self._ratio(v, ref)
                big = self.min_value is None or v >= self.min_value
                triggered = z >= self.z and r >= self.ratio and big
                sev = "critical" if r >= self.critical_ratio else "warning"
                if self.sustain:
                    level = triggered or (z >= self.sustain_z and r >= self.sustain_ratio and big)
                    self._held[m] = self._held[m] + 1 if level else 0
                    held = not triggered and self._held[m] >= self.sustain
                    triggered = triggered or held
            elif self.sustain:
                self._held[m] = 0
            if triggered and (why := self._veto(m, v, metrics, history)) is not None:
                self._streak[m] = self._held[m] = 0
                self._alarms[m].update(False)
                if self._vetoes[m].update(True, "info"):
                    out.append(self.finding(iteration, "info", m, v, f"{self.what}? {m}={fmt(v)} is {fmt(r)}x "
                                            f"its reference {fmt(ref.typical)}, but {why}", None, z=z, ratio=r,
                                            center=ref.typical, source=ref.source, vetoed=True))
                continue
            self._streak[m] = self._streak[m] + 1 if triggered else 0
            # one report of a warning-level spike is a transient until it holds a second (or another
            # detector agrees: DetectorSuite): info now; a critical one is reported at once
            single = (triggered and sev == "warning" and not held and self._streak[m] == 1
                      and not self._alarms[m].on)
            if single:
                sev = "info"
            if self._alarms[m].update(triggered, sev):
                src = "learned profile band" if ref.source == "profile" else f"last {ref.n} iterations"
                how = (f"{fmt(r)}x its median {fmt(ref.typical)}" if ref.log else
                       f"{fmt(r)} typical magnitudes ({fmt(ref.magnitude)}) above its median {fmt(ref.typical)}")
                if held:
                    thr = self._threshold(ref, self.sustain_ratio, self.sustain_z)
                    rule = (f"held for {self._held[m]} iterations (needs z>={fmt(self.sustain_z)} and "
                            f"ratio>={fmt(self.sustain_ratio)} on {self.sustain} iterations, or z>={fmt(self.z)} and "
                            f"ratio>={fmt(self.ratio)} once")
                else:
                    thr = self._threshold(ref, self.critical_ratio if sev == "critical" else self.ratio)
                    rule = f"(needs z>={fmt(self.z)} and ratio>={fmt(self.ratio)}"
                out.append(self.finding(
                    iteration, sev, m, v,
                    f"{self.what}: {m}={fmt(v)} is {how} ({src}); "
                    f"robust z={fmt(z)} {rule}; critical at ratio>={fmt(self.critical_ratio)})"
                    + ("; one report so far: a warning if it holds on the next" if single else ""),
                    thr, z=z, ratio=r, center=ref.typical, scale=ref.scale, source=ref.source,
                    log_space=ref.log, **({"held": self._held[m]} if held else {}),
                    **({"unconfirmed": True} if single else {})))
        return out

    def corroborate(self, finding: Finding) -> Finding:
        """Another detector agrees on this report: a one-report spike is a warning now."""
        alarm = self._alarms.get(finding.metric)
        if alarm is not None and alarm.on:
            alarm.reported = "warning"
        details = {k: v for k, v in finding.details.items() if k != "unconfirmed"}
        return replace(finding, severity="warning", details=details,
                       message=finding.message.replace("; one report so far: a warning if it holds on the next",
                                                       "; another detector agrees on this report"))


# --- points of evidence: returns backed by enough new episodes -----------------------------------


def new_episodes(metrics) -> float | None:
    """How many newly finished episodes back this report's return: ``num_episodes``, else the env steps
    over the mean episode length, else None (unknown: the report counts as one point of evidence)."""
    n = value_of(metrics, "num_episodes")
    if n is not None:
        return max(n, 0.0)
    steps, length = value_of(metrics, "env_steps"), value_of(metrics, "episode_len_mean")
    if steps is not None and length is not None and length >= 1:
        return steps / length
    return None


class EpisodePoints:
    """Returns folded into *points*: the episode-weighted mean return of consecutive reports that together
    finished at least ``episodes`` new episodes (see :func:`new_episodes`); a report whose writer does not
    say how many is a point of its own, and one that finished none adds nothing (it repeats an old return)."""

    def __init__(self, episodes: int):
        self.episodes = episodes
        self._acc, self._n = 0.0, 0.0

    def add(self, metrics, ret: float | None) -> float | None:
        """This report's return ``ret`` folded in; the point it completes, if it does."""
        if ret is None:
            return None
        n = new_episodes(metrics)
        if n is None:
            self._acc, self._n = 0.0, 0.0
            return ret
        if n <= 0:
            return None
        self._acc += ret * n
        self._n += n
        if self._n < self.episodes:
            return None
        point = self._acc / self._n
        self._acc, self._n = 0.0, 0.0
        return point
