"""Interventions on a live RLlib PPO ``Algorithm`` (new API stack, torch).

Everything here runs in the process that owns the ``Algorithm`` (the trial
driver / Tune trainable), between two ``algo.train()`` calls. It works both
with a local learner (``num_learners=0``) and with remote learner actors
(``num_learners>=1``): every change is shipped through
``algo.learner_group.foreach_learner(fn)``, which calls ``fn(learner)``
directly on the local learner, or runs it inside each learner actor.

Public API
----------
``current_hparams(algo)``          -> {"lr", "entropy_coeff", "kl_coeff", "grad_clip"}
``set_lr / set_entropy_coeff / set_kl_coeff / set_grad_clip(algo, value)``
``apply_action(algo, action, params)`` -> {"action", "params", "before", "after", "changed", ...}
``save_checkpoint(algo, path)``    -> path (``algo.save_to_path``)
``rollback(algo, path, hparams=None)`` -> dict (restores learner weights +
                                     optimizer state, pushes the weights to
                                     every env runner, re-applies hparams)
``module_weights(algo)``, ``env_runner_weights(algo)``, ``weights_finite(algo)``

RLlib 2.60 internals relied on (all checked against the installed source):

* ``LearnerGroup.foreach_learner(fn)``: local -> ``fn(learner)`` in-process,
  remote -> ``FaultTolerantActorManager.foreach_actor``; returns
  ``RemoteCallResults`` of ``CallResult`` (``.ok``, ``.get()``).
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
* ``Learner._weights_seq_no`` and ``SingleAgentEnvRunner._weights_seq_no``:
  an env runner ignores a weight push unless its seq no is 0 or older than the
  pushed one.
* ``EnvRunnerGroup.sync_weights(from_worker_or_learner_group=..., inference_only=True)``
  (remote pushes are async and dropped when another ``set_state`` request is
  still in flight, hence the explicit drain/verify/fallback in ``rollback``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from supervisor import actions as _actions
from supervisor.actions.base import changed

__all__ = [
    "HPARAM_KEYS",
    "ACTIONS",
    "current_hparams",
    "set_lr",
    "set_entropy_coeff",
    "set_kl_coeff",
    "set_grad_clip",
    "set_hparams",
    "apply_action",
    "save_checkpoint",
    "checkpoint_hparams",
    "rollback",
    "module_weights",
    "env_runner_weights",
    "optimizer_steps",
    "weights_finite",
    "rollback_reached_runners",
]

HPARAM_KEYS = _actions.HPARAMS

#: The actions executed on the algorithm itself (the others -- ``alert``, ``restart_trial``,
#: ``stop_trial`` -- steer the trial: the callback and Tune carry them out).
ACTIONS = tuple(name for name, spec in _actions.ACTIONS.items() if spec.effect is None and name != "alert")

_HPARAMS_SIDECAR = "supervisor_hparams.json"

_PPO_KEYS = ("lr", "entropy_coeff", "kl_coeff", "grad_clip", "vf_clip_param")
_CONFIG_KEYS = ("vf_clip_param", "tau", "target_network_update_freq")
#: Not re-applied after a rollback: SAC's alpha is learned state that the checkpoint restores, and DQN's
#: epsilon is the env runners' schedule, which a learner rollback does not touch.
_NOT_REAPPLIED = ("alpha", "epsilon")
#: Learned state outside the learner's module and optimizer state (``get_state`` leaves it out): restored from
#: the checkpoint's hparams sidecar on rollback.
_LEARNED = ("alpha",)


# ---------------------------------------------------------------------------
# plumbing
# ---------------------------------------------------------------------------


_ERR_TAG = "__supervisor_intervention_error__"


def _guarded(fn: Callable, kwargs: Dict[str, Any], target):
    """Runs on the learner / env runner. Never raise there: RLlib's actor
    manager takes an actor that raised out of service (marks it unhealthy),
    so an exception is returned as a tagged tuple and re-raised by the caller."""
    try:
        return fn(target, **kwargs)
    except Exception as e:  # noqa: BLE001
        import traceback

        return (_ERR_TAG, type(e).__name__, str(e), traceback.format_exc())


def _unwrap(values: List[Any], where: str) -> List[Any]:
    for v in values:
        if isinstance(v, tuple) and len(v) == 4 and v[0] == _ERR_TAG:
            raise RuntimeError(f"{where}: {v[1]}: {v[2]}\n{v[3]}")
    return values


def _foreach_learner(algo, fn: Callable, **kwargs) -> List[Any]:
    """Run ``fn(learner, **kwargs)`` on every learner; raise on any error."""
    _ensure_pickle_by_value()
    results = algo.learner_group.foreach_learner(functools.partial(_guarded, fn, kwargs))
    out = []
    for r in results:
        if not r.ok:
            err = r.get()
            if isinstance(err, BaseException):
                raise err
            raise RuntimeError(f"learner call failed: {err!r}")
        out.append(r.get())
    if not out:
        raise RuntimeError("no healthy learner answered")
    return _unwrap(out, f"learner call {getattr(fn, '__name__', fn)}")


def _foreach_env_runner(group, fn: Callable, *, local: bool = True, remote_ids=None, timeout_s=None, **kwargs) -> List[Any]:
    """Run ``fn(env_runner, **kwargs)`` on the env runners of ``group``
    (local first, if requested and present); raise on any error."""
    _ensure_pickle_by_value()
    out = group.foreach_env_runner(
        functools.partial(_guarded, fn, kwargs),
        local_env_runner=local,
        remote_worker_ids=remote_ids,
        timeout_seconds=timeout_s,
    )
    return _unwrap(list(out), f"env runner call {getattr(fn, '__name__', fn)}")


_PICKLE_BY_VALUE_DONE = False


def _ensure_pickle_by_value() -> None:
    """Functions shipped to learner / env runner actors are pickled by
    reference by default, which needs this package importable in every Ray
    worker. Ship this module's functions by value instead."""
    global _PICKLE_BY_VALUE_DONE
    if _PICKLE_BY_VALUE_DONE:
        return
    import sys

    from ray import cloudpickle

    mod = sys.modules.get(__name__)
    if mod is not None and __name__ != "__main__":
        try:
            cloudpickle.register_pickle_by_value(mod)
        except Exception:  # pragma: no cover - already registered or odd import
            pass
    _PICKLE_BY_VALUE_DONE = True


