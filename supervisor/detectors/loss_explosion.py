"""loss_explosion: a finite loss far above the run's own robust history."""

from __future__ import annotations

from pydantic import Field

from supervisor.detectors._common import SpikeDetector, SpikeOptions, fmt, value_of
from supervisor.metrics import GAMMA, returns_value_scale, target_scale
from supervisor.detectors.options import Number, positive

#: Losses with a value-regression part: their scale follows the square of the value targets' (an unclipped
#: value loss as returns grow, a TD loss with its Q-values).
VALUE_DRIVEN = frozenset(("total_loss", "vf_loss", "vf_loss_unclipped", "q_loss", "q_twin_loss"))
#: The episodes a logged mean return covers at most (SB3's ``stats_window_size``, RLlib's smoothing window):
#: with returns of one sign, no episode behind the mean holds more than this many times it.
MEAN_EPISODES = 100


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
    alone decides. Estimated from a log's returns, s is their largest over the reference window (a DQN
    whose 100-episode mean return jumps 38 -> 266 and falls back while its TD loss follows the Q-values
    fitted on 266), and where ``explained_variance`` >= -1 the bar allows targets concentrated in a few
    large rewards the critic has not learned: ``driver_fraction`` x M x s, M the largest episode |return|
    (an SB3 PPO critic whose value loss is ~3 on most rollouts and ~600 on each that holds a rare +100
    reward, explained variance ~0 there, mean return ~10). A reported root mean square of the targets
    (``value_target_rms``, SB3's integration) is s itself, and where ``explained_variance`` >= -1 the bar is
    its square, what a critic predicting 0 scores (BipedalWalker's -100 for a fall); see :meth:`_value_bar`. A
    ``policy_loss`` whose advantages are not normalized (A2C) scales with the critic's errors: within
    sqrt(value loss), while the value loss is below that bar, it is ``info`` too.

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

    def _value_bar(self, metrics, history) -> tuple[float, tuple[str, str]] | None:
        """The value loss below which it is no explosion, and (the bar's terms, why); None: no scale known.

        A reported root mean square of the targets r (``value_target_rms``, what a critic predicting 0 scores):
        where the critic is no worse than a guess uncorrelated with its targets (``explained_variance`` >= -1),
        r^2 itself, the loss of predicting 0 (targets concentrated in a few large values it has not learned:
        SB3's PPO on BipedalWalker, a fall's -100 in a rollout of ~5, value loss 30-140 at r^2 140-190 and EV
        0.03-0.56, 0.1-0.8 on the other rollouts); otherwise ``driver_fraction`` x r^2.
        A reported target scale s (``value_target_scale``, |``q_mean``|): ``driver_fraction`` x s^2. From
        the returns (logs), s follows the recent returns' upper level, not a lagging mean (the values
        follow the returns they were fitted on): the largest
        :func:`~supervisor.metrics.returns_value_scale` over the reference window, this iteration
        included; bar ``driver_fraction`` x s^2. Where the critic before the update is no worse than a guess
        uncorrelated with its targets (``explained_variance`` >= -1: its errors vary at most twice as much
        as the targets), the targets may be a few large rewards it has not learned rather than a spread: a
        target is at most the largest discounted sum an episode holds, M, so their mean square is at most
        M x s (a critic that knows nothing of them scores that); bar ``driver_fraction`` x M x s. M: the
        largest |``episode_return_max``| / |``episode_return_min``| in the window, else ``MEAN_EPISODES``
        x the largest |mean return| (one episode holding all the return the mean covers)."""
        df = fmt(self.driver_fraction)
        rms = value_of(metrics, "value_target_rms")
        if rms is not None and rms > 0:
            ev = value_of(metrics, "explained_variance")
            if ev is not None and ev >= -1.0:
                return rms * rms, (f"(value_target_rms={fmt(rms)})^2", f"explained variance {fmt(ev)} >= -1, a "
                                   f"critic no worse than a guess uncorrelated with its targets, and no worse than "
                                   f"predicting 0 (which scores their mean square: a few large targets it has not "
                                   f"learned)")
            return self.driver_fraction * rms * rms, (f"{df} x (value_target_rms={fmt(rms)})^2", f"an RMS error "
                                                      f"under {fmt(100 * self.driver_fraction ** 0.5)}% of its "
                                                      f"targets' RMS")
        gamma = self.priors.gamma or GAMMA
        got = target_scale(metrics, gamma)
        if got is None:
            return None
        s, name = got
        if name in ("value_target_scale", "|q_mean|"):
            return self.driver_fraction * s * s, (f"{df} x ({name}={fmt(s)})^2", f"an RMS error under "
                                                  f"{fmt(100 * self.driver_fraction ** 0.5)}% of its targets")
        def past(k):  # the reference window's values (the history holds finite ones only), this one's last
            return list(history.view(k)[-self.window:])

        rets = past("episode_return_mean") + [metrics["episode_return_mean"]]
        lens = past("episode_len_mean") + [metrics["episode_len_mean"]]
        if len(lens) != len(rets):  # not reported together: every return over this iteration's length
            lens = [lens[-1]] * len(rets)
        s = max([returns_value_scale(g, n, gamma) for g, n in zip(rets, lens) if n >= 1] + [s])
        ev = value_of(metrics, "explained_variance")
        if ev is None or ev < -1.0:  # no sign of targets the critic could not know, or a critic gone wild
            return self.driver_fraction * s * s, (f"{df} x (the recent returns' value scale, gamma {gamma:g}: "
                                                  f"{fmt(s)})^2",
                                                  f"an RMS error under {fmt(100 * self.driver_fraction ** 0.5)}% "
                                                  f"of its targets")
        ext = [abs(x) for k in ("episode_return_max", "episode_return_min")
               for x in past(k) + [value_of(metrics, k)] if x is not None]
        if ext:
            big, how = max(ext), "the largest episode |return|"
        else:
            big = MEAN_EPISODES * max(map(abs, rets))
            how = f"{MEAN_EPISODES} x the largest mean |return|"
        big = max(big, s)
        return self.driver_fraction * big * s, (
            f"{df} x max|target| ({how}: {fmt(big)}) x mean|target| (the recent returns' value scale, gamma {gamma:g}: "
            f"{fmt(s)})", f"explained variance {fmt(ev)} >= -1, a critic no worse than a guess uncorrelated with "
                          f"its targets, and under {fmt(self.driver_fraction)} of the mean square of targets "
                          f"concentrated in a few large rewards")

    def _veto(self, metric, value, metrics, history):
        if metric == "policy_loss":
            return self._driven_policy_loss(value, metrics, history)
        if metric not in VALUE_DRIVEN:
            return None
        if self.priors.vf_clip_param is not None and metric in ("total_loss", "vf_loss"):
            return None  # the writer clips its value loss: it cannot grow with the targets
        got = self._value_bar(metrics, history)
        if got is None:
            return None
        bar, (what, why) = got
        if value >= bar:
            return None
        return f"below {what} = {fmt(bar)}: {why}, a value loss growing with them, " \
               f"not an explosion"

    def _driven_policy_loss(self, value, metrics, history):
        """A policy-gradient loss scales with its advantages; where they are not normalized (A2C) they
        are the critic's errors, of RMS sqrt(value loss). A policy loss within that, while the value loss
        itself is not exploded (below the bar of :meth:`_value_bar`), is driven by the critic
        (a rare terminal state in a run of identical steps), not exploded. Writers that clip the value
        loss (RLlib's PPO: ``vf_clip_param``) normalize their advantages: no such allowance."""
        if self.priors.vf_clip_param is not None:
            return None
        vf = value_of(metrics, "vf_loss_unclipped")
        vf = value_of(metrics, "vf_loss") if vf is None else vf
        if vf is None or vf <= 0 or abs(value) >= vf ** 0.5:
            return None
        got = self._value_bar(metrics, history)
        if got is not None and vf >= got[0]:
            return None  # the critic exploded too: the policy loss with it is a fault
        return (f"|policy_loss| is within the advantages' scale sqrt(vf_loss) = {fmt(vf ** 0.5)} while the value "
                f"loss is not exploded: a policy loss driven by the critic's errors, not an explosion")
