"""What a run's own configuration says before it has any history.

A detector judging a value against the run's history is blind for its
warm-up, and a run broken from iteration 1 has a broken history. The trial's
config and spaces give bounds that hold from the first report: PPO's
``kl_target`` and ``clip_param`` say how far one update is meant to move the
policy, ``vf_clip_param`` where the value loss stops having a gradient, and
the action space the largest entropy the policy can have (log n for
``Discrete(n)``; for a ``Box`` the entropy of the initial unit Gaussian).

``Priors`` is plain data (built from a dict the Ray side extracts, or from an
experiment's config for logs), so detectors stay pure functions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

#: Entropy of a unit Gaussian per action dimension, 0.5 * ln(2 pi e): RLlib's continuous policies start
#: with log_std ~ 0.
GAUSSIAN_UNIT_ENTROPY = 0.5 * math.log(2 * math.pi * math.e)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


@dataclass(frozen=True)
class Priors:
    """Args:
        algorithm: "PPO", "APPO", "IMPALA", "DQN", "SAC" (upper case), or None when unknown.
        kl_target: PPO's target KL per update.
        clip_param: PPO's policy ratio clip.
        vf_clip_param: PPO's value loss clip (per sample, on the squared error).
        use_kl_loss: whether the KL penalty (and so its adaptive coefficient) is on.
        action_kind: "discrete" or "continuous".
        action_dim: number of actions (discrete) or action dimensions (continuous).
        max_entropy: log n for discrete actions; for continuous, the initial unit Gaussian's entropy
            (``action_dim * 0.5 * ln(2 pi e)``), the level a healthy run starts from and moves down from.
        gamma: the discount (the scale of the value targets a value loss is judged against).
    """

    algorithm: str | None = None
    kl_target: float | None = None
    clip_param: float | None = None
    vf_clip_param: float | None = None
    use_kl_loss: bool | None = None
    action_kind: str | None = None
    action_dim: int | None = None
    max_entropy: float | None = None
    gamma: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Priors":
        """From a plain mapping (the Ray side's extraction, a stored trial config); unknown or malformed
        values are dropped, never raised on: priors only sharpen judgement."""
        if not isinstance(d, Mapping):
            return cls()
        kind = d.get("action_kind") if d.get("action_kind") in ("discrete", "continuous") else None
        dim = d.get("action_dim")
        dim = int(dim) if isinstance(dim, (int, float)) and not isinstance(dim, bool) and 0 < dim < 1e6 else None
        algo = d.get("algorithm")
        ent = _num(d.get("max_entropy"))
        if ent is None and kind and dim:
            ent = math.log(dim) if kind == "discrete" else dim * GAUSSIAN_UNIT_ENTROPY
        return cls(algorithm=algo.upper() if isinstance(algo, str) and algo else None,
                   kl_target=_positive(d.get("kl_target")), clip_param=_positive(d.get("clip_param")),
                   vf_clip_param=_positive(d.get("vf_clip_param")),
                   use_kl_loss=d.get("use_kl_loss") if isinstance(d.get("use_kl_loss"), bool) else None,
                   action_kind=kind, action_dim=dim, max_entropy=ent, gamma=_discount(d.get("gamma")))

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def known(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


def _discount(x: Any) -> float | None:
    v = _num(x)
    return v if v is not None and 0 < v < 1 else None


def _positive(x: Any) -> float | None:
    v = _num(x)
    return v if v is not None and v > 0 else None
