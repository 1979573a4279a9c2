from dataclasses import dataclass

from supervisor.actions.base import ActionSpec


@dataclass(frozen=True)
class SyncWeights(ActionSpec):
    """Push the learner's current weights to every env runner now, past the trial's own weight sync, and
    verify each runner holds them (APPO, IMPALA: RLlib's env runners pull new weights from an actor that
    can be gone or behind). Where the sync is only behind, the lag falls back to what the config builds in.
    Where it is gone (RLlib 2.60: the ``EnvRunnerStateServer`` dead; the runners' failed pulls keep the
    pushed weights, nothing brings newer ones), the pushed weights are outrun within an iteration or two:
    ``policy_lag`` keeps growing and reports so, the push is judged ineffective and the ladder moves on to
    ``restart_trial`` (a fresh algorithm rebuilds the sync). The hyperparameters do not change."""

    name = "sync_weights"
    doc = "push the learner's current weights to every env runner now (their own sync is lost or behind)"
    retry_if_ineffective: bool = False  # a lost sync outruns a push within an iteration or two: pushing again is futile
    manual: bool = True

    def apply(self, applier, params, reason=""):
        return applier.sync_weights()
