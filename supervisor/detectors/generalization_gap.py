"""generalization_gap: the training return rising while the evaluation return falls."""

from __future__ import annotations

from supervisor.detectors._common import Alarm, fmt, noise_scale, value_of
from supervisor.detectors.base import Detector
from supervisor.detectors.options import Count, DetectorOptions, Number, at_least, fraction, positive
from supervisor.findings import Finding


class GeneralizationGapOptions(DetectorOptions):
    drop_fraction: Number = fraction(0.25)
    z: Number = positive(3.0)
    warmup: Count = at_least(2, 3)
    patience: Count = at_least(1, 2)
    exit: Count = at_least(1, 2)
    repeat: Count = positive(10)


class GeneralizationGap(Detector):
    """Warn when the evaluation return falls while the training return does not.

    Judged only on iterations that report ``eval_return_mean`` (RLlib's
    ``evaluation/env_runners/episode_return_mean``, present when the
    experiment sets ``evaluation_interval``), on the pairs (training return,
    evaluation return) of those iterations. With at least ``warmup`` earlier
    pairs: ``best`` is the highest evaluation return so far and ``train_then``
    the training return of that iteration; sigma is the evaluation noise (MAD
    of successive differences of the evaluation returns, at least 1 % of
    |best|). Fire when the evaluation return is below best - max(
    ``drop_fraction`` x |best|, ``z`` x sigma) while the training return is at
    or above ``train_then`` (training still looks fine: the policy is
    overfitting its training envs, or the evaluation env differs), on
    ``patience`` consecutive evaluations. Warning.

    Args:
        drop_fraction: relative fall of the evaluation return needed. Default 0.25.
        z: noise sigmas the fall must exceed. Default 3.
        warmup: earlier evaluations needed. Default 3.
        patience: consecutive evaluations needed. Default 2.
        exit, repeat: hysteresis, in evaluations. Default 2, 10.
    """

    name = "generalization_gap"
    called_with = ("eval_return_mean",)
    scope = "trial"
    needs = (("eval_return_mean",), ("episode_return_mean",))
    Options = GeneralizationGapOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(self.patience, self.exit, self.repeat)
        self._pairs: list[tuple[float, float]] = []  # (train, eval) at each evaluation

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        ev, tr = value_of(metrics, "eval_return_mean"), value_of(metrics, "episode_return_mean")
        if ev is None or tr is None:
            return []
        pairs, self._pairs = self._pairs, self._pairs + [(tr, ev)]
        if len(pairs) < self.warmup:
            return []
        i_best = max(range(len(pairs)), key=lambda i: pairs[i][1])
        train_then, best = pairs[i_best]
        sigma = max(noise_scale([e for _, e in pairs]), 0.01 * abs(best), 1e-8)
        thr = best - max(self.drop_fraction * abs(best), self.z * sigma)
        triggered = ev < thr and tr >= train_then
        if not self._alarm.update(triggered, "warning"):
            return []
        return [self.finding(
            iteration, "warning", "eval_return_mean", ev,
            f"generalization gap: eval_return_mean={fmt(ev)} fell below {fmt(thr)} (best evaluation {fmt(best)}, "
            f"noise sigma {fmt(sigma)}) while episode_return_mean rose to {fmt(tr)} from {fmt(train_then)}",
            thr, best_eval=best, train_at_best=train_then, train=tr, sigma=sigma)]
