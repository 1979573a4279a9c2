"""The RLlib applier: the operations ``supervisor.actions`` are built from, on a live ``Algorithm``.

It runs in the process that owns the algorithm, between two ``train()`` calls. The RLlib side of each
operation is in its own module beside this one (``hparams``, ``rollback``, ``weights``, ...); this
class only adapts them to the applier protocol.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from actors.appliers.rllib.hparams import current_hparams, set_hparams
from actors.appliers.rllib.rollback import rollback
from actors.appliers.rllib.weights import rollback_reached_runners

log = logging.getLogger(__name__)


class RLlibApplier:
    """Args:
        algorithm: the live RLlib ``Algorithm``.
        trial_id: for log lines.
    """

    def __init__(self, algorithm, trial_id: str = "default"):
        self.algorithm = algorithm
        self.trial_id = trial_id
        self.stop_requested = False
        self.restart_requested = False

    def hparams(self) -> dict:
        return current_hparams(self.algorithm)

    def set_hparams(self, new: Mapping[str, Any]) -> dict:
        return set_hparams(self.algorithm, dict(new))

    def rollback(self, checkpoint: str, hparams: Mapping[str, Any] | None) -> dict:
        out = rollback(self.algorithm, checkpoint, hparams=hparams)
        out["verified"] = rollback_reached_runners(self.algorithm)
        return out

    def request_stop(self, reason: str) -> None:
        self.stop_requested = True

    def request_restart(self, reason: str) -> None:
        self.restart_requested = True

    def alert(self, reason: str) -> None:
        log.warning("supervisor alert on %s: %s", self.trial_id, reason)
