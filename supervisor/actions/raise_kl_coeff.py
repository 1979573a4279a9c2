from dataclasses import dataclass, field

from supervisor.actions.base import ActionSpec, clamp, scale_or_set


@dataclass(frozen=True)
class RaiseKLCoeff(ActionSpec):
    """kl_coeff *= ``factor`` (2.0); from ~0 it starts at ``value`` (0.2, RLlib's PPO default) and the KL
    loss is switched on; ``value`` alone sets it. PPO's KL controller keeps adapting it afterwards."""

    name = "raise_kl_coeff"
    doc = "raise the KL penalty: kl_coeff *= factor (2.0), or value (0.2) when it is ~0; value alone sets it"
    defaults: dict = field(default_factory=lambda: {"factor": 2.0, "value": 0.2})

    def plan(self, current, params):
        new = scale_or_set(current.get("kl_coeff") or 0.0, params, self.defaults, below_one=False, unset=1e-8)
        return {"kl_coeff": clamp(new, params, "min_value", "max_value")}