def _module_ids(learner, module_id: Optional[str] = None) -> List[str]:
    ids = list(learner.module.keys())
    if module_id is not None:
        if module_id not in ids:
            raise KeyError(f"unknown module {module_id!r}; learner has {ids}")
        return [module_id]
    return ids


def _main_module_id(learner) -> str:
    from ray.rllib.core import DEFAULT_MODULE_ID

    ids = list(learner.module.keys())
    return DEFAULT_MODULE_ID if DEFAULT_MODULE_ID in ids else ids[0]


def _to_float(v) -> Optional[float]:
    if v is None:
        return None
    try:
        return float(v.item()) if hasattr(v, "item") else float(v)
    except (TypeError, ValueError):
        return None


def _config_set(cfg, key: str, value) -> None:
    """Set ``cfg.key = value`` even if the AlgorithmConfig is frozen."""
    frozen = getattr(cfg, "_is_frozen", False)
    if frozen:
        cfg._is_frozen = False  # AlgorithmConfig.__setattr__ allows this key
    try:
        setattr(cfg, key, value)
    finally:
        if frozen:
            cfg._is_frozen = True


def _learner_config_set(learner, module_id: str, key: str, value) -> None:
    """Set a config key on the learner's config and on the cached per-module
    override config (what ``get_config_for_module`` returns), if any."""
    _config_set(learner.config, key, value)
    per_module = getattr(learner.config, "_per_module_overrides", None) or {}
    if module_id in per_module:
        _config_set(per_module[module_id], key, value)


