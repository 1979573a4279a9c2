from dataclasses import dataclass

from supervisor.actions.base import ActionSpec


@dataclass(frozen=True)
class Quarantine(ActionSpec):
    """Put the trial's env runners in quarantine: every episode the data guard flags (non-finite rewards,
    observations or actions; observations far outside their range) is dropped from the train batch and
    never inserted into a replay buffer, from the next sample on (the guard already holds non-finite
    episodes back from the iteration it first sees them). A containment, not a repair: poisoning that goes
    on after it is the environment's doing, and the detector's next finding climbs to ``stop_trial`` at the
    next iteration (no cooldown: its effect shows in the very next sample)."""

    name = "quarantine"
    doc = "drop the poisoned episodes from the train batch; never insert them into a replay buffer"
    judged: bool = False
    manual: bool = True
    cooldown: int | None = 0

    def apply(self, applier, params, reason=""):
        return applier.quarantine(reason)
