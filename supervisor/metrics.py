"""The normalized per-iteration report, built from RLlib's result dict.

Detectors, the store and the report read these stable names, never RLlib's
nested keys, so an RLlib rename touches one table here.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

from supervisor import modules

# normalized name -> path in RLlib's (new API stack) result dict.
# "{m}" is the module id (single-agent: "default_policy").
RESULT_PATHS: dict[str, str] = {
    "episode_return_mean": "env_runners/episode_return_mean",
    "episode_return_max": "env_runners/episode_return_max",
    "episode_return_min": "env_runners/episode_return_min",
    "episode_len_mean": "env_runners/episode_len_mean",
    "num_episodes": "env_runners/num_episodes",
    # Only when the experiment sets evaluation_interval, and only on evaluation iterations.
    "eval_return_mean": "evaluation/env_runners/episode_return_mean",
    "eval_num_episodes": "evaluation/env_runners/num_episodes",
    "policy_loss": "learners/{m}/policy_loss",
    "vf_loss": "learners/{m}/vf_loss",
    "vf_loss_unclipped": "learners/{m}/vf_loss_unclipped",
    "total_loss": "learners/{m}/total_loss",
    "entropy": "learners/{m}/entropy",
    "kl": "learners/{m}/mean_kl_loss",
    "kl_coeff": "learners/{m}/curr_kl_coeff",
    "entropy_coeff": "learners/{m}/curr_entropy_coeff",
    "lr": "learners/{m}/default_optimizer_learning_rate",
    "grad_norm": "learners/{m}/gradients_default_optimizer_global_norm",
    "explained_variance": "learners/{m}/vf_explained_var",
    # Written by the instrumented learner (actors/learner.py).
    "grad_norm_max": "learners/{m}/sup_grad_norm_max",
    "grad_norm_mean": "learners/{m}/sup_grad_norm_mean",
    "grad_norm_policy": "learners/{m}/sup_grad_norm_policy",
    "grad_norm_value": "learners/{m}/sup_grad_norm_value",
    "grad_norm_ratio": "learners/{m}/sup_grad_norm_ratio",
    "approx_kl": "learners/{m}/sup_approx_kl",
    "clip_fraction": "learners/{m}/sup_clip_fraction",
    "vf_clip_fraction": "learners/{m}/sup_vf_clip_fraction",
    "advantage_mean": "learners/{m}/sup_advantage_mean",
    "advantage_std": "learners/{m}/sup_advantage_std",
    "advantage_skew": "learners/{m}/sup_advantage_skew",
    "advantage_kurtosis": "learners/{m}/sup_advantage_kurtosis",
    "value_target_scale": "learners/{m}/sup_value_target_scale",
    # APPO / IMPALA (V-trace): importance ratios pi/mu of the (stale) behaviour policy; APPO's target network.
    "is_ratio_mean": "learners/{m}/mean_IS",
    "is_ratio_var": "learners/{m}/var_IS",
    "policy_lag": "learners/{m}/diff_num_grad_updates_vs_sampler_policy",  # learner updates the samples lag by
    # DQN / SAC: the Q-function, its TD error, target networks, the replay buffer.
    "q_loss": "learners/{m}/qf_loss",
    "q_twin_loss": "learners/{m}/qf_twin_loss",
    "q_mean": "learners/{m}/qf_mean",
    "q_max": "learners/{m}/qf_max",
    "q_min": "learners/{m}/qf_min",
    "td_error_mean": "learners/{m}/td_error_mean",
    "target_updates": "learners/{m}/num_target_updates",
    "replay_buffer_size": "replay_buffer/num_env_steps_stored",
    "replay_added_lifetime": "replay_buffer/num_env_steps_added_lifetime",
    "replay_sampled_lifetime": "replay_buffer/num_env_steps_sampled_lifetime",
    # DQN's epsilon lives in the env runners' modules; the callback copies it here (actors/algos.py).
    "epsilon": "supervisor_extra/epsilon",
    # Remote learner actors RLlib counts healthy, of how many (num_learners >= 1; the callback copies them).
    "healthy_learners": "supervisor_extra/healthy_learners",
    "learners": "supervisor_extra/learners",
    # SAC: entropy temperature, its loss and target; mean log-prob of the policy's own actions.
    "alpha": "learners/{m}/alpha_value",
    "alpha_loss": "learners/{m}/alpha_loss",
    "target_entropy": "learners/{m}/target_entropy",
    "logp_mean": "learners/{m}/logps",
    "lr_critic": "learners/{m}/qf_learning_rate",  # SAC has one optimizer per part, each with its lr
    "lr_actor": "learners/{m}/policy_learning_rate",
    "lr_alpha": "learners/{m}/alpha_learning_rate",
    "time_this_iter_s": "time_this_iter_s",
    "time_total_s": "time_total_s",
    "sample_time_s": "timers/env_runner_sampling_timer",
    "learn_time_s": "timers/learner_update_timer",
    "env_steps": "env_runners/num_env_steps_sampled",
    "env_steps_lifetime": "num_env_steps_sampled_lifetime",
    "healthy_env_runners": "fault_tolerance/num_healthy_workers",
    "env_runner_restarts": "fault_tolerance/num_remote_worker_restarts",
    "env_runners_dropped": "fault_tolerance/num_env_runners_dropped_lifetime",
    # The data guard on the env runners (actors/data_guard.py): what it checked and found this iteration.
    "data_guard_steps": "env_runners/data_guard/steps",
    "data_guard_poisoned": "env_runners/data_guard/poisoned_episodes",
    "data_guard_nan_rewards": "env_runners/data_guard/nonfinite_rewards",
    "data_guard_nan_obs": "env_runners/data_guard/nonfinite_obs",
    "data_guard_nan_actions": "env_runners/data_guard/nonfinite_actions",
    "data_guard_out_of_range": "env_runners/data_guard/out_of_range_steps",
    "data_guard_range_feature": "env_runners/data_guard/out_of_range_feature",
    "data_guard_range_features": "env_runners/data_guard/out_of_range_features",
    "data_guard_range_excess": "env_runners/data_guard/range_excess",
    "data_guard_dropped": "env_runners/data_guard/dropped_episodes",
    "data_guard_dropped_steps": "env_runners/data_guard/dropped_steps",
    "data_guard_quarantine": "env_runners/data_guard/quarantine",
    "data_guard_check_s": "env_runners/data_guard/check_s",
}

# normalized name -> (source name, sign): filled from another metric when RLlib does not report it.
# SAC reports the mean log-prob of the actions its policy samples; minus that is the policy's entropy.
# SAC's "lr" is its critic's (the first optimizer: the one reduce_lr scales the others by).
DERIVED: dict[str, tuple[str, float]] = {"entropy": ("logp_mean", -1.0), "lr": ("lr_critic", 1.0)}


def get_path(result: Mapping[str, Any], path: str) -> Any:
    """``result["a"]["b"]`` for path "a/b"; None where any part is missing."""
    node: Any = result
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _to_float(x: Any) -> float | None:
    """A number as float (NaN and inf kept, they are evidence); anything else None."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        return float(x)  # numpy scalars, 0-d tensors, ints
    except (TypeError, ValueError):
        return None