def _driver_config_set(algo, key: str, value) -> None:
    """Mirror a change into ``algo.config`` (frozen) so that checkpoints and
    rebuilt learners see it. Best effort."""
    try:
        _config_set(algo.config, key, value)
    except Exception:  # pragma: no cover - never fail an intervention on this
        pass


def _validate(name: str, value, *, allow_none: bool = False, allow_zero: bool = True):
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} must be a number, got None")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'> 0' if not allow_zero else '>= 0'}, got {value!r}")
    return v


# ---------------------------------------------------------------------------
# functions shipped to the learners (must be picklable: module level)
# ---------------------------------------------------------------------------


def _read_hparams(learner, module_id=None, keys=None) -> Dict[str, Optional[float]]:
    """The learner-side hyperparameters in ``keys`` (default: PPO's), by where each RLlib learner keeps
    them: lr in the optimizers' schedulers, entropy/KL coefficients in per-module schedulers/tensors
    (PPO, APPO, IMPALA), clips and target-network settings in the per-module config, SAC's
    temperature in ``curr_log_alpha`` and its target entropy in ``target_entropy``."""
    mid = module_id or _main_module_id(learner)
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
            out[k] = _to_float(scheds[mid].get_current_value()) if scheds is not None else None
        elif k == "kl_coeff":
            coeffs = getattr(learner, "curr_kl_coeffs_per_module", None)
            out[k] = _to_float(coeffs[mid]) if coeffs is not None else None
        elif k == "grad_clip":
            out[k] = _to_float(cfg.grad_clip) if cfg.grad_clip else None
        elif k == "alpha":
            out[k] = _to_float(learner.curr_log_alpha[mid].detach().exp()) if hasattr(learner, "curr_log_alpha") else None
        elif k == "target_entropy":
            te = getattr(learner, "target_entropy", None)
            out[k] = _to_float(te[mid]) if te is not None else None
        elif k in _CONFIG_KEYS:
            out[k] = _to_float(getattr(cfg, k, None))
    return out


def _optimizer_lr(learner, opt) -> Optional[float]:
    sched = learner._optimizer_lr_schedules.get(opt)
    lr = _to_float(sched.get_current_value()) if sched is not None else None
    return lr if lr is not None else _to_float(learner._get_optimizer_lr(opt))


