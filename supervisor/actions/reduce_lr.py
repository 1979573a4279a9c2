from dataclasses import dataclass, field

from supervisor.actions.base import ActionSpec, clamp, factor


@dataclass(frozen=True)
class ReduceLR(ActionSpec):
    """lr *= ``factor`` (0.1); optional ``min_lr``/``max_lr`` clamp. Replaces any lr schedule."""

    name = "reduce_lr"
    doc = "lower the learning rate: lr *= factor (default 0.1), clamped to [min_lr, max_lr] when given"
    defaults: dict = field(default_factory=lambda: {"factor": 0.1})
    below_one = True

    def plan(self, current, params):
        if not current.get("lr"):
            raise ValueError(f"{self.name}: learner has no learning rate")
        new = current["lr"] * factor(params, self.defaults["factor"], below_one=self.below_one)
        return {"lr": clamp(new, params, "min_lr", "max_lr")}
