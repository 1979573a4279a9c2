from dataclasses import dataclass, field

from supervisor.actions.base import ActionSpec, clamp, scale_or_set


@dataclass(frozen=True)
class BoostEntropy(ActionSpec):
    """entropy_coeff *= ``factor`` (2.0); from 0 it starts at ``value`` (0.01); ``value`` alone sets it;
    optional ``min_value``/``max_value``. Replaces any entropy schedule."""

    name = "boost_entropy"
    doc = ("raise the entropy bonus: entropy_coeff *= factor (2.0), or value (0.01) when it is 0; "
           "value alone sets it")
    defaults: dict = field(default_factory=lambda: {"factor": 2.0, "value": 0.01})

    def plan(self, current, params):
        new = scale_or_set(current.get("entropy_coeff") or 0.0, params, self.defaults, below_one=False)
        return {"entropy_coeff": clamp(new, params, "min_value", "max_value")}
