"""DQN's exploration: epsilon-greedy, scheduled inside each env runner's RL module (``extend_exploration``).

Also what RLlib keeps off the training result but the supervisor reads: the current epsilon
(``extra_metrics``, under ``actors.algos.EXTRA_ROOT`` in the result).
"""

from __future__ import annotations

import math
from typing import Optional

from supervisor import algorithms

from actors import compat
from actors.algos import name_of
from actors.appliers.rllib.remote import foreach_env_runner, to_float

#: env steps over which a raised epsilon decays back to the schedule's final value, unless told.
EPSILON_TIMESTEPS = 10_000


def _runner_modules(env_runner) -> list:
    module = getattr(env_runner, "module", None)
    if module is None:
        return []
    subs = compat.sub_modules(module)
    return list(subs.values()) if subs is not None else [module]


def _env_runner_epsilon(env_runner) -> Optional[float]:
    for m in _runner_modules(env_runner):
        sched = getattr(m, "epsilon_schedule", None)
        if sched is not None:
            return to_float(sched.get_current_value())
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
    vals = foreach_env_runner(group, _env_runner_epsilon, local=group.num_remote_env_runners() == 0)
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
    foreach_env_runner(group, _set_env_runner_epsilon, epsilon=float(epsilon), timesteps=steps,
                        final=min(_final_epsilon(algo), float(epsilon)),
                        scale=max(int(algo.config.num_env_runners or 1), 1))
    return exploration_epsilon(algo)


def extra_metrics(algorithm) -> dict:
    """Values the result lacks, read where RLlib keeps them: ``epsilon``, the current exploration epsilon
    of the env runners that sample (DQN); with remote learners, ``healthy_learners`` and ``learners`` (a
    learner actor that died). Never raises: missing data is not a fault."""
    from actors.appliers.rllib.remote import learner_fleet

    out = {}
    try:
        healthy, total = learner_fleet(algorithm)
        if getattr(algorithm.learner_group, "_worker_manager", None) is not None:
            out.update(healthy_learners=float(healthy), learners=float(total))
    except Exception:
        pass
    spec = algorithms.get(name_of(algorithm))
    if spec is None or "epsilon" not in spec.hparams:
        return out
    try:
        eps = exploration_epsilon(algorithm)
    except Exception:
        return out
    if eps is not None and math.isfinite(eps):
        out["epsilon"] = eps
    return out
