"""The actions that steer the trial rather than its learner: alert, stop_trial, restart_trial."""

from dataclasses import dataclass

from supervisor.actions.base import ActionSpec


@dataclass(frozen=True)
class Alert(ActionSpec):
    """Tell a human (log, dashboard feed, alert channels); changes nothing. Free: never counts toward the
    intensity limit, and a ladder that ends in alert never escalates to a stop."""

    name = "alert"
    doc = "tell a human; nothing changes"
    counts_toward_limit: bool = False
    retry_if_ineffective: bool = True
    applies_after_end: bool = True

    def apply(self, applier, params, reason=""):
        applier.alert(reason)
        return {}


@dataclass(frozen=True)
class StopTrial(ActionSpec):
    """End the trial (Tune's stopper, or the runner's loop); the run exits 3 when every trial was stopped."""

    name = "stop_trial"
    doc = "stop the trial as unrecoverable"
    retry_if_ineffective: bool = True
    judged: bool = False
    effect: str = "stop"
    manual: bool = True
    applies_after_end: bool = True

    def apply(self, applier, params, reason=""):
        applier.request_stop(reason)
        return {}


@dataclass(frozen=True)
class RestartTrial(ActionSpec):
    """Restart the trial in a new process from its newest healthy checkpoint (Tune's FailureConfig); the
    restarted trial gets back the hyperparameters the supervisor changed."""

    name = "restart_trial"
    doc = "restart the trial in a new process from its newest healthy checkpoint"
    judged: bool = False
    effect: str = "restart"

    def apply(self, applier, params, reason=""):
        applier.request_restart(reason)
        return {}
