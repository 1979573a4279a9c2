"""Multi-agent experiment files on RLlib: the ``multi_agent:`` section and PettingZoo envs.

``env: package.module:Name`` may name an RLlib ``MultiAgentEnv`` class, or a PettingZoo env (a class, or
a constructor such as ``pettingzoo.butterfly.pistonball_v6:parallel_env``): a PettingZoo env is wrapped
in RLlib's own wrapper (``ParallelPettingZooEnv`` for a ``ParallelEnv``, ``PettingZooEnv`` for an
``AECEnv``) and registered with Tune under the experiment's name, so env runners on any node build it.
The ``multi_agent:`` keys (``supervisor.config.MultiAgentConfig``) become RLlib's ``policies``,
``policy_mapping_fn``, ``policies_to_train`` and ``algorithm_config_overrides_per_module``.
"""

from __future__ import annotations

import importlib
from typing import Any

from supervisor.config import SHARED_POLICY, Experiment
from supervisor.errors import InputError


class AgentTable:
    """RLlib's ``policy_mapping_fn`` from a table agent id -> policy id (an agent id as the file wrote it, or
    as its string). Picklable, so env runners on other nodes get it."""

    def __init__(self, table: dict):
        self.table = {str(k): v for k, v in table.items()}

    def __call__(self, agent_id, episode=None, **kwargs):
        return self.table[str(agent_id)]


class OnePolicy:
    """Every agent acts with one policy (self-play, or a team that shares its weights)."""

    def __init__(self, policy: str):
        self.policy = policy

    def __call__(self, agent_id, episode=None, **kwargs):
        return self.policy


def _import(path: str):
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)


def _pettingzoo_kind(obj) -> str | None:
    """"parallel" or "aec" for a PettingZoo env instance, None for anything else (PettingZoo not imported
    unless it is installed and the env is one of its)."""
    try:
        from pettingzoo import AECEnv, ParallelEnv
    except ImportError:
        return None
    if isinstance(obj, ParallelEnv):
        return "parallel"
    if isinstance(obj, AECEnv):
        return "aec"
    return None


class PettingZooCreator:
    """Tune's env creator for a PettingZoo env: built from ``env_config``, wrapped by RLlib's wrapper."""

    def __init__(self, path: str, kind: str):
        self.path, self.kind = path, kind

    def __call__(self, env_config):
        from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv, PettingZooEnv

        env = _import(self.path)(**dict(env_config or {}))
        return ParallelPettingZooEnv(env) if self.kind == "parallel" else PettingZooEnv(env)


def resolve_env(exp: Experiment, source: str):
    """What ``AlgorithmConfig.environment`` takes for the experiment's ``env``: a gymnasium id, a class, or
    (PettingZoo) the name of a registered env creator."""
    env = exp.env
    if ":" not in env:
        return env
    obj = _import(env)
    from ray.rllib.env.multi_agent_env import MultiAgentEnv

    if isinstance(obj, type) and issubclass(obj, MultiAgentEnv):
        return obj
    if isinstance(obj, type) and not _is_pettingzoo_class(obj):
        return obj  # a gymnasium env class
    try:
        probe = obj(**dict(exp.env_config))
    except Exception as e:
        raise InputError(source, "env", f"{env} could not be built with env_config ({e.__class__.__name__}: {e})")
    kind = _pettingzoo_kind(probe)
    _close(probe)
    if kind is None:
        return obj
    from ray import tune

    name = f"pettingzoo:{env}"
    tune.register_env(name, PettingZooCreator(env, kind))
    return name


def _is_pettingzoo_class(cls) -> bool:
    try:
        from pettingzoo import AECEnv, ParallelEnv
    except ImportError:
        return False
    return issubclass(cls, (AECEnv, ParallelEnv))


def _close(env) -> None:
    try:
        env.close()
    except Exception:
        pass


def agent_ids(cfg) -> list:
    """The agents of the config's env (built once from its env_config)."""
    from ray.tune.registry import ENV_CREATOR, _global_registry

    env, env_config = cfg.env, dict(cfg.env_config or {})
    if isinstance(env, str) and _global_registry.contains(ENV_CREATOR, env):
        made = _global_registry.get(ENV_CREATOR, env)(env_config)
    elif isinstance(env, type):
        made = env(env_config)
    else:
        raise ValueError(f"{env!r} is not a multi-agent env")
    try:
        agents = getattr(made, "possible_agents", None) or getattr(made, "agents", None)
        if not agents:
            raise ValueError("the env lists no agents (possible_agents)")
        return list(agents)
    finally:
        _close(made)


def configure(cfg, exp: Experiment, source: str) -> None:
    """``cfg.multi_agent(...)`` from the experiment's ``multi_agent:`` section."""
    ma = exp.multi_agent
    if ma is None:
        return
    ids = ma.policy_ids()
    mapping: Any
    try:
        agents = agent_ids(cfg) if not isinstance(ma.mapping, str) and ma.policies != "shared" else []
    except Exception as e:
        raise InputError(source, "multi_agent.policies", f"cannot list the env's agents: {e}")
    if ma.policies == "per_agent":
        ids = [str(a) for a in agents]
        mapping = AgentTable({a: str(a) for a in agents})
    elif ma.policies == "shared":
        mapping = OnePolicy(SHARED_POLICY)
    elif isinstance(ma.mapping, str):
        mapping = _import(ma.mapping)
    elif isinstance(ma.mapping, dict):
        mapping = AgentTable(ma.mapping)
        missing = [a for a in agents if str(a) not in mapping.table]
        if missing:
            raise InputError(source, "multi_agent.mapping", f"no policy for agent(s) {', '.join(map(str, missing))}")
    elif len(ids) == 1:
        mapping = OnePolicy(ids[0])
    elif {str(a) for a in agents} == set(ids):
        mapping = AgentTable({a: str(a) for a in agents})
    else:
        raise InputError(source, "multi_agent.mapping", f"required: {len(ids)} policies ({', '.join(ids)}) and "
                                                        f"agents {', '.join(map(str, agents))} whose ids differ")
    overrides = ma.overrides()
    for pid, over in overrides.items():
        for key in over:
            if key.startswith("_") or not hasattr(cfg, key) or callable(getattr(cfg, key)):
                raise InputError(source, f"multi_agent.policies.{pid}.{key}", f"unknown {type(cfg).__name__} "
                                                                               "parameter")
    cfg.multi_agent(policies=set(ids), policy_mapping_fn=mapping,
                    policies_to_train=list(ma.policies_to_train) if ma.policies_to_train is not None else None,
                    algorithm_config_overrides_per_module=overrides)
