"""alpha_collapse: SAC's entropy temperature going to 0 while the policy's entropy is far below its target."""

from __future__ import annotations

from supervisor.detectors._common import AlarmOptions, OneRuleDetector, fmt, value_of
from supervisor.detectors.options import Count, Number, at_least, positive
from supervisor.findings import Finding


class AlphaCollapseOptions(AlarmOptions):
    alpha_floor: Number = positive(1e-3)
    dead_alpha: Number = positive(1e-6)
    margin: Number = at_least(0, 1.0)
    patience: Count = at_least(1, 2)
    repeat: Count = positive(10)


class AlphaCollapse(OneRuleDetector):
    """Warn when SAC's temperature collapses and takes exploration with it.

    Rule: alpha <= ``alpha_floor`` AND the policy's entropy (minus its mean
    log-prob) is more than ``margin`` nats below ``target_entropy``, on
    ``patience`` consecutive iterations. SAC's temperature loss should push
    alpha *up* whenever the entropy is below target; a temperature at ~0
    in that state means the automatic tuning is broken (a diverged alpha
    optimizer, a target entropy out of reach of the update) and the policy
    is collapsing to a deterministic one. Critical when alpha <=
    ``dead_alpha`` (the entropy term has left the loss entirely).

    Args:
        alpha_floor: alpha at or below which the temperature has collapsed. Default 1e-3.
        dead_alpha: alpha for critical. Default 1e-6.
        margin: nats below the target entropy needed. Default 1.0.
        patience: consecutive iterations needed. Default 2.
        exit, repeat: Latch hysteresis. Default 3, 10.
    """

    name = "alpha_collapse"
    called_with = ("alpha",)
    needs = (("alpha",), ("entropy",), ("target_entropy",))
    Options = AlphaCollapseOptions

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        if "alpha" not in metrics:  # no entropy temperature (another algorithm)
            return []
        a, h, t = (value_of(metrics, k) for k in ("alpha", "entropy", "target_entropy"))
        if a is None or h is None or t is None:
            return []
        triggered = a <= self.alpha_floor and h < t - self.margin
        sev = "critical" if a <= self.dead_alpha else "warning"
        if not self._due(triggered, sev):
            return []
        return [self.finding(
            iteration, sev, "alpha", a,
            f"entropy temperature collapse: alpha={fmt(a)} (<= {fmt(self.alpha_floor)}) while the entropy "
            f"{fmt(h)} is {fmt(t - h)} nats below its target {fmt(t)}", self.alpha_floor,
            entropy=h, target_entropy=t)]
