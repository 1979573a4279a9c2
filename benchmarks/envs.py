"""The envs of the recorded runs (benchmarks/record_runs.py): a gymnasium env with an optional
TimeLimit change and an optional fault planted after a fixed number of env steps.

Registered with Ray Tune as ``sup_bench`` (``register()``); env_config keys:

* ``id``: gymnasium id (``CartPole-v1``, ``Pendulum-v1``, ...);
* ``max_episode_steps``: passed to ``gymnasium.make`` (None: the id's default);
* ``fault``: None, ``nan_reward`` (reward NaN), ``reward_scale`` (reward x ``scale``),
  ``garbage_obs`` (observations ~ N(0, 1e3), a broken sensor or preprocessing bug; dynamics and
  rewards unchanged), ``nan_obs`` (one observation feature, ``feature``, NaN: a sensor that died);
* ``after``: the fault acts from env step ``after`` + 1 on, counted over the env's life (one env
  per env runner here, so over the run); 0: from the first step;
* ``scale``: the reward factor of ``reward_scale``; ``seed``: the garbage generator's seed.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ENV_NAME = "sup_bench"
FAULTS = (None, "nan_reward", "reward_scale", "garbage_obs", "nan_obs")


class FaultyEnv(gym.Wrapper):
    def __init__(self, env: gym.Env, fault: str | None = None, after: int = 0, scale: float = 1.0,
                 seed: int = 0, feature: int = 0):
        super().__init__(env)
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
        self.fault, self.after, self.scale, self.feature = fault, int(after), float(scale), int(feature)
        self.steps = 0
        self.garbage = np.random.default_rng(int(seed))

    def _active(self) -> bool:
        return self.fault is not None and self.steps > self.after

    def _obs(self, obs):
        if self.fault == "garbage_obs" and self._active():
            return self.garbage.normal(0.0, 1e3, np.shape(obs)).astype(np.float32)
        if self.fault == "nan_obs" and self._active():
            obs = np.array(obs, dtype=np.float32, copy=True)
            obs.reshape(-1)[self.feature] = np.nan
        return obs

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._obs(obs), info

    def step(self, action):
        obs, reward, term, trunc, info = self.env.step(action)
        self.steps += 1
        if self._active():
            if self.fault == "nan_reward":
                reward = float("nan")
            elif self.fault == "reward_scale":
                reward = float(reward) * self.scale
        return self._obs(obs), reward, term, trunc, info


def make(config=None) -> gym.Env:
    config = dict(config or {})
    kwargs = {}
    if config.get("max_episode_steps") is not None:
        kwargs["max_episode_steps"] = int(config["max_episode_steps"])
    env = gym.make(config.get("id", "CartPole-v1"), **kwargs)
    if config.get("fault") is None:
        return env
    return FaultyEnv(env, config.get("fault"), config.get("after", 0), config.get("scale", 1.0),
                     config.get("seed", 0), config.get("feature", 0))


class BenchEnv(gym.Wrapper):
    """``make(config)`` as an env class, for configs that name an env by ``module:Class``
    (``env: benchmarks.envs:BenchEnv``, ``env_config: {id: Pendulum-v1, fault: nan_reward, after: 5000}``)."""

    def __init__(self, config=None):
        super().__init__(make(config))


def register() -> str:
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make)
    return ENV_NAME
