"""``SupervisedASHA``: Tune's ASHA, except that it does not judge a trial while the supervisor repairs it.

ASHA stops a trial whose return at a rung (iteration 2, 6, 18, ...) is below the top 1/reduction_factor
of the trials recorded there. A trial the supervisor is repairing (a rollback, a lower lr, inside the
action's outcome window: ``result["supervisor"]["repairing"]``) dips by construction, and ASHA would
kill it for the dip. Choice: the rung decision is deferred, not faked. While the repair is pending
this scheduler answers CONTINUE and records nothing; the first result after the outcome is known
(effective or not) is judged at the highest rung the trial has reached, against the returns other
trials had there. So a repair buys the trial its outcome window, never a free pass: a trial still
behind its peers after the repair is stopped by ASHA as usual, and one the supervisor stops
(``result["supervisor"]["stop"]``) is stopped by ``StabilityStopper``.
"""

from __future__ import annotations

from typing import Mapping

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class SupervisedASHA(ASHAScheduler):
    """``ASHAScheduler`` that defers its rung decision for a trial under repair.

    Args:
        key: the result key the supervisor's callback writes to.
        **kwargs: ``ASHAScheduler``'s (time_attr, metric, mode, max_t, grace_period, reduction_factor, ...).

    ``deferred`` counts, per trial id, the results it let pass because the trial was being repaired.
    """

    def __init__(self, key: str = "supervisor", **kwargs):
        super().__init__(**kwargs)
        self._key = key
        self.deferred: dict[str, int] = {}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        sup = result.get(self._key) if isinstance(result, Mapping) else None
        if isinstance(sup, Mapping) and sup.get("repairing") and not sup.get("stop"):
            self.deferred[trial.trial_id] = self.deferred.get(trial.trial_id, 0) + 1
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)
