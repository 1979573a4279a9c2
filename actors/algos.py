"""The Ray side of the per-algorithm table (``supervisor/algorithms.py``): RLlib config classes, names.

Everything that must know which RLlib algorithm a trial runs, and is not a
plain fact the core can hold, goes through this module: the config class an
experiment file's ``config:`` is checked against, the algorithm's name read
off a live ``Algorithm`` (Tune's trainables subclass RLlib's), and where the
values RLlib does not put in the result but the supervisor needs go in it
(``EXTRA_ROOT``; DQN's current epsilon, read off the env runners by
``actors/appliers/rllib/exploration.py``).
"""

from __future__ import annotations

import importlib

from supervisor.algorithms import ALGORITHMS, NAMES

# algorithm -> (module, config class)
_CONFIGS = {
    "PPO": ("ray.rllib.algorithms.ppo", "PPOConfig"),
    "APPO": ("ray.rllib.algorithms.appo", "APPOConfig"),
    "IMPALA": ("ray.rllib.algorithms.impala", "IMPALAConfig"),
    "DQN": ("ray.rllib.algorithms.dqn", "DQNConfig"),
    "SAC": ("ray.rllib.algorithms.sac", "SACConfig"),
}
assert set(_CONFIGS) == set(ALGORITHMS)

#: Where the result dict gets the values read off the env runners (``supervisor.metrics.RESULT_PATHS``).
EXTRA_ROOT = "supervisor_extra"


def config_class(name: str):
    mod, cls = _CONFIGS[name.upper()]
    return getattr(importlib.import_module(mod), cls)


def name_of(obj) -> str | None:
    """The algorithm an ``Algorithm``, ``AlgorithmConfig`` or class is (first known name in its MRO: a
    ``SupervisedAPPO`` is APPO, though APPO itself subclasses IMPALA)."""
    cls = obj if isinstance(obj, type) else type(obj)
    algo_class = getattr(obj, "algo_class", None)  # an AlgorithmConfig names its algorithm
    if isinstance(algo_class, type):
        cls = algo_class
    for c in cls.__mro__:
        n = c.__name__.removesuffix("Config").upper()
        if n in ALGORITHMS:
            return n
    return None


def config_name_of(config) -> str | None:
    """The algorithm of an ``AlgorithmConfig`` (by its class, then by the algorithm it names)."""
    for c in type(config).__mro__:
        n = c.__name__.removesuffix("Config").upper()
        if c.__name__.endswith("Config") and n in ALGORITHMS:
            return n
    return name_of(config)


__all__ = ["EXTRA_ROOT", "NAMES", "config_class", "config_name_of", "name_of"]
