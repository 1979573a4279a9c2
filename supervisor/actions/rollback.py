from dataclasses import dataclass

from supervisor.actions.base import ActionSpec


@dataclass(frozen=True)
class Rollback(ActionSpec):
    """Restore the newest healthy checkpoint (weights and optimizer state), then re-apply the hyperparameters
    in effect (``hparams``), so a rollback never undoes what other actions changed.

    Never chosen alone from a ladder step whose other actions were ruled out: the same state with the
    same hyperparameters would only repeat the fault."""

    name = "rollback"
    doc = "restore the newest healthy checkpoint (weights, optimizer state), keeping the current hyperparameters"
    retry_if_ineffective: bool = True
    standalone: bool = False
    manual: bool = True
    needs_checkpoint: bool = True

    def apply(self, applier, params, reason=""):
        path = params.get("checkpoint") or params.get("path")
        if not path:
            raise ValueError("rollback needs params['checkpoint'] (a checkpoint the supervisor recorded)")
        if params.get("whole_trial"):  # a fault the modules share: every module back (see supervisor.engine)
            return applier.rollback(path, params.get("hparams"), whole_trial=True)
        return applier.rollback(path, params.get("hparams"))
