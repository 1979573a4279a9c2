"""obs_out_of_range: observations far outside the range seen so far (a sensor gone bad)."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import Alarm, fmt, value_of
from supervisor.detectors.base import Detector
from supervisor.detectors.options import DetectorOptions, Number
from supervisor.findings import Finding


class ObsOutOfRangeOptions(DetectorOptions):
    min_fraction: Number = Field(0.01, ge=0, le=1)


class ObsOutOfRange(Detector):
    """Flag an iteration whose observations left the range the env runners saw them in so far.

    Reads the data guard's counts (``supervisor/data_guard.py``): ``data_guard_out_of_range`` (env steps with
    a feature more than ``data_guard.range_factor`` range widths beyond that feature's range of clean values
    seen so far), ``data_guard_steps`` (steps checked), ``data_guard_range_feature`` (the lowest flattened
    feature index out of range), ``data_guard_range_features`` (how many features) and
    ``data_guard_range_excess`` (the worst value's distance beyond its range, in range widths). Rule: out of
    range in at least ``min_fraction`` of the iteration's steps: a warning (a broken sensor or
    preprocessing bug; the dynamics and rewards may be fine), each iteration it goes on. Once the trial is
    quarantined (``data_guard_quarantine``) the message names the cause: the environment produces them.

    Args:
        min_fraction: share of the iteration's steps that must be out of range. Default 0.01.
    """

    name = "obs_out_of_range"
    called_with = ("data_guard_out_of_range",)
    metrics = ("data_guard_out_of_range",)
    Options = ObsOutOfRangeOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(1, 1, 1)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        n = value_of(metrics, "data_guard_out_of_range")
        if n is None:
            return []
        steps = value_of(metrics, "data_guard_steps") or 0.0
        share = n / steps if steps > 0 else (1.0 if n > 0 else 0.0)
        if not self._alarm.update(n > 0 and share >= self.min_fraction, "warning"):
            return []
        feature = value_of(metrics, "data_guard_range_feature")
        feature = feature if feature is not None and feature >= 0 else None
        nfeat = value_of(metrics, "data_guard_range_features")
        excess = value_of(metrics, "data_guard_range_excess")
        feat = f"feature {int(feature)}" if feature is not None else "a feature"
        if nfeat and nfeat > 1:
            feat += f" and {int(nfeat) - 1} more"
        quarantined = (value_of(metrics, "data_guard_quarantine") or 0.0) >= 1
        head = (f"obs_out_of_range: the environment produces observations far outside their range and goes on "
                f"after quarantine ({feat}): the fault is outside the weights, rollback cannot help; "
                if quarantined else f"obs_out_of_range: observation {feat} far outside the range seen so far; ")
        msg = (head + f"{fmt(n)} of {fmt(steps)} steps this iteration"
               + (f", up to {fmt(excess)} range widths beyond it" if excess is not None else ""))
        return [self.finding(iteration, "warning", "data_guard_out_of_range", n, msg, self.min_fraction,
                             feature=int(feature) if feature is not None else None,
                             features=int(nfeat) if nfeat else None, excess=excess, quarantined=quarantined,
                             cause="environment" if quarantined else None)]
