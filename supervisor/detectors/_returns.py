"""The return scale a run has shown: how large its Q-values can honestly be.

With rewards bounded by r_max per step and discount gamma, no discounted
return (so no true Q-value) exceeds r_max / (1 - gamma) in magnitude. r_max
is not known in advance; the largest average per-step reward of any
iteration's best or worst episodes so far (|episode_return_max| or
|episode_return_min| over episode_len_mean) is a lower estimate of it that
only grows. Kept across rollbacks: it describes the environment, not the
learner.
"""

from __future__ import annotations

from typing import Mapping

from supervisor.detectors._common import value_of


class ReturnScale:
    def __init__(self, gamma: float):
        self.gamma = gamma
        self.r_step: float | None = None

    def update(self, metrics: Mapping[str, float]) -> float | None:
        """Feed one iteration; returns the bound r_step / (1 - gamma) (None before any episode finished)."""
        n = value_of(metrics, "episode_len_mean")
        if n is not None and n >= 1:
            for k in ("episode_return_max", "episode_return_min", "episode_return_mean"):
                r = value_of(metrics, k)
                if r is not None:
                    per_step = abs(r) / n
                    if per_step > 0 and (self.r_step is None or per_step > self.r_step):
                        self.r_step = per_step
        return self.bound

    @property
    def bound(self) -> float | None:
        return None if self.r_step is None else self.r_step / (1.0 - self.gamma)
