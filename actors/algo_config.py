"""Experiment file -> the RLlib config of its ``algorithm:`` (PPOConfig, APPOConfig, IMPALAConfig,
DQNConfig, SACConfig), with the supervisor wired in.

Checks that need RLlib (is every ``config:`` key a parameter of that config class,
does RLlib accept the values) happen here and raise ``InputError``.
"""

from __future__ import annotations

from supervisor import algorithms
from supervisor.config import Experiment
from supervisor.errors import InputError

from actors import multi_agent
from actors.callback import SupervisorCallback, attach


def build_config(exp: Experiment, source: str, run_id: str | None = None, config_overrides: dict | None = None):
    """The experiment's RLlib config; supervised in the run ``run_id`` (opened with ``bootstrap.open_run``,
    which publishes its settings) unless None or ``supervisor.enabled`` is false."""
    from actors.algos import config_class
    from actors.learner import use_supervised_learner

    cls = config_class(exp.algorithm)
    cfg = cls()
    params = {**exp.config, **(config_overrides or {})}
    for key in params:
        if key.startswith("_") or not hasattr(cfg, key) or callable(getattr(cfg, key)):
            raise InputError(source, f"config.{key}", f"unknown {cls.__name__} parameter")
    cfg.environment(multi_agent.resolve_env(exp, source), env_config=dict(exp.env_config))
    try:
        cfg.update_from_dict(params)
    except Exception as e:
        raise InputError(source, "config", f"{e.__class__.__name__}: {str(e).splitlines()[0]}")
    multi_agent.configure(cfg, exp, source)
    if exp.seed is not None:
        cfg.debugging(seed=exp.seed)
    if run_id is not None and exp.supervisor.enabled:
        cfg.callbacks(SupervisorCallback)
        attach(cfg, run_id)
        if algorithms.ALGORITHMS[exp.algorithm].instrumented:  # PPO's; the others report RLlib's own values
            use_supervised_learner(cfg)
    try:
        cfg.validate()
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise InputError(source, "config", msg)
    return cfg
