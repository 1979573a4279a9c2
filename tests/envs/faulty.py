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


class SensorFault(RuntimeError):
    """A custom exception, as a user's env would raise one."""


class BrokenCartPole(CartPoleEnv):
    """CartPole that breaks at a fixed step of its own life (per env instance, so on every try: a restarted
    trial gets a new env):

    * ``raise_at``: ``step()`` raises ``SensorFault`` there (a custom exception, as a user's env would);
    * ``hang_at``: ``step()`` sleeps forever there (a stuck simulator), once per ``marker`` file: the first
      process to get there creates it and hangs, a restarted trial passes.
    """

    def __init__(self, config=None):
        super().__init__()
        config = config or {}
        self.raise_at = config.get("raise_at")
        self.hang_at = config.get("hang_at")
        self.marker = config.get("marker")
        self.steps = 0

    def step(self, action):
        import os
        import time

        self.steps += 1
        if self.raise_at is not None and self.steps == int(self.raise_at):
            raise SensorFault(f"lidar returned no echo at step {self.steps}")
        if self.hang_at is not None and self.steps == int(self.hang_at) and self.marker \
                and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            while True:
                time.sleep(3600)
        return super().step(action)


def break_loss_after(learner, updates: int) -> bool:
    """On the learner: its loss raises from the update after ``updates`` (in APPO's learner thread)."""
    compute = learner.compute_losses
    done = [0]

    def broken(*args, **kwargs):
        done[0] += 1
        if done[0] > updates:
            raise RuntimeError("planted: the loss broke")
        return compute(*args, **kwargs)

    learner.compute_losses = broken
    return True
