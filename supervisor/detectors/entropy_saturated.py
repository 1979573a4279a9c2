"""entropy_saturated: the entropy bonus dominates the loss and pins the policy at maximum entropy."""

from __future__ import annotations

from supervisor.detectors._common import AlarmOptions, OneRuleDetector, fmt, value_of
from supervisor.detectors.options import Number, fraction, positive
from supervisor.findings import Finding


class EntropySaturatedOptions(AlarmOptions):
    fraction: Number = fraction(0.99)
    continuous_margin: Number = positive(0.7)


class EntropySaturated(OneRuleDetector):
    """Warn when a positive entropy coefficient holds the policy at (or past) its maximum entropy.

    Rule (a prior: the action space's maximum entropy from the trial's config): with
    ``entropy_coeff > 0``, warning when on ``patience`` consecutive iterations the entropy is at least
    ``fraction`` x log(n) for a discrete policy, or more than ``continuous_margin`` nats per action
    dimension above the initial unit Gaussian's entropy for a continuous one (its standard deviation
    has doubled). The policy then cannot become better than random: lower ``entropy_coeff``.
    A healthy run's entropy falls from its maximum within the first iterations (CartPole: 0.97 x ln 2
    at iteration 3 with entropy_coeff 0.01).

    Args:
        fraction: share of log(n) that counts as saturated (discrete). Default 0.99.
        continuous_margin: nats per dimension above the initial entropy (continuous). Default 0.7.
        patience, exit, repeat: hysteresis. Default 3, 3, 20.
    """

    name = "entropy_saturated"
    needs = (("entropy",), ("entropy_coeff",))
    Options = EntropySaturatedOptions

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        e, coeff, p = value_of(metrics, "entropy"), value_of(metrics, "entropy_coeff"), self.priors
        if e is None or not coeff or coeff <= 0 or p.max_entropy is None:
            return []
        if p.action_kind == "continuous":
            limit = p.max_entropy + self.continuous_margin * (p.action_dim or 1)
            hit = e > limit
        else:
            limit = self.fraction * p.max_entropy
            hit = e >= limit
        if not self._due(hit):
            return []
        return [self.finding(iteration, "warning", "entropy", e,
                             f"entropy saturated: entropy={fmt(e)} is {fmt(e / p.max_entropy)}x its maximum "
                             f"{fmt(p.max_entropy)} with entropy_coeff={fmt(coeff)}: the entropy bonus dominates "
                             f"the loss and keeps the policy random; lower entropy_coeff", limit,
                             max_entropy=p.max_entropy)]
