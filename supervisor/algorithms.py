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

The table also says which metrics RLlib reports for each algorithm, under
which config, and by when (:func:`reported`, ``metrics_by``): what
``metrics_missing`` expects of a trial the supervisor's RLlib callback reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

#: Detectors that judge any RL training stream.
GENERIC = frozenset(("non_finite", "loss_explosion", "gradient_explosion", "reward_collapse", "plateau",
                     "worker_fault", "generalization_gap", "metrics_missing", "data_poisoned",
                     "obs_out_of_range"))
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
            updates asynchronously and a result carries the metrics of updates queued before the change;
            measured 1 to 2 once ``actors/learner_results.py`` keeps the results current, 4 leaves room for
            a loaded machine). A change still undecided when the trial ends stays ``verified`` null.
        instrumented: trained with the supervisor's instrumented learner (``actors/learner.py``, a
            ``PPOTorchLearner`` subclass); the others report RLlib's own learner values.
        reports: the learner metrics (normalized names, ``supervisor.metrics``) RLlib reports after every
            update of it, whatever the config; :func:`reported` adds the ones a config switches on.
        metrics_by: N: a metric it reports must have arrived by the N-th iteration after its source
            started (the first iteration; for the learner's values the first after ``learning_starts`` env
            steps: an off-policy learner's first update, APPO's/IMPALA's first results; the first that
            finished an episode), or ``metrics_missing`` warns.
        learning_starts: env steps before the learner's values can first be reported when the trial's
            priors do not say (RLlib's default ``num_steps_sampled_before_learning_starts`` off-policy).
    """

    name: str
    off_policy: bool
    detectors: frozenset
    hparams: tuple[str, ...]
    ladders: Mapping[str, list[list[str]]] = field(default_factory=dict)
    instrumented: bool = False
    report_lag: int = 0
    reports: frozenset = frozenset()
    metrics_by: int = 3
    learning_starts: int = 0


# From the trial's priors (kl_target, vf_clip_param, the action space's maximum entropy): a policy-gradient
# policy's entropy against its maximum (entropy_saturated, premature_convergence), PPO's trust region
# (update_too_large: approx_kl or the mean KL against kl_target, APPO has both settings), PPO's value clip
# and its instrumented approx_kl / clip fraction (value_loss_clipped, no_learning).
_PG_PRIORS = frozenset(("entropy_saturated", "premature_convergence"))

# What RLlib 2.60 reports, measured on real runs (benchmarks/data): the learner's values after each update.
_PG_REPORTS = frozenset(("policy_loss", "vf_loss", "total_loss", "entropy", "entropy_coeff", "lr"))
_Q_REPORTS = frozenset(("q_loss", "q_mean", "q_max", "q_min", "td_error_mean", "total_loss", "lr"))
#: The instrumented PPO learner's statistics (actors/learner.py).
INSTRUMENTED = frozenset(("grad_norm_max", "grad_norm_mean", "grad_norm_policy", "grad_norm_value",
                          "grad_norm_ratio", "approx_kl", "clip_fraction", "vf_clip_fraction", "advantage_mean",
                          "advantage_std", "advantage_skew", "advantage_kurtosis", "value_target_scale"))
_EPISODES = frozenset(("episode_return_mean", "episode_return_max", "episode_return_min", "episode_len_mean"))
_EVALUATION = frozenset(("eval_return_mean",))
_EVERY_ITERATION = frozenset(("healthy_env_runners", "env_runner_restarts", "env_runners_dropped", "num_episodes",
                              "env_steps", "env_steps_lifetime", "time_this_iter_s", "time_total_s"))

ALGORITHMS: dict[str, AlgorithmSpec] = {a.name: a for a in (
    AlgorithmSpec("PPO", False, GENERIC | _PG | _PG_PRIORS | {"kl_spike", "kl_controller_stuck", "advantage_anomaly",
                                                             "update_too_large", "value_loss_clipped", "no_learning"},
                  ("lr", "entropy_coeff", "kl_coeff", "grad_clip", "vf_clip_param"), instrumented=True,
                  reports=_PG_REPORTS | {"vf_loss_unclipped", "kl", "explained_variance"}),
    # APPO: IMPALA's V-trace learner plus PPO's clipped surrogate, an optional KL term and a target network.
    AlgorithmSpec("APPO", False, GENERIC | _PG | _PG_PRIORS | {"kl_spike", "kl_controller_stuck", "update_too_large",
                                                              "policy_lag"},
                  ("lr", "entropy_coeff", "kl_coeff", "grad_clip", "tau", "target_network_update_freq"),
                  ladders={"kl_spike": [["reduce_lr"], ["slow_target_updates"], ROLLBACK_REDUCE, ["stop_trial"]]},
                  report_lag=4, metrics_by=6,
                  reports=_PG_REPORTS | {"kl", "kl_coeff", "is_ratio_mean", "is_ratio_var", "policy_lag"}),
    # IMPALA's policy loss is RLlib's pi_loss (not read); total_loss and vf_loss are.
    AlgorithmSpec("IMPALA", False, GENERIC | _PG | _PG_PRIORS | {"policy_lag"}, ("lr", "entropy_coeff", "grad_clip"),
                  report_lag=4,
                  metrics_by=6, reports=(_PG_REPORTS - {"policy_loss"}) | {"policy_lag"}),
    AlgorithmSpec("DQN", True, GENERIC | _Q | {"exploration_too_short"},
                  ("lr", "grad_clip", "tau", "target_network_update_freq", "epsilon"),
                  ladders={
                      "q_divergence": [["reduce_lr", "slow_target_updates"], ROLLBACK_REDUCE, ["stop_trial"]],
                      "td_error_explosion": [["reduce_lr"], ["rollback", "reduce_lr", "slow_target_updates"],
                                             ["stop_trial"]],
                      "exploration_too_short": [["extend_exploration"], ["alert"]],
                  }, reports=_Q_REPORTS, learning_starts=1000),
    AlgorithmSpec("SAC", True, GENERIC | _Q | {"alpha_collapse", "alpha_runaway"},
                  ("lr", "grad_clip", "tau", "target_network_update_freq", "alpha", "target_entropy"),
                  ladders={
                      "q_divergence": [["reduce_lr", "slow_target_updates"], ROLLBACK_REDUCE, ["stop_trial"]],
                      "td_error_explosion": [["reduce_lr"], ["rollback", "reduce_lr", "slow_target_updates"],
                                             ["stop_trial"]],
                      "alpha_collapse": [["raise_alpha"], ["rollback", "raise_alpha"], ["stop_trial"]],
                      "alpha_runaway": [["set_target_entropy"], ["rollback", "set_target_entropy"], ["stop_trial"]],
                  }, learning_starts=1500,
                  # SAC's entropy is minus its mean log-prob, its lr the critic's (supervisor.metrics.DERIVED)
                  reports=_Q_REPORTS | {"q_twin_loss", "policy_loss", "alpha", "alpha_loss", "target_entropy",
                                        "logp_mean", "entropy", "lr_critic", "lr_actor", "lr_alpha"}),
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


def reported(metric: str, algorithm: str | None, priors) -> str | None:
    """Whether the supervisor's RLlib callback reports ``metric`` for a trial of ``algorithm`` under its config
    (``priors``: :class:`supervisor.priors.Priors`), and from when: the clock it follows, "iteration" (every
    iteration), "learner" (after updates: once ``learning_starts`` env steps were sampled, from the first
    iteration when there is none), "episodes" (once an episode finished) or "evaluation" (once an evaluation
    finished an episode). None: not reported for this trial (unknown algorithm, or a config that turns it off: the
    gradient norm without ``grad_clip`` or ``log_gradients``, PPO's KL coefficient without ``use_kl_loss``,
    the ``sup_*`` statistics without the instrumented learner)."""
    spec = get(algorithm)
    if spec is None:
        return None
    if metric in _EPISODES:
        return "episodes"
    if metric in _EVALUATION:
        return "evaluation"
    if metric in _EVERY_ITERATION or (metric == "epsilon" and spec.name == "DQN"):  # epsilon: the callback's
        return "iteration"
    if metric == "grad_norm":
        on = priors.grad_clip is not None or bool(priors.log_gradients)
    elif metric == "kl_coeff" and spec.name == "PPO":
        on = bool(priors.use_kl_loss)
    elif metric in INSTRUMENTED:
        on = spec.instrumented and bool(priors.instrumented)
    else:
        on = metric in spec.reports
    return "learner" if on else None


def ladders(algorithm: str | None) -> dict[str, list[list[str]]]:
    spec = get(algorithm)
    return dict(spec.ladders) if spec else {}
