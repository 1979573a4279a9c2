"""value_collapse: the value function stops explaining the returns."""

from __future__ import annotations

from collections import deque

from pydantic import Field, model_validator

from supervisor.detectors._common import Alarm, fmt, median, reference, value_of
from supervisor.detectors.base import Detector
from supervisor.detectors.options import BandOption, Count, DetectorOptions, Number, at_least, positive
from supervisor.findings import Finding

#: Reports in the rolling median of the value targets' implied variance (one odd report is not the level).
SPREAD_SMOOTH = 5
#: 1 - EV is floored at this in the targets' variance: where the critic explains most of it, the loss (a mean
#: over the update) over 1 - EV (before it) is too noisy to be a level (EV 0.98 or 0.99 is a factor of 2). The
#: largest variance is then a lower bound, which can only make the rule judge more, never less.
EXPLAINED_FLOOR = 0.5
#: Targets whose variance fell below this fraction of the largest the run had (a spread under 10 %) have
#: stopped varying: an explained variance of them is a ratio of two vanishing variances.
SPREAD_VANISHED = 1e-2
#: Targets whose variance fell below this fraction of the largest while the critic's error did not grow (its
#: value loss below ``ERROR_FELL`` x its median over the EV window): the explained variance sank because its
#: denominator did (a solved run whose every rollout holds one episode truncated at the time limit; a
#: sparse-reward task whose rollouts without a reward event have targets of ~2-10 % of the variance of those
#: with one), not because the critic fails: a failing critic's error grows.
SPREAD_FELL = 0.1
ERROR_FELL = 1.0


class ValueCollapseOptions(DetectorOptions):
    ev_floor: Number = -0.1
    drop: Number = positive(0.5)
    critical_ev: Number = -1.0
    patience: Count = at_least(1, 3)
    window: Count = positive(20)
    warmup: Count = at_least(0, 10)
    pin_window: Count = Field(5, ge=2)
    pin_tol: Number = at_least(0, 1e-3)
    ev_zero: Number = at_least(0, 0.1)
    vf_clip: Number | None = positive(None)
    learned_below: Number = Field(0.9, gt=0, lt=1)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)
    band: BandOption = None

    @model_validator(mode="after")
    def _levels(self):
        if self.critical_ev > self.ev_floor:
            raise ValueError(f"need critical_ev <= ev_floor (got critical_ev={self.critical_ev:g}, "
                             f"ev_floor={self.ev_floor:g})")
        return self


