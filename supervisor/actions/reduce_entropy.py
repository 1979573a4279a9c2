from dataclasses import dataclass, field

from supervisor.actions.base import ScaleAction


@dataclass(frozen=True)
class ReduceEntropy(ScaleAction):
    """entropy_coeff *= ``factor`` (0.1); optional ``min_value``/``max_value``. For an entropy bonus so large
    it keeps the policy random. Replaces any entropy schedule."""

    name = "reduce_entropy"
    doc = "lower the entropy bonus: entropy_coeff *= factor (default 0.1)"
    defaults: dict = field(default_factory=lambda: {"factor": 0.1})
    hparam = "entropy_coeff"
    missing = "the entropy coefficient is already 0"
