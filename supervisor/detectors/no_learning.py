"""no_learning: updates no longer change the policy."""

from __future__ import annotations

from supervisor.detectors._common import AlarmOptions, OneRuleDetector, fmt, value_of
from supervisor.detectors.options import Number, positive
from supervisor.findings import Finding


class NoLearningOptions(AlarmOptions):
    frozen_kl: Number = positive(1e-7)
    frozen_clip: Number = positive(1e-4)


class NoLearning(OneRuleDetector):
    """Warn when the policy is frozen: training runs, but nothing it does moves the policy.

    Rule: approx_kl below ``frozen_kl`` and clip fraction below ``frozen_clip`` on ``patience``
    consecutive iterations (needs no history: healthy recorded PPO updates move the policy by 5e-4 to
    8e-2, and one an lr cut tenfold slows to 1e-6 is still learning; lr 1e-7 gives 3e-8, a zero
    gradient 0). The other half of "no learning", a
    policy that became deterministic without improving, is :mod:`premature_convergence`.

    Args:
        frozen_kl, frozen_clip: what counts as "no change". Default 1e-7, 1e-4.
        patience, exit, repeat: hysteresis. Default 3, 3, 20.
    """

    name = "no_learning"
    needs = (("approx_kl",), ("clip_fraction",))
    Options = NoLearningOptions

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        kl, cf = value_of(metrics, "approx_kl"), value_of(metrics, "clip_fraction")
        if kl is None or cf is None:
            return []
        if not self._due(abs(kl) < self.frozen_kl and cf < self.frozen_clip):
            return []
        return [self.finding(iteration, "warning", "approx_kl", kl,
                             f"no learning: the policy is frozen (approx_kl={fmt(kl)} < {fmt(self.frozen_kl)}, clip "
                             f"fraction {fmt(cf)}) for {self._streak} iterations: updates no longer change it; lr "
                             f"too low or no gradient", self.frozen_kl)]
