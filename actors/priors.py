"""Priors (``supervisor.priors``) read off a live RLlib algorithm: its config and its spaces."""

from __future__ import annotations

import logging

from supervisor.priors import Priors

log = logging.getLogger(__name__)


def priors_of(algorithm, module: str | None = None) -> dict:
    """The config values and action space the detectors' priors need, as plain data: for ``module`` (its own
    space and its per-module config overrides), or the first module's."""
    cfg = algorithm.config
    from actors.algos import name_of

    # by name_of: a Tune trainable's class is SupervisedDQN, its algorithm DQN
    out = {"algorithm": name_of(algorithm) or (getattr(cfg, "algo_class", None) and cfg.algo_class.__name__)}
    own = (getattr(cfg, "algorithm_config_overrides_per_module", None) or {}).get(module) or {}
    for key in ("kl_target", "clip_param", "vf_clip_param", "use_kl_loss"):
        out[key] = own.get(key, getattr(cfg, key, None))
    try:
        space = _action_space(algorithm, module)
    except Exception:  # priors only sharpen judgement: a space we cannot read costs nothing
        log.debug("no action space for priors", exc_info=True)
        space = None
    n = getattr(space, "n", None)
    if n is not None:
        out.update(action_kind="discrete", action_dim=int(n))
    elif getattr(space, "shape", None):
        dim = 1
        for s in space.shape:
            dim *= int(s)
        out.update(action_kind="continuous", action_dim=dim)
    return Priors.from_dict(out).to_dict()


def modules_of(algorithm) -> dict:
    """Per RLModule of the algorithm: whether RLlib trains it (``policies_to_train``) and its priors, as the
    engine takes them at registration (``{"modules": {...}}`` of the trial config)."""
    from actors.appliers.rllib import modules_of as ids_of, trained_modules

    ids, trained = ids_of(algorithm), set(trained_modules(algorithm))
    return {m: {"trained": m in trained, "priors": priors_of(algorithm, m)} for m in ids}


def _action_space(algorithm, module: str | None = None):
    spaces = getattr(algorithm, "spaces", None) or algorithm.env_runner_group.get_spaces()
    if module is not None and module in spaces:
        return spaces[module][1]
    for key, (_obs, act) in spaces.items():
        if not key.startswith("__"):
            return act
    return spaces["__env__"][1]
