"""What one report holds, and when it is due: evidence, not gradient steps.

A report is the supervisor's unit of judgement: its detectors count reports for their warm-ups,
patience and windows. A loop that reported every gradient step (an off-policy learner updating every
4 env steps, A2C's 5-step rollouts) would hand them a report per few env steps, each noisy, each
with the same return: a "trend" over 100 of them is a few episodes. So the integrations report

* on-policy (PPO, A2C): once per rollout, rollouts shorter than ``MIN_ON_POLICY_STEPS`` env steps
  merged (A2C's default 5-step rollouts: one report per 256 env steps);
* off-policy (DQN, SAC, TD3): once every ``OFF_POLICY_EVERY`` env steps (1,000, RLlib's DQN iteration),
  whatever the number of gradient steps in between;

and a report carries what happened since the previous one (:class:`ReportWindow`): the mean of each
learner statistic over the updates in it (the last value for hyperparameters, the median for
explained variance, whose tiny-batch values are heavy-tailed; a non-finite value anywhere is kept:
it is evidence), and the episodes that finished in it: ``episode_return_mean`` over those episodes
only, with ``num_episodes`` saying how many back it (no finished episode: no return, which is no data)
and ``env_steps`` / ``env_steps_lifetime``. The detectors that judge returns weigh them by those counts.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from supervisor.keymaps import HYPERPARAMETERS, lookup

#: On-policy rollouts shorter than this many env steps are merged into one report.
MIN_ON_POLICY_STEPS = 256
#: Env steps between two reports of an off-policy learner.
OFF_POLICY_EVERY = 1000

_LAST = frozenset(("lr", "entropy_coeff", "kl_coeff"))


def _how(key: str) -> str:
    """How a learner key is folded over a window: "last" (hyperparameters), "median" or "mean"."""
    leaf = key.rsplit("/", 1)[-1].lower()
    hit = lookup(key)
    name = hit[0] if hit else None
    if name in _LAST or leaf in HYPERPARAMETERS or leaf in ("std", "exploration_rate", "epsilon"):
        return "last"
    if name == "explained_variance":
        return "median"
    return "mean"


class ReportWindow:
    """What happened between two reports.

    Args:
        every: env steps a report needs (``due`` once that many were taken since the last one).
        start: env steps the run took before this window was made (a loop resumed from a checkpoint
            passes its global step): ``env_steps_lifetime`` counts on from it.
    """

    def __init__(self, every: int, start: int = 0):
        if every < 1:
            raise ValueError(f"every must be >= 1 env step (got {every!r})")
        self.every = int(every)
        self.lifetime = int(start)  # the run's env steps (never cleared)
        self.clear()

    def clear(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._lists: dict[str, list] = {}
        self._bad: dict[str, float] = {}
        self.returns: list[float] = []
        self.lengths: list[float] = []
        self.steps = 0
        self.updates = 0

    def add(self, metrics: Mapping[str, Any]) -> None:
        """One update's statistics (each already a mean over its minibatches, as trainers log them)."""
        self.updates += 1
        for k, v in metrics.items():
            try:
                x = float(v)
            except (TypeError, ValueError):
                continue
            how = _how(k)
            if how == "last":
                self._last[k] = x
            elif not math.isfinite(x):
                if how == "median":  # explained variance of a constant target: undefined, no data
                    continue
                self._bad[k] = x
            elif how == "median":
                self._lists.setdefault(k, []).append(x)
            else:
                self._sums[k] = self._sums.get(k, 0.0) + x
                self._counts[k] = self._counts.get(k, 0) + 1

    def episode(self, ret: float, length: float) -> None:
        """An episode that finished."""
        self.returns.append(float(ret))
        self.lengths.append(float(length))

    def step(self, n: int = 1) -> None:
        """``n`` env steps taken (all envs together)."""
        self.steps += int(n)
        self.lifetime += int(n)

    @property
    def due(self) -> bool:
        return self.steps >= self.every and self.updates > 0

    def pop(self) -> dict[str, float]:
        """The report's metrics (raw learner keys folded; normalized episode keys), and a fresh window."""
        out: dict[str, float] = dict(self._last)
        for k, s in self._sums.items():
            out[k] = s / self._counts[k]
        for k, xs in self._lists.items():
            xs = sorted(xs)
            n = len(xs)
            out[k] = xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])
        out.update(self._bad)  # a NaN/inf in any update of the window is what the window reports
        n = len(self.returns)
        out["num_episodes"] = float(n)
        if n:
            finite = [r for r in self.returns if math.isfinite(r)]
            out["episode_return_mean"] = sum(self.returns) / n
            if finite:
                out["episode_return_max"] = max(finite)
                out["episode_return_min"] = min(finite)
            out["episode_len_mean"] = sum(self.lengths) / n
        out["env_steps"] = float(self.steps)
        out["env_steps_lifetime"] = float(self.lifetime)  # the run's env steps (its compute account)
        self.clear()
        return out
