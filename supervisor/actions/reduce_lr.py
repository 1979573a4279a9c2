from dataclasses import dataclass, field

from supervisor.actions.base import ScaleAction


@dataclass(frozen=True)
class ReduceLR(ScaleAction):
    """lr *= ``factor`` (0.1); optional ``min_lr``/``max_lr`` clamp. Replaces any lr schedule."""

    name = "reduce_lr"
    doc = "lower the learning rate: lr *= factor (default 0.1), clamped to [min_lr, max_lr] when given"
    defaults: dict = field(default_factory=lambda: {"factor": 0.1})
    hparam = "lr"
    clamp_keys = ("min_lr", "max_lr")
    missing = "learner has no learning rate"
