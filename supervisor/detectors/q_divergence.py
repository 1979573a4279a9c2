"""q_divergence: Q-values growing far past the return scale the run has seen (DQN, SAC)."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import Alarm, fmt, value_of
from supervisor.detectors._returns import ReturnScale, discount
from supervisor.detectors.base import Detector
from supervisor.detectors.options import Count, DetectorOptions, Number, at_least, positive
from supervisor.findings import Finding


Q_KEYS = ("q_max", "q_min", "q_mean")
ALPHA_KEYS = ("alpha", "entropy_coeff")  # SAC's entropy coefficient (RLlib, SB3)


class QDivergenceOptions(DetectorOptions):
    k: Number = Field(2.0, gt=0)
    critical_k: Number = Field(20.0, gt=0)
    gamma: Number = Field(0.99, gt=0, lt=1)
    patience: Count = at_least(1, 1)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)


class QDivergence(Detector):
    """Warn when the learned Q-values leave the range the rewards allow.

    Rule: from the average per-step reward of every iteration so far
    (episode_return_mean / episode_len_mean), the honest Q range is
    [min(0, lowest), max(0, highest)] / (1 - ``gamma``) and S its largest
    magnitude. Fire when q_max (or q_mean) exceeds the top by more than
    ``k`` x S, or q_min (or q_mean) falls below the bottom by more than
    ``k`` x S, on ``patience`` consecutive iterations; critical past
    ``critical_k`` x S. Silent until an episode has finished; NaN/inf
    Q-values are ``non_finite``'s.

    CartPole (reward 1, gamma 0.99): Q belongs in [0, 100]; a warning needs
    q_max > 300 or q_min < -200. A healthy DQN moves its Q-values from 0 up
    towards 100 (overestimating a little on the way).

    Soft Q-values (SAC) also hold the entropy bonus, alpha x the policy's
    entropy per step: where the run reports its entropy coefficient
    (``alpha``, ``entropy_coeff``) and the priors know the action space's
    maximum entropy H, the top rises by the largest coefficient seen x H /
    (1 - ``gamma``) (SB3's SAC on MountainCarContinuous: rewards of -0.03 a
    step allow [-3.4, 0], yet a healthy run's q_max reached +6.8 at 6,000
    steps: the bonus of a policy that still explores). The bottom is left as
    it is: a sharp policy's entropy has no floor to widen it by.

    Args:
        k: distance outside the range, in units of S, for a warning. Default 2.
        critical_k: the same for critical. Default 20.
        gamma: the discount. Default: the trial's own (its config, through the priors), else 0.99
            (RLlib's and SB3's default); given here, it overrides the config's.
        patience: consecutive iterations needed. Default 1.
        exit, repeat: Latch hysteresis. Default 3, 10.
    """

    name = "q_divergence"
    needs = (("q_max", "q_min", "q_mean"), ("episode_return_mean",))
    Options = QDivergenceOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.scale = ReturnScale(self.gamma)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(self.patience, self.exit, self.repeat)
        self.scale.gamma = discount(self)  # the priors are set before reset (build_detectors)
        self._alpha = 0.0  # the largest entropy coefficient seen (the bonus the Q-values may hold)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        known = self.scale.update(metrics)
        if metrics.keys().isdisjoint(Q_KEYS):  # no Q-values reported (another algorithm)
            return []
        for k in ALPHA_KEYS:  # reported beside the Q-values (SAC)
            a = value_of(metrics, k)
            if a is not None and a > self._alpha:
                self._alpha = a
        q = {k: v for k in ("q_max", "q_min", "q_mean") if (v := value_of(metrics, k)) is not None}
        if not known or not q:
            return []
        lo, hi = self.scale.q_range
        s = self.scale.scale
        bonus = self._alpha * max(self.priors.max_entropy or 0.0, 0.0) / (1.0 - self.scale.gamma)
        hi += bonus
        # how far outside [lo, hi] each Q statistic is, in units of S
        out = {k: max(v - hi, lo - v, 0.0) / s for k, v in q.items()}
        metric, d = max(out.items(), key=lambda kv: kv[1])
        triggered = d > self.k
        sev = "critical" if d > self.critical_k else "warning"
        if not self._alarm.update(triggered, sev):
            return []
        return [self.finding(
            iteration, sev, metric, q[metric],
            f"Q-value divergence: {metric}={fmt(q[metric])} is {fmt(d)} x {fmt(s)} outside [{fmt(lo)}, {fmt(hi)}], "
            f"the range the rewards seen allow (average per-step reward in [{fmt(self.scale.lo)}, "
            f"{fmt(self.scale.hi)}], gamma {self.scale.gamma:g}"
            + (f"; the entropy bonus up to {fmt(bonus)}: alpha {fmt(self._alpha)} x max entropy "
               f"{fmt(self.priors.max_entropy)})" if bonus else ")"),
            hi + self.k * s if q[metric] > hi else lo - self.k * s, q_range=[lo, hi], scale=s)]
