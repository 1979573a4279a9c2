from dataclasses import dataclass, field

from supervisor.actions.base import ActionSpec


@dataclass(frozen=True)
class SetTargetEntropy(ActionSpec):
    """SAC: ``value`` sets the target entropy; otherwise it is lowered by ``delta`` (1.0 nat). For a
    temperature running away: the policy cannot reach the target entropy, so alpha grows without bound
    and the reward term drowns in the entropy bonus."""

    name = "set_target_entropy"
    doc = "SAC: lower the target entropy by delta (default 1.0 nat), or set it to value"
    defaults: dict = field(default_factory=lambda: {"delta": 1.0})

    def plan(self, current, params):
        t = current.get("target_entropy")
        if t is None:
            raise ValueError(f"{self.name}: this learner has no target entropy (SAC only)")
        if params.get("value") is not None:
            return {"target_entropy": float(params["value"])}
        delta = float(params.get("delta", self.defaults["delta"]))
        if not delta > 0:
            raise ValueError(f"{self.name}: delta must be > 0, got {params.get('delta')!r}")
        return {"target_entropy": t - delta}
