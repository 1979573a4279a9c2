"""policy_lag: APPO's or IMPALA's env runners sampling with a policy ever further behind the learner."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import AlarmOptions, OneRuleDetector, fmt, value_of
from supervisor.detectors.options import Count, Number, at_least, positive
from supervisor.findings import Finding


class PolicyLagOptions(AlarmOptions):
    ratio: Number = Field(1.5, gt=1)
    min_lag: Number = positive(8.0)
    critical_factor: Number = Field(5.0, gt=1)
    default_bound: Number = positive(8.0)
    patience: Count = at_least(1, 2)
    repeat: Count = positive(10)


class PolicyLag(OneRuleDetector):
    """Warn when the policy lag runs away past what the trial's config builds in.

    ``policy_lag`` is RLlib's ``diff_num_grad_updates_vs_sampler_policy``:
    how many learner updates the weights that sampled a batch are behind the
    learner's when it trains on it. APPO and IMPALA build some lag in:
    batches wait in the learner's queue (IMPALA's ``learner_queue_size``, 3)
    or circular buffer (APPO's ``circular_buffer_num_batches``, 8), and env
    runners get new weights every ``broadcast_interval`` updates; that bound
    is the prior ``lag_bound`` (queue or buffer + broadcast_interval - 1).
    Measured on real CartPole runs (``benchmarks/policy_lag.py``): healthy
    APPO 5.5-5.8, 7.2 with 4 env runners feeding a slow learner; healthy
    IMPALA 3.0-3.1; never above the bound. When the weight sync is lost (the
    env runners' ``EnvRunnerStateServer`` gone) the env runners keep
    sampling with old weights and the lag grows by the learner's updates
    each iteration, without end: V-trace's importance weights are clipped
    and the learner trains on data from a policy it left long ago.

    Rule: lag >= max(``min_lag``, ``ratio`` x the bound) on ``patience``
    consecutive reports that carry it (APPO/IMPALA report their learner's
    values only every ``broadcast_interval`` updates: iterations without
    one neither trigger nor clear); critical at ``critical_factor`` x that.
    While the alarm lasts it reports again as soon as the lag has grown by
    another warning level past its last report ("still growing"): a lag
    that keeps growing after ``sync_weights`` pushed fresh weights says the
    sync itself is gone (a one-off push is outrun within an iteration or
    two), so the engine judges the push ineffective and the ladder climbs
    to ``restart_trial``, which rebuilds the sync.

    Args:
        ratio: times the config's own bound (``priors.lag_bound``). Default 1.5.
        min_lag: never below this many updates. Default 8.
        critical_factor: critical at this many times the warning level. Default 5.
        default_bound: the bound when the config is not known (RLlib 2.60's APPO default buffer). Default 8.
        patience, exit, repeat: hysteresis, in reports carrying the lag. Default 2, 3, 10.
    """

    name = "policy_lag"
    called_with = ("policy_lag",)
    needs = (("policy_lag",),)
    Options = PolicyLagOptions

    def reset(self) -> None:
        super().reset()
        self._reported = None  # the lag at the last finding while the alarm is on
        bound = self.priors.lag_bound or self.default_bound
        self._bound = bound
        self._level = max(self.min_lag, self.ratio * bound)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        lag = value_of(metrics, "policy_lag")
        if lag is None:
            return []
        critical = lag >= self.critical_factor * self._level
        due = self._due(lag >= self._level, "critical" if critical else "warning")
        if not self._alarm.on:
            self._reported = None
            return []
        before = self._reported
        growing = not due and before is not None and lag >= before + self._level
        if not (due or growing):
            return []
        self._reported = lag
        src = "the config's" if self.priors.lag_bound else "a default"
        still = (f"; still growing, from {fmt(before)} at its last report: the sync stays lost"
                 if growing or (before is not None and lag >= before + self._level) else "")
        return [self.finding(
            iteration, "critical" if critical else "warning", "policy_lag", lag,
            f"policy lag: the env runners sample with weights {fmt(lag)} learner updates old for {self._streak} "
            f"reports, past {fmt(self._level)} ({fmt(self.ratio)} x {src} bound of {fmt(self._bound)}: queue or "
            f"buffer + broadcast_interval): the weight sync to the env runners is falling behind or lost{still}",
            self._level, bound=self._bound, growing=bool(still))]
