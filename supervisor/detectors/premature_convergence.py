"""premature_convergence: the policy stopped exploring while its return stayed where it started."""

from __future__ import annotations

from supervisor.detectors._common import AlarmOptions, OneRuleDetector, fmt, median, value_of
from supervisor.detectors.options import Count, Number, at_least, fraction, positive
from supervisor.findings import Finding


class PrematureConvergenceOptions(AlarmOptions):
    start: Count = at_least(1, 3)
    collapsed: Number = fraction(0.15)
    after: Count = at_least(1, 5)
    margin: Number = positive(0.25)
    patience: Count = at_least(1, 2)


class PrematureConvergence(OneRuleDetector):
    """Warn when a discrete policy has become (nearly) deterministic without getting better.

    Rule (a prior: the action space's maximum entropy log n): after ``after`` iterations, on ``patience``
    consecutive ones, entropy below ``collapsed`` x log n while the return is still within ``margin``
    (relative) of its starting level, the median of the run's first ``start`` returns (the random
    policy's). A healthy run keeps most of its entropy until its return has moved (CartPole: 0.5-0.7 of
    ln 2 at a return of 500), so a collapsed entropy at the starting return is a policy that stopped
    exploring before it learned anything.

    Args:
        start: returns that define the starting level. Default 3.
        collapsed: entropy fraction of log n that counts as collapsed. Default 0.15.
        after: iterations before the rule is judged. Default 5.
        margin: relative distance from the starting return that still counts as "where it started". Default 0.25.
        patience, exit, repeat: hysteresis. Default 2, 3, 20.
    """

    name = "premature_convergence"
    needs = (("episode_return_mean",), ("entropy",))
    Options = PrematureConvergenceOptions

    def __init__(self, **options):
        super().__init__(**options)
        # the run's starting return: taken once its first returns are in, and kept across a rollback (``reset``
        # leaves it): the history then holds only the newest 256 reports, whose first returns are not the start
        self._start: float | None = None

    def reset(self) -> None:
        super().reset()
        self._seen = 0

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        self._seen += 1
        p = self.priors
        if p.action_kind != "discrete" or not p.max_entropy:
            return []
        if self._start is None and history.count("episode_return_mean") >= self.start:
            self._start = median(history.values("episode_return_mean")[: self.start])
        ret, ent = value_of(metrics, "episode_return_mean"), value_of(metrics, "entropy")
        stuck = (self._start is not None and ret is not None and ent is not None and self._seen > self.after
                 and ent < self.collapsed * p.max_entropy
                 and abs(ret - self._start) <= self.margin * max(abs(self._start), 1e-6))
        if not self._due(stuck):
            return []
        return [self.finding(iteration, "warning", "entropy", ent,
                             f"premature convergence: entropy={fmt(ent)} is below {fmt(self.collapsed)}x its maximum "
                             f"{fmt(p.max_entropy)} while the return {fmt(ret)} is still at its starting level "
                             f"{fmt(self._start)}: the policy stopped exploring before it learned",
                             self.collapsed * p.max_entropy, start_return=self._start)]
