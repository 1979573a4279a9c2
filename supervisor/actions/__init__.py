"""Every action the supervisor can take, one spec each, and the one registry everything else reads.

``ACTIONS`` maps action ids to their :class:`~supervisor.actions.base.ActionSpec`; ``get(name)`` looks one
up with a clear error; ``apply(applier, action)`` carries out a verdict's action through a framework's
applier and returns the entry the trial reports back (``ok``, ``before``/``after``/``changed``, or the
error). Nothing here knows RLlib: appliers live with their framework (``actors/appliers/``,
``supervisor/integrations/``).
"""

from __future__ import annotations

from typing import Any, Mapping

from supervisor.actions.base import HPARAMS, VERIFIABLE, ActionSpec, Applier, changed
from supervisor.actions.boost_entropy import BoostEntropy
from supervisor.actions.control import Alert, RestartTrial, StopTrial
from supervisor.actions.extend_exploration import ExtendExploration
from supervisor.actions.increase_lr import IncreaseLR
from supervisor.actions.quarantine import Quarantine
from supervisor.actions.raise_alpha import RaiseAlpha
from supervisor.actions.raise_kl_coeff import RaiseKLCoeff
from supervisor.actions.raise_vf_clip import RaiseVFClip
from supervisor.actions.reduce_entropy import ReduceEntropy
from supervisor.actions.reduce_lr import ReduceLR
from supervisor.actions.rollback import Rollback
from supervisor.actions.set_target_entropy import SetTargetEntropy
from supervisor.actions.slow_target_updates import SlowTargetUpdates
from supervisor.actions.sync_weights import SyncWeights
from supervisor.actions.tighten_grad_clip import TightenGradClip
from supervisor.modules import DEFAULT, packed

ACTIONS: dict[str, ActionSpec] = {spec.name: spec for spec in (
    Alert(), ReduceLR(), IncreaseLR(), BoostEntropy(), ReduceEntropy(), RaiseKLCoeff(), TightenGradClip(),
    RaiseVFClip(), RaiseAlpha(), SetTargetEntropy(), ExtendExploration(), SlowTargetUpdates(), SyncWeights(),
    Rollback(), Quarantine(), RestartTrial(), StopTrial(),
)}
NAMES: tuple[str, ...] = tuple(ACTIONS)


def get(name: str) -> ActionSpec:
    try:
        return ACTIONS[name]
    except KeyError:
        raise ValueError(f"unknown action {name!r} (known: {', '.join(NAMES)})") from None


def default_params(overrides: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, dict]:
    """Each action's parameters: its defaults with the experiment file's ``action_params`` on top."""
    overrides = overrides or {}
    return {name: {**spec.defaults, **overrides.get(name, {})} for name, spec in ACTIONS.items()}


def apply(applier: Applier, action: Mapping[str, Any]) -> dict:
    """Apply one verdict action; never raises (an action that cannot apply is reported, not fatal).

    ``action["module"]`` names the module it is for (a multi-agent trial's policy): only that module
    changes. None is the whole trial: a hyperparameter action then changes every trained module, each
    from its own value (``before``/``after`` per module: ``{"modules": {...}}``)."""
    name, params = action["action"], action.get("params") or {}
    module = action.get("module")
    entry: dict[str, Any] = {"id": action.get("id"), "action": name, "ok": True, "module": module}
    reason = action.get("reason") or ""
    try:
        spec = get(name)
        several = applier.modules() if hasattr(applier, "modules") else [DEFAULT]
        if module is not None and hasattr(applier, "for_module"):
            entry.update(spec.apply(applier.for_module(module), params, reason))
        elif module is None and spec.per_module and several != [DEFAULT] and hasattr(applier, "for_module"):
            done = {m: spec.apply(applier.for_module(m), params, reason) for m in several}
            entry.update(before=packed({m: d["before"] for m, d in done.items()}),
                         after=packed({m: d["after"] for m, d in done.items()}),
                         changed={m: d["changed"] for m, d in done.items() if d["changed"]})
        else:
            entry.update(spec.apply(applier, params, reason))
    except Exception as e:
        entry.update(ok=False, error=f"{e.__class__.__name__}: {e}")
    return entry


__all__ = ["ACTIONS", "NAMES", "HPARAMS", "VERIFIABLE", "ActionSpec", "Applier", "apply", "changed", "default_params", "get"]
