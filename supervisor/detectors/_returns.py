"""The return scale a run has shown: the range its Q-values can honestly take.

With per-step rewards in [r_lo, r_hi] and discount gamma, every discounted
return (so every true Q-value) lies in [min(0, r_lo), max(0, r_hi)] / (1 -
gamma). The rewards' range is not known in advance; the average per-step
reward of each iteration's episodes (episode_return_mean over
episode_len_mean) estimates it, and the range seen so far only widens. Kept
across rollbacks: it describes the environment, not the learner.
"""

from __future__ import annotations

from typing import Mapping

from supervisor.detectors._common import value_of


class ReturnScale:
    def __init__(self, gamma: float):
        self.gamma = gamma  # the detector sets the trial's own (its priors) in ``reset``, unless its option is set
        self.lo: float | None = None  # smallest average per-step reward seen
        self.hi: float | None = None  # largest

    def update(self, metrics: Mapping[str, float]) -> bool:
        """Feed one iteration; True once an episode has finished (the range is known)."""
        n, r = value_of(metrics, "episode_len_mean"), value_of(metrics, "episode_return_mean")
        if n is not None and n >= 1 and r is not None:
            step = r / n
            self.lo = step if self.lo is None else min(self.lo, step)
            self.hi = step if self.hi is None else max(self.hi, step)
        return self.lo is not None

    @property
    def q_range(self) -> tuple[float, float]:
        """[min(0, lo), max(0, hi)] / (1 - gamma): where honest Q-values lie."""
        return min(0.0, self.lo) / (1.0 - self.gamma), max(0.0, self.hi) / (1.0 - self.gamma)

    @property
    def scale(self) -> float:
        """The largest |Q| the rewards seen allow (at least a tiny positive number)."""
        lo, hi = self.q_range
        return max(abs(lo), abs(hi), 1e-9)


def discount(detector) -> float:
    """The discount a detector judges with: its ``gamma`` option where the settings give one, else the trial's
    own (its config, through the priors), else the option's default (RLlib's and SB3's 0.99). rl-zoo's SAC on
    MountainCarContinuous trains with 0.9999: its Q-values judged at 0.99 were 2-3x outside their range."""
    if "gamma" in detector.options.model_fields_set or not detector.priors.gamma:
        return detector.gamma
    return detector.priors.gamma
