"""exploration_too_short: DQN's epsilon at its floor while the return is still at the random-policy level."""

from __future__ import annotations

from supervisor.detectors._common import AlarmOptions, EpisodePoints, OneRuleDetector, fmt, median, value_of
from supervisor.detectors.options import Count, Number, at_least, fraction, positive
from supervisor.findings import Finding


class ExplorationTooShortOptions(AlarmOptions):
    low_epsilon: Number = fraction(0.1)
    margin: Number = at_least(0, 0.5)
    warmup: Count = at_least(1, 2)
    patience: Count = at_least(1, 3)
    repeat: Count = positive(10)
    episodes: Count = at_least(1, 5)


class ExplorationTooShort(OneRuleDetector):
    """Warn when epsilon-greedy exploration ended before the policy learned anything.

    The unit of evidence is a *point*, as for ``reward_collapse``: the
    episode-weighted mean return of consecutive reports that together
    finished at least ``episodes`` new episodes (``num_episodes``; a writer
    that does not say makes every report a point). A LunarLander DQN past
    its exploration finishes one ~1,000-step episode a report, each
    between -280 and +30: one episode is no level.

    Rule: the random-policy level is the median return of the first
    ``warmup`` points made while epsilon >= 0.5 (the policy then acts mostly
    at random). Fire when epsilon <= ``low_epsilon``, epsilon has stopped
    falling (no lower than its previous value), and the point is within
    ``margin`` x |level| of that level (or below it), on ``patience``
    consecutive points. Silent until the level is known. A DQN whose
    exploration decays within a few thousand steps, before its Q-function is
    any good, fills its buffer with what a poor greedy policy does and can
    stay there.

    Args:
        low_epsilon: epsilon at or below which exploration is over. Default 0.1.
        margin: relative distance from the random level that still counts as random. Default 0.5.
        warmup: points in the random-policy level. Default 2.
        patience: consecutive points needed. Default 3.
        episodes: new episodes a point needs. Default 5.
        exit, repeat: Latch hysteresis. Default 3, 10.
    """

    name = "exploration_too_short"
    called_with = ("epsilon",)
    needs = (("epsilon",), ("episode_return_mean",))
    Options = ExplorationTooShortOptions

    def reset(self) -> None:
        super().reset()
        self._random: list[float] = []
        self._prev_eps: float | None = None
        self._points = EpisodePoints(self.episodes)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        eps = value_of(metrics, "epsilon")
        if eps is None:
            return []
        prev, self._prev_eps = self._prev_eps, eps
        ret = self._points.add(metrics, value_of(metrics, "episode_return_mean"))
        if ret is not None and eps >= 0.5 and len(self._random) < self.warmup:
            self._random.append(ret)
        if len(self._random) < self.warmup:
            self._alarm.quiet()
            return []
        if ret is None:  # no new point: nothing to judge, the streak stands
            return []
        level = median(self._random)
        at_floor = eps <= self.low_epsilon and prev is not None and eps >= prev - 1e-9
        random_like = ret <= level + self.margin * abs(level)
        if not self._due(at_floor and random_like):
            return []
        return [self.finding(
            iteration, "warning", "epsilon", eps,
            f"exploration ended too early: epsilon={fmt(eps)} is at its floor while the return {fmt(ret)} is "
            f"still at the random-policy level {fmt(level)}", self.low_epsilon, random_level=level,
            episode_return_mean=ret)]