def _iteration(x: Any) -> int:
    v = _to_float(x)
    return int(v) if v is not None and math.isfinite(v) and 0 <= v < 2**62 else 0


def module_ids_of(result: Mapping[str, Any]) -> list[str]:
    """The RLModules a result speaks of: its learners' and its env runners' per-module returns, in order."""
    out: dict[str, None] = {}
    learners = result.get("learners") if isinstance(result, Mapping) else None
    if isinstance(learners, Mapping):
        out.update((str(m), None) for m in learners if m != "__all_modules__")
    returns = get_path(result, "env_runners/module_episode_returns_mean") if isinstance(result, Mapping) else None
    if isinstance(returns, Mapping):
        out.update((str(m), None) for m in returns)
    return list(out) or [modules.DEFAULT]


#: What RLlib reports as NaN when no episode finished in the iteration (episodes longer than the
#: train batch, SAC's first iterations): no data, not a fault.
EPISODE_METRICS = ("episode_return_mean", "episode_return_max", "episode_return_min", "episode_len_mean")


HYPERPARAMETERS = ("lr", "entropy_coeff", "kl_coeff")
#: What the env runners' data guard counted (actors/data_guard.py).
DATA_GUARD_METRICS = tuple(k for k in RESULT_PATHS if k.startswith("data_guard_"))
#: The metrics the learner reports (as opposed to the env runners and timers).
LEARNER_METRICS = tuple(k for k, path in RESULT_PATHS.items() if path.startswith("learners/"))


