"""plateau: no improvement of the return over a long window while short of the target."""

from __future__ import annotations

import math

from pydantic import Field

from supervisor.detectors._common import Alarm, band_for, fmt, lslope, median, noise_scale, value_of
from supervisor.detectors.base import Detector
from supervisor.detectors.options import BandOption, Count, DetectorOptions, Number, at_least
from supervisor.findings import Finding


class PlateauOptions(DetectorOptions):
    window: Count = Field(50, ge=5)
    target: Number | None = None
    target_tolerance: Number = at_least(0, 0.05)
    min_improvement: Number = at_least(0, 0.02)
    z: Number = at_least(0, 3.0)
    smooth: Count = at_least(1, 5)
    exit: Count = at_least(1, 3)
    band: BandOption = None


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
    holding its cap also counts as a plateau (info only). Reported once per
    plateau: not again while it lasts, and after it clears only once the run's
    best level has risen past the one reported (by ``min_improvement``).

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
    scope = "any"
    needs = (("episode_return_mean",),)
    band_metrics = ("episode_return_mean",)
    Options = PlateauOptions

    def __init__(self, **options):
        super().__init__(**options)
        # the history it needs: a full window of rolling medians (not the window itself)
        self.warmup = self.window + self.smooth - 1
        if self.target is None and band_for(self.band, "episode_return_mean") is not None:
            self.target = float(band_for(self.band, "episode_return_mean")["high"])
        self._latch_args = (1, self.exit, 2**62)  # once per plateau: no re-report while it lasts
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(*self._latch_args)
        self._bb = None  # (history id, iterations, values pushed, len(sm), sm[0], k, max(sm[:k]))
        self._reported_best: float | None = None  # the level of the plateau reported last

    def _best_before(self, history, view, sm: list[float], k: int) -> float:
        """max(sm[:k]), updated from the previous iteration's when the history just grew by one
        iteration (sm then gained a median at its end, and lost its first one if the ring is full)."""
        pushed = view.pushed
        prev = self._bb
        bb = None
        if prev is not None and prev[0] == id(history) and prev[1] + 1 == history.iterations:
            _, _, p_pushed, p_len, p_first, p_k, p_bb = prev
            if pushed == p_pushed and len(sm) == p_len and k == p_k:
                bb = p_bb  # no new value
            elif pushed == p_pushed + 1 and k == p_k + 1 and len(sm) == p_len + 1:
                bb = max(p_bb, sm[k - 1])  # one median more
            elif pushed == p_pushed + 1 and k == p_k and len(sm) == p_len and p_first < p_bb:
                bb = max(p_bb, sm[k - 1])  # one more, the oldest (not the maximum) dropped
        if bb is None:
            bb = max(sm[:k])
        self._bb = (id(history), history.iterations, pushed, len(sm), sm[0], k, bb)
        return bb

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        v = metrics.get("episode_return_mean")
        if v.__class__ is not float or v - v != 0.0:
            v = value_of(metrics, "episode_return_mean")
            if v is None:
                return []
        triggered = False
        sigma = trend = None
        window = self.window
        xs = history.values("episode_return_mean")
        if len(xs) >= self.warmup:
            view = history.rolling("episode_return_mean", self.smooth)
            sm = view.out  # rolling medians of the stored values
            if self.target is not None and max(sm) >= self.target - self.target_tolerance * abs(self.target):
                self._alarm.quiet()  # at its known target: done, not stuck
                return []
            xw = xs[len(xs) - (window - 1):]  # a copy (array)
            xw.append(v)
            last = xw[-self.smooth:] if self.smooth <= len(xw) else xw
            # the rolling medians with the window that ends with this iteration appended: the last
            # `window` of them are `recent`, the ones before `before` (not copied: only maxima needed)
            new = median(last)
            k = len(sm) + 1 - window
            best_before = self._best_before(history, view, sm, k)
            best_recent = max(max(sm[k:]), new) if k < len(sm) else new
            best = max(best_before, best_recent)
            floor = self.min_improvement * abs(best_before)
            improvement = best_recent - best_before
            at_target = self.target is not None and best >= self.target - self.target_tolerance * abs(self.target)
            # improvement <= max(floor, z sigma) and trend <= max(floor, z sigma sqrt(12 / window)),
            # computing the noise sigma and the trend only where the decision needs them
            if at_target:
                triggered = False
            elif improvement <= floor:
                trend = lslope(xw) * window
                if trend <= floor:
                    triggered = True
                else:
                    sigma = max(noise_scale(xw), 1e-3 * abs(best), 1e-8)
                    triggered = trend <= self.z * sigma * math.sqrt(12.0 / window)
            else:
                sigma = max(noise_scale(xw), 1e-3 * abs(best), 1e-8)
                if improvement <= self.z * sigma:
                    trend = lslope(xw) * window
                    triggered = trend <= max(floor, self.z * sigma * math.sqrt(12.0 / window))
        if not self._alarm.update(triggered, "info"):
            return []
        if self._reported_best is not None and best <= self._reported_best + max(
                self.min_improvement * abs(self._reported_best), 1e-8):
            return []  # the same level as the plateau already reported: the run never got past it
        self._reported_best = best
        if sigma is None:
            sigma = max(noise_scale(xw), 1e-3 * abs(best), 1e-8)
        if trend is None:
            trend = lslope(xw) * window
        need_improvement = max(floor, self.z * sigma)
        need_trend = max(floor, self.z * sigma * math.sqrt(12.0 / self.window))
        tgt = f"target {fmt(self.target)}" if self.target is not None else "no known target"
        return [self.finding(
            iteration, "info", "episode_return_mean", v,
            f"plateau: episode_return_mean={fmt(v)} has not improved for {self.window} iterations: best level "
            f"{fmt(best_recent)} vs {fmt(best_before)} before (needs > +{fmt(need_improvement)}), trend "
            f"{fmt(trend)} over the window (needs > {fmt(need_trend)}); {tgt}",
            need_improvement, best_recent=best_recent, best_before=best_before, trend=trend,
            sigma=sigma, target=self.target)]
