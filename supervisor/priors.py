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
#: Writers whose report keys are known in advance (``Priors.reporter``).
REPORTERS = ("rllib",)


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
        reporter: who writes the trial's reports: "rllib" for the supervisor's RLlib callback, whose keys
            are fixed by the algorithm and its config (``metrics_missing`` judges only those); None otherwise.
        grad_clip: the learner's gradient clip (RLlib reports the gradient norm only with one, or with
            ``log_gradients``).
        log_gradients: RLlib's ``.reporting(log_gradients=True)``.
        learning_starts: env steps sampled before the learner's values can first be reported: an off-policy
            learner's first update (``num_steps_sampled_before_learning_starts``); APPO's and IMPALA's
            learner hands back its results once every ``broadcast_interval`` updates (RLlib 2.60), so
            ``broadcast_interval`` x the train batch.
        instrumented: trained with the supervisor's instrumented PPO learner (the ``sup_*`` statistics).
        lag_bound: the policy lag (learner updates) APPO's or IMPALA's config builds in: the batches its
            learner queue (IMPALA ``learner_queue_size``) or circular buffer (APPO
            ``circular_buffer_num_batches``) holds, plus ``broadcast_interval`` - 1 (``policy_lag``).
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
    reporter: str | None = None
    grad_clip: float | None = None
    log_gradients: bool | None = None
    learning_starts: int | None = None
    instrumented: bool | None = None
    lag_bound: float | None = None
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
        starts = _num(d.get("learning_starts"))
        return cls(algorithm=algo.upper() if isinstance(algo, str) and algo else None,
                   kl_target=_positive(d.get("kl_target")), clip_param=_positive(d.get("clip_param")),
                   vf_clip_param=_positive(d.get("vf_clip_param")),
                   use_kl_loss=_bool(d.get("use_kl_loss")),
                   action_kind=kind, action_dim=dim, max_entropy=ent,
                   reporter=d.get("reporter") if d.get("reporter") in REPORTERS else None,
                   grad_clip=_positive(d.get("grad_clip")), log_gradients=_bool(d.get("log_gradients")),
                   learning_starts=int(starts) if starts is not None and starts >= 0 else None,
                   instrumented=_bool(d.get("instrumented")), lag_bound=_positive(d.get("lag_bound")),
                   gamma=_discount(d.get("gamma")))

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def known(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


def _bool(x: Any) -> bool | None:
    return x if isinstance(x, bool) else None


def _discount(x: Any) -> float | None:
    v = _num(x)
    return v if v is not None and 0 < v < 1 else None


def _positive(x: Any) -> float | None:
    v = _num(x)
    return v if v is not None and v > 0 else None