def drop_no_data(metrics: dict) -> dict:
    """Remove values that only mean "nothing to report", in place: NaN episode statistics of an iteration
    that finished no episode, NaN learner statistics of an iteration with no update, an explained
    variance that is undefined (NaN: constant targets) or noise (a negligible value error), and the derived
    policy/value gradient ratio when its denominator is 0 (a value loss clipped on every sample has no
    gradient; dividing by it is not a training fault)."""
    for k in [k for k in DATA_GUARD_METRICS if k in metrics and math.isnan(metrics[k])]:
        del metrics[k]  # the guard logged nothing (no sample this iteration): counts, not evidence
    n = metrics.get("num_episodes")
    # 0 (or NaN: async APPO/IMPALA) finished episodes: no data. Without a count the NaN may be a NaN reward
    # (a loop that averages returns over a buffer of finished episodes): evidence, kept.
    if n is not None and (n == 0 or math.isnan(n)):
        for k in EPISODE_METRICS + ("num_episodes", "env_steps"):
            v = metrics.get(k)
            if v is not None and math.isnan(v):
                del metrics[k]
    steps = metrics.get("data_guard_steps")
    everything_held = steps is not None and steps > 0 and metrics.get("data_guard_dropped_steps") == steps
    if everything_held or any(math.isnan(metrics.get(k, 0.0)) for k in HYPERPARAMETERS):
        # (the data guard held every sample of the iteration out: the learner updated on an empty batch)
        # A hyperparameter is never NaN: a learner that did no update this iteration (APPO, IMPALA when
        # their learner queue is empty) reports NaN for every learner statistic. No data, not a fault.
        for k in [k for k in LEARNER_METRICS if k in metrics and math.isnan(metrics[k])]:
            del metrics[k]
    ev = metrics.get("explained_variance")
    if ev is not None and (math.isnan(ev) or _negligible_error(metrics)):
        # 1 - Var(y - v)/Var(y) is undefined when the returns do not vary (CleanRL and SB3 log NaN, sparse
        # rewards, a return at its cap); a NaN critic would show in its loss. And it is noise when the
        # critic's error is negligible against its targets (A2C's 5-step batches inside a 500-step
        # episode: targets all ~100, an MSE of 1e-9, EV -12): a ratio of two tiny variances.
        del metrics["explained_variance"]
    ratio = metrics.get("grad_norm_ratio")
    if ratio is not None and not math.isfinite(ratio) and metrics.get("grad_norm_value", 1.0) == 0.0:
        del metrics["grad_norm_ratio"]
    return metrics


#: A value loss below this fraction of its squared target scale (an RMS error of 1 % of the targets) is
#: a negligible error: the explained variance of such a batch says nothing.
NEGLIGIBLE_VF_ERROR = 1e-4
#: The discount assumed where the trial's config does not give one (RLlib's, SB3's and CleanRL's default).
GAMMA = 0.99


def _finite(x) -> float | None:
    return x if isinstance(x, float) and math.isfinite(x) else None


def target_scale(metrics: Mapping[str, float], gamma: float = GAMMA) -> tuple[float, str] | None:
    """The scale of what a value loss regresses on, and where it came from: ``value_target_scale`` (mean
    |value target|) when the writer reports it; else |``q_mean``| (a Q-learner's targets are its own
    Q-values); else estimated from the returns: per-step reward r = |return| / episode length L, and the
    mean discounted value over an episode, r / (1 - gamma) x (1 - (1 - gamma^L) / (L (1 - gamma))) (a
    writer that normalizes its rewards, VecNormalize, regresses on smaller targets than this: the estimate
    is then generous). None when none of these is reported (or the scale is 0)."""
    s = _finite(metrics.get("value_target_scale"))
    if s is not None and s > 0:
        return s, "value_target_scale"
    q = _finite(metrics.get("q_mean"))
    if q is not None and q != 0:
        return abs(q), "|q_mean|"
    ret, length = _finite(metrics.get("episode_return_mean")), _finite(metrics.get("episode_len_mean"))
    if ret is None or length is None or length < 1 or ret == 0:
        return None
    s = returns_value_scale(ret, length, gamma)
    return (s, f"the returns' value scale (gamma {gamma:g})") if s > 0 else None


