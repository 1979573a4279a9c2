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
    # gamma: the scale of Q-values and value targets (q_divergence, td_error_explosion, loss_explosion)
    for key in ("kl_target", "clip_param", "vf_clip_param", "use_kl_loss", "grad_clip", "log_gradients", "gamma"):
        out[key] = own.get(key, getattr(cfg, key, None))
    # what decides which metrics RLlib reports (supervisor.algorithms.reported: metrics_missing)
    out["reporter"] = "rllib"
    out["learning_starts"] = getattr(cfg, "num_steps_sampled_before_learning_starts", None)
    if out["algorithm"] in ("APPO", "IMPALA"):
        broadcast = _int(getattr(cfg, "broadcast_interval", 1), 1)
        # RLlib 2.60's IMPALALearner.update hands back its results only every broadcast_interval calls
        out["learning_starts"] = broadcast * _int(getattr(cfg, "total_train_batch_size", 0), 0)
        # the lag the config builds in: batches waiting in APPO's circular buffer / IMPALA's learner queue,
        # and env runners that get new weights every broadcast_interval updates (policy_lag)
        held = (getattr(cfg, "circular_buffer_num_batches", None) if out["algorithm"] == "APPO"
                else getattr(cfg, "learner_queue_size", None))
        out["lag_bound"] = _int(held, 1) + broadcast - 1
    out["instrumented"] = _instrumented(cfg)
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


def _int(x, default: int) -> int:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 else default


def _instrumented(cfg) -> bool:
    """Whether the learner is the supervisor's instrumented PPO learner (it reports the ``sup_*`` statistics)."""
    try:
        from actors import compat
        from actors.learner import SupervisedPPOTorchLearner

        cls = compat.explicit_learner_class(cfg)
        return isinstance(cls, type) and issubclass(cls, SupervisedPPOTorchLearner)
    except Exception:
        return False


def _action_space(algorithm, module: str | None = None):
    spaces = getattr(algorithm, "spaces", None) or algorithm.env_runner_group.get_spaces()
    if module is not None and module in spaces:
        return spaces[module][1]
    for key, (_obs, act) in spaces.items():
        if not key.startswith("__"):
            return act
    return spaces["__env__"][1]
