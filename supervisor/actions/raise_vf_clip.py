from dataclasses import dataclass, field

from supervisor.actions.base import ScaleAction


@dataclass(frozen=True)
class RaiseVFClip(ScaleAction):
    """vf_clip_param *= ``factor`` (10); optional ``max_value``. A value loss clipped on every sample has no
    gradient: widening the clip lets the critic learn the return scale again."""

    name = "raise_vf_clip"
    doc = "widen the value-loss clip: vf_clip_param *= factor (default 10)"
    defaults: dict = field(default_factory=lambda: {"factor": 10.0})
    hparam = "vf_clip_param"
    below_one = False
    missing = "this learner does not clip its value loss"
