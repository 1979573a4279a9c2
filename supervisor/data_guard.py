"""The data guard, Ray-free: poisoned samples found where they are made, before a learner or a replay buffer.

An env runner hands the guard the episodes (or episode chunks) one ``sample()`` produced, as arrays
(``actors/data_guard.py`` takes them out of RLlib's episodes). :meth:`DataGuard.check` judges the whole
batch at once with a few numpy calls (the episodes' arrays concatenated, per-episode verdicts by
``np.logical_or.reduceat``) and says, per episode:

* **non-finite**: a NaN or infinite reward, observation or action;
* **out of range**: an observation feature far outside the range seen so far on this env runner:
  beyond ``lo - range_factor * width`` or ``hi + range_factor * width``, where ``[lo, hi]`` is the range of
  the feature's clean values seen so far and ``width = max(hi - lo, 1)`` (a feature constant so far is
  judged against a width of 1, in its own units). Judged once ``warmup_steps`` clean steps were seen;
  floating-point observations only (integer ones, pixels and indices, are bounded by their type).

The observations are judged through each episode's per-feature minimum and maximum (two numpy reductions
per episode, no copy of the batch): a NaN or infinity shows in them, and so does a value out of range.
Steps are counted one by one only in the episodes flagged.

Which episodes leave the batch: non-finite ones always while ``hold`` is on (no learner or replay buffer
ever sees a NaN: a NaN priority breaks a prioritized buffer for good); under quarantine (the supervisor's
``quarantine`` action) the out-of-range ones too. The range only ever grows with episodes that passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class GuardStats:
    """What one batch showed (counts are env steps unless named episodes)."""

    episodes: int = 0
    steps: int = 0
    poisoned_episodes: int = 0  # non-finite
    nonfinite_rewards: int = 0
    nonfinite_obs: int = 0
    nonfinite_actions: int = 0
    out_of_range_episodes: int = 0
    out_of_range_steps: int = 0
    out_of_range_features: list = field(default_factory=list)  # feature indices (flattened observation)
    range_excess: float = 0.0  # the worst value's distance beyond the range, in range widths
    dropped_episodes: int = 0
    dropped_steps: int = 0
    first_poisoned_step: int | None = None  # this guard's own count of steps checked, at the first poisoned one
    check_s: float = 0.0

    @property
    def kept_steps(self) -> int:
        return self.steps - self.dropped_steps


class DataGuard:
    """Args:
        range_factor: how many range widths beyond the range seen so far an observation must be.
        warmup_steps: clean steps seen before the range is judged.
        hold: drop non-finite episodes from the batch as soon as they are seen.
    """

    def __init__(self, range_factor: float = 10.0, warmup_steps: int = 1000, hold: bool = True):
        self.range_factor = float(range_factor)
        self.warmup_steps = int(warmup_steps)
        self.hold = bool(hold)
        self.quarantine = False
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None
        self.clean_steps = 0
        self.steps_seen = 0

    def check(self, rewards: Sequence[np.ndarray], obs: Sequence[np.ndarray],
              actions: Sequence[np.ndarray | None]) -> tuple[np.ndarray, GuardStats]:
        """Judge one batch of episodes: ``rewards[i]`` (T_i), ``obs[i]`` (T_i or T_i + 1 rows, any feature
        shape), ``actions[i]`` (T_i rows, or None). Returns (keep mask over the episodes, stats).

        The observations are judged through their per-episode, per-feature minimum and maximum (a NaN or an
        infinity shows in them, and so does a value out of range), so a healthy batch costs two passes over
        its observations and no temporaries of their size; steps are counted one by one only in the
        episodes flagged."""
        t0 = time.perf_counter()
        n = len(rewards)
        st = GuardStats(episodes=n)
        if n == 0:
            return np.ones(0, bool), st
        r = [np.asarray(x, dtype=np.float64).reshape(-1) for x in rewards]
        lens = np.fromiter((len(x) for x in r), dtype=np.int64, count=n)
        st.steps = int(lens.sum())
        bad_r = _per_episode(~np.isfinite(np.concatenate(r)) if st.steps else np.zeros(0, bool), lens)
        st.nonfinite_rewards = int(bad_r[1])
        o = [np.asarray(x) for x in obs]
        numeric = all(x.dtype.kind in "fc" and len(x) for x in o)
        flat = [x.reshape(len(x), -1) for x in o] if numeric else None
        if flat is not None and len({f.shape[1] for f in flat}) != 1:
            flat = None  # episodes of different observation sizes: not one feature space
        mins = maxs = None
        bad_o = np.zeros(n, bool)
        if flat is not None:
            # per episode (no copy of the batch): faster than concatenating for any observation size
            mins = np.stack([f.min(axis=0) for f in flat])
            maxs = np.stack([f.max(axis=0) for f in flat])
            bad_o = ~(np.isfinite(mins).all(axis=1) & np.isfinite(maxs).all(axis=1))
            st.nonfinite_obs = sum(int((~np.isfinite(flat[i]).all(axis=1)).sum()) for i in np.flatnonzero(bad_o))
        acts = [np.asarray(a) for a in actions if a is not None]
        if len(acts) == n and all(a.dtype.kind in "fc" for a in acts):
            alens = np.fromiter((len(a) for a in acts), dtype=np.int64, count=n)
            bad_a = _per_episode(~np.isfinite(np.concatenate([a.reshape(len(a), -1) for a in acts])).all(axis=1)
                                 if alens.sum() else np.zeros(0, bool), alens)
        else:
            bad_a = (np.zeros(n, bool), 0)
        st.nonfinite_actions = int(bad_a[1])
        poisoned = bad_r[0] | bad_o | bad_a[0]
        st.poisoned_episodes = int(poisoned.sum())
        if st.poisoned_episodes:
            first = int(np.argmax(poisoned))
            st.first_poisoned_step = self.steps_seen + int(lens[:first].sum()) + 1
        self.steps_seen += st.steps

        far = np.zeros(n, bool)
        if mins is not None:
            far = self._out_of_range(flat, mins, maxs, poisoned, st)
        drop = (poisoned if (self.hold or self.quarantine) else np.zeros(n, bool)) | (far if self.quarantine else False)
        st.dropped_episodes = int(drop.sum())
        st.dropped_steps = int(lens[drop].sum())
        clean = ~(poisoned | far)
        if mins is not None and clean.any():  # the range grows only with what passed every check
            self._grow(mins[clean].min(axis=0), maxs[clean].max(axis=0))
        self.clean_steps += int(lens[clean].sum())
        st.check_s = time.perf_counter() - t0
        return ~drop, st

    def _out_of_range(self, flat: list, mins: np.ndarray, maxs: np.ndarray, poisoned: np.ndarray,
                      st: GuardStats) -> np.ndarray:
        if self.lo is None or self.clean_steps < self.warmup_steps or self.lo.shape[0] != mins.shape[1]:
            return np.zeros(len(mins), bool)
        width = np.maximum(self.hi - self.lo, 1.0)
        lo, hi = self.lo - self.range_factor * width, self.hi + self.range_factor * width
        out = (mins < lo) | (maxs > hi)  # (episodes, features); NaN compares False: the other check's
        far = out.any(axis=1) & ~poisoned
        if not far.any():
            return far
        feats = set()
        for i in np.flatnonzero(far):  # the flagged episodes only: their steps and features
            x = flat[i].astype(np.float64, copy=False)
            excess = np.maximum(self.lo - x, x - self.hi) / width
            rows = excess > self.range_factor
            st.out_of_range_steps += int(rows.any(axis=1).sum())
            feats.update(np.flatnonzero(rows.any(axis=0)).tolist())
            st.range_excess = max(st.range_excess, float(np.nanmax(excess)))
        st.out_of_range_episodes = int(far.sum())
        st.out_of_range_features = sorted(feats)
        return far

    def _grow(self, lo: np.ndarray, hi: np.ndarray) -> None:
        if self.lo is None or self.lo.shape != lo.shape:
            self.lo, self.hi = lo.astype(np.float64), hi.astype(np.float64)
        else:
            np.minimum(self.lo, lo, out=self.lo)
            np.maximum(self.hi, hi, out=self.hi)


def _per_episode(flags: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, int]:
    """Row flags of the concatenated episodes -> (per-episode any, total count)."""
    n = len(lens)
    if not flags.shape[0]:
        return np.zeros(n, bool), 0
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    nonempty = lens > 0
    out = np.zeros(n, bool)
    if nonempty.any():
        out[nonempty] = np.logical_or.reduceat(flags, starts[nonempty])
    return out, int(flags.sum())
