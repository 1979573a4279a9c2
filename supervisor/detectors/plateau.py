"""plateau: no improvement of the return over a long window while short of the target."""

from __future__ import annotations

import math

from supervisor.detectors._common import (Alarm, RollingMedian, band_for, check_band, fmt, lslope, median,
                                          noise_scale, value_of)
from supervisor.detectors.base import Detector
from supervisor.findings import Finding


class Plateau(Detector):
    """Note (info) when ``episode_return_mean`` has stopped improving short of its target.

    Rule: with at least ``window`` + ``smooth`` values (so never during the
    first window), over the last ``window`` iterations (this one included):

    * the best rolling median (width ``smooth``) did not beat the best one
      before the window by more than max(``min_improvement`` x |best|,
      ``z`` x sigma), and
    * the least-squares trend over the window (slope x window) is at most
      max(``min_improvement`` x |best|, ``z`` x its standard error),

    where sigma is the per-iteration noise (MAD of successive differences).
    Nothing fires while the best level is within ``target_tolerance`` of
    ``target`` (when given, else the learned band's ``high``): a run sitting
    at its known target is done, not stuck. Without a target, a solved run
    holding its cap also counts as a plateau (info only). Latch: on at once,
    reported again every ``window`` iterations while it lasts.

    Args:
        window: iterations without improvement. Default 50.
        target: the return that counts as solved, if known. Default None.
        target_tolerance: relative distance to the target counted as at it.
            Default 0.05.
        min_improvement: relative improvement that counts. Default 0.02.
        z: noise sigmas an improvement or trend must exceed. Default 3.
        smooth: rolling-median width. Default 5.
        exit: Latch exit. Default 3.
        band: learned healthy band for ``episode_return_mean``. Default None.
    """

    name = "plateau"
    band_metrics = ("episode_return_mean",)

    def __init__(self, window: int = 50, target: float | None = None, target_tolerance: float = 0.05,
                 min_improvement: float = 0.02, z: float = 3.0, smooth: int = 5, exit: int = 3, band=None):
        super().__init__(window)
        check_band(band, self.name)
        if window < 5 or smooth < 1 or min_improvement < 0 or target_tolerance < 0:
            raise ValueError(f"{self.name}: need window >= 5, smooth >= 1, min_improvement >= 0, "
                             "target_tolerance >= 0")
        self.window, self.target, self.target_tolerance = window, target, target_tolerance
        self.min_improvement, self.z, self.smooth, self.band = min_improvement, z, smooth, band
        if self.target is None and band_for(band, "episode_return_mean") is not None:
            self.target = float(band_for(band, "episode_return_mean")["high"])
        self._latch_args = (1, exit, window)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(*self._latch_args)
        self._rolling = RollingMedian("episode_return_mean", self.smooth)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        v = value_of(metrics, "episode_return_mean")
        if v is None:
            return []
        triggered = False
        sm = self._rolling.update(history, metrics)
        if history.count("episode_return_mean") >= self.window + self.smooth - 1:
            best_sm = max(sm)
            if self.target is not None and best_sm >= self.target - self.target_tolerance * abs(self.target):
                self._alarm.update(False)  # at its known target: done, not stuck
                return []
            xs = history.values("episode_return_mean")
            xw = xs[max(len(xs) - (self.window - 1), 0):].tolist()
            xw.append(v)
            last = xw[-self.smooth:] if self.smooth <= len(xw) else xw
            sm = sm + [median(last)]  # the window that ends with this iteration
            recent, before = sm[-self.window:], sm[: -self.window]
            best_before, best_recent = max(before), max(recent)
            best = max(best_before, best_recent)
            sigma = max(noise_scale(xw), 1e-3 * abs(best), 1e-8)
            floor = self.min_improvement * abs(best_before)
            improvement = best_recent - best_before
            need_improvement = max(floor, self.z * sigma)
            trend = lslope(xw) * self.window
            need_trend = max(floor, self.z * sigma * math.sqrt(12.0 / self.window))
            at_target = self.target is not None and best >= self.target - self.target_tolerance * abs(self.target)
            triggered = improvement <= need_improvement and trend <= need_trend and not at_target
        if not self._alarm.update(triggered, "info"):
            return []
        tgt = f"target {fmt(self.target)}" if self.target is not None else "no known target"
        return [self.finding(
            iteration, "info", "episode_return_mean", v,
            f"plateau: episode_return_mean={fmt(v)} has not improved for {self.window} iterations: best level "
            f"{fmt(best_recent)} vs {fmt(best_before)} before (needs > +{fmt(need_improvement)}), trend "
            f"{fmt(trend)} over the window (needs > {fmt(need_trend)}); {tgt}",
            need_improvement, best_recent=best_recent, best_before=best_before, trend=trend,
            sigma=sigma, target=self.target)]
