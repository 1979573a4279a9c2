"""Test-only helpers on a live RLlib algorithm: one hyperparameter at a time, one action by name,
the optimizer's step counts (whether a rollback restored the optimizer state too)."""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional

from ray import cloudpickle

from actors import compat
from actors.appliers.rllib import RLlibApplier, set_hparams
from actors.appliers.rllib.remote import foreach_learner, to_float
from supervisor import actions

# shipped to remote learners: by value, since tests/ is not importable in Ray's workers
cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: The actions executed on the algorithm itself (the others -- ``alert``, ``restart_trial``,
#: ``stop_trial`` -- steer the trial: the callback and Tune carry them out).
ACTIONS = tuple(name for name, spec in actions.ACTIONS.items() if spec.effect is None and name != "alert")


def set_lr(algo, lr: float, module_id: Optional[str] = None) -> Dict[str, Optional[float]]:
    """Fixed learning rate from now on (replaces any lr schedule)."""
    return set_hparams(algo, {"lr": lr}, module_id)


def set_entropy_coeff(algo, value: float, module_id: Optional[str] = None) -> Dict[str, Optional[float]]:
    """Fixed entropy coefficient from now on (replaces any schedule)."""
    return set_hparams(algo, {"entropy_coeff": value}, module_id)


def set_kl_coeff(algo, value: float, module_id: Optional[str] = None) -> Dict[str, Optional[float]]:
    """Set PPO's current KL coefficient. PPO keeps adapting it after every
    update (x1.5 if KL > 2*kl_target, x0.5 if KL < kl_target/2), so this sets
    the starting point, not a pin. A value > 0 also turns ``use_kl_loss`` on."""
    return set_hparams(algo, {"kl_coeff": value}, module_id)


def set_grad_clip(algo, value: Optional[float], module_id: Optional[str] = None) -> Dict[str, Optional[float]]:
    """Clip gradients at ``value`` (by ``config.grad_clip_by``, RLlib's default
    "global_norm") from the next update on; ``None`` turns clipping off."""
    return set_hparams(algo, {"grad_clip": value}, module_id)


def apply_action(algo, action: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Execute one learner action (see :mod:`supervisor.actions` for what each does and its
    parameters) on the live algorithm, through :class:`actors.appliers.RLlibApplier`.

    ``rollback`` takes ``path`` (or ``checkpoint``) and an optional ``hparams`` dict; see :func:`rollback`.
    Returns ``{"action", "params", "before", "after", "changed"}`` (plus the rollback details for
    ``rollback``). Unknown action, or one that is not executed on the algorithm -> ``ValueError``.
    """
    params = dict(params or {})
    spec = actions.get(action)
    if action not in ACTIONS:
        raise ValueError(f"action {action!r} is not executed on the algorithm (handled by the supervisor/Tune side)")
    if action == "rollback" and "checkpoint" not in params:
        params = {**params, "checkpoint": params.get("path")}
    out = spec.apply(RLlibApplier(algo), params)
    out.update(action=action, params=params)
    return out


def optimizer_steps(algo) -> Dict[str, int]:
    """``{optimizer_name: step count}`` on the first learner (Adam's ``step``);
    shows whether a rollback also restored the optimizer state."""
    return foreach_learner(algo, _learner_optimizer_steps)[0]


def _learner_optimizer_steps(learner) -> Dict[str, int]:
    out = {}
    for name, opt in compat.named_optimizers(learner).items():
        steps = [to_float(st.get("step")) for st in opt.state_dict().get("state", {}).values()]
        steps = [x for x in steps if x is not None]
        out[name] = int(max(steps)) if steps else 0
    return out
