"""Shared pieces of the training detectors (no detector lives here).

* :func:`value_of` reads one metric of the current iteration, or ``None`` when
  it is absent or not a finite number (``non_finite`` reports those).
* :func:`reference` is "what is normal for this metric": the robust center
  and scale of the run's own recent history, or, while that history is still
  shorter than the warm-up, of a band learned from healthy runs (calibration).
* :class:`Alarm` wraps :class:`~supervisor.detectors.base.Latch` so that a
  persisting fault is reported at entry, every ``repeat`` iterations after,
  and at once when it escalates (warning -> critical).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import repeat
from operator import mul as _mul, sub as _sub
from typing import Mapping

from supervisor.detectors.base import Detector, Latch
from supervisor.findings import Finding, severity_rank
from supervisor.history import LOG_EPS, LOG_LOG_EPS, History
from supervisor.stats import MAD_TO_SIGMA, finite

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


def median(xs) -> float:
    """Median of a non-empty sequence (pure Python: for the short windows detectors use it is
    tens of times faster than numpy's)."""
    s = sorted(xs)
    n = len(s)
    h = n // 2
    return s[h] if n % 2 else 0.5 * (s[h - 1] + s[h])


def _abs_dev(xs, c) -> list[float]:
    """``[abs(v - c) for v in xs]``, at C speed."""
    return list(map(abs, map(_sub, xs, repeat(c))))


def center_scale(xs, rel_floor: float = 0.05, abs_floor: float = 1e-12) -> tuple[float, float]:
    """Median and MAD-based sigma (as :func:`supervisor.stats.robust_center_scale`), floored."""
    med = median(xs)
    mad = median(_abs_dev(xs, med)) * MAD_TO_SIGMA
    return med, max(mad, rel_floor * abs(med), abs_floor)


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
    """Least-squares slope per step (as :func:`supervisor.stats.slope`); 0 for fewer than 2 values."""
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


class Mirror:
    """The metric's stored history values, oldest first: as stored, or log-transformed when ``log``
    is True, or absolute values when ``log`` is "abs". A live view kept by the History itself
    (:meth:`supervisor.history.History.view`), shared by every detector that reads it; do not
    modify it."""

    def __init__(self, metric: str, log: bool | str = False):
        self.metric = metric
        self.log = log

    def reset(self) -> None:
        pass

    def values(self, history: History, metrics: Mapping[str, float] | None = None):
        return history.view(self.metric, self.log)


class RollingMedian:
    """Rolling medians (width ``width``) of the metric's stored history: the medians of every full
    window, oldest first (``count - width + 1`` of them), kept by the History
    (:meth:`supervisor.history.History.rolling_medians`).

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


def fmt(x: float | None) -> str:
    """Compact number for messages."""
    if x is None:
        return "n/a"
    if x == 0 or (1e-3 <= abs(x) < 1e5):
        return f"{x:.4g}"
    return f"{x:.3e}"


# --- a shared "far above its own history" rule ---------------------------------------------


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

    def __init__(self, metrics=None, z: float = 8.0, ratio: float = 5.0, critical_ratio: float = 100.0,
                 window: int = 30, warmup: int = 10, enter: int = 1, exit: int = 3, repeat: int = 10,
                 band=None, min_value: float | None = None, sustain: int = 0, sustain_ratio: float | None = None,
                 sustain_z: float | None = None):
        super().__init__(warmup)
        check_band(band, self.name)
        if ratio <= 1 or critical_ratio < ratio or z <= 0 or window < 2:
            raise ValueError(f"{self.name}: need z > 0, 1 < ratio <= critical_ratio, window >= 2")
        sustain_ratio = ratio if sustain_ratio is None else sustain_ratio
        sustain_z = z if sustain_z is None else sustain_z
        if sustain < 0 or (sustain and (not 1 < sustain_ratio <= ratio or not 0 < sustain_z <= z)):
            raise ValueError(f"{self.name}: need sustain >= 0, 1 < sustain_ratio <= ratio, 0 < sustain_z <= z")
        self.metrics = tuple(metrics) if metrics is not None else self.default_metrics
        self.z, self.ratio, self.critical_ratio = z, ratio, critical_ratio
        self.window, self.band, self.min_value = window, band, min_value
        self.sustain, self.sustain_ratio, self.sustain_z = sustain, sustain_ratio, sustain_z
        self._latch_args = (enter, exit, repeat)
        self._min_ratio = min(ratio, sustain_ratio) if sustain else ratio  # the lowest ratio any rule needs
        self._log_ratio = math.log(self._min_ratio)
        self.reset()

    def reset(self) -> None:
        self._alarms = {m: Alarm(*self._latch_args) for m in self.metrics}
        self._streak = {m: 0 for m in self.metrics}
        self._held = {m: 0 for m in self.metrics}  # consecutive iterations at the sustained level
        self._kind = "log" if self.log else None

    def _cannot_trigger(self, v: float, w) -> bool:
        """A cheap exact shortcut (no sorting): True when ``v`` cannot reach ``ratio`` whatever the
        window's median, so the robust statistics need not be computed."""
        if self.log:  # ratio = v / median and median >= min(w)
            return _transform(v, True) - min(w) < self._log_ratio
        # ratio = 1 + (v - c) / mag with mag >= |c|: reaching it needs v >= c + (ratio - 1)|c|,
        # which is >= 0 when ratio >= 2, and >= ratio * c >= ratio * min(w) when min(w) >= 0
        if self._min_ratio >= 2 and v < 0:
            return True
        lo = min(w)
        return lo >= 0 and v < self._min_ratio * lo

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
                # the exact shortcut of _cannot_trigger, inlined (this is the per-report hot path)
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
                    alarm = self._alarms[m]
                    if alarm.latch.on or alarm.latch._hits or alarm.latch.enter < 1:
                        alarm.update(False)
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
            self._streak[m] = self._streak[m] + 1 if triggered else 0
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
                    f"robust z={fmt(z)} {rule}; critical at ratio>={fmt(self.critical_ratio)})",
                    thr, z=z, ratio=r, center=ref.typical, scale=ref.scale, source=ref.source,
                    log_space=ref.log, **({"held": self._held[m]} if held else {})))
        return out
