from dataclasses import dataclass

from supervisor.actions.base import ActionSpec


@dataclass(frozen=True)
class SyncWeights(ActionSpec):
    """Push the learner's current weights to every env runner now, past the trial's own weight sync, and
    verify each runner holds them (APPO, IMPALA: RLlib's env runners pull new weights from an actor that
    can be gone or behind). The policy lag falls back to what the config builds in; if the sync stays
    lost it climbs again, and ``policy_lag``'s ladder moves on to a restart (a fresh algorithm rebuilds
    the sync). The hyperparameters do not change."""

    name = "sync_weights"
    doc = "push the learner's current weights to every env runner now (their own sync is lost or behind)"
    retry_if_ineffective: bool = True  # a lost sync loses the pushed weights' lead again: pushing again helps
    manual: bool = True

    def apply(self, applier, params, reason=""):
        return applier.sync_weights()
