"""What the supervisor knows per RLlib algorithm, in one table (no Ray).

Each :class:`AlgorithmSpec` says which trial detectors apply to the
algorithm, which hyperparameters its learner has (so an action that cannot
apply is never chosen), and where its default escalation ladders differ from
PPO's. Everything else that needs per-algorithm knowledge (the RLlib config
class, the learner plumbing) is on the Ray side in ``actors/algos.py``, keyed
by the same names.

Detectors left out of an algorithm's set are not run on its trials: PPO's
clip/KL/advantage detectors mean nothing for DQN, and an entropy collapse of
a SAC (continuous, temperature-controlled) policy is ``alpha_collapse``'s
business, not ``entropy_collapse``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

#: Detectors that judge any RL training stream.
GENERIC = frozenset(("non_finite", "loss_explosion", "gradient_explosion", "reward_collapse", "plateau",
                     "worker_fault", "generalization_gap", "data_poisoned", "obs_out_of_range"))
_PG = frozenset(("entropy_collapse", "value_collapse", "gradient_vanishing"))  # actor-critic policy gradient
_Q = frozenset(("q_divergence", "td_error_explosion"))  # learned Q-functions with target networks

ROLLBACK_REDUCE = ["rollback", "reduce_lr"]


@dataclass(frozen=True)
class AlgorithmSpec:
    """Args:
        name: RLlib's algorithm name (upper case, as in ``algorithm:``).
        off_policy: learns from a replay buffer (a rollback cannot rewind the buffer).
        detectors: the trial detectors run on it.
        hparams: the hyperparameters its learner exposes to actions.
        ladders: default ladders that differ from (or add to) ``supervisor.policy.DEFAULT_LADDERS``.
        report_lag: reports after a change that may still show the old value (APPO, IMPALA: the learner
            updates asynchronously and a result carries the metrics of updates queued before the change).
        instrumented: trained with the supervisor's instrumented learner (``actors/learner.py``, a
            ``PPOTorchLearner`` subclass); the others report RLlib's own learner values.
    """

    name: str
    off_policy: bool
    detectors: frozenset
    hparams: tuple[str, ...]
    ladders: Mapping[str, list[list[str]]] = field(default_factory=dict)
    instrumented: bool = False
    report_lag: int = 0


# From the trial's priors (kl_target, vf_clip_param, the action space's maximum entropy): a policy-gradient
# policy's entropy against its maximum (entropy_saturated, premature_convergence), PPO's trust region
# (update_too_large: approx_kl or the mean KL against kl_target, APPO has both settings), PPO's value clip
# and its instrumented approx_kl / clip fraction (value_loss_clipped, no_learning).
_PG_PRIORS = frozenset(("entropy_saturated", "premature_convergence"))

ALGORITHMS: dict[str, AlgorithmSpec] = {a.name: a for a in (
    AlgorithmSpec("PPO", False, GENERIC | _PG | _PG_PRIORS | {"kl_spike", "kl_controller_stuck", "advantage_anomaly",
                                                             "update_too_large", "value_loss_clipped", "no_learning"},
                  ("lr", "entropy_coeff", "kl_coeff", "grad_clip", "vf_clip_param"), instrumented=True),
    # APPO: IMPALA's V-trace learner plus PPO's clipped surrogate, an optional KL term and a target network.
    AlgorithmSpec("APPO", False, GENERIC | _PG | _PG_PRIORS | {"kl_spike", "kl_controller_stuck", "update_too_large"},
                  ("lr", "entropy_coeff", "kl_coeff", "grad_clip", "tau", "target_network_update_freq"),
                  ladders={"kl_spike": [["reduce_lr"], ["slow_target_updates"], ROLLBACK_REDUCE, ["stop_trial"]]},
                  report_lag=4),
    AlgorithmSpec("IMPALA", False, GENERIC | _PG | _PG_PRIORS, ("lr", "entropy_coeff", "grad_clip"), report_lag=4),
    AlgorithmSpec("DQN", True, GENERIC | _Q | {"exploration_too_short"},
                  ("lr", "grad_clip", "tau", "target_network_update_freq", "epsilon"),
                  ladders={
                      "q_divergence": [["reduce_lr", "slow_target_updates"], ROLLBACK_REDUCE, ["stop_trial"]],
                      "td_error_explosion": [["reduce_lr"], ["rollback", "reduce_lr", "slow_target_updates"],
                                             ["stop_trial"]],
                      "exploration_too_short": [["extend_exploration"], ["alert"]],
                  }),
    AlgorithmSpec("SAC", True, GENERIC | _Q | {"alpha_collapse", "alpha_runaway"},
                  ("lr", "grad_clip", "tau", "target_network_update_freq", "alpha", "target_entropy"),
                  ladders={
                      "q_divergence": [["reduce_lr", "slow_target_updates"], ROLLBACK_REDUCE, ["stop_trial"]],
                      "td_error_explosion": [["reduce_lr"], ["rollback", "reduce_lr", "slow_target_updates"],
                                             ["stop_trial"]],
                      "alpha_collapse": [["raise_alpha"], ["rollback", "raise_alpha"], ["stop_trial"]],
                      "alpha_runaway": [["set_target_entropy"], ["rollback", "set_target_entropy"], ["stop_trial"]],
                  }),
)}
NAMES: tuple[str, ...] = tuple(ALGORITHMS)
DEFAULT = "PPO"


def get(name: str | None) -> AlgorithmSpec | None:
    """The spec of ``name`` (any case), or None for None/unknown: an unknown algorithm runs every detector."""
    return ALGORITHMS.get(name.upper()) if isinstance(name, str) else None


def check(name: str) -> str:
    """``name`` upper-cased if supported, else ValueError naming the supported ones."""
    if not isinstance(name, str) or name.upper() not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r} (supported: {', '.join(NAMES)})")
    return name.upper()


def applies(detector: str, algorithm: str | None) -> bool:
    """Whether ``detector`` runs on a trial of ``algorithm`` (any detector runs when the algorithm is
    unknown, e.g. ``supervise scan`` of a log that does not say)."""
    spec = get(algorithm)
    return spec is None or detector in spec.detectors


def ladders(algorithm: str | None) -> dict[str, list[list[str]]]:
    spec = get(algorithm)
    return dict(spec.ladders) if spec else {}
