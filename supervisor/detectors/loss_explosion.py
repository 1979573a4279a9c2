"""loss_explosion: a finite loss far above the run's own robust history."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import SpikeDetector, SpikeOptions
from supervisor.detectors.options import Number, positive


class LossExplosionOptions(SpikeOptions):
    z: Number = positive(10.0)
    ratio: Number = Field(20.0, gt=1)


class LossExplosion(SpikeDetector):
    """Warn when a finite loss jumps far above its own recent history.

    Rule: for each of ``metrics`` present and finite this iteration, against
    the median and MAD of its last ``window`` values (values already judged
    exploded are left out of that reference), fire when the robust z-score is
    at least ``z`` AND the value is at least ``ratio`` typical magnitudes
    above the median (``1 + (x - median) / median|x| >= ratio``; the ratio
    floor keeps a near-constant loss with a tiny MAD from firing on a
    wiggle, and a noisy near-zero policy loss from firing on an ordinary
    swing). Severity warning; critical at ``critical_ratio`` magnitudes.
    Non-finite losses are ``non_finite``'s job.

    ``vf_loss`` (RLlib clips it elementwise at ``vf_clip_param``) cannot
    explode and is watched by ``value_collapse``. ``vf_loss_unclipped`` is
    not watched by default: its scale follows the squared return scale, so
    it legitimately grows tens of times while a run learns; add it to
    ``metrics`` (with a larger ``ratio``) where returns are normalized.

    Args:
        metrics: losses to watch. Default ("total_loss", "policy_loss").
        z: robust z-score needed. Default 10.
        ratio: typical magnitudes above the median needed. Default 20.
        critical_ratio: magnitudes for critical. Default 100.
        window: iterations of history in the reference. Default 30.
        warmup: history values needed before judging. Default 10.
        enter, exit, repeat: Latch hysteresis. Default 1, 3, 10.
        band: learned healthy band ({"low", "high", "median"}, or
            {metric: band}) used while the history is shorter than warmup.
            Default None.
    """

    name = "loss_explosion"
    what = "loss explosion"
    default_metrics = ("total_loss", "policy_loss")
    band_metrics = ("total_loss", "policy_loss", "vf_loss_unclipped")
    Options = LossExplosionOptions
