"""update_too_large: one update moves the policy far more than the config's own trust region allows."""

from __future__ import annotations

from supervisor.detectors._common import AlarmOptions, OneRuleDetector, fmt, value_of
from supervisor.detectors.options import Count, Number, at_least, positive
from supervisor.findings import Finding


class UpdateTooLargeOptions(AlarmOptions):
    kl_factor: Number = positive(20.0)
    critical_kl_factor: Number = positive(100.0)
    clip_fraction: Number = positive(0.6)
    default_kl_target: Number = positive(0.01)
    patience: Count = at_least(1, 1)
    repeat: Count = positive(10)


class UpdateTooLarge(OneRuleDetector):
    """Warn from the first iteration when an update overshoots PPO's trust region; critical far past it.

    Rule (a prior: needs no history): with the trial's ``kl_target`` (RLlib's PPO default 0.01 when the
    config is not known), warning when approx_kl (or, on a live RLlib trial, its mean KL) exceeds ``kl_factor`` x kl_target,
    or the clip fraction exceeds ``clip_fraction`` (most samples outside the ``1 +- clip_param`` ratio
    band; where the KL is reported, only beside a KL past kl_target: a policy that moved less than its
    target only met a narrow band, e.g. a clip range scheduled down to 0), on ``patience`` consecutive
    iterations; critical when the KL exceeds ``critical_kl_factor`` x
    kl_target. A healthy PPO update stays within a few kl_targets (recorded healthy CartPole, Acrobot,
    Pendulum and MountainCarContinuous runs: approx_kl at most 7.6x, clip fraction at most 0.27); an lr
    far too high puts it 86-170x past from iteration 1, with clip fractions of 0.8-0.9.

    Args:
        kl_factor: warning above this multiple of kl_target. Default 20.
        critical_kl_factor: critical above this multiple. Default 100.
        clip_fraction: warning above this clip fraction. Default 0.6.
        default_kl_target: kl_target when the trial's config is not known. Default 0.01.
        patience, exit, repeat: hysteresis. Default 1, 3, 10.
    """

    name = "update_too_large"
    needs = (("approx_kl", "kl", "clip_fraction"),)
    Options = UpdateTooLargeOptions

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        kl = value_of(metrics, "approx_kl")
        if kl is None and self.priors.algorithm:
            # RLlib's own mean KL is between successive policies too; in a foreign log "kl" may be the KL
            # to a reference model (TRL's objective/kl), which has no trust region to overshoot
            kl = value_of(metrics, "kl")
        cf = value_of(metrics, "clip_fraction")
        if kl is None and cf is None:
            return []
        target = self.priors.kl_target or self.default_kl_target
        over_kl = kl is not None and kl > self.kl_factor * target
        # a clip fraction beside a KL within the target is a narrow band, not a far move (SB3's clip range
        # scheduled to 0: rl-zoo's lin_0.2 clips every sample of its last updates at approx_kl ~1e-6)
        over_clip = cf is not None and cf > self.clip_fraction and (kl is None or kl > target)
        sev = "critical" if kl is not None and kl > self.critical_kl_factor * target else "warning"
        if not self._due(over_kl or over_clip, sev):
            return []
        clip = self.priors.clip_param
        parts = []
        if kl is not None:
            parts.append(f"approx_kl={fmt(kl)} is {fmt(kl / target)}x kl_target={fmt(target)}")
        if cf is not None:
            parts.append(f"clip_fraction={fmt(cf)}" + (f" (clip_param {fmt(clip)})" if clip else ""))
        metric, value, threshold = (("approx_kl", kl, self.kl_factor * target) if over_kl
                                    else ("clip_fraction", cf, self.clip_fraction))
        return [self.finding(iteration, sev, metric, value,
                             "update too large: " + ", ".join(parts) + ": each update moves the policy far "
                             "past its trust region; lr or num_epochs too high", threshold, kl_target=target)]
