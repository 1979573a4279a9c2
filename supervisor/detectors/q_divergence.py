"""q_divergence: Q-values growing far past the return scale the run has seen (DQN, SAC)."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import Alarm, fmt, value_of
from supervisor.detectors._returns import ReturnScale
from supervisor.detectors.base import Detector
from supervisor.detectors.options import Count, DetectorOptions, Number, at_least, positive
from supervisor.findings import Finding


class QDivergenceOptions(DetectorOptions):
    k: Number = Field(10.0, gt=1)
    critical_k: Number = Field(100.0, gt=1)
    gamma: Number = Field(0.99, gt=0, lt=1)
    patience: Count = at_least(1, 1)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)


class QDivergence(Detector):
    """Warn when the learned Q-values overestimate beyond anything the rewards allow.

    Rule: the bound B = r_step / (1 - ``gamma``), with r_step the largest
    average per-step reward the run has shown (|best or worst episode return|
    over the mean episode length, any iteration so far: no true discounted
    return exceeds it). Fire when max(|q_max|, |q_min|, |q_mean|) exceeds
    ``k`` x B on ``patience`` consecutive iterations; critical past
    ``critical_k`` x B. Silent until an episode has finished (no bound yet);
    NaN/inf Q-values are ``non_finite``'s.

    A healthy DQN on CartPole (reward 1, gamma 0.99) moves its Q-values from
    0 towards 100 = B; the default k = 10 leaves an order of magnitude.

    Args:
        k: times the bound for a warning. Default 10.
        critical_k: times the bound for critical. Default 100.
        gamma: the discount (RLlib's DQN/SAC default 0.99). Default 0.99.
        patience: consecutive iterations needed. Default 1.
        exit, repeat: Latch hysteresis. Default 3, 10.
    """

    name = "q_divergence"
    Options = QDivergenceOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.scale = ReturnScale(self.gamma)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(self.patience, self.exit, self.repeat)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        bound = self.scale.update(metrics)
        qs = {k: abs(v) for k in ("q_max", "q_min", "q_mean") if (v := value_of(metrics, k)) is not None}
        if bound is None or not qs:
            return []
        metric, q = max(qs.items(), key=lambda kv: kv[1])
        triggered = q > self.k * bound
        sev = "critical" if q > self.critical_k * bound else "warning"
        if not self._alarm.update(triggered, sev):
            return []
        return [self.finding(
            iteration, sev, metric, metrics[metric],
            f"Q-value divergence: |{metric}|={fmt(q)} is {fmt(q / bound)}x the largest discounted return the "
            f"rewards allow, {fmt(bound)} (r_step {fmt(self.scale.r_step)} / (1 - gamma {self.gamma:g}))",
            self.k * bound, bound=bound, r_step=self.scale.r_step)]