def _apply_hparams(learner, values: Dict[str, Any], module_id=None) -> None:
    from ray.rllib.utils.schedules.scheduler import Scheduler

    for mid in _module_ids(learner, module_id):
        if "lr" in values:
            lr = float(values["lr"])
            opts = list(learner.get_optimizers_for_module(mid))
            # "lr" is the first optimizer's; the others (SAC: qf, qf_twin, policy, alpha) keep their ratio to it.
            ref = _optimizer_lr(learner, opts[0][1]) if opts else None
            for _name, opt in opts:
                cur = _optimizer_lr(learner, opt)
                new = lr if not ref or cur is None or opt is opts[0][1] else cur * lr / ref
                learner._optimizer_lr_schedules[opt] = Scheduler(
                    fixed_value_or_schedule=new,
                    framework=learner.framework,
                    device=learner._device,
                )
                # The scheduler only rewrites the lr after the next update;
                # set it now so that the next update already uses it.
                learner._set_optimizer_lr(opt, new)
            if len(opts) == 1:
                _learner_config_set(learner, mid, "lr", lr)
        if "entropy_coeff" in values:
            if not hasattr(learner, "entropy_coeff_schedulers_per_module"):
                raise TypeError(f"{type(learner).__name__} has no entropy coefficient")
            v = float(values["entropy_coeff"])
            learner.entropy_coeff_schedulers_per_module[mid] = Scheduler(
                fixed_value_or_schedule=v,
                framework=learner.framework,
                device=learner._device,
            )
            _learner_config_set(learner, mid, "entropy_coeff", v)
        if "kl_coeff" in values:
            if not hasattr(learner, "curr_kl_coeffs_per_module"):
                raise TypeError(f"{type(learner).__name__} has no KL coefficient")
            v = float(values["kl_coeff"])
            learner.curr_kl_coeffs_per_module[mid].data.fill_(v)
            _learner_config_set(learner, mid, "kl_coeff", v)
            if v > 0 and not learner.config.get_config_for_module(mid).use_kl_loss:
                # A KL coefficient only acts through the KL loss term.
                _learner_config_set(learner, mid, "use_kl_loss", True)
        if "grad_clip" in values:
            v = values["grad_clip"]
            _learner_config_set(learner, mid, "grad_clip", None if v is None else float(v))
        if "vf_clip_param" in values:
            # Read from the (per-module) learner config in every loss computation, like grad_clip.
            if not hasattr(learner.config.get_config_for_module(mid), "vf_clip_param"):
                raise TypeError(f"{type(learner).__name__} clips no value loss")
            _learner_config_set(learner, mid, "vf_clip_param", float(values["vf_clip_param"]))
        for k in ("tau", "target_network_update_freq"):
            # Read from the per-module config after every update (DQNLearner / APPOLearner
            # ``after_gradient_based_update``).
            if k in values:
                if not hasattr(learner.config.get_config_for_module(mid), k):
                    raise TypeError(f"{type(learner).__name__} has no target network setting {k}")
                v = values[k]
                _learner_config_set(learner, mid, k, int(v) if k == "target_network_update_freq" else float(v))
        if "alpha" in values:
            if not hasattr(learner, "curr_log_alpha"):
                raise TypeError(f"{type(learner).__name__} has no entropy temperature")
            # The temperature stays trainable (its own optimizer keeps adapting it): this sets where it is now.
            learner.curr_log_alpha[mid].data.fill_(math.log(float(values["alpha"])))
        if "target_entropy" in values:
            if not hasattr(learner, "target_entropy"):
                raise TypeError(f"{type(learner).__name__} has no target entropy")
            learner.target_entropy[mid].data.fill_(float(values["target_entropy"]))
            _learner_config_set(learner, mid, "target_entropy", float(values["target_entropy"]))


def _learner_seq_no(learner) -> int:
    return int(learner._weights_seq_no)


def _set_learner_seq_no(learner, seq_no: int) -> int:
    learner._weights_seq_no = int(seq_no)
    return learner._weights_seq_no


def _learner_weights(learner) -> Dict[str, np.ndarray]:
    out = {}
    for mid in learner.module.keys():
        for k, v in learner.module[mid].state_dict().items():
            out[f"{mid}/{k}"] = v.detach().cpu().numpy().copy()
    return out


def _learner_optimizer_steps(learner) -> Dict[str, int]:
    out = {}
    for name, opt in learner._named_optimizers.items():
        steps = [_to_float(st.get("step")) for st in opt.state_dict().get("state", {}).values()]
        steps = [x for x in steps if x is not None]
        out[name] = int(max(steps)) if steps else 0
    return out


def _env_runner_weights(env_runner) -> Dict[str, np.ndarray]:
    module = getattr(env_runner, "module", None)
    if module is None:
        return {}
    out = {}
    # SingleAgentEnvRunner holds one RLModule, MultiAgentEnvRunner a MultiRLModule.
    if hasattr(module, "_rl_modules"):
        items = [(mid, m) for mid, m in module._rl_modules.items()]
    else:
        from ray.rllib.core import DEFAULT_MODULE_ID

        items = [(DEFAULT_MODULE_ID, module)]
    for mid, m in items:
        for k, v in m.state_dict().items():
            out[f"{mid}/{k}"] = v.detach().cpu().numpy().copy()
    return out


def _env_runner_seq_no(env_runner) -> int:
    return int(getattr(env_runner, "_weights_seq_no", 0))


