from dataclasses import dataclass, field

from supervisor.actions.base import ActionSpec, clamp, factor


@dataclass(frozen=True)
class RaiseAlpha(ActionSpec):
    """SAC: alpha *= ``factor`` (10), at least ``min_value`` (0.01); optional ``max_value``. For an entropy
    temperature that collapsed to ~0 (the policy stops exploring and the soft Q-targets lose their entropy
    term). Alpha stays learned: its own optimizer keeps adapting it from the new value."""

    name = "raise_alpha"
    doc = "SAC: raise the entropy temperature: alpha *= factor (default 10), at least min_value (0.01)"
    defaults: dict = field(default_factory=lambda: {"factor": 10.0, "min_value": 0.01})

    def plan(self, current, params):
        a = current.get("alpha")
        if a is None:
            raise ValueError(f"{self.name}: this learner has no entropy temperature (SAC only)")
        p = {**self.defaults, **params}
        return {"alpha": clamp(a * factor(p, self.defaults["factor"], below_one=False), p, "min_value", "max_value")}
