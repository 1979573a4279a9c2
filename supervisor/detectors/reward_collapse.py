"""reward_collapse: the return falling far below the level the run had reached, and staying there."""

from __future__ import annotations

import math
from collections import deque

from pydantic import Field, model_validator

from supervisor.detectors._common import Alarm, EpisodePoints, band_for, fmt, median, noise_scale, value_of
from supervisor.detectors.base import Detector
from supervisor.detectors.options import BandOption, Count, DetectorOptions, Number, at_least, fraction, positive
from supervisor.findings import Finding


class RewardCollapseOptions(DetectorOptions):
    drop_fraction: Number = fraction(0.5)
    z: Number = positive(5.0)
    min_progress: Number = at_least(0, 0.2)
    critical_fraction: Number = Field(0.9, gt=0, le=1)
    patience: Count = at_least(1, 3)
    smooth: Count = at_least(1, 5)
    window: Count = positive(30)
    warmup: Count = at_least(0, 10)
    episodes: Count = at_least(1, 5)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)
    band: BandOption = None

    @model_validator(mode="after")
    def _fractions(self):
        if self.drop_fraction >= self.critical_fraction:
            raise ValueError(f"need drop_fraction < critical_fraction (got drop_fraction={self.drop_fraction:g}, "
                             f"critical_fraction={self.critical_fraction:g})")
        return self