def _reset_env_runner_seq_no(env_runner) -> int:
    env_runner._weights_seq_no = 0
    return 0


def _force_env_runner_weights(env_runner, state, seq_no: int) -> int:
    env_runner.set_state(state)  # weights_seq_no 0 in state -> always applied
    env_runner._weights_seq_no = int(seq_no)
    return env_runner._weights_seq_no


# ---------------------------------------------------------------------------
# hyperparameters
# ---------------------------------------------------------------------------


def _algo_keys(algo) -> tuple:
    """The hyperparameters this algorithm's learner exposes (``supervisor.algorithms``); PPO's when unknown."""
    from actors.algos import name_of
    from supervisor import algorithms

    spec = algorithms.get(name_of(algo))
    return spec.hparams if spec is not None else _PPO_KEYS


def current_hparams(algo, module_id: Optional[str] = None) -> Dict[str, Optional[float]]:
    """Hyperparameters in effect on the (first) learner, for ``module_id``
    (default: ``default_policy`` or the first module): the ones the algorithm has
    (``supervisor.algorithms``); DQN's ``epsilon`` is read off the env runners."""
    keys = _algo_keys(algo)
    learner_keys = tuple(k for k in keys if k != "epsilon")
    out = _foreach_learner(algo, _read_hparams, module_id=module_id, keys=learner_keys)[0]
    if "epsilon" in keys:
        out["epsilon"] = exploration_epsilon(algo)
    return {k: out.get(k) for k in keys}


def set_hparams(algo, values: Dict[str, Any], module_id: Optional[str] = None) -> Dict[str, Optional[float]]:
    """Apply several hyperparameters (of :data:`HPARAM_KEYS`, those the algorithm has) in one call
    to every learner (``epsilon``: every env runner, optionally with ``epsilon_timesteps``);
    returns the hparams now in effect."""
    values = dict(values)
    eps_steps = values.pop("epsilon_timesteps", None)
    unknown = set(values) - set(HPARAM_KEYS)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; known: {list(HPARAM_KEYS)}")
    keys = _algo_keys(algo)
    missing = sorted(k for k in values if k not in keys)
    if missing:
        from actors.algos import name_of

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
        _foreach_learner(algo, _apply_hparams, values=clean, module_id=module_id)
        for k, v in clean.items():
            if k == "grad_clip" or (k not in _NOT_REAPPLIED and getattr(algo.config, k, None) is not None):
                _driver_config_set(algo, k, v)
        if "kl_coeff" in clean and clean["kl_coeff"] > 0:
            _driver_config_set(algo, "use_kl_loss", True)
    if eps is not None:
        set_exploration(algo, eps, eps_steps)
    return current_hparams(algo, module_id)


# ---------------------------------------------------------------------------
# DQN's exploration (epsilon-greedy, scheduled inside each env runner's RL module)
# ---------------------------------------------------------------------------

#: env steps over which a raised epsilon decays back to the schedule's final value, unless told.
EPSILON_TIMESTEPS = 10_000


def _runner_modules(env_runner) -> list:
    module = getattr(env_runner, "module", None)
    if module is None:
        return []
    return list(module._rl_modules.values()) if hasattr(module, "_rl_modules") else [module]


def _env_runner_epsilon(env_runner) -> Optional[float]:
    for m in _runner_modules(env_runner):
        sched = getattr(m, "epsilon_schedule", None)
        if sched is not None:
            return _to_float(sched.get_current_value())
    return None


def _set_env_runner_epsilon(env_runner, epsilon: float, timesteps: int, final: float, scale: int) -> float:
    from ray.rllib.utils.schedules.scheduler import Scheduler

    # The module is called with t = (this runner's lifetime steps) x (number of runners): start there.
    t_now = int(getattr(env_runner, "num_env_steps_sampled_lifetime", 0) or 0) * scale
    points = ([[0, epsilon]] if t_now > 0 else []) + [[t_now, epsilon], [t_now + int(timesteps), final]]
    for m in _runner_modules(env_runner):
        if getattr(m, "epsilon_schedule", None) is not None:
            m.epsilon_schedule = Scheduler(fixed_value_or_schedule=points, framework="torch")
            m.epsilon_schedule.update(t_now)
    return epsilon


