"""Hyperparameters on a live RLlib algorithm: read them where each learner keeps them, set them so they stick.

The actions that change a hyperparameter (``reduce_lr``, ``increase_lr``, ``boost_entropy``,
``reduce_entropy``, ``raise_kl_coeff``, ``tighten_grad_clip``, ``raise_vf_clip``,
``slow_target_updates``, ``raise_alpha``, ``set_target_entropy``; DQN's ``extend_exploration`` through
``exploration.py``) end here. RLlib 2.60 internals relied on (checked against the installed source):

* ``Learner._optimizer_lr_schedules[optimizer] -> Scheduler``; read by
  ``Learner.after_gradient_based_update`` after every update, which resets the
  optimizer's ``param_groups[*]["lr"]`` (so setting param_groups alone does
  not stick). ``Learner.get_optimizers_for_module(module_id)``,
  ``Learner._set_optimizer_lr``.
* ``PPOLearner.entropy_coeff_schedulers_per_module[module_id] -> Scheduler``
  (read in ``PPOTorchLearner.compute_loss_for_module``).
* ``PPOLearner.curr_kl_coeffs_per_module[module_id]`` (torch tensor, adapted
  x1.5 / x0.5 after every update by ``_update_module_kl_coeff``); only used
  when ``config.use_kl_loss`` is True.
* ``learner.config`` is an unfrozen copy of the algorithm config; gradient
  clipping is read on every update in
  ``Learner.postprocess_gradients -> postprocess_gradients_for_module`` as
  ``self.config.get_config_for_module(module_id).grad_clip`` (and
  ``grad_clip_by``), so setting ``learner.config.grad_clip`` (plus any cached
  per-module override config in ``learner.config._per_module_overrides``)
  takes effect from the next update.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

from supervisor import actions as _actions
from supervisor import algorithms
from supervisor.modules import DEFAULT, packed

from actors import compat
from actors.algos import name_of
from actors.appliers.rllib.exploration import exploration_epsilon, set_exploration
from actors.appliers.rllib.remote import (driver_config_set, foreach_learner, learner_config_set, main_module_id,
                                          module_ids, to_float)

HPARAM_KEYS = _actions.HPARAMS

_PPO_KEYS = ("lr", "entropy_coeff", "kl_coeff", "grad_clip", "vf_clip_param")
_CONFIG_KEYS = ("vf_clip_param", "tau", "target_network_update_freq")
#: Not re-applied after a rollback: SAC's alpha is learned state that the checkpoint restores, and DQN's
#: epsilon is the env runners' schedule, which a learner rollback does not touch.
NOT_REAPPLIED = ("alpha", "epsilon")


# ---------------------------------------------------------------------------
# functions shipped to the learners (must be picklable: module level)
# ---------------------------------------------------------------------------


def _read_hparams(learner, module_id=None, keys=None) -> Dict[str, Optional[float]]:
    """The learner-side hyperparameters in ``keys`` (default: PPO's), by where each RLlib learner keeps
    them: lr in the optimizers' schedulers, entropy/KL coefficients in per-module schedulers/tensors
    (PPO, APPO, IMPALA), clips and target-network settings in the per-module config, SAC's
    temperature in ``curr_log_alpha`` and its target entropy in ``target_entropy``."""
    mid = module_id or main_module_id(learner)
    keys = tuple(keys or _PPO_KEYS)
    cfg = learner.config.get_config_for_module(mid)
    out: Dict[str, Optional[float]] = {}
    for k in keys:
        if k == "lr":
            out[k] = None
            for _name, opt in learner.get_optimizers_for_module(mid):
                out[k] = _optimizer_lr(learner, opt)
                break
        elif k == "entropy_coeff":
            scheds = getattr(learner, "entropy_coeff_schedulers_per_module", None)
            out[k] = to_float(scheds[mid].get_current_value()) if scheds is not None else None
        elif k == "kl_coeff":
            coeffs = getattr(learner, "curr_kl_coeffs_per_module", None)
            out[k] = to_float(coeffs[mid]) if coeffs is not None else None
        elif k == "grad_clip":
            out[k] = to_float(cfg.grad_clip) if cfg.grad_clip else None
        elif k == "alpha":
            out[k] = to_float(learner.curr_log_alpha[mid].detach().exp()) if hasattr(learner, "curr_log_alpha") else None
        elif k == "target_entropy":
            te = getattr(learner, "target_entropy", None)
            out[k] = to_float(te[mid]) if te is not None else None
        elif k in _CONFIG_KEYS:
            out[k] = to_float(getattr(cfg, k, None))
    return out


def _module_ids(learner) -> list:
    return list(learner.module.keys())


def _trained_modules(learner) -> list:
    return [m for m in learner.module.keys() if learner.should_module_be_updated(m)]


def _optimizer_lr(learner, opt) -> Optional[float]:
    sched = compat.lr_scheduler(learner, opt)
    lr = to_float(sched.get_current_value()) if sched is not None else None
    return lr if lr is not None else to_float(compat.optimizer_lr(learner, opt))


def _apply_hparams(learner, values: Dict[str, Any], module_id=None) -> None:
    from ray.rllib.utils.schedules.scheduler import Scheduler

    for mid in module_ids(learner, module_id):
        if "lr" in values:
            lr = float(values["lr"])
            opts = list(learner.get_optimizers_for_module(mid))
            # "lr" is the first optimizer's; the others (SAC: qf, qf_twin, policy, alpha) keep their ratio to it.
            ref = _optimizer_lr(learner, opts[0][1]) if opts else None
            for _name, opt in opts:
                cur = _optimizer_lr(learner, opt)
                new = lr if not ref or cur is None or opt is opts[0][1] else cur * lr / ref
                compat.replace_lr_scheduler(learner, opt, Scheduler(
                    fixed_value_or_schedule=new,
                    framework=learner.framework,
                    device=compat.learner_device(learner),
                ))
                # The scheduler only rewrites the lr after the next update;
                # set it now so that the next update already uses it.
                compat.set_optimizer_lr(learner, opt, new)
            if len(opts) == 1:
                learner_config_set(learner, mid, "lr", lr)
        if "entropy_coeff" in values:
            if not hasattr(learner, "entropy_coeff_schedulers_per_module"):
                raise TypeError(f"{type(learner).__name__} has no entropy coefficient")
            v = float(values["entropy_coeff"])
            learner.entropy_coeff_schedulers_per_module[mid] = Scheduler(
                fixed_value_or_schedule=v,
                framework=learner.framework,
                device=compat.learner_device(learner),
            )
            learner_config_set(learner, mid, "entropy_coeff", v)
        if "kl_coeff" in values:
            if not hasattr(learner, "curr_kl_coeffs_per_module"):
                raise TypeError(f"{type(learner).__name__} has no KL coefficient")
            v = float(values["kl_coeff"])
            learner.curr_kl_coeffs_per_module[mid].data.fill_(v)
            learner_config_set(learner, mid, "kl_coeff", v)
            if v > 0 and not learner.config.get_config_for_module(mid).use_kl_loss:
                # A KL coefficient only acts through the KL loss term.
                learner_config_set(learner, mid, "use_kl_loss", True)
        if "grad_clip" in values:
            v = values["grad_clip"]
            learner_config_set(learner, mid, "grad_clip", None if v is None else float(v))
        if "vf_clip_param" in values:
            # Read from the (per-module) learner config in every loss computation, like grad_clip.
            if not hasattr(learner.config.get_config_for_module(mid), "vf_clip_param"):
                raise TypeError(f"{type(learner).__name__} clips no value loss")
            learner_config_set(learner, mid, "vf_clip_param", float(values["vf_clip_param"]))
        for k in ("tau", "target_network_update_freq"):
            # Read from the per-module config after every update (DQNLearner / APPOLearner
            # ``after_gradient_based_update``).
            if k in values:
                if not hasattr(learner.config.get_config_for_module(mid), k):
                    raise TypeError(f"{type(learner).__name__} has no target network setting {k}")
                v = values[k]
                learner_config_set(learner, mid, k, int(v) if k == "target_network_update_freq" else float(v))
        if "alpha" in values:
            if not hasattr(learner, "curr_log_alpha"):
                raise TypeError(f"{type(learner).__name__} has no entropy temperature")
            # The temperature stays trainable (its own optimizer keeps adapting it): this sets where it is now.
            learner.curr_log_alpha[mid].data.fill_(math.log(float(values["alpha"])))
        if "target_entropy" in values:
            if not hasattr(learner, "target_entropy"):
                raise TypeError(f"{type(learner).__name__} has no target entropy")
            learner.target_entropy[mid].data.fill_(float(values["target_entropy"]))
            learner_config_set(learner, mid, "target_entropy", float(values["target_entropy"]))


# ---------------------------------------------------------------------------
# on the driver
# ---------------------------------------------------------------------------


def _algo_keys(algo) -> tuple:
    """The hyperparameters this algorithm's learner exposes (``supervisor.algorithms``); PPO's when unknown."""
    spec = algorithms.get(name_of(algo))
    return spec.hparams if spec is not None else _PPO_KEYS


def current_hparams(algo, module_id: Optional[str] = None) -> Dict[str, Any]:
    """Hyperparameters in effect on the (first) learner: the ones the algorithm has (``supervisor.algorithms``);
    DQN's ``epsilon`` is read off the env runners. For ``module_id``; None: the only module's, or, with several
    modules, each module's as ``{"modules": {module_id: {...}}}`` (``supervisor.modules``)."""
    keys = _algo_keys(algo)
    learner_keys = tuple(k for k in keys if k != "epsilon")
    if module_id is None:
        ids = foreach_learner(algo, _module_ids)[0]
        if len(ids) > 1:
            return packed({m: current_hparams(algo, m) for m in ids})
    out = foreach_learner(algo, _read_hparams, module_id=module_id, keys=learner_keys)[0]
    if "epsilon" in keys:
        out["epsilon"] = exploration_epsilon(algo)
    return {k: out.get(k) for k in keys}


def learner_hparams(algo, module_id: Optional[str] = None) -> list:
    """``current_hparams`` of one module as each learner has it (``num_learners >= 2``: one entry per learner,
    in the learner group's order): what verifies that a change reached every learner."""
    keys = tuple(k for k in _algo_keys(algo) if k != "epsilon")
    return foreach_learner(algo, _read_hparams, module_id=module_id, keys=keys)


def modules_of(algo) -> list:
    """The algorithm's RLModules (its learners')."""
    return foreach_learner(algo, _module_ids)[0]


def trained_modules(algo) -> list:
    """The modules its learners update (RLlib's ``policies_to_train``)."""
    return foreach_learner(algo, _trained_modules)[0]


def set_hparams(algo, values: Dict[str, Any], module_id: Optional[str] = None) -> Dict[str, Any]:
    """Apply several hyperparameters (of :data:`HPARAM_KEYS`, those the algorithm has) in one call
    to every learner (``epsilon``: every env runner, optionally with ``epsilon_timesteps``), for
    ``module_id`` (None: every module); ``{"modules": {module_id: {...}}}`` sets each module its own.
    Returns the hparams now in effect (as ``current_hparams``)."""
    per = values.get("modules") if isinstance(values, dict) else None
    if isinstance(per, dict):
        flat = {k: v for k, v in values.items() if k != "modules"}
        if flat:  # a flat part of a per-module mapping is the default module's (supervisor.modules)
            per = {**per, DEFAULT: {**flat, **per.get(DEFAULT, {})}}
        for m, hp in per.items():
            if hp and (module_id is None or m == module_id):
                set_hparams(algo, hp, m)
        return current_hparams(algo, module_id)
    values = dict(values)
    eps_steps = values.pop("epsilon_timesteps", None)
    unknown = set(values) - set(HPARAM_KEYS)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; known: {list(HPARAM_KEYS)}")
    keys = _algo_keys(algo)
    missing = sorted(k for k in values if k not in keys)
    if missing:
        raise ValueError(f"{name_of(algo) or type(algo).__name__} has no {', '.join(missing)} "
                         f"(it has {', '.join(keys)})")
    clean: Dict[str, Any] = {}
    if "lr" in values:
        clean["lr"] = _validate("lr", values["lr"], allow_zero=False)
    if "entropy_coeff" in values:
        clean["entropy_coeff"] = _validate("entropy_coeff", values["entropy_coeff"])
    if "kl_coeff" in values:
        clean["kl_coeff"] = _validate("kl_coeff", values["kl_coeff"])
    if "grad_clip" in values:
        clean["grad_clip"] = _validate("grad_clip", values["grad_clip"], allow_none=True, allow_zero=False)
    if "vf_clip_param" in values:
        clean["vf_clip_param"] = _validate("vf_clip_param", values["vf_clip_param"], allow_zero=False)
    if "tau" in values:
        clean["tau"] = _validate("tau", values["tau"], allow_zero=False)
        if clean["tau"] > 1:
            raise ValueError(f"tau must be <= 1, got {values['tau']!r}")
    if "target_network_update_freq" in values:
        clean["target_network_update_freq"] = _validate("target_network_update_freq",
                                                        values["target_network_update_freq"])
    if "alpha" in values:
        clean["alpha"] = _validate("alpha", values["alpha"], allow_zero=False)
    if "target_entropy" in values:
        v = float(values["target_entropy"])
        if not math.isfinite(v):
            raise ValueError(f"target_entropy must be finite, got {values['target_entropy']!r}")
        clean["target_entropy"] = v
    eps = None
    if "epsilon" in values:
        eps = _validate("epsilon", values["epsilon"])
        if eps > 1:
            raise ValueError(f"epsilon must be <= 1, got {values['epsilon']!r}")
    if clean:
        foreach_learner(algo, _apply_hparams, values=clean, module_id=module_id)
        # one module of several: its own override entry, not the config the others share
        own = module_id if module_id is not None and len(modules_of(algo)) > 1 else None
        for k, v in clean.items():
            if k == "grad_clip" or (k not in NOT_REAPPLIED and getattr(algo.config, k, None) is not None):
                driver_config_set(algo, k, v, own)
        if "kl_coeff" in clean and clean["kl_coeff"] > 0:
            driver_config_set(algo, "use_kl_loss", True, own)
    if eps is not None:
        set_exploration(algo, eps, eps_steps)
    return current_hparams(algo, module_id)


def _validate(name: str, value, *, allow_none: bool = False, allow_zero: bool = True):
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} must be a number, got None")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'> 0' if not allow_zero else '>= 0'}, got {value!r}")
    return v
