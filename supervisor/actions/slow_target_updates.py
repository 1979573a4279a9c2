from dataclasses import dataclass, field

from supervisor.actions.base import ActionSpec, factor


@dataclass(frozen=True)
class SlowTargetUpdates(ActionSpec):
    """Target networks follow the learner more slowly: soft updates (tau < 1, SAC) get tau *= ``factor``
    (0.5); hard copies (tau = 1: DQN, APPO) happen 1/``factor`` times less often
    (``target_network_update_freq`` / factor). A target that chases the Q-function (or policy) it
    bootstraps from feeds its own errors back: the classic route to Q-value divergence."""

    name = "slow_target_updates"
    doc = "slow the target networks: tau *= factor (0.5) for soft updates, else update_freq /= factor"
    defaults: dict = field(default_factory=lambda: {"factor": 0.5})

    def plan(self, current, params):
        f = factor(params, self.defaults["factor"], below_one=True)
        tau, freq = current.get("tau"), current.get("target_network_update_freq")
        if tau is not None and 0 < tau < 1:
            return {"tau": tau * f}
        if freq is not None and freq > 0:
            return {"target_network_update_freq": float(max(int(freq) + 1, round(freq / f)))}
        if tau:
            return {"tau": tau * f}
        raise ValueError(f"{self.name}: this algorithm has no target network")
