"""What an action is, independent of any training framework.

An ``ActionSpec`` says everything the supervisor needs to know about one
action: its defaults, how it turns the current hyperparameters into new ones
(``plan``), and how it behaves in the escalation policy (terminal? counts
toward the intensity limit? may it be tried again after it proved
ineffective?). *Applying* it is a framework's business: an ``Applier`` (RLlib,
Stable-Baselines3, a plain torch optimizer, ...) exposes the few operations
actions are built from, and ``ActionSpec.apply`` calls them. Adding an action
is one spec file here plus, where it needs a new operation, one method per
applier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol

#: The hyperparameters actions change (each algorithm has some of them: ``supervisor.algorithms``).
#: ``tau`` / ``target_network_update_freq``: target networks (APPO, DQN, SAC); ``alpha`` /
#: ``target_entropy``: SAC's entropy temperature; ``epsilon``: DQN's exploration (on the env runners).
HPARAMS: tuple[str, ...] = ("lr", "entropy_coeff", "kl_coeff", "grad_clip", "vf_clip_param", "tau",
                            "target_network_update_freq", "alpha", "target_entropy", "epsilon")
#: Those a report shows (the next report verifies a change), and how close the reported value must be
#: to count as applied: RLlib's KL controller moves kl_coeff by x1.5 or x0.5 after every update, so
#: the next report is only near the value set. The clip settings are not reported.
VERIFIABLE: dict[str, tuple[str, float]] = {
    "lr": ("lr", 1e-6),
    "entropy_coeff": ("entropy_coeff", 1e-6),
    "kl_coeff": ("kl_coeff", 0.51),
    # SAC's alpha keeps being learned (its own optimizer), so the next report is near the value set;
    # DQN's epsilon decays again from the value set over the next iteration's env steps.
    "alpha": ("alpha", 0.5),
    "target_entropy": ("target_entropy", 1e-6),
    "epsilon": ("epsilon", 0.25),
}


class Applier(Protocol):
    """The operations a framework offers the supervisor's actions (see ``actors/appliers/`` for RLlib,
    ``supervisor/integrations/`` for the others). An applier that lacks one raises ``NotImplementedError``
    with a sentence saying so; the action is then recorded as not applied."""

    def hparams(self) -> dict[str, float | None]: ...
    def set_hparams(self, new: Mapping[str, float | None]) -> dict[str, float | None]: ...
    def rollback(self, checkpoint: str, hparams: Mapping[str, Any] | None) -> dict: ...
    def request_stop(self, reason: str) -> None: ...
    def request_restart(self, reason: str) -> None: ...
    def alert(self, reason: str) -> None: ...
    def quarantine(self, reason: str) -> dict: ...
    # RLlib only (APPO, IMPALA): the learner's weights to every env runner now; returns ``verified``
    # (each runner holds them) and what it did. Others lack it: the action is recorded as not applied.
    def sync_weights(self) -> dict: ...
    # Optional, for trials of several modules (RLlib multi-agent): ``for_module(m)`` is an applier whose
    # hparams/set_hparams/rollback touch module ``m`` only; ``modules()`` the modules an action for the
    # whole trial changes (those trained). An applier without them has one module.


@dataclass(frozen=True)
class ActionSpec:
    """One action.

    Args:
        name: the action id, as stored and reported.
        doc: one line for the reference and the dashboard.
        defaults: parameters used when the experiment file's ``action_params`` does not set them.
        counts_toward_limit: an intervention for the intensity limit (at most N in K iterations).
        retry_if_ineffective: may be chosen again on a trial where it was judged ineffective.
        judged: its outcome is judged over the outcome window (terminal actions are not).
        standalone: a ladder step may consist of this action alone.
        effect: ``"stop"`` or ``"restart"`` for actions that end the trial's process.
        manual: may be requested by hand (dashboard).
        applies_after_end: still meaningful when the trial ended before hearing the verdict.
        needs_checkpoint: goes out with the trial's newest healthy checkpoint (rollback).
        cooldown: iterations the policy waits after it before acting again (None: the policy's
            ``cooldown``); 0 for an action whose effect shows in the very next iteration.
    """

    name: ClassVar[str] = ""
    doc: ClassVar[str] = ""
    defaults: Mapping[str, float] = field(default_factory=dict)
    counts_toward_limit: bool = True
    retry_if_ineffective: bool = False
    judged: bool = True
    standalone: bool = True
    effect: str | None = None
    manual: bool = False
    applies_after_end: bool = False
    needs_checkpoint: bool = False
    cooldown: int | None = None

    @property
    def per_module(self) -> bool:
        """A hyperparameter action (``plan`` then ``set_hparams``): for the whole trial of a multi-module
        trial it is applied to each trained module from that module's own values."""
        return type(self).apply is ActionSpec.apply

    def plan(self, current: Mapping[str, float | None], params: Mapping[str, Any]) -> dict[str, float | None]:
        """New hyperparameter values from the current ones (hyperparameter actions only)."""
        return {}

    def apply(self, applier: Applier, params: Mapping[str, Any], reason: str = "") -> dict:
        """Carry the action out through ``applier``; returns what the trial reports back as applied."""
        before = applier.hparams()
        after = applier.set_hparams(self.plan(before, params))
        return {"before": before, "after": after, "changed": changed(before, after)}


@dataclass(frozen=True)
class ScaleAction(ActionSpec):
    """hparam *= ``factor`` (from ``defaults``; < 1 or > 1 as ``below_one`` says), clamped to the
    ``clamp`` keys' values when given. The shape of reduce_lr, increase_lr, reduce_entropy, raise_vf_clip."""

    hparam: ClassVar[str] = ""
    below_one: ClassVar[bool] = True
    clamp_keys: ClassVar[tuple[str, str]] = ("min_value", "max_value")
    missing: ClassVar[str] = "not set"

    def plan(self, current, params):
        c = current.get(self.hparam)
        if not c:
            raise ValueError(f"{self.name}: {self.missing}")
        new = c * factor(params, self.defaults["factor"], below_one=self.below_one)
        return {self.hparam: clamp(new, params, *self.clamp_keys)}


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list]:
    return {k: [before.get(k), after.get(k)] for k in HPARAMS if before.get(k) != after.get(k)}


def factor(params: Mapping[str, Any], default: float, *, below_one: bool) -> float:
    f = params.get("factor", default)
    f = float(default if f is None else f)
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"factor must be a positive number, got {params.get('factor')!r}")
    if below_one and f >= 1:
        raise ValueError(f"factor must be < 1 for this action, got {f}")
    if not below_one and f <= 1:
        raise ValueError(f"factor must be > 1 for this action, got {f}")
    return f


def clamp(v: float, params: Mapping[str, Any], lo_key: str, hi_key: str) -> float:
    if params.get(lo_key) is not None:
        v = max(v, float(params[lo_key]))
    if params.get(hi_key) is not None:
        v = min(v, float(params[hi_key]))
    return v


def scale_or_set(cur: float | None, params: Mapping[str, Any], defaults: Mapping[str, float], *,
                 below_one: bool, unset: float = 1e-12) -> float:
    """The rule shared by the coefficient actions: ``value`` alone (no ``factor``) sets the value;
    a coefficient that is unset or ~0 starts at ``value``; otherwise it is scaled by ``factor``."""
    if params.get("value") is not None and params.get("factor") is None:
        return float(params["value"])
    if not cur or abs(cur) <= unset:
        return float(params.get("value", defaults["value"]))
    return cur * factor(params, defaults["factor"], below_one=below_one)
