"""alpha_runaway: SAC's entropy temperature growing without bound."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import AlarmOptions, OneRuleDetector, fmt, value_of
from supervisor.detectors.options import Count, Number, at_least, positive
from supervisor.findings import Finding


class AlphaRunawayOptions(AlarmOptions):
    high: Number = positive(10.0)
    critical: Number = positive(1000.0)
    growth: Number = Field(3.0, gt=1)
    patience: Count = at_least(1, 2)
    repeat: Count = positive(10)


class AlphaRunaway(OneRuleDetector):
    """Warn when SAC's temperature runs away.

    Rule: alpha >= ``high`` AND alpha at least ``growth`` x its value
    ``patience`` iterations ago (still climbing), with the entropy below
    ``target_entropy`` when both are reported, on ``patience`` consecutive
    iterations; critical at alpha >= ``critical``. RLlib starts alpha at 1.0
    and a healthy run lowers it (0.05-0.3 on Pendulum); a temperature that
    keeps growing means the policy cannot reach the target entropy (a target
    set too high, a policy whose log-std is pinned), and the entropy bonus
    soon drowns the reward in the Q-targets.

    Args:
        high: alpha for a warning. Default 10.
        critical: alpha for critical. Default 1000.
        growth: times its value ``patience`` iterations ago. Default 3.
        patience: consecutive iterations needed. Default 2.
        exit, repeat: Latch hysteresis. Default 3, 10.
    """

    name = "alpha_runaway"
    called_with = ("alpha",)
    needs = (("alpha",),)
    Options = AlphaRunawayOptions

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        a = value_of(metrics, "alpha")
        if a is None:
            return []
        past = history.values("alpha")
        before = past[-self.patience] if len(past) >= self.patience else None
        h, t = value_of(metrics, "entropy"), value_of(metrics, "target_entropy")
        below = h is None or t is None or h < t
        climbing = before is not None and before - before == 0.0 and a >= self.growth * max(before, 1e-12)
        triggered = (a >= self.high and climbing and below) or a >= self.critical
        sev = "critical" if a >= self.critical else "warning"
        if not self._due(triggered, sev):
            return []
        ent = f"; entropy {fmt(h)} vs target {fmt(t)}" if h is not None and t is not None else ""
        return [self.finding(
            iteration, sev, "alpha", a,
            f"entropy temperature runaway: alpha={fmt(a)}, {fmt(a / max(before, 1e-12)) if before else 'n/a'}x "
            f"its value {self.patience} iterations ago{ent}", self.high, previous=before)]
