"""gradient_vanishing: the gradient norm collapsing towards 0 relative to its own history."""

from __future__ import annotations

import math

from supervisor.detectors._common import LOG_LOG_EPS, Alarm, fmt, reference_from, value_of, window_of
from supervisor.detectors.base import Detector
from supervisor.detectors.options import (BandOption, Count, DetectorOptions, Metrics, Number, at_least, fraction,
                                          positive)
from supervisor.findings import Finding


class GradientVanishingOptions(DetectorOptions):
    metrics: Metrics = None
    fraction: Number = fraction(0.05)
    zero: Number = at_least(0, 1e-8)
    patience: Count = at_least(1, 2)
    window: Count = positive(30)
    warmup: Count = at_least(0, 10)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)
    band: BandOption = None


class GradientVanishing(Detector):
    """Warn when the gradient norm collapses towards 0 relative to its own history.

    Rule: for each of ``metrics`` present and finite, warning when the norm is
    below ``fraction`` times the median of its last ``window`` history values
    (values already judged vanished are left out, so the collapse does not
    become the new normal) on ``patience`` consecutive iterations, once there
    are ``warmup`` values (or a learned band). Critical when the norm is at
    most ``zero`` on ``patience`` consecutive iterations, with no warm-up:
    an exactly-zero gradient is what a diverged RLlib PPO shows (every sample
    clipped or saturated, entropy 0), and it can come from iteration 2.

    Args:
        metrics: norms to watch. Default ("grad_norm", "grad_norm_policy").
        fraction: fraction of the median below which the norm has vanished.
            Default 0.05.
        zero: norm at or below which it is exactly dead. Default 1e-8.
        patience: consecutive iterations needed. Default 2.
        window: iterations of history in the reference. Default 30.
        warmup: history values needed before the relative rule. Default 10.
        exit, repeat: Latch hysteresis (enter is ``patience``). Default 3, 10.
        band: learned healthy band ({"low", "high", "median"}, or
            {metric: band}); while the history is shorter than warmup its
            ``low`` stands in for the median. Default None.
    """

    name = "gradient_vanishing"
    band_metrics = ("grad_norm", "grad_norm_policy")
    Options = GradientVanishingOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.metrics = tuple(self.metrics) if self.metrics is not None else self.band_metrics
        self._latch_args = (self.patience, self.exit, self.repeat)
        self.reset()

    def reset(self) -> None:
        self._alarms = {m: Alarm(*self._latch_args) for m in self.metrics}
        self._streak = {m: 0 for m in self.metrics}
        self._log_fraction = math.log(self.fraction)

    def needed(self) -> tuple[tuple[str, ...], ...]:
        return (self.metrics,)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        out = []
        window, need = self.window, max(self.warmup, 1)
        for m in self.metrics:
            v = metrics.get(m)
            if v.__class__ is not float or v - v != 0.0:
                v = value_of(metrics, m)
                if v is None:
                    continue
            vals = history.view(m, "log")
            dead = v <= self.zero
            if not dead:
                streak = self._streak[m]
                if streak:
                    w = window_of(vals, window, streak)
                else:
                    n = len(vals)
                    w = vals[n - window:] if n > window else vals
                if (len(w) >= need and min(w) > LOG_LOG_EPS
                        and math.log(v) >= self._log_fraction + max(w)):
                    # at least `fraction` x the window's maximum, so not below `fraction` x its median
                    if streak:
                        self._streak[m] = 0
                    self._alarms[m].quiet()
                    continue
            ref = reference_from(vals, m, window=self.window, warmup=self.warmup, band=self.band, log=True,
                                 exclude_last=self._streak[m], band_at="low")
            vanished = ref is not None and v < self.fraction * ref.typical
            triggered = dead or vanished
            sev = "critical" if dead else "warning"
            self._streak[m] = self._streak[m] + 1 if triggered else 0
            if self._alarms[m].update(triggered, sev):
                if ref is not None:
                    rel = f"{fmt(v / ref.typical if ref.typical > 0 else 0.0)}x its typical {fmt(ref.typical)} " \
                          f"({'learned profile band' if ref.source == 'profile' else f'last {ref.n} iterations'})"
                else:
                    rel = "no history yet"
                thr = self.zero if dead else self.fraction * ref.typical
                what = f"exactly dead (<= {fmt(self.zero)})" if dead else \
                    f"below {fmt(self.fraction)}x its typical"
                out.append(self.finding(
                    iteration, sev, m, v,
                    f"vanishing gradient: {m}={fmt(v)} is {what} for {self._streak[m]} iterations; {rel}",
                    thr, typical=ref.typical if ref else None, source=ref.source if ref else None,
                    iterations=self._streak[m]))
        return out
