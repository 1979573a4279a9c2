import math
from typing import Mapping

from supervisor.detectors.base import Detector
from supervisor.detectors.options import Count, DetectorOptions, at_least
from supervisor.findings import Finding
from supervisor.history import History


class NonFiniteOptions(DetectorOptions):
    warmup: Count = at_least(0, 0)  # unused: a NaN needs no history


class NonFinite(Detector):
    """Critical when any reported metric is NaN or infinite, in that same iteration.

    No warm-up and no hysteresis: a NaN is never noise. One finding per
    iteration, naming every non-finite metric (the first is ``metric``).
    PPO divergence on RLlib usually shows first as ``total_loss=inf`` rather
    than NaN, so infinities count too.
    """

    name = "non_finite"
    scope = "any"
    Options = NonFiniteOptions

    def __call__(self, iteration: int, metrics: Mapping[str, float], history: History) -> list[Finding]:
        try:  # a finite sum proves every float finite (NaN and inf propagate); one C-speed pass
            total = sum(metrics.values())
            if total - total == 0.0:
                return []
        except Exception:  # not all numbers: check one by one
            pass
        bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
        if not bad:
            return []
        first = next(iter(bad))
        names = ", ".join(f"{k}={v}" for k, v in bad.items())
        return [self.finding(iteration, "critical", first, bad[first], f"non-finite values: {names}",
                             metrics=sorted(bad))]
