"""loss_explosion: a finite loss far above the run's own robust history."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import SpikeDetector, SpikeOptions, fmt, value_of
from supervisor.metrics import GAMMA, target_scale
from supervisor.detectors.options import Number, positive

#: Losses with a value-regression part: their scale follows the square of the value targets' (an unclipped
#: value loss as returns grow, a TD loss with its Q-values).
VALUE_DRIVEN = frozenset(("total_loss", "vf_loss", "vf_loss_unclipped", "q_loss", "q_twin_loss"))


class LossExplosionOptions(SpikeOptions):
    z: Number = positive(10.0)
    ratio: Number = Field(20.0, gt=1)
    driver_fraction: Number = positive(0.1)


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

    Writer semantics. A value loss that is not clipped (Stable-Baselines3, CleanRL; RLlib clips it at
    ``vf_clip_param``, a prior) grows with the square of its targets as returns grow, and a TD loss with
    its Q-values: a jump against its own early history is then no fault (SB3's PPO on CartPole: a value
    loss from 0.06 to 61 as the episodes lengthen, an RMS error of 8 on targets of ~90). So a loss with a
    value part (``total_loss``, ``vf_loss``, ``vf_loss_unclipped``, ``q_loss``) is an explosion only when
    it also exceeds ``driver_fraction`` x s^2, s the scale of its targets (``value_target_scale``, else
    |``q_mean``|, else estimated from the return and the episode length with the trial's discount:
    :func:`supervisor.metrics.target_scale`): an RMS error of ~30 % of the targets (a critic predicting 0
    everywhere scores ~s^2). Below that the finding is ``info``. Without any of them the history rule
    alone decides. A ``policy_loss`` whose advantages are not normalized (A2C) scales with the critic's
    errors: within sqrt(value loss), while the value loss is below that bar, it is ``info`` too.

    Args:
        metrics: losses to watch. Default ("total_loss", "policy_loss").
        z: robust z-score needed. Default 10.
        ratio: typical magnitudes above the median needed. Default 20.
        critical_ratio: magnitudes for critical. Default 100.
        window: iterations of history in the reference. Default 30.
        warmup: history values needed before judging. Default 10.
        enter, exit, repeat: Latch hysteresis. Default 1, 3, 10.
        driver_fraction: the fraction of its targets' squared scale a value loss must exceed. Default 0.1.
        band: learned healthy band ({"low", "high", "median"}, or
            {metric: band}) used while the history is shorter than warmup.
            Default None.
    """

    name = "loss_explosion"
    what = "loss explosion"
    default_metrics = ("total_loss", "policy_loss")
    band_metrics = ("total_loss", "policy_loss", "vf_loss_unclipped")
    Options = LossExplosionOptions

    def _veto(self, metric, value, metrics):
        if metric == "policy_loss":
            return self._driven_policy_loss(value, metrics)
        if metric not in VALUE_DRIVEN:
            return None
        if self.priors.vf_clip_param is not None and metric in ("total_loss", "vf_loss"):
            return None  # the writer clips its value loss: it cannot grow with the targets
        got = target_scale(metrics, self.priors.gamma or GAMMA)
        if got is None:
            return None
        s, name = got
        bar = self.driver_fraction * s * s
        if value >= bar:
            return None
        return (f"below {fmt(self.driver_fraction)} x ({name}={fmt(s)})^2 = {fmt(bar)}: an RMS error under "
                f"{fmt(100 * self.driver_fraction ** 0.5)}% of its targets, a value loss growing with them, not an "
                f"explosion")

    def _driven_policy_loss(self, value, metrics):
        """A policy-gradient loss scales with its advantages; where they are not normalized (A2C) they
        are the critic's errors, of RMS sqrt(value loss). A policy loss within that, while the value loss
        itself is not exploded (below ``driver_fraction`` x its targets' scale^2), is driven by the critic
        (a rare terminal state in a run of identical steps), not exploded. Writers that clip the value
        loss (RLlib's PPO: ``vf_clip_param``) normalize their advantages: no such allowance."""
        if self.priors.vf_clip_param is not None:
            return None
        vf = value_of(metrics, "vf_loss_unclipped")
        vf = value_of(metrics, "vf_loss") if vf is None else vf
        if vf is None or vf <= 0 or abs(value) >= vf ** 0.5:
            return None
        got = target_scale(metrics, self.priors.gamma or GAMMA)
        if got is not None and vf >= self.driver_fraction * got[0] ** 2:
            return None  # the critic exploded too: the policy loss with it is a fault
        return (f"|policy_loss| is within the advantages' scale sqrt(vf_loss) = {fmt(vf ** 0.5)} while the value "
                f"loss is not exploded: a policy loss driven by the critic's errors, not an explosion")
