"""value_loss_clipped: the value function is not learning because its loss is clipped at vf_clip_param."""

from __future__ import annotations

from supervisor.detectors._common import AlarmOptions, OneRuleDetector, fmt, value_of
from supervisor.detectors.options import Count, Number, fraction, positive
from supervisor.findings import Finding


class ValueLossClippedOptions(AlarmOptions):
    fraction: Number = fraction(0.999)
    repeat: Count = positive(50)


class ValueLossClipped(OneRuleDetector):
    """Warn when the value loss is clipped on (nearly) every sample, so the critic gets no gradient.

    RLlib's PPO clips each sample's squared value error at ``vf_clip_param`` (default 10); a clipped
    sample has zero gradient. With returns of tens or hundreds per step (Pendulum, MuJoCo, Atari
    without reward scaling) every sample is clipped and the value branch's gradient is exactly 0.

    Rule: warning when, on ``patience`` consecutive iterations, the fraction of clipped samples
    (``vf_clip_fraction``, from the instrumented learner) is at least ``fraction``, or when it is not
    reported, the value branch's gradient norm is exactly 0 while the reported value loss sits at
    ``vf_clip_param``. Partial clipping is not a finding: CartPole's default runs clip 70 to 99 % of
    the samples as returns grow, and the unclipped rest still teaches the critic.

    Args:
        fraction: share of clipped samples that means "not learning". Default 0.999: every sample.
        patience, exit, repeat: hysteresis. Default 3, 3, 50.
    """

    name = "value_loss_clipped"
    needs = (("vf_clip_fraction", "grad_norm_value"),)
    Options = ValueLossClippedOptions

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        share = value_of(metrics, "vf_clip_fraction")
        clip = self.priors.vf_clip_param
        if share is None:
            vf, gv = value_of(metrics, "vf_loss"), value_of(metrics, "grad_norm_value")
            if vf is None or gv is None or clip is None:
                return []
            share = 1.0 if gv == 0.0 and vf >= 0.999 * clip else 0.0
        if not self._due(share >= self.fraction):
            return []
        at = f"vf_clip_param={fmt(clip)}" if clip else "vf_clip_param"
        return [self.finding(iteration, "warning", "vf_clip_fraction", share,
                             f"value function is not learning: the value loss is clipped at {at} on "
                             f"{share:.0%} of samples (vf_clip_fraction={fmt(share)}) for {self._streak} "
                             f"iterations; raise vf_clip_param or scale rewards", self.fraction, vf_clip_param=clip)]
