"""kl_spike: the policy KL jumping far above the run's own robust history."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import SustainedSpikeOptions, SpikeDetector
from supervisor.detectors.options import Count, Number, at_least, positive


class KLSpikeOptions(SustainedSpikeOptions):
    z: Number = positive(5.0)
    ratio: Number = Field(10.0, gt=1)
    min_value: Number | None = 1e-3
    sustain: Count = at_least(0, 3)
    sustain_ratio: Number | None = Field(3.0, gt=1)
    sustain_z: Number | None = Field(2.5, gt=0)


class KLSpike(SpikeDetector):
    """Warn when the KL between successive policies jumps far above its history.

    Rule: for ``kl`` (RLlib's mean_kl_loss) and ``approx_kl`` (instrumented
    learner), in log space, against the median and MAD of the last
    ``window`` log-values (values already judged spiking are left out), fire
    when the robust z-score is at least ``z`` AND the value is at least
    ``ratio`` times the median AND at least ``min_value`` (a KL that small
    cannot hurt, whatever its history, e.g. right after a near-zero stretch).
    Also when the KL has been at least ``sustain_ratio`` times the median with
    robust z >= ``sustain_z`` (and >= ``min_value``) on ``sustain`` consecutive
    iterations: a KL that builds up over a few iterations, which the adaptive
    KL coefficient damps so that no single value looks like a spike.
    Severity warning; critical at ``critical_ratio`` times the median.

    Args:
        metrics: KL metrics to watch. Default ("kl", "approx_kl").
        z: robust z-score of log(KL) needed. Default 5.
        ratio: times the median needed. Default 10.
        critical_ratio: times the median for critical. Default 100.
        min_value: absolute KL needed. Default 1e-3.
        window: iterations of history in the reference. Default 30.
        warmup: history values needed before judging. Default 10.
        enter, exit, repeat: Latch hysteresis. Default 1, 3, 10.
        band: learned healthy band ({"low", "high", "median"}, or
            {metric: band}) used while the history is shorter than warmup.
            Default None.
        sustain: consecutive iterations of the sustained rule (0: off). Default 3.
        sustain_ratio: times the median the sustained rule needs. Default 3.
        sustain_z: robust z-score the sustained rule needs. Default 2.5.
    """

    name = "kl_spike"
    what = "KL spike"
    log = True
    default_metrics = ("kl", "approx_kl")
    band_metrics = default_metrics
    Options = KLSpikeOptions
