from dataclasses import dataclass, field

from supervisor.actions.reduce_lr import ReduceLR


@dataclass(frozen=True)
class IncreaseLR(ReduceLR):
    """lr *= ``factor`` (2.0); optional ``min_lr``/``max_lr`` clamp (a run whose updates no longer move it)."""

    name = "increase_lr"
    doc = "raise the learning rate: lr *= factor (default 2.0), clamped to [min_lr, max_lr] when given"
    defaults: dict = field(default_factory=lambda: {"factor": 2.0})
    below_one = False
