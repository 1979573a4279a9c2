from dataclasses import dataclass, field

from supervisor.actions.base import ActionSpec, clamp, factor


@dataclass(frozen=True)
class ReduceEntropy(ActionSpec):
    """entropy_coeff *= ``factor`` (0.1); optional ``min_value``/``max_value``. For an entropy bonus so large
    it keeps the policy random. Replaces any entropy schedule."""

    name = "reduce_entropy"
    doc = "lower the entropy bonus: entropy_coeff *= factor (default 0.1)"
    defaults: dict = field(default_factory=lambda: {"factor": 0.1})

    def plan(self, current, params):
        c = current.get("entropy_coeff")
        if not c:
            raise ValueError(f"{self.name}: the entropy coefficient is already 0")
        new = c * factor(params, self.defaults["factor"], below_one=True)
        return {"entropy_coeff": clamp(new, params, "min_value", "max_value")}
