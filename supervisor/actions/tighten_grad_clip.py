from dataclasses import dataclass, field

from supervisor.actions.base import ActionSpec, clamp, scale_or_set


@dataclass(frozen=True)
class TightenGradClip(ActionSpec):
    """grad_clip *= ``factor`` (0.5); with no clip set it starts at ``value`` (1.0); ``value`` alone sets it;
    optional ``min_value``/``max_value``. Clips the global gradient norm from the next update on."""

    name = "tighten_grad_clip"
    doc = "clip gradients harder: grad_clip *= factor (0.5), or value (1.0) when none is set; value alone sets it"
    defaults: dict = field(default_factory=lambda: {"factor": 0.5, "value": 1.0})

    def plan(self, current, params):
        new = scale_or_set(current.get("grad_clip"), params, self.defaults, below_one=True, unset=0.0)
        return {"grad_clip": clamp(new, params, "min_value", "max_value")}
