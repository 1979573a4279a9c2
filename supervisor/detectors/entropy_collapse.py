"""entropy_collapse: the policy entropy falling to a small fraction of its early level, or to 0."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import Alarm, band_for, fmt, median, value_of
from supervisor.detectors.base import LOUD, Detector
from supervisor.detectors.options import (BandOption, Count, DetectorOptions, Number, StrictBool, at_least, fraction,
                                          positive)
from supervisor.findings import Finding


class EntropyCollapseOptions(DetectorOptions):
    fraction: Number = fraction(0.1)
    zero: Number = at_least(0, 1e-3)
    patience: Count = at_least(1, 2)
    warmup: Count = at_least(0, 5)
    exit: Count = at_least(1, 3)
    repeat: Count = positive(10)
    continuous: StrictBool | None = None
    learned: Number = at_least(0, 0.2)
    sudden: Number = Field(0.5, gt=0, lt=1)
    band: BandOption = None


class EntropyCollapse(Detector):
    """Warn when the policy entropy collapses; critical when it reaches ~0.

    Rule: the early reference is the median of the first ``warmup`` entropy
    values of the run (or, before there are that many, the action space's
    maximum entropy log(n) from the trial's priors, else the learned band's
    ``high``, i.e. the entropy of a healthy run's start). Warning when the
    entropy is below ``fraction`` x reference on ``patience`` consecutive
    iterations; critical when it is at most ``zero`` on ``patience``
    consecutive iterations (no reference needed: a diverged PPO reports
    entropy exactly 0 from its second iteration).

    A healthy CartPole PPO run declines gradually from 0.69 to about 0.5-0.2
    while solving (0.3-0.7 x reference), well above the default fraction.
    A policy that sharpens because it learned is no collapse: while the return
    (median of its last 3 values) is above its starting level (median of the
    run's first 3) by ``learned`` x the larger magnitude, and the entropy is
    not a sudden fall (below ``sudden`` x the median of its last 10 values,
    from a level that was itself above ``fraction`` x reference: a cliff
    from a healthy entropy), a low entropy is ``info``; the ~0 rule stands
    (a deterministic policy is a dead one to PPO). A policy already
    sharpened below the bar that sharpens on is info until ~0 (A2C on
    FrozenLake: 0.04 -> 0.004 nats of 1.39 while its return held at 0.8).
    The streak behind the alarm (what the escalation policy confirms on)
    counts the reports at warning or worse only.
    Entropy of a continuous (Gaussian) policy may be negative and has no
    natural 0: set ``continuous=True`` for such action spaces (the detector
    is then silent; the trial's priors say so when its action space is known); left at None, the
    detector takes the first negative
    entropy it sees as proof and stays silent from then on.

    Args:
        fraction: fraction of the early reference below which entropy has
            collapsed. Default 0.1.
        zero: entropy at or below which the policy is deterministic.
            Default 1e-3.
        patience: consecutive iterations needed. Default 2.
        warmup: values in the early reference. Default 5.
        exit, repeat: Latch hysteresis (enter is ``patience``). Default 3, 10.
        continuous: the action space is continuous (True), discrete (False)
            or unknown (None). Default None.
        learned: return progress, relative to its magnitude, that makes a low
            entropy a learned policy. Default 0.2.
        sudden: a fall below this fraction of the last 10 values' median,
            from a median above ``fraction`` x reference, is sudden, learned
            or not. Default 0.5.
        band: learned healthy band for ``entropy`` ({"low", "high",
            "median"}); its ``high`` is the reference until ``warmup``
            values exist. Default None.
    """

    name = "entropy_collapse"
    needs = (("entropy",),)
    band_metrics = ("entropy",)
    Options = EntropyCollapseOptions

    def __init__(self, **options):
        super().__init__(**options)
        self._latch_args = (self.patience, self.exit, self.repeat)
        # The run's early entropy and starting return: taken as they arrive (the history keeps only the newest
        # 256 reports: read later, or again from a rewound history, they would be later values) and kept across
        # a rollback (``reset`` leaves them).
        self._ref: float | None = None
        self._start: float | None = None
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(*self._latch_args)
        self._continuous = self.continuous  # None: unknown until a negative entropy shows up
        if self._continuous is None and self.priors.action_kind is not None:
            self._continuous = self.priors.action_kind == "continuous"
        self._scanned = False
        self._streak = 0
        self._loud = 0  # consecutive reports at warning or worse (a learned, info-level low entropy is none)

    def _learned(self, history) -> float | None:
        """The current return (median of the last 3) when it is well above the run's start, else None."""
        xs = history.values("episode_return_mean")
        if self._start is None or len(xs) < 3:
            return None
        now = median(xs[-3:])
        return now if now - self._start >= self.learned * max(abs(now), abs(self._start), 1e-9) else None

    def _reference(self, history) -> tuple[float | None, str]:
        if self._ref is None and history.count("entropy") >= max(self.warmup, 1):
            self._ref = median(history.values("entropy")[: max(self.warmup, 1)])
        if self._ref is not None:
            return self._ref, f"median of the first {max(self.warmup, 1)} iterations"
        if self.priors.max_entropy is not None:  # a discrete policy starts at log(n)
            return self.priors.max_entropy, "the action space's maximum entropy"
        b = band_for(self.band, "entropy")
        return (float(b["high"]), "learned profile band high") if b else (None, "")

    def streak(self) -> int:
        """The consecutive reports at warning or worse behind the alarm: the low entropy of a policy that
        sharpened as it learned (info) is no evidence of a collapse, so one sudden dip after many such
        reports is one report of evidence, not all of them (A2C on FrozenLake: the entropy below 0.1x its
        start for 8 learned reports, then one dip to 0.44x the recent median; taken as held 8 reports, it
        boosted the entropy of a learning run)."""
        return self._loud if self._alarm.on and self._alarm.reported in LOUD else 0

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        if self._start is None and history.count("episode_return_mean") >= 3:
            self._start = median(history.values("episode_return_mean")[:3])
        e = value_of(metrics, "entropy")
        if e is None:
            return []
        if self._continuous is None:
            if e < 0:
                self._continuous = True
            elif not self._scanned:  # once: the run may have reported negative entropies before
                self._scanned = True
                if any(x < 0 for x in history.values("entropy")):
                    self._continuous = True
        if self._continuous:
            return []
        ref, src = self._reference(history)
        dead = e <= self.zero
        low = ref is not None and ref > 0 and e < self.fraction * ref
        triggered = dead or low
        self._streak = self._streak + 1 if triggered else 0
        sev = "critical" if dead else "warning"
        learned = self._learned(history) if triggered and not dead else None
        if learned is not None:
            recent = history.values("entropy")[-10:]
            level = median(recent) if len(recent) else None
            # a cliff from a healthy level; a policy already sharpened below the bar that sharpens on, or one
            # noisy report of it (a 4-action A2C at 0.004-0.04 nats, learning), is no sudden fall
            if level is not None and level >= self.fraction * ref and e < self.sudden * level:
                learned = None
        if learned is not None:
            sev = "info"
        self._loud = self._loud + 1 if triggered and sev != "info" else 0
        if not self._alarm.update(triggered, sev):
            return []
        ref_txt = f"{fmt(e / ref)}x its early reference {fmt(ref)} ({src})" if ref else "no reference yet"
        what = f"~0 (<= {fmt(self.zero)}): the policy is deterministic" if dead else \
            f"below {fmt(self.fraction)}x its early reference"
        if learned is not None:
            ref_txt += (f"; the return {fmt(learned)} is well above its start {fmt(self._start)}: a policy that "
                        f"sharpened as it learned")
        return [self.finding(
            iteration, sev, "entropy", e,
            f"entropy collapse: entropy={fmt(e)} is {what} for {self._streak} iterations; {ref_txt}",
            self.zero if dead else self.fraction * ref, reference=ref, iterations=self._streak)]
