"""gradient_explosion: the gradient norm far above the run's own robust history."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import SpikeDetector, SpikeOptions
from supervisor.detectors.options import Number, positive


class GradientExplosionOptions(SpikeOptions):
    z: Number = positive(6.0)
    ratio: Number = Field(10.0, gt=1)


class GradientExplosion(SpikeDetector):
    """Warn when the gradient norm jumps far above its own recent history.

    Rule: for ``grad_norm`` (and ``grad_norm_max`` when the instrumented
    learner reports it), in log space (gradient norms are roughly lognormal),
    against the median and MAD of the last ``window`` log-values (values
    already judged exploded are left out), fire when the robust z-score is at
    least ``z`` AND the value is at least ``ratio`` times the median.
    Severity warning; critical at ``critical_ratio`` times the median.
    RLlib reports the pre-clip norm, so this sees explosions that
    ``grad_clip`` hides from the weights.

    Args:
        metrics: norms to watch. Default ("grad_norm", "grad_norm_max").
        z: robust z-score of log(norm) needed. Default 6.
        ratio: times the median needed. Default 10.
        critical_ratio: times the median for critical. Default 100.
        window: iterations of history in the reference. Default 30.
        warmup: history values needed before judging. Default 10.
        enter, exit, repeat: Latch hysteresis. Default 1, 3, 10.
        band: learned healthy band ({"low", "high", "median"}, or
            {metric: band}) used while the history is shorter than warmup.
            Default None.
    """

    name = "gradient_explosion"
    what = "gradient explosion"
    log = True
    default_metrics = ("grad_norm", "grad_norm_max")
    band_metrics = default_metrics
    Options = GradientExplosionOptions
