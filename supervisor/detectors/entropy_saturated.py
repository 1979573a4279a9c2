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

    Not while every episode so far has returned the same (a sparse-reward task before its first
    success: Acrobot's -500 every episode): the policy gradient then has no signal to act on and any
    positive bonus holds the entropy at its maximum, whatever its size; lowering it would not help.
    That is said once, as ``info``; the rule judges again from the first return that differs.

    Args:
        fraction: share of log(n) that counts as saturated (discrete). Default 0.99.
        continuous_margin: nats per dimension above the initial entropy (continuous). Default 0.7.
        patience, exit, repeat: hysteresis. Default 3, 3, 20.
    """

    name = "entropy_saturated"
    needs = (("entropy",), ("entropy_coeff",))
    Options = EntropySaturatedOptions

    def __init__(self, **options):
        super().__init__(**options)
        # the returns seen on reports that finished episodes: kept across a rollback (what the task's
        # episodes returned before it is still what they return)
        self._lo = self._hi = None
        self._seen = 0

    def reset(self) -> None:
        super().reset()
        self._told = False  # the no-signal note is given once (again after a rollback)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        e, coeff, p = value_of(metrics, "entropy"), value_of(metrics, "entropy_coeff"), self.priors
        if e is None or not coeff or coeff <= 0 or p.max_entropy is None:
            return []
        self._returns(metrics)
        if p.action_kind == "continuous":
            limit = p.max_entropy + self.continuous_margin * (p.action_dim or 1)
            hit = e > limit
        else:
            limit = self.fraction * p.max_entropy
            hit = e >= limit
        same = self._hi if hit and self._one_return() else None
        if same is not None:
            self._due(False)
            if self._told:
                return []
            self._told = True
            return [self.finding(iteration, "info", "entropy", e,
                                 f"entropy at its maximum ({fmt(e / p.max_entropy)}x {fmt(p.max_entropy)}), but "
                                 f"every episode so far returned {fmt(same)}: no reward signal for the policy "
                                 f"gradient yet (a sparse-reward task before its first success), so the entropy "
                                 f"bonus is not what holds the policy; judged again once a return differs", limit,
                                 max_entropy=p.max_entropy, no_signal=True)]
        if not self._due(hit):
            return []
        return [self.finding(iteration, "warning", "entropy", e,
                             f"entropy saturated: entropy={fmt(e)} is {fmt(e / p.max_entropy)}x its maximum "
                             f"{fmt(p.max_entropy)} with entropy_coeff={fmt(coeff)}: the entropy bonus dominates "
                             f"the loss and keeps the policy random; lower entropy_coeff", limit,
                             max_entropy=p.max_entropy)]

    def _returns(self, metrics) -> None:
        """Fold this report's returns in, when it finished episodes (a report that finished none repeats a
        windowed mean: no new evidence)."""
        n = value_of(metrics, "num_episodes")
        if n is not None and n <= 0:
            return
        xs = [v for k in _RETURNS if (v := value_of(metrics, k)) is not None]
        if not xs:
            return
        self._seen += 1
        lo, hi = min(xs), max(xs)
        self._lo = lo if self._lo is None else min(self._lo, lo)
        self._hi = hi if self._hi is None else max(self._hi, hi)

    def _one_return(self) -> bool:
        """Every episode so far returned the same (the extremes of ``patience`` reports or more, equal); False
        while fewer reports said (no evidence either way)."""
        return self._seen >= self.patience and self._hi - self._lo <= 1e-9 * max(1.0, abs(self._hi))


_RETURNS = ("episode_return_min", "episode_return_max", "episode_return_mean")
