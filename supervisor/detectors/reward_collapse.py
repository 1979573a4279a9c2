"""reward_collapse: the return falling far below the level the run had reached, and staying there."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from supervisor.detectors._common import Alarm, RollingMedian, band_for, fmt, noise_scale, value_of
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

    Rule: over the whole run (remembered beyond the history ring; windows
    holding iterations judged collapsed are left out), ``best`` is the
    highest rolling median (width ``smooth``) of the return, ``base`` the
    lowest (the run's starting level), progress =
    best - base, and sigma the per-iteration noise (MAD of successive
    differences over the last ``window`` iterations; at least 1 % of |best|).
    Fire when the return is below best - max(``drop_fraction`` x progress,
    ``z`` x sigma), on ``patience`` consecutive iterations, provided the run
    has made real progress: progress >= ``z`` x sigma and >= ``min_progress``
    x max(|best|, |base|) (a run that never improved cannot collapse; this
    also keeps noise in the first iterations from counting as progress). Warning; critical when the return
    is back within (1 - ``critical_fraction``) x progress of the base or
    below it (the run lost nearly everything it learned, e.g. a diverged
    PPO whose return falls to the environment's minimum).

    Args:
        drop_fraction: fraction of the progress lost needed. Default 0.5.
        z: noise sigmas the drop and the progress must exceed. Default 5
            (real CartPole returns with small batches have heavy-tailed,
            autocorrelated noise: 4 sigma drops that recover happen).
        min_progress: progress needed, relative to the return's level.
            Default 0.2.
        critical_fraction: fraction of the progress lost for critical.
            Default 0.9.
        patience: consecutive iterations needed. Default 3.
        smooth: rolling-median width for best and base. Default 5.
        window: recent iterations the noise is measured on. Default 30.
        warmup: history values needed. Default 10.
        exit, repeat: Latch hysteresis (enter is ``patience``). Default 3, 10.
        band: learned healthy band for ``episode_return_mean``; while the
            history is short its ``low`` stands in for the base. Default None.
    """

    name = "reward_collapse"
    scope = "any"
    band_metrics = ("episode_return_mean",)
    Options = RewardCollapseOptions

    def __init__(self, **options):
        super().__init__(**options)
        self._latch_args = (self.patience, self.exit, self.repeat)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(*self._latch_args)
        self._streak = 0
        self._rolling = RollingMedian("episode_return_mean", self.smooth)
        # best and base are remembered over the whole run (the history ring forgets the early
        # iterations of a long run, and with them its start level); windows holding a value judged
        # collapsed are never folded in.
        self._best = self._base = None
        self._seen = (-1, 0)  # (rebuilds, added) of the rolling medians already folded
        self._clean = 0       # values since the last one judged collapsed

    def _fold(self, sm: list[float]) -> None:
        r = self._rolling
        if r.rebuilds != self._seen[0]:
            valid = sm[: max(len(sm) - self._streak, 0)]
            if valid:
                self._best = max(valid) if self._best is None else max(self._best, max(valid))
                self._base = min(valid) if self._base is None else min(self._base, min(valid))
            self._clean = 0 if self._streak else self.smooth
        else:
            for _ in range(r.added - self._seen[1]):  # 0 or 1: the value appended since the last call
                self._clean = 0 if self._streak else self._clean + 1
                if self._clean >= self.smooth and sm:
                    self._best = sm[-1] if self._best is None else max(self._best, sm[-1])
                    self._base = sm[-1] if self._base is None else min(self._base, sm[-1])
        self._seen = (r.rebuilds, r.added)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        v = value_of(metrics, "episode_return_mean")
        if v is None:
            return []
        self._fold(self._rolling.update(history, metrics))
        n = history.count("episode_return_mean") - self._streak  # leave out the values judged collapsed
        triggered, sev = False, "warning"
        best = base = thr = sigma = None
        if n >= max(self.warmup, self.smooth, 3) and self._best is not None:
            best, base = self._best, self._base
            b = band_for(self.band, "episode_return_mean")
            if b is not None and n < 2 * max(self.warmup, self.smooth):
                base = min(base, float(b["low"]))
            progress = best - base
            if v >= best - self.drop_fraction * progress:  # cannot trigger: skip the noise estimate
                self._streak = 0
                self._alarm.update(False)
                return []
            xs = history.values("episode_return_mean")
            recent = xs[max(len(xs) - (self.window + self._streak), 0):]
            recent = recent[: len(recent) - self._streak]
            sigma = max(noise_scale(recent), 0.01 * abs(best), 1e-8)
            thr = best - max(self.drop_fraction * progress, self.z * sigma)
            real = progress >= max(self.z * sigma, self.min_progress * max(abs(best), abs(base)))
            triggered = real and v < thr
            if v <= base + (1 - self.critical_fraction) * progress:
                sev = "critical"
        self._streak = self._streak + 1 if triggered else 0
        if not self._alarm.update(triggered, sev):
            return []
        progress = best - base
        lost = (best - v) / progress if progress > 0 else math.inf
        return [self.finding(
            iteration, sev, "episode_return_mean", v,
            f"reward collapse: episode_return_mean={fmt(v)} for {self._streak} iterations, below {fmt(thr)} "
            f"(best level {fmt(best)}, start level {fmt(base)}: lost {fmt(100 * lost)}% of the progress, "
            f"noise sigma {fmt(sigma)}; needs {fmt(100 * self.drop_fraction)}% and {fmt(self.z)} sigma, "
            f"critical at {fmt(100 * self.critical_fraction)}%)",
            base + (1 - self.critical_fraction) * progress if sev == "critical" else thr,
            best=best, base=base, sigma=sigma, lost_fraction=lost, iterations=self._streak)]
