"""A PettingZoo ``ParallelEnv`` for the multi-agent tests: each agent balances a CartPole of its own, all
stepped together (an agent whose pole fell is done; the episode ends when every agent is). Real
PettingZoo API, so RLlib's ``ParallelPettingZooEnv`` wrapper is what runs it."""

from __future__ import annotations

import functools

import gymnasium as gym
from pettingzoo import ParallelEnv


class CartPoles(ParallelEnv):
    metadata = {"name": "cartpoles_v0", "render_modes": []}

    def __init__(self, num_agents: int = 2, max_steps: int = 200):
        self.possible_agents = [f"pole_{i}" for i in range(num_agents)]
        self.agents = list(self.possible_agents)
        self._envs = {a: gym.make("CartPole-v1", max_episode_steps=max_steps) for a in self.possible_agents}

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent):
        return self._envs[agent].observation_space

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent):
        return self._envs[agent].action_space

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        obs = {}
        for i, a in enumerate(self.agents):
            obs[a], _ = self._envs[a].reset(seed=None if seed is None else seed + i)
        return obs, {a: {} for a in self.agents}

    def step(self, actions):
        obs, rew, term, trunc, info = {}, {}, {}, {}, {}
        for a in self.agents:
            obs[a], rew[a], term[a], trunc[a], info[a] = self._envs[a].step(int(actions[a]))
        self.agents = [a for a in self.agents if not (term[a] or trunc[a])]
        return obs, rew, term, trunc, info

    def close(self):
        for e in self._envs.values():
            e.close()


def parallel_env(**kwargs) -> CartPoles:
    """The PettingZoo convention: a module-level constructor."""
    return CartPoles(**kwargs)