class ValueCollapse(Detector):
    """Warn when the value function collapses.

    Two rules, each with its own hysteresis:

    * explained variance collapse: ``explained_variance`` below ``ev_floor``
      AND more than ``drop`` below its recent level (median of its last
      ``window`` values, leaving out those already judged collapsed; before
      ``warmup`` values exist, the learned band's ``low``: early explained
      variance is near 0 and the band spans whole runs), on ``patience``
      consecutive iterations. Warning; critical at or below ``critical_ev``
      (predictions much worse than a constant). An explained variance that is
      undefined (NaN: constant targets) or noise (a value error negligible
      against the reported ``value_target_scale``, e.g. A2C's 5-step batches
      inside 500-step episodes) never reaches it: it is no data
      (``supervisor.metrics.drop_no_data``). So is an explained variance whose
      targets stopped varying, judged in the writer's own units where it
      reports no target scale (SB3's CSV): 1 - EV = error / Var(targets), so
      each report's value loss (unclipped if reported) over 1 - EV (floored at
      ``EXPLAINED_FLOOR``) is its targets' variance; once that is below ``SPREAD_VANISHED`` x the largest
      target variance the run had (rolling median of ``SPREAD_SMOOTH``
      reports), a falling EV is its denominator vanishing (every episode
      truncated at the time limit and bootstrapped: targets all ~1/(1-gamma)),
      not the critic failing: a failing critic's error grows, and with it
      this variance. So is one whose targets' variance fell below ``SPREAD_FELL`` x that largest one
      while the value loss is below its median over the last ``window`` reports (``ERROR_FELL``): the
      EV sank with its denominator, the critic's error did not grow (SB3's PPO on a solved CartPole,
      each 512-step rollout one episode truncated at 500: targets' variance 1.6 % of its peak, value
      loss 2.5 against ~40, EV -0.17; CleanRL's PPO on a sparse-reward grid world, its 512-step rollouts
      holding 0-4 episode ends: EV -1 to -8 on rollouts whose targets had 1-13 % of the peak variance,
      the value loss under its median).
    * vf_loss pinned: the last ``pin_window`` values of ``vf_loss`` (this one
      included) all equal within ``pin_tol`` (relative), while explained
      variance is within ``ev_zero`` of 0 (or, when it is not reported, the
      pinned value is ``vf_clip``). RLlib clips the value loss elementwise
      at vf_clip_param; a loss sitting exactly on the clip means every sample
      is clipped and the critic gets no gradient, as after a PPO divergence
      (vf_loss pinned at 10.0). When ``vf_clip`` is given, only a loss pinned
      at it counts. Only a critic that once learned collapses: some earlier
      vf_loss must be below ``learned_below`` x the pinned value (a loss on the
      clip from iteration 1 is ``value_loss_clipped``). Critical.

    Args:
        ev_floor: explained variance below which it can have collapsed.
            Default -0.1. EV = 1 - Var(targets - predictions) / Var(targets):
            a critic whose predictions barely vary scores ~0 whatever its
            level, and -0.1 when they scatter, uncorrelated with the targets,
            by a third of the targets' standard deviation. That is A2C's
            critic on 5-step bootstrapped targets for most of a healthy
            CartPole run (rl-zoo's settings: |EV| < 0.05 on 73 % of its
            reports, the targets' variance 1-4 % of their mean square): it
            explains none of their small spread and adds little noise. A
            failing critic's predictions scatter, and its EV falls far
            below 0. ``critical_ev`` must not be above it.
        drop: fall below the recent level needed. Default 0.5.
        critical_ev: explained variance for critical. Default -1.0.
        patience: consecutive iterations for the EV rule. Default 3.
        window: iterations of EV history in the recent level. Default 20.
        warmup: EV history values needed. Default 10.
        pin_window: identical vf_loss values needed. Default 5.
        pin_tol: relative spread still counted as identical. Default 1e-3.
        ev_zero: |explained variance| counted as ~0. Default 0.1.
        vf_clip: the run's vf_clip_param, if known. Default None.
        learned_below: an earlier vf_loss below this fraction of the pinned value shows the critic
            once learned. Default 0.9.
        exit, repeat: Latch hysteresis. Default 3, 10.
        band: learned healthy band for ``explained_variance`` (its ``low`` is
            the recent level until ``warmup`` values exist). Default None.
    """

    name = "value_collapse"
    needs = (("explained_variance", "vf_loss"),)
    band_metrics = ("explained_variance",)
    Options = ValueCollapseOptions

    def __init__(self, **options):
        super().__init__(**options)
        self._latch_args = (self.exit, self.repeat)
        self.reset()

    def reset(self) -> None:
        exit, repeat = self._latch_args
        self._ev_alarm = Alarm(self.patience, exit, repeat)
        self._pin_alarm = Alarm(1, exit, repeat)
        self._ev_streak = 0
        self._learned = False
        self._spread: deque = deque(maxlen=SPREAD_SMOOTH)  # the newest reports' implied target variances
        self._spread_peak = 0.0  # the largest rolling median of them

    def _targets_vanished(self, ev: float, metrics, history) -> bool:
        """Fold this report's implied target variance in; True when it has vanished against the largest
        the run had, or fell while the critic's error fell too (see the class doc): the EV is then no data."""
        key = "vf_loss_unclipped"
        vf = value_of(metrics, key)
        if vf is None:
            key, vf = "vf_loss", value_of(metrics, "vf_loss")
        if vf is None or vf < 0:
            return False
        var = vf / max(1.0 - ev, EXPLAINED_FLOOR)
        self._spread.append(var)
        if len(self._spread) == SPREAD_SMOOTH and (var > self._spread_peak or not self._spread_peak):
            # (a window's median cannot pass the peak when its newest value does not: at most 2 others can)
            self._spread_peak = max(self._spread_peak, median(list(self._spread)))
        if var < SPREAD_VANISHED * self._spread_peak:
            return True
        if ev >= self.ev_floor or var >= SPREAD_FELL * self._spread_peak:
            return False
        past = history.values(key)[-self.window:]
        return len(past) >= self.warmup and vf < ERROR_FELL * median(list(past))

    def _ev_rule(self, iteration, ev, history, vanished: bool = False) -> list[Finding]:
        if vanished and ev < self.ev_floor:  # no data: neither evidence nor a clean report
            return []
        if ev >= self.ev_floor:  # cannot trigger: skip the reference
            self._ev_streak = 0
            self._ev_alarm.update(False)
            return []
        ref = reference(history, "explained_variance", window=self.window, warmup=self.warmup, band=self.band,
                        exclude_last=self._ev_streak, rel_floor=0.0, band_at="low")
        triggered = ref is not None and ev < self.ev_floor and ev < ref.center - self.drop
        self._ev_streak = self._ev_streak + 1 if triggered else 0
        sev = "critical" if ev <= self.critical_ev else "warning"
        if not self._ev_alarm.update(triggered, sev):
            return []
        src = "learned profile band" if ref.source == "profile" else f"median of the last {ref.n} iterations"
        return [self.finding(
            iteration, sev, "explained_variance", ev,
            f"value collapse: explained_variance={fmt(ev)} for {self._ev_streak} iterations, below "
            f"{fmt(self.ev_floor)} and more than {fmt(self.drop)} below its recent level {fmt(ref.center)} "
            f"({src}); critical at <= {fmt(self.critical_ev)}",
            self.critical_ev if sev == "critical" else min(self.ev_floor, ref.center - self.drop),
            recent=ref.center, source=ref.source, iterations=self._ev_streak)]

    def _pin_rule(self, iteration, vf, ev, history) -> list[Finding]:
        xs = history.values("vf_loss")
        if not self._pin_alarm.on and (vf <= 0 or len(xs) < self.pin_window - 1
                                       or abs(vf - xs[-1]) > self.pin_tol * abs(vf)):
            # cannot be pinned (no history yet, or already different from the previous value)
            self._pin_alarm.quiet()
            return []
        past = xs[max(len(xs) - (self.pin_window - 1), 0):].tolist()
        triggered = False
        if len(past) == self.pin_window - 1 and vf > 0:
            xs = past + [vf]
            pinned = max(xs) - min(xs) <= self.pin_tol * abs(vf)
            at_clip = self.vf_clip is not None and abs(vf - self.vf_clip) <= self.pin_tol * abs(self.vf_clip)
            if self.vf_clip is not None and not at_clip:
                pinned = False
            ev_dead = abs(ev) <= self.ev_zero if ev is not None else at_clip
            # A collapse needs a critic that once learned: a loss on the clip from the first iteration is
            # the config's pitfall (value_loss_clipped), not a collapse.
            learned = self._learned or any(x < self.learned_below * vf for x in history.values("vf_loss"))
            self._learned = learned
            triggered = pinned and ev_dead and learned
        if not self._pin_alarm.update(triggered, "critical"):
            return []
        ev_txt = f"explained_variance={fmt(ev)} (|ev| <= {fmt(self.ev_zero)})" if ev is not None else \
            "explained_variance not reported"
        clip_txt = f" = vf_clip {fmt(self.vf_clip)}" if self.vf_clip is not None else " (likely the vf clip)"
        return [self.finding(
            iteration, "critical", "vf_loss", vf,
            f"value collapse: vf_loss pinned at {fmt(vf)}{clip_txt} for {self.pin_window} iterations "
            f"(spread <= {fmt(self.pin_tol)} relative) with {ev_txt}: every sample is clipped, the critic "
            f"gets no gradient",
            self.pin_tol, pinned_at=vf, explained_variance=ev, window=self.pin_window)]

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        out: list[Finding] = []
        ev = value_of(metrics, "explained_variance")
        vf = value_of(metrics, "vf_loss")
        if ev is not None:
            out += self._ev_rule(iteration, ev, history, self._targets_vanished(ev, metrics, history))
        if vf is not None:
            out += self._pin_rule(iteration, vf, ev, history)
        return out