def _final_epsilon(algo) -> float:
    eps = getattr(algo.config, "epsilon", None)
    if isinstance(eps, (list, tuple)) and eps:
        return float(eps[-1][-1])
    return float(eps) if isinstance(eps, (int, float)) else 0.05


def exploration_epsilon(algo) -> Optional[float]:
    """The current epsilon of the env runners that sample (mean), None when no module has one."""
    group = algo.env_runner_group
    vals = _foreach_env_runner(group, _env_runner_epsilon, local=group.num_remote_env_runners() == 0)
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return float(sum(vals) / len(vals)) if vals else None


def set_exploration(algo, epsilon: float, timesteps: Optional[int] = None) -> Optional[float]:
    """Epsilon ``epsilon`` now, decaying linearly to the configured final epsilon over ``timesteps`` env
    steps (default :data:`EPSILON_TIMESTEPS`), on every env runner (and the local one). The schedule is the
    module's own Python object, so weight syncs and rollbacks leave it alone."""
    group = algo.env_runner_group
    steps = int(timesteps or EPSILON_TIMESTEPS)
    if steps <= 0:
        raise ValueError(f"epsilon_timesteps must be > 0, got {timesteps!r}")
    _foreach_env_runner(group, _set_env_runner_epsilon, epsilon=float(epsilon), timesteps=steps,
                        final=min(_final_epsilon(algo), float(epsilon)),
                        scale=max(int(algo.config.num_env_runners or 1), 1))
    return exploration_epsilon(algo)


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


# ---------------------------------------------------------------------------
# actions
# ---------------------------------------------------------------------------


