from dataclasses import dataclass, field

from supervisor.actions.base import ActionSpec


@dataclass(frozen=True)
class ExtendExploration(ActionSpec):
    """DQN: epsilon back up to ``value`` (0.5; never lowered), decaying linearly to the schedule's final
    epsilon over ``timesteps`` env steps (10,000). For exploration that ended before the policy learned
    anything: the replay buffer then only holds what a poor greedy policy does."""

    name = "extend_exploration"
    doc = "DQN: raise epsilon to value (default 0.5) and decay it again over timesteps (default 10000) env steps"
    defaults: dict = field(default_factory=lambda: {"value": 0.5, "timesteps": 10_000})

    def plan(self, current, params):
        if "epsilon" not in current:
            raise ValueError(f"{self.name}: this algorithm has no epsilon-greedy exploration (DQN only)")
        p = {**self.defaults, **params}
        v = float(p["value"])
        if not 0 < v <= 1:
            raise ValueError(f"{self.name}: value must be in (0, 1], got {p['value']!r}")
        steps = int(p["timesteps"])
        if steps <= 0:
            raise ValueError(f"{self.name}: timesteps must be > 0, got {p['timesteps']!r}")
        return {"epsilon": max(v, current.get("epsilon") or 0.0), "epsilon_timesteps": steps}
