"""The RLlib applier: the operations ``supervisor.actions`` are built from, on a live ``Algorithm``.

It runs in the process that owns the algorithm, between two ``train()`` calls. The RLlib side of each
operation is in its own module beside this one (``hparams``, ``rollback``, ``weights``, ...); this
class only adapts them to the applier protocol.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from actors.appliers.rllib.hparams import current_hparams, learner_hparams, set_hparams, trained_modules
from actors.appliers.rllib.quarantine import quarantine
from actors.appliers.rllib.rollback import push_learner_weights, rollback
from actors.appliers.rllib.weights import rollback_reached_runners

log = logging.getLogger(__name__)


class RLlibApplier:
    """Args:
        algorithm: the live RLlib ``Algorithm``.
        trial_id: for log lines.
        module: the RLModule it acts on (a multi-agent trial's policy); None: the whole trial.
    """

    def __init__(self, algorithm, trial_id: str = "default", module: str | None = None, parent=None):
        self.algorithm = algorithm
        self.trial_id = trial_id
        self.module = module
        self._parent = parent  # for_module's appliers tell stop and restart to the one the callback reads
        self.stop_requested = False
        self.restart_requested = False
        self.stop_reason: str | None = None

    def for_module(self, module: str) -> "RLlibApplier":
        return RLlibApplier(self.algorithm, self.trial_id, module, parent=self._parent or self)

    def modules(self) -> list[str]:
        """The modules an action for the whole trial changes: those RLlib trains."""
        return trained_modules(self.algorithm)

    def hparams(self) -> dict:
        return current_hparams(self.algorithm, self.module)

    def set_hparams(self, new: Mapping[str, Any]) -> dict:
        """Set on every learner, then read back from each (``num_learners >= 2``): a learner that does not show
        the new values fails the action (it is recorded as not applied) instead of passing for applied."""
        after = set_hparams(self.algorithm, dict(new), self.module)
        if getattr(self.algorithm.learner_group, "_worker_manager", None) is not None:
            for i, got in enumerate(learner_hparams(self.algorithm, self.module)):
                off = {k: (got.get(k), v) for k, v in new.items() if k in got and not _same(got.get(k), v)}
                if off:
                    raise RuntimeError(f"learner {i} does not show the change: {off}")
        return after

    def rollback(self, checkpoint: str, hparams: Mapping[str, Any] | None, whole_trial: bool = False) -> dict:
        """The module back to the checkpoint (the others keep their weights and optimizer state), or
        every module when ``whole_trial`` (a fault the modules share) or when acting on the whole trial."""
        module = None if whole_trial else self.module
        out = rollback(self.algorithm, checkpoint, hparams=hparams, module=module)
        out["verified"] = rollback_reached_runners(self.algorithm) and out.get("learners_equal", True)
        return out

    def sync_weights(self) -> dict:
        return push_learner_weights(self.algorithm, timeout_s=30.0)  # verified: every runner holds the push

    def request_stop(self, reason: str) -> None:
        self.stop_requested = True
        self.stop_reason = self.stop_reason or reason
        if self._parent is not None:
            self._parent.request_stop(reason)

    def request_restart(self, reason: str) -> None:
        self.restart_requested = True
        if self._parent is not None:
            self._parent.request_restart(reason)

    def quarantine(self, reason: str) -> dict:
        return quarantine(self.algorithm, True)

    def alert(self, reason: str) -> None:
        where = f" (module {self.module})" if self.module else ""
        log.warning("supervisor alert on %s%s: %s", self.trial_id, where, reason)


def _same(got, want) -> bool:
    if got is None or want is None:
        return got is want
    return abs(float(got) - float(want)) <= 1e-6 * max(abs(float(want)), 1e-12) + 1e-12