class RewardCollapse(Detector):
    """Warn when ``episode_return_mean`` collapses far below the level the run had reached.

    The unit of evidence is a *point*: the episode-weighted mean return of consecutive reports that
    together finished at least ``episodes`` new episodes (``num_episodes``; else the env steps over the
    mean episode length; a writer that says neither makes every report a point). A report per gradient
    step, with the same few episodes in each, is not a trend.

    Rule: over the whole run (points judged collapsed are left out), ``best`` is the highest rolling
    median (width ``smooth`` points) of the return, ``base`` the lowest one before it (the level the run
    rose from: a return that only fell since its start made no progress), progress = best - base, and sigma the noise of a point (MAD of successive differences over the last
    ``window`` points; at least 1 % of |best|). Fire when the newest point is below best -
    max(``drop_fraction`` x progress, ``z`` x sigma), on ``patience`` consecutive points, provided the
    run has made real progress: progress >= ``z`` x sigma and >= ``min_progress`` x max(|best|, |base|),
    and best is that far above the first level too (a run that never rose above where it started cannot
    collapse: an exploring learner that first gets worse and then climbs back; this also keeps noise in
    the first points from counting as progress), after ``warmup`` points. Warning; critical when the return is back within (1 -
    ``critical_fraction``) x progress of the base or below it (the run lost nearly everything it
    learned, e.g. a diverged PPO whose return falls to the environment's minimum). After a reset (a
    rollback: the history is back at the checkpoint) the levels and points start again from the returns
    the history holds, one point each.

    The return alone is no proof of a broken learner (an off-policy learner forgets and recovers, an
    exploration schedule dips it): the escalation policy acts on this finding only together with a
    learner-side one, and never stops a trial on it (``supervisor.policy``).

    Args:
        drop_fraction: fraction of the progress lost needed. Default 0.5.
        z: noise sigmas the drop and the progress must exceed. Default 5.
        min_progress: progress needed, relative to the return's level. Default 0.2.
        critical_fraction: fraction of the progress lost for critical. Default 0.9.
        patience: consecutive points needed. Default 3.
        smooth: rolling-median width for best and base, in points. Default 5.
        window: recent points the noise is measured on. Default 30.
        warmup: points needed before judging. Default 10.
        episodes: new episodes a point needs. Default 5.
        exit, repeat: Latch hysteresis (enter is ``patience``), in points. Default 3, 10.
        band: learned healthy band for ``episode_return_mean``; while the history is short its ``low``
            stands in for the base. Default None.
    """

    name = "reward_collapse"
    scope = "any"
    needs = (("episode_return_mean",),)
    band_metrics = ("episode_return_mean",)
    Options = RewardCollapseOptions

    def __init__(self, **options):
        super().__init__(**options)
        self._latch_args = (self.patience, self.exit, self.repeat)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(*self._latch_args)
        self._streak = 0
        self._pts = EpisodePoints(self.episodes)  # episodes not in a point yet
        self._points: deque = deque(maxlen=self.window + 1)  # the newest points not judged collapsed
        self._smooth: deque = deque(maxlen=self.smooth)
        self._best = self._base = None  # remembered over the whole run (beyond the history ring)
        self._low = None  # the lowest level so far
        self._start = None  # the first level: where the run started
        self.count = 0  # points so far
        self._seeded = False

    def _seed(self, history) -> None:
        """After a reset, the returns the history still holds (one point each) are the run's past."""
        self._seeded = True
        for v in history.values("episode_return_mean"):
            self.count += 1
            self._fold(v)

    def _fold(self, v: float) -> None:
        """A point not judged collapsed: it shapes the noise and, through the rolling median, the levels."""
        self._points.append(v)
        self._smooth.append(v)
        if len(self._smooth) == self.smooth:
            m = median(list(self._smooth))
            self._low = m if self._low is None else min(self._low, m)
            if self._start is None:
                self._start = m
            if self._best is None or m > self._best:  # progress is measured from the lowest level before it
                self._best, self._base = m, self._low

    def _point(self, metrics) -> float | None:
        """Fold this report in; the new point's value once it holds enough episodes, else None."""
        return self._pts.add(metrics, value_of(metrics, "episode_return_mean"))

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        if not self._seeded:
            self._seed(history)
        v = self._point(metrics)
        if v is None:
            return []
        self.count += 1
        n = len(self._points)  # points before this one
        triggered, sev = False, "warning"
        best = base = thr = sigma = None
        if self.count > max(self.warmup, self.smooth, 3) and self._best is not None:
            best, base = self._best, self._base
            b = band_for(self.band, "episode_return_mean")
            if b is not None and self.count <= 2 * max(self.warmup, self.smooth):
                base = min(base, float(b["low"]))
            progress = best - base
            if v < best - self.drop_fraction * progress:  # else it cannot trigger: skip the noise estimate
                pts = list(self._points)
                recent = pts[max(n - self.window, 0):]
                sigma = max(noise_scale(recent), 0.01 * abs(best), 1e-8)
                thr = best - max(self.drop_fraction * progress, self.z * sigma)
                real = (progress >= max(self.z * sigma, self.min_progress * max(abs(best), abs(base)))
                        and best - self._start >= self.min_progress * max(abs(best), abs(self._start)))
                triggered = real and v < thr
                if v <= base + (1 - self.critical_fraction) * progress:
                    sev = "critical"
        self._streak = self._streak + 1 if triggered else 0
        if not triggered:  # a point judged collapsed never shapes the levels or the noise
            self._fold(v)
        else:
            self._smooth.clear()
        if not self._alarm.update(triggered, sev):
            return []
        progress = best - base
        lost = (best - v) / progress if progress > 0 else math.inf
        return [self.finding(
            iteration, sev, "episode_return_mean", v,
            f"reward collapse: episode_return_mean={fmt(v)} for {self._streak} points, below {fmt(thr)} "
            f"(best level {fmt(best)}, start level {fmt(base)}: lost {fmt(100 * lost)}% of the progress, "
            f"noise sigma {fmt(sigma)}; needs {fmt(100 * self.drop_fraction)}% and {fmt(self.z)} sigma, "
            f"critical at {fmt(100 * self.critical_fraction)}%; a point: >= {self.episodes} new episodes)",
            base + (1 - self.critical_fraction) * progress if sev == "critical" else thr,
            best=best, base=base, sigma=sigma, lost_fraction=lost, iterations=self._streak, points=self.count)]
