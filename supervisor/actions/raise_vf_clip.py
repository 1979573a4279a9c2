from dataclasses import dataclass, field

from supervisor.actions.base import ActionSpec, clamp, factor


@dataclass(frozen=True)
class RaiseVFClip(ActionSpec):
    """vf_clip_param *= ``factor`` (10); optional ``max_value``. A value loss clipped on every sample has no
    gradient: widening the clip lets the critic learn the return scale again."""

    name = "raise_vf_clip"
    doc = "widen the value-loss clip: vf_clip_param *= factor (default 10)"
    defaults: dict = field(default_factory=lambda: {"factor": 10.0})

    def plan(self, current, params):
        c = current.get("vf_clip_param")
        if not c:
            raise ValueError(f"{self.name}: this learner does not clip its value loss")
        new = c * factor(params, self.defaults["factor"], below_one=False)
        return {"vf_clip_param": clamp(new, params, "min_value", "max_value")}
