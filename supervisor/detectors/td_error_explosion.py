"""td_error_explosion: the mean TD error jumping far above its history and the return scale (DQN, SAC)."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import Alarm, fmt, median, value_of
from supervisor.detectors._returns import ReturnScale, discount
from supervisor.detectors.base import Detector
from supervisor.detectors.options import Count, DetectorOptions, Number, at_least, positive
from supervisor.findings import Finding


class TDErrorExplosionOptions(DetectorOptions):
    ratio: Number = Field(20.0, gt=1)
    return_fraction: Number = positive(0.5)
    critical_k: Number = Field(10.0, gt=0)
    gamma: Number = Field(0.99, gt=0, lt=1)
    window: Count = positive(20)
    warmup: Count = at_least(1, 3)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)


class TDErrorExplosion(Detector):
    """Warn when the Bellman error explodes.

    Rule: e = |td_error_mean|. With B the largest |Q| the rewards seen allow
    (``q_divergence``'s S: max |average per-step reward| / (1 - ``gamma``)), fire when e >= ``return_fraction`` x B AND
    either e >= ``ratio`` x the median |TD error| of the last ``window``
    iterations (once ``warmup`` exist) or there is no history yet; critical
    when e >= ``critical_k`` x B whatever the history. Before any episode
    finished (no B) the history rule alone, at 5 x ``ratio``. A healthy TD
    error is a small fraction of the Q scale and moves slowly; a learner
    that diverged (lr far too high, a target chasing itself) makes it
    comparable to or larger than every return the run can produce.

    Args:
        ratio: times the median of its history. Default 20.
        return_fraction: fraction of the return bound needed. Default 0.5.
        critical_k: times the return bound for critical. Default 10.
        gamma: the discount. Default: the trial's own (its config, through the priors), else 0.99;
            given here, it overrides the config's.
        window: iterations in the median. Default 20.
        warmup: history values before the history rule applies. Default 3.
        exit, repeat: Latch hysteresis. Default 3, 10.
    """

    name = "td_error_explosion"
    needs = (("td_error_mean",),)
    Options = TDErrorExplosionOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.scale = ReturnScale(self.gamma)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(1, self.exit, self.repeat)
        self.scale.gamma = discount(self)  # the priors are set before reset (build_detectors)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        bound = self.scale.scale if self.scale.update(metrics) else None
        v = value_of(metrics, "td_error_mean")
        if v is None:
            return []
        e = abs(v)
        past = [abs(x) for x in history.values("td_error_mean")[-self.window:] if x - x == 0.0]
        ref = median(past) if len(past) >= self.warmup else None
        jumped = ref is not None and e >= self.ratio * max(ref, 1e-12)
        if bound is None:
            triggered = ref is not None and e >= 5 * self.ratio * max(ref, 1e-12)
            sev = "warning"
        else:
            big = e >= self.critical_k * bound
            triggered = big or (e >= self.return_fraction * bound and (jumped or ref is None))
            sev = "critical" if big else "warning"
        if not self._alarm.update(triggered, sev):
            return []
        parts = [f"|td_error_mean|={fmt(e)}"]
        if ref is not None:
            parts.append(f"{fmt(e / max(ref, 1e-12))}x its median {fmt(ref)} over {len(past)} iterations")
        if bound is not None:
            parts.append(f"{fmt(e / bound)}x the return bound {fmt(bound)}")
        threshold = self.return_fraction * bound if bound is not None else 5 * self.ratio * (ref or 0.0)
        return [self.finding(iteration, sev, "td_error_mean", v, "TD-error explosion: " + ", ".join(parts),
                             threshold, reference=ref, bound=bound)]
