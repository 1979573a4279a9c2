"""data_poisoned: the env runners' data guard found non-finite rewards, observations or actions."""

from __future__ import annotations

from supervisor.detectors._common import Alarm, fmt, value_of
from supervisor.detectors.base import Detector
from supervisor.detectors.options import DetectorOptions
from supervisor.findings import Finding

PARTS = (("data_guard_nan_rewards", "rewards"), ("data_guard_nan_obs", "observations"),
         ("data_guard_nan_actions", "actions"))


class DataPoisoned(Detector):
    """Flag an iteration whose samples held NaN or infinite rewards, observations or actions.

    Reads what the data guard (``supervisor/data_guard.py``, run on every env runner on each sampled
    batch before a learner or a replay buffer sees it) counted in the iteration: ``data_guard_nan_rewards``,
    ``data_guard_nan_obs``, ``data_guard_nan_actions`` (env steps), ``data_guard_poisoned`` (episodes),
    ``data_guard_dropped`` (episodes held out of the train batch) and ``data_guard_quarantine`` (1 once the
    trial is quarantined). Rule: any non-finite step is critical, in the iteration it was sampled, and again
    in every iteration it goes on (each iteration's data is new evidence). Once the trial is quarantined the
    message names the cause: the environment itself produces non-finite data, which no change to the
    weights (rollback, a lower lr) can help.

    No options: a count is a count.
    """

    name = "data_poisoned"
    metrics = ("data_guard_nan_rewards", "data_guard_nan_obs", "data_guard_nan_actions")
    Options = DetectorOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.reset()

    def reset(self) -> None:
        self._alarm = Alarm(1, 1, 1)

    def __call__(self, iteration, metrics, history) -> list[Finding]:
        if metrics.keys().isdisjoint(self.metrics):  # no data guard (or nothing it counted): no finding
            self._alarm.quiet()
            return []
        counts = {what: value_of(metrics, k) or 0.0 for k, what in PARTS}
        total = sum(counts.values())
        if not self._alarm.update(total > 0, "critical"):
            return []
        what = [f"{fmt(n)} {w}" for w, n in counts.items() if n > 0]
        kinds = "/".join(w for w, n in counts.items() if n > 0)
        episodes = value_of(metrics, "data_guard_poisoned")
        dropped = value_of(metrics, "data_guard_dropped") or 0.0
        quarantined = (value_of(metrics, "data_guard_quarantine") or 0.0) >= 1
        kept = ("held out of the train batch and the replay buffer" if dropped > 0
                else "NOT held back (the guard's hold is off)")
        if quarantined:
            msg = (f"data_poisoned: the environment produces non-finite {kinds} ({', '.join(what)} this "
                   f"iteration) and goes on after quarantine: the fault is outside the weights, rollback "
                   f"cannot help")
        else:
            msg = (f"data_poisoned: non-finite {kinds} sampled this iteration ({', '.join(what)}"
                   f"{f'; {fmt(episodes)} episodes' if episodes else ''}), {kept}")
        return [self.finding(iteration, "critical", next(k for k, w in PARTS if counts[w] > 0), total, msg, 0.0,
                             rewards=counts["rewards"], observations=counts["observations"],
                             actions=counts["actions"], episodes=episodes, dropped=dropped,
                             quarantined=quarantined, cause="environment" if quarantined else None)]
