"""kl_controller_stuck: RLlib's adaptive KL coefficient running away in one direction."""

from __future__ import annotations

from collections import deque

from pydantic import Field

from supervisor.detectors._common import Alarm, band_for, fmt, median, value_of
from supervisor.detectors.base import Detector
from supervisor.detectors.options import (BandOption, Count, DetectorOptions, Number, at_least, fraction,
                                          positive)
from supervisor.findings import Finding


class KLControllerStuckOptions(DetectorOptions):
    patience: Count = at_least(2, 10)
    min_step: Number = fraction(0.05)
    kl_target: Number | None = at_least(0, None)
    collapse_ratio: Number = fraction(1e-3)
    explode_ratio: Number = Field(1e3, gt=1)
    kl_zero: Number = at_least(0, 1e-7)
    off_factor: Number = Field(3.0, gt=1)
    min_kl: Number = at_least(0, 1e-3)
    window: Count = positive(30)
    warmup: Count = at_least(0, 5)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)
    band: BandOption = None


class KLControllerStuck(Detector):
    """Warn when the adaptive KL coefficient moves the same way for many iterations.

    RLlib's PPO multiplies ``kl_coeff`` by 1.5 when KL > 2 x kl_target and by
    0.5 when KL < kl_target / 2. A healthy run wanders around target; a stuck
    one halves (or grows) every iteration. After a PPO divergence the policy
    is frozen and deterministic, KL is 0 and ``curr_kl_coeff`` halves every
    iteration.

    Rule 1 (running away): a move is a change of ``kl_coeff`` by more than
    ``min_step`` (relative) from the previous iteration; when ``kl_target`` is
    given and ``kl`` is reported, a move only counts while KL is off target
    (outside [target/2, 2 x target]). Warning after ``patience`` consecutive
    moves in the same direction. Critical when, in that state, the coefficient
    has also left [``collapse_ratio``, ``explode_ratio``] x its early reference
    (median of the first ``warmup`` values, or the learned band's median), or
    it is falling while KL is ~0 (<= ``kl_zero``).

    Rule 2 (not responding): a controller that has moved before (some change
    of ``kl_coeff`` by more than ``min_step``: a coefficient fixed by design is
    no controller) holds still while the KL stays far above its level: KL at
    least ``off_factor`` x its reference (``kl_target`` when given, else the
    median of its last ``window`` values that were not off, once ``warmup``
    exist) and at least ``min_kl``, on ``patience`` iterations (a streak ends
    after ``exit`` iterations back in range), while the coefficient moved by
    less than ``min_step`` in all. Warning. (RLDK's doctored log: KL ~0.3 from
    a steady 0.05, coefficient 0.1 -> 0.11 and flat.)

    Args:
        patience: consecutive same-direction moves needed. Default 10.
        min_step: relative change that counts as a move. Default 0.05.
        kl_target: the run's kl_target, if known. Default None.
        collapse_ratio: coefficient / reference below which it collapsed.
            Default 1e-3.
        explode_ratio: coefficient / reference above which it exploded.
            Default 1e3.
        kl_zero: KL at or below which the policy has stopped moving.
            Default 1e-7.
        off_factor: KL over its reference that a still controller should have
            answered (rule 2). Default 3.
        min_kl: KL needed by rule 2. Default 1e-3.
        window: KL values in rule 2's reference. Default 30.
        warmup: values in the early reference. Default 5.
        exit, repeat: Latch hysteresis (enter 1, the streak is the patience).
            Default 3, 10.
        band: learned healthy band for ``kl_coeff`` ({"low", "high",
            "median"}), the reference until ``warmup`` values exist.
            Default None.
    """

    name = "kl_controller_stuck"
    needs = (("kl_coeff",),)
    band_metrics = ("kl_coeff",)
    Options = KLControllerStuckOptions

    def __init__(self, **options):
        super().__init__(**options)
        self._latch_args = (1, self.exit, self.repeat)
        # the early reference: taken once the first ``warmup`` values are in, and kept across a rollback
        # (``reset`` leaves it): read again from a rewound history, which keeps the newest 256 reports, it
        # would be a later coefficient, and a collapse from the run's start would read as none
        self._ref: float | None = None
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(*self._latch_args)
        self._still_alarm = Alarm(*self._latch_args)
        self._dir, self._streak, self._start = 0, 0, None
        self._moved = False  # the coefficient changed at least once: there is a controller
        self._level: deque = deque(maxlen=self.window)  # KL values not off (rule 2's reference)
        self._off, self._back, self._off_coef = 0, 0, None

    def _still(self, iteration, c: float, kl: float | None, moved: bool) -> list[Finding]:
        """Rule 2: KL far above its level, and a controller that once moved does not answer."""
        ref = self.kl_target
        if ref is None and len(self._level) >= max(self.warmup, 1):
            lvl = self._level
            lo = min(lvl)
            ref = median(list(lvl)) if kl is not None and kl >= self.off_factor * lo else lo
        off = kl is not None and ref is not None and ref > 0 and kl >= max(self.off_factor * ref, self.min_kl)
        if kl is not None and not off:
            self._level.append(kl)
        if off:
            if self._off == 0:
                self._off_coef = c
            self._off, self._back = self._off + 1, 0
        elif self._off:
            self._back += 1
            if self._back >= self.exit:
                self._off, self._back, self._off_coef = 0, 0, None
        still = self._off_coef is not None and abs(c - self._off_coef) <= self.min_step * self._off_coef
        triggered = self._moved and self._off >= self.patience and still and off
        self._moved |= moved
        if not self._still_alarm.update(triggered, "warning"):
            return []
        return [self.finding(
            iteration, "warning", "kl_coeff", c,
            f"KL controller stuck: not responding: kl={fmt(kl)} is {fmt(kl / ref)}x its "
            f"{'target' if self.kl_target else 'level'} {fmt(ref)} on {self._off} iterations (needs "
            f"{fmt(self.off_factor)}x on {self.patience}) while kl_coeff stayed at {fmt(c)} (moved < "
            f"{fmt(100 * self.min_step)}% since {fmt(self._off_coef)}), a controller that moved before",
            float(self.patience), kl=kl, reference=ref, streak=self._off, rule="not_responding")]

    def _reference(self, history) -> float | None:
        if self._ref is None and history.count("kl_coeff") >= max(self.warmup, 1):
            self._ref = median(history.values("kl_coeff")[: max(self.warmup, 1)])
        if self._ref is not None:
            return self._ref
        b = band_for(self.band, "kl_coeff")
        return float(b["median"]) if b else None

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        c = value_of(metrics, "kl_coeff")
        if c is None:
            return []
        p = history.last("kl_coeff")
        kl = value_of(metrics, "kl")
        d = 0
        out = []
        if p is not None and p > 0:
            d = 1 if c > p * (1 + self.min_step) else -1 if c < p * (1 - self.min_step) else 0
        if c > 0:
            out = self._still(iteration, c, kl, d != 0)
        if p is not None and p > 0:
            if d and self.kl_target and kl is not None and 0.5 * self.kl_target <= kl <= 2 * self.kl_target:
                d = 0  # the controller moved but KL is on target: not stuck
            if d and d == self._dir:
                self._streak += 1
            elif d:
                self._dir, self._streak, self._start = d, 1, p
            else:
                self._dir, self._streak, self._start = 0, 0, None
        triggered = self._streak >= self.patience
        ref = self._reference(history)
        rel = c / ref if ref else None
        critical = triggered and (
            (rel is not None and (rel < self.collapse_ratio or rel > self.explode_ratio))
            or (self._dir < 0 and kl is not None and kl <= self.kl_zero))
        sev = "critical" if critical else "warning"
        if not self._alarm.update(triggered, sev):
            return out
        verb = "fallen" if self._dir < 0 else "risen"
        kl_txt = f"kl={fmt(kl)}" if kl is not None else "kl not reported"
        if self.kl_target:
            kl_txt += f" (target {fmt(self.kl_target)})"
        ref_txt = f", {fmt(rel)}x its early reference {fmt(ref)}" if rel is not None else ""
        return out + [self.finding(
            iteration, sev, "kl_coeff", c,
            f"KL controller stuck: kl_coeff has {verb} on {self._streak} consecutive iterations "
            f"(needs {self.patience}), {fmt(self._start)} -> {fmt(c)}{ref_txt}; {kl_txt}; critical when "
            f"outside [{fmt(self.collapse_ratio)}, {fmt(self.explode_ratio)}]x reference or KL <= {fmt(self.kl_zero)}",
            float(self.patience), streak=self._streak, direction=self._dir, reference=ref, kl=kl)]