def returns_value_scale(ret: float, length: float, gamma: float = GAMMA) -> float:
    """The mean discounted value over an episode of return ``ret`` and ``length`` steps, its rewards spread
    evenly: r / (1 - gamma) x (1 - (1 - gamma^L) / (L (1 - gamma))), r = |ret| / L."""
    g = 1.0 - gamma
    return abs(ret) / length / g * (1.0 - (1.0 - gamma ** length) / (length * g))


def _negligible_error(metrics: dict) -> bool:
    # the reported scale only: an estimate from raw returns says nothing of normalized targets (VecNormalize)
    scale = _finite(metrics.get("value_target_scale"))
    loss = _finite(metrics.get("vf_loss_unclipped", metrics.get("vf_loss")))
    return scale is not None and loss is not None and scale > 0 and 0 <= loss < NEGLIGIBLE_VF_ERROR * scale * scale


EVAL_METRICS = ("eval_return_mean", "eval_num_episodes")
#: Multi-agent: what belongs to one module (its learner) and what to the trial (env runners, timers, the team).
MODULE_PATHS = {k: p for k, p in RESULT_PATHS.items() if "{m}" in p}
TRIAL_PATHS = {k: p for k, p in RESULT_PATHS.items() if "{m}" not in p}


def _module_metrics(result: Mapping[str, Any], m: str | None, paths: Mapping[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, path in paths.items():
        v = _to_float(get_path(result, path.format(m=m)))
        if v is not None:
            out[name] = v
    for name, (src, sign) in DERIVED.items():
        if name not in out and src in out:
            out[name] = sign * out[src]
    return out


def normalize_result(result: Mapping[str, Any], trial_id: str, node_id: str | None = None,
                     eval_interval: int | None = None) -> dict:
    """RLlib result dict -> ``{"trial_id", "iteration", "time", "node_id", "metrics": {name: float}}``.

    A metric RLlib did not report is absent (not NaN): absence is "no data",
    NaN is "the run produced NaN". RLlib repeats the last evaluation's results in every result
    after it: with ``eval_interval`` (the config's ``evaluation_interval``) they are kept only on
    the iterations that evaluated.
    """
    ids = module_ids_of(result)
    if ids == [modules.DEFAULT]:
        metrics = _module_metrics(result, modules.DEFAULT, RESULT_PATHS)
        drop_no_data(metrics)
    else:  # multi-agent: the trial's own metrics plain, each module's under modules/<id>/
        metrics = _module_metrics(result, None, TRIAL_PATHS)
        episodes = metrics.get("num_episodes")
        drop_no_data(metrics)
        for mid in ids:
            own = _module_metrics(result, mid, MODULE_PATHS)
            ret = _to_float(get_path(result, f"env_runners/module_episode_returns_mean/{mid}"))
            if ret is not None:
                own["episode_return_mean"] = ret
            if episodes is not None:  # a NaN return of an iteration that finished no episode: no data
                own["num_episodes"] = episodes
            drop_no_data(own)
            own.pop("num_episodes", None)
            metrics.update((modules.key(mid, k), v) for k, v in own.items())
        agents = get_path(result, "env_runners/agent_episode_returns_mean")
        for aid, v in (agents.items() if isinstance(agents, Mapping) else ()):
            v = _to_float(v)
            if v is not None and not (math.isnan(v) and episodes is not None and not episodes > 0):
                metrics[modules.agent_key(aid)] = v
    if metrics.get("eval_return_mean") is not None and math.isnan(metrics["eval_return_mean"]):
        del metrics["eval_return_mean"]  # an evaluation that finished no episode: no data
    it = _iteration(result.get("training_iteration"))
    if eval_interval and it % int(eval_interval):
        for k in EVAL_METRICS:
            metrics.pop(k, None)
    return {
        "trial_id": trial_id,
        "iteration": _iteration(result.get("training_iteration")),
        "time": time.time(),
        "node_id": node_id,
        "metrics": metrics,
    }
