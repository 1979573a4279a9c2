"""An env whose evaluation copy differs from the training one: a planted generalization gap."""

from gymnasium.envs.classic_control import CartPoleEnv


class GapCartPole(CartPoleEnv):
    """CartPole; ``env_config={"reward_sign": -1}`` pays -1 a step instead of +1, so the better a
    policy balances the pole (what training rewards), the lower its return in this copy."""

    def __init__(self, config=None):
        super().__init__()
        self.sign = float((config or {}).get("reward_sign", 1.0))

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        return obs, self.sign * reward, term, trunc, info
