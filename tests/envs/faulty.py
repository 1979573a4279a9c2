"""Real gymnasium envs that break on purpose, for end-to-end tests."""

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv


class NanRewardCartPole(CartPoleEnv):
    """CartPole whose reward becomes NaN after ``nan_after`` env steps (per env instance)."""

    def __init__(self, config=None):
        super().__init__()
        self.nan_after = int((config or {}).get("nan_after", 3000))
        self.steps = 0

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        self.steps += 1
        if self.steps > self.nan_after:
            reward = float("nan")
        return obs, reward, term, trunc, info


gym.register("NanRewardCartPole-v0", entry_point=NanRewardCartPole, max_episode_steps=500)