def apply_action(algo, action: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Execute one learner action (see :mod:`supervisor.actions` for what each does and its
    parameters) on the live algorithm, through :class:`actors.appliers.RLlibApplier`.

    ``rollback`` takes ``path`` (or ``checkpoint``) and an optional ``hparams`` dict; see :func:`rollback`.
    Returns ``{"action", "params", "before", "after", "changed"}`` (plus the rollback details for
    ``rollback``). Unknown action, or one that is not executed on the algorithm -> ``ValueError``.
    """
    from actors.appliers import RLlibApplier
    from supervisor import actions

    params = dict(params or {})
    spec = actions.get(action)
    if action not in ACTIONS:
        raise ValueError(f"action {action!r} is not executed on the algorithm (handled by the supervisor/Tune side)")
    if action == "rollback" and "checkpoint" not in params:
        params = {**params, "checkpoint": params.get("path")}
    out = spec.apply(RLlibApplier(algo), params)
    out.update(action=action, params=params)
    return out


# ---------------------------------------------------------------------------
# checkpoints and rollback
# ---------------------------------------------------------------------------


def save_checkpoint(algo, path: str) -> str:
    """``algo.save_to_path(path)`` (full algorithm state, usable by
    ``Algorithm.from_checkpoint`` and Tune too), plus a small sidecar file with
    the hparams in effect. Returns the checkpoint directory."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    out = algo.save_to_path(path)
    out = os.fspath(out) if out is not None else path
    try:
        hp = current_hparams(algo)
        with open(os.path.join(out, _HPARAMS_SIDECAR), "w") as f:
            json.dump({"hparams": hp, "iteration": getattr(algo, "iteration", None), "time": time.time()}, f)
    except Exception:  # the checkpoint itself is what matters
        pass
    return out


def checkpoint_hparams(path: str) -> Optional[Dict[str, Optional[float]]]:
    """The hparams that were in effect when ``save_checkpoint`` wrote ``path``."""
    try:
        with open(os.path.join(os.fspath(path), _HPARAMS_SIDECAR)) as f:
            return json.load(f)["hparams"]
    except (OSError, ValueError, KeyError):
        return None


def _push_weights_to_env_runners(algo, timeout_s: float) -> Dict[str, Any]:
    """Make every env runner (local and remote, and eval) sample with the
    learner's current weights; returns what it did and the seq nos seen."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

    info: Dict[str, Any] = {"fallback_push": False}
    learner_seq = max(_foreach_learner(algo, _learner_seq_no))
    groups = [("env_runner_group", algo.env_runner_group)]
    if getattr(algo, "eval_env_runner_group", None) is not None:
        groups.append(("eval_env_runner_group", algo.eval_env_runner_group))
    for name, group in groups:
        if group is None:
            continue
        # 1. Let the runners accept whatever seq no comes next.
        _foreach_env_runner(group, _reset_env_runner_seq_no, timeout_s=timeout_s)
        # 2. RLlib's own push. Remote pushes are async, and a new one is
        #    silently dropped while an earlier "set_state" (PPO's end-of-iteration
        #    sync) is still in flight; a non-zero timeout first drains those.
        group.sync_weights(
            from_worker_or_learner_group=algo.learner_group,
            inference_only=True,
            timeout_seconds=timeout_s,
        )
        # 3. Verify (calls to one actor run in order, so this runs after the push).
        seqs = _foreach_env_runner(group, _env_runner_seq_no, timeout_s=timeout_s)
        if any(s != learner_seq for s in seqs):
            # Fallback: synchronous, explicit push of the learner's weights.
            state = algo.learner_group.get_state(
                components=COMPONENT_LEARNER + "/" + COMPONENT_RL_MODULE,
                inference_only=True,
            )[COMPONENT_LEARNER]
            state = {COMPONENT_RL_MODULE: state[COMPONENT_RL_MODULE], "weights_seq_no": 0}  # 0 = force
            _foreach_env_runner(group, _force_env_runner_weights, state=state, seq_no=learner_seq, timeout_s=timeout_s)
            info["fallback_push"] = True
            seqs = _foreach_env_runner(group, _env_runner_seq_no, timeout_s=timeout_s)
        info[f"{name}_seq_nos"] = list(seqs)
    info["learner_seq_no"] = learner_seq
    return info


def rollback(
    algo,
    path: str,
    hparams: Optional[Dict[str, Any]] = None,
    *,
    timeout_s: float = 60.0,
) -> Dict[str, Any]:
    """Roll the learner(s) back to a checkpoint written by :func:`save_checkpoint`.

    * Restores only the ``learner_group`` component (RL module weights and
      optimizer state) in-process, so the iteration counter, the lifetime
      sample counters and the env runners' connector state keep going.
    * Keeps the learner's weights sequence number monotonic (old + 1) and pushes
      the restored weights to every env runner (see
      :func:`_push_weights_to_env_runners`).
    * Hyperparameters: a restore brings back the optimizer's lr from the
      checkpoint for one update only and leaves entropy/KL/grad-clip as they
      were, so the values in effect before the rollback are re-applied, with
      ``hparams`` (any of lr, entropy_coeff, kl_coeff, grad_clip; or the
      string ``"checkpoint"`` for the values saved with the checkpoint)
      applied on top.
    """
    from ray.rllib.core import COMPONENT_LEARNER_GROUP

    t0 = time.perf_counter()
    path = os.path.abspath(os.fspath(path))
    lg_path = os.path.join(path, COMPONENT_LEARNER_GROUP)
    if not os.path.isdir(lg_path):
        raise FileNotFoundError(f"{path} is not an RLlib algorithm checkpoint (no {COMPONENT_LEARNER_GROUP}/)")
    if hparams == "checkpoint":
        hparams = checkpoint_hparams(path)
        if hparams is None:
            raise ValueError(f"{path} has no {_HPARAMS_SIDECAR}")
    if hparams is not None:
        hparams = {k: v for k, v in hparams.items() if k not in _NOT_REAPPLIED}
        unknown = set(hparams) - set(HPARAM_KEYS)
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)} in rollback hparams")

    before = current_hparams(algo)
    old_seq = max(_foreach_learner(algo, _learner_seq_no))

    t_restore = time.perf_counter()
    algo.restore_from_path(lg_path, component=COMPONENT_LEARNER_GROUP)
    restore_s = time.perf_counter() - t_restore

    # Learner.set_state lowered the seq no to the checkpoint's; keep it
    # monotonic so that no env runner treats the restored weights as stale.
    new_seq = old_seq + 1
    _foreach_learner(algo, _set_learner_seq_no, seq_no=new_seq)

    t_sync = time.perf_counter()
    sync_info = _push_weights_to_env_runners(algo, timeout_s)
    sync_s = time.perf_counter() - t_sync

    target = {k: before[k] for k in HPARAM_KEYS if k in before and k not in _NOT_REAPPLIED
              and (before[k] is not None or k == "grad_clip")}
    # Learned values the learner keeps outside its module and optimizers (SAC's log_alpha) are not in
    # the restored state: they come back from the checkpoint's sidecar.
    saved = checkpoint_hparams(path) or {}
    target.update({k: saved[k] for k in _LEARNED if k in before and saved.get(k) is not None})
    if hparams:
        target.update(hparams)
    # The checkpoint's optimizer state carries its own lr: always rewrite.
    after = set_hparams(algo, target)

    return {
        "action": "rollback",
        "checkpoint": path,
        "before": before,
        "after": after,
        "changed": changed(before, after),
        "hparams_reapplied": target,
        "weights_seq_no": new_seq,
        "sync": sync_info,
        "restore_s": restore_s,
        "sync_s": sync_s,
        "total_s": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------


def module_weights(algo) -> Dict[str, np.ndarray]:
    """Flat ``{"<module_id>/<param>": ndarray}`` of the first learner's RL
    module (full module: actor and critic)."""
    return _foreach_learner(algo, _learner_weights)[0]


def env_runner_weights(algo, *, include_local: bool = True) -> Dict[str, Dict[str, np.ndarray]]:
    """``{"local": {...}, "remote_<id>": {...}}``: flat weights of the
    (inference-only) RL module on each env runner. Their keys are a subset of
    :func:`module_weights`' keys (no critic)."""
    group = algo.env_runner_group
    out: Dict[str, Dict[str, np.ndarray]] = {}
    if include_local and group.local_env_runner is not None:
        w = _env_runner_weights(group.local_env_runner)
        if w:
            out["local"] = w
    if group.num_remote_env_runners() > 0:
        ids = group.healthy_env_runner_ids()
        res = _foreach_env_runner(group, _env_runner_weights, local=False, remote_ids=ids)
        for rid, w in zip(ids, res):
            out[f"remote_{rid}"] = w
    return out


def optimizer_steps(algo) -> Dict[str, int]:
    """``{optimizer_name: step count}`` on the first learner (Adam's ``step``);
    shows whether a rollback also restored the optimizer state."""
    return _foreach_learner(algo, _learner_optimizer_steps)[0]


def rollback_reached_runners(algo) -> bool:
    """True when every env runner holds exactly the learner's (restored, finite) weights."""
    learner = module_weights(algo)
    if not weights_finite(algo):
        return False
    runners = env_runner_weights(algo)
    for runner in runners.values():
        shared = [k for k in runner if k in learner]
        if not shared or any(not np.array_equal(runner[k], learner[k]) for k in shared):
            return False
    return bool(runners)


def weights_finite(algo, *, include_env_runners: bool = False) -> bool:
    """True when every learner weight (and optionally env runner weight) is finite."""
    dicts = _foreach_learner(algo, _learner_weights)
    if include_env_runners:
        dicts += list(env_runner_weights(algo).values())
    return all(np.isfinite(a).all() for d in dicts for a in d.values() if np.issubdtype(a.dtype, np.number))
