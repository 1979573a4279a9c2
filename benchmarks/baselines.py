"""Published rule sets, run as baselines beside the supervisor's detectors on the same streams.

Each baseline is fed one normalized iteration at a time (``step(metrics) -> [rule ids firing now]``),
the way it would run live, so recall, delay and false alarms are counted exactly as for our detectors.
The rules are re-implemented from their published definitions (not copied):

* RLDK ``ppo_scan`` (RL Debug Kit, ``forensics/ppo_scan.py``): ``kl_spike``: KL above 4x its running
  median (window 10, current value included) for 3 consecutive updates, once 10 updates exist;
  ``kl_controller_stuck``: KL outside [0.01, 0.15] while the KL coefficient changes by less than 5 %
  per update, for 10 consecutive updates; ``grad_ratio``: policy/value gradient-norm ratio below 0.1 or
  above 10 for 5 consecutive updates; ``advantage_reward_hacking``: over the last 6 updates the
  advantage mean trends up while entropy trends down and KL trends up (least-squares slopes).
* llm-foundry ``KillLossSpike``: once a full window of 100 losses exists, a loss >= 2x the window's
  mean is an outlier; more than ``patience`` (4) consecutive outliers is a loss spike; after two
  windows, half the window above the loss cap (the first window's max, at most 10) is "high loss".
* Megatron-LM: the loss is NaN/inf (``check_for_nan_in_loss``), or more than 10x the largest loss
  seen so far (``is_unexpectedly_large``, ``SPIKY_LOSS_FACTOR = 10``).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


def _finite(x) -> bool:
    return isinstance(x, float) and math.isfinite(x)


class RLDKPPOScan:
    name = "rldk_ppo_scan"

    def __init__(self):
        self.kl: list[float] = []
        self.coef: list[float] = []
        self.spike_run = self.stuck_run = self.ratio_run = 0
        self.window: deque = deque(maxlen=6)

    def step(self, m: dict) -> list[str]:
        fired = []
        kl = m.get("kl", m.get("approx_kl", 0.0))
        kl = kl if _finite(kl) else 0.0
        coef = m.get("kl_coeff", 1.0)
        coef = coef if _finite(coef) else 1.0
        self.kl.append(kl)
        self.coef.append(coef)
        if len(self.kl) >= 10:
            med = float(np.median(self.kl[-10:]))
            self.spike_run = self.spike_run + 1 if med > 0 and kl > 4.0 * med else 0
            if self.spike_run >= 3:
                fired.append("kl_spike")
        outside = kl < 0.01 or kl > 0.15
        if len(self.coef) >= 2 and outside and (self.kl[-2] < 0.01 or self.kl[-2] > 0.15):
            change = abs(coef - self.coef[-2]) / max(self.coef[-2], 1e-8)
            self.stuck_run = self.stuck_run + 1 if change < 0.05 else 0
        elif not outside:
            self.stuck_run = 0
        if self.stuck_run >= 10:
            fired.append("kl_controller_stuck")
        p, v = m.get("grad_norm_policy"), m.get("grad_norm_value")
        if _finite(p) and _finite(v) and p > 0 and v > 0:
            r = p / v
            self.ratio_run = self.ratio_run + 1 if (r < 0.1 or r > 10.0) else 0
            if self.ratio_run >= 5:
                fired.append("grad_ratio")
        adv, ent = m.get("advantage_mean"), m.get("entropy")
        self.window.append((adv if _finite(adv) else 0.0, ent if _finite(ent) else 0.0, kl))
        if len(self.kl) > 10 and len(self.window) == 6:
            x = np.arange(6)
            a, e, k = (np.polyfit(x, [w[i] for w in self.window], 1)[0] for i in range(3))
            if a > 0 and e < 0 and k > 0:
                fired.append("advantage_reward_hacking")
        return fired


def _loss(m: dict):
    return m.get("total_loss", m.get("loss"))


class KillLossSpike:
    name = "llm_foundry_kill_loss_spike"

    def __init__(self, patience: int = 4, outlier_multiplier: float = 2.0, window_size: int = 100,
                 loss_cap: float = 10.0):
        self.patience, self.mult, self.size, self.cap = patience, outlier_multiplier, window_size, loss_cap
        self.window: deque = deque(maxlen=window_size)
        self.outliers = 0
        self.steps = 0
        self.cap_set = False

    def step(self, m: dict) -> list[str]:
        loss = _loss(m)
        if loss is None:
            return []
        self.steps += 1
        fired = []
        if len(self.window) == self.size:
            if not self.cap_set:
                self.cap, self.cap_set = min(max(self.window), self.cap), True
            avg = float(np.mean(self.window))
            if loss >= avg * self.mult:
                self.outliers += 1
                if self.outliers > self.patience:
                    fired.append("loss_spike")
            else:
                self.outliers = 0
                if self.steps >= 2 * self.size and sum(x > self.cap for x in self.window) >= self.size / 2:
                    fired.append("high_loss")
        self.window.append(loss)
        return fired


class MegatronLossChecks:
    name = "megatron_loss_checks"

    def __init__(self, factor: float = 10.0):
        self.factor = factor
        self.largest: float | None = None

    def step(self, m: dict) -> list[str]:
        loss = _loss(m)
        if loss is None:
            return []
        if not math.isfinite(loss):
            return ["nan_loss"]
        fired = ["spiky_loss"] if self.largest is not None and self.largest > 0 and loss > self.factor * self.largest \
            else []
        self.largest = loss if self.largest is None else max(self.largest, loss)
        return fired


BASELINES = (RLDKPPOScan, KillLossSpike, MegatronLossChecks)
