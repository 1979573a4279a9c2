"""Foreign metric keys -> the supervisor's normalized metric names, in one place.

Trainers name the same quantity a dozen ways (``approxkl``, ``train/approx_kl``,
``policy/approxkl_avg``, ``info/learner/default_policy/learner_stats/kl``...).
:func:`normalize_keys` maps one logged record onto the names the detectors
read (:mod:`supervisor.metrics`); ``supervise scan`` uses it for logs on disk
and a live integration (CleanRL, Stable-Baselines3, TRL, RLDK) can use it
for the dicts those libraries hand to their loggers.

Matching, on the flattened key (nested objects joined with ``/``), lowercased:

1. exactly against :data:`ALIASES`;
2. with an RLlib module/policy prefix stripped (new stack
   ``learners/<module>/``, old stack ``info/learner/<policy>/learner_stats/``,
   ``info/learner/<policy>/`` and ``info/learner/``);
3. with one of :data:`PREFIXES` stripped (``train/``, ``losses/``, ``rollout/``...).

The first alias of a name that a record has wins (aliases are listed best
first; an exact match beats a stripped one; between two RLlib policies, the
first one logged). A leading ``-`` in an alias negates the value
(Stable-Baselines3 logs ``train/entropy_loss`` = -entropy).

Keys that mean nothing here are returned as "ignored" by :func:`map_keys`;
:func:`rank_ignored` orders them for people (learner-looking keys first,
``config/*`` and hyperparameters counted, not listed).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping

from supervisor import modules
from supervisor.metrics import RESULT_PATHS, drop_no_data, module_ids_of, normalize_result

# normalized name -> the keys that mean it, best first (lowercase).
ALIASES: dict[str, tuple[str, ...]] = {
    "episode_return_mean": ("episode_return_mean", "episode_reward_mean", "episodic_return", "episodic_reward",
                            "ep_rew_mean",
                            "eprewmean", "reward_mean", "mean_reward", "return_mean", "mean_return",
                            "mean 100 episode reward", "episode_return", "ep_return", "mean_scores", "scores",
                            "rlhf_reward", "episode_reward", "reward",
                            "return_history",  # baselines DDPG: rollout/return_history (last 100 episodes)
                            "averagereturn"),  # rllab/garage: AverageReturn (this iteration's trajectories)
    "episode_return_max": ("episode_return_max", "episode_reward_max", "reward_max", "return_max", "max_scores",
                           "maxreturn"),
    "episode_return_min": ("episode_return_min", "episode_reward_min", "reward_min", "return_min", "min_scores",
                           "minreturn"),
    "episode_len_mean": ("episode_len_mean", "episodic_length", "ep_len_mean", "eplenmean", "episode_length_mean",
                         "episode_length", "episode_steps"),
    # CleanRL's DQN: losses/td_loss (its only loss, as SB3's DQN train/loss)
    "total_loss": ("total_loss", "loss", "ppo/loss/total", "loss/total", "td_loss"),
    "policy_loss": ("policy_loss", "pg_loss", "policy_gradient_loss", "actor_loss", "ppo/loss/policy",
                    "loss/policy_avg", "loss/policy", "loss_actor", "loss_pol_surr"),
    "vf_loss": ("vf_loss", "value_loss", "critic_loss", "v_loss", "value_function_loss", "ppo/loss/value",
                "loss/value_avg", "loss/value", "loss_critic", "loss_vf_loss"),
    # a Q-function's loss (RLlib's learners/<m>/qf_loss); CleanRL's SAC logs the mean of its two critics'
    # losses/qf_loss, TD3 and DDPG losses/qf1_loss
    "q_loss": ("q_loss", "qf_loss", "qf1_loss"),
    "vf_loss_unclipped": ("vf_loss_unclipped",),
    "entropy": ("entropy", "policy_entropy", "entropy_mean", "ent", "ppo/policy/entropy", "policy/entropy_avg",
                "policy/entropy", "-train/entropy_loss", "loss_ent"),
    "kl": ("kl", "mean_kl", "kl_mean", "mean_kl_loss", "kl_divergence", "kl_div", "ppo/mean_kl", "meankl",
           "loss_kl"),  # baselines/stable-baselines PPO1: loss_kl, loss_ent, loss_vf_loss, loss_pol_surr
    "approx_kl": ("approx_kl", "approxkl", "ppo/policy/approxkl", "policy/approxkl_avg", "policy/approx_kl"),
    # PPO ratio clipping; TRL GRPO calls it clip_ratio(/region_mean). Not completions/clipped_ratio
    # (completions cut at max length), which is completion_truncated_fraction below.
    "clip_fraction": ("clip_fraction", "clipfrac", "clip_frac", "ppo/policy/clipfrac", "policy/clipfrac_avg",
                      "policy/clipfrac", "clip_ratio/region_mean", "clip_ratio"),
    "vf_clip_fraction": ("vf_clip_fraction", "val/clipfrac_avg", "ppo/val/clipfrac", "val/clipfrac"),
    "kl_coeff": ("kl_coeff", "kl_coef", "curr_kl_coeff", "cur_kl_coeff", "kl_ctl_value", "kl_ctl"),
    "entropy_coeff": ("entropy_coeff", "ent_coef", "entropy_coef", "curr_entropy_coeff"),
    "lr": ("lr", "learning_rate", "cur_lr", "curr_lr", "default_optimizer_learning_rate", "ppo/learning_rate"),
    "grad_norm": ("grad_norm", "gradient_norm", "global_grad_norm", "grad_gnorm", "total_grad_norm",
                  "gradients_default_optimizer_global_norm"),
    "grad_norm_max": ("grad_norm_max", "sup_grad_norm_max"),
    "grad_norm_mean": ("grad_norm_mean", "sup_grad_norm_mean"),
    "grad_norm_policy": ("grad_norm_policy", "policy_grad_norm", "actor_grad_norm", "sup_grad_norm_policy"),
    "grad_norm_value": ("grad_norm_value", "value_grad_norm", "critic_grad_norm", "sup_grad_norm_value"),
    "explained_variance": ("explained_variance", "explained_var", "vf_explained_var", "ppo/val/var_explained",
                           "val/var_explained", "explainedvariance", "ev_tdlam_before"),
    "advantage_mean": ("advantage_mean", "advantages_mean", "adv_mean", "ppo/policy/advantages_mean",
                       "advantages/mean", "sup_advantage_mean"),
    "advantage_std": ("advantage_std", "advantages_std", "adv_std", "ppo/policy/advantages_std", "advantages/std",
                      "sup_advantage_std"),
    "advantage_skew": ("advantage_skew", "sup_advantage_skew"),
    "advantage_kurtosis": ("advantage_kurtosis", "sup_advantage_kurtosis"),
    "value_target_scale": ("value_target_scale", "sup_value_target_scale"),
    "value_target_rms": ("value_target_rms", "sup_value_target_rms"),
    # Q-value statistics (DDPG/TD3/SAC/DQN); baselines DDPG logs rollout/Q_mean, RLlib's old stack mean_q/max_q/min_q.
    # CleanRL: losses/q_values (DQN: the taken actions' Q on the batch), losses/qf1_values (SAC, TD3, DDPG)
    "q_mean": ("q_mean", "qf_mean", "mean_q", "q_values", "qf1_values"),
    "q_max": ("q_max", "qf_max", "max_q"),
    "q_min": ("q_min", "qf_min", "min_q"),
    "time_this_iter_s": ("time_this_iter_s",),
    # rllab/garage: NumTrajs; baselines PPO1/TRPO: EpThisIter
    "num_episodes": ("num_episodes", "episodes_this_iter", "numtrajs", "epthisiter"),
    # Context no detector reads yet: mapped so that it is shown, not listed as ignored.
    "reward_std": ("reward_std", "std_scores", "ppo/std_scores", "rewards_std"),
    "success_rate": ("success_rate", "test/success_rate", "eval/success_rate"),
    "completion_truncated_fraction": ("completions/clipped_ratio", "completions/clipped_frac"),
    "eval_loss": ("eval_loss", "eval/loss"),
}

# One of these is stripped before a second lookup ("losses/approx_kl" -> "approx_kl").
PREFIXES = ("train/", "training/", "trainer/", "losses/", "charts/", "objective/", "ppo/", "rollout/", "metrics/",
            "learner/", "learner_stats/", "stats/", "env/", "env_runners/", "sampler_results/", "misc/")
# RLlib's per-module/per-policy prefixes (new stack; old stack with and without learner_stats or a policy id).
_MODULE_PREFIX = re.compile(r"^(?:learners/[^/]+/|info/learner/[^/]+/learner_stats/|info/learner/[^/]+/"
                            r"|info/learner/)")
# A reward function's mean in TRL (GRPO/RLOO): rewards/<fn>/mean, or rewards/<fn> in older releases.
_REWARD_COMPONENT = re.compile(r"^rewards/([^/]+?)(?:/mean)?$")
REWARD_COMPONENT = "reward_component/"

# The step column, best first; the scan uses the first one a log has (else the line index). SB3's cumulative
# episode count is last: the axis of an SB3 log that records no timestep column (a logger given a subset of keys).
STEP_KEYS = ("step", "global_step", "training_iteration", "_step", "iteration", "Iteration", "train/global_step",
             "time/total_timesteps", "total_timesteps", "misc/total_timesteps", "nupdates", "misc/nupdates",
             "timesteps_total", "total/steps", "steps", "TimestepsSoFar", "epoch", "time/episodes")


def _column_form(key: str) -> str:
    return "_".join(key.strip().lower().split())


_STEP_RANK: dict[str, int] = {}
for _i, _k in enumerate(STEP_KEYS):
    _STEP_RANK.setdefault(_column_form(_k), _i)


def step_column(columns: Iterable[str]) -> str | None:
    """The step column among a log's ``columns``: the first of :data:`STEP_KEYS` present as written, else the
    best-ranked one present up to case and spacing (a hand-written logger's ``time/total timesteps``)."""
    cols = columns if isinstance(columns, (set, frozenset, dict)) else set(columns)
    exact = next((k for k in STEP_KEYS if k in cols), None)
    if exact is not None:
        return exact
    ranked = [(_STEP_RANK[f], c) for c in cols if isinstance(c, str) and (f := _column_form(c)) in _STEP_RANK]
    return min(ranked)[1] if ranked else None


# No episode finished yet: RLlib (both stacks) and SB3 report these as NaN. "No data", never a fault.
EPISODE_STATS = ("episode_return_mean", "episode_return_max", "episode_return_min", "episode_len_mean")
# ... except when the "return" is an RLHF reward (TRL, RLDK): every step scores completions, so a NaN
# there is a reward model or function producing NaN, which is evidence.
RLHF_REWARD_KEYS = frozenset(("reward", "rewards", "reward_mean", "scores", "mean_scores", "rlhf_reward",
                              "max_scores", "min_scores"))

_RLLIB_ROOTS = ("learners", "env_runners", "fault_tolerance", "timers")

# Tune's auto-filled result keys: bookkeeping, neither metrics nor "ignored".
TUNE_BOOKKEEPING = frozenset(("pid", "timestamp", "time_since_restore", "iterations_since_restore",
                              "timesteps_since_restore", "experiment_tag", "done", "time_total_s", "date",
                              "hostname", "node_ip", "trial_id", "experiment_id", "episodes_total",
                              "_runtime", "_timestamp", "_wandb/runtime"))  # (and W&B's history bookkeeping)

_LOOKUP: dict[str, tuple[str, int, bool]] = {}
for _name, _keys in ALIASES.items():
    for _i, _k in enumerate(_keys):
        _LOOKUP.setdefault(_k.lstrip("-"), (_name, _i, _k.startswith("-")))


# The supervisor's own names mean themselves (this project's TensorBoard tags are metrics/<name>).
for _name in RESULT_PATHS:
    if _name not in TUNE_BOOKKEEPING:
        _LOOKUP.setdefault(_name, (_name, 0, False))


def lookup(key: str) -> tuple[str, int, bool] | None:
    """The normalized name a log key means: ``(name, rank, negate)``, or None for an unknown key."""
    k = key.strip().lower()
    hit = _LOOKUP.get(k)
    if hit is not None:
        return hit
    m = _MODULE_PREFIX.match(k)
    if m:
        hit = _LOOKUP.get(k[m.end():])
        if hit is not None:
            return hit[0], hit[1] + 100, hit[2]
    for p in PREFIXES:
        if k.startswith(p):
            hit = _LOOKUP.get(k[len(p):])
            if hit is not None:
                return hit[0], hit[1] + 100, hit[2]
    m = _REWARD_COMPONENT.match(k)
    if m and not m.group(1).endswith(("_std", "/std")):
        return REWARD_COMPONENT + m.group(1), 0, False
    return None


def number(x: Any) -> float | None:
    """A log value as float (NaN and inf kept: they are evidence), or None if it is not a number."""
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        s = x.strip().lower()
        if not s or len(s) > 40:
            return None
        try:
            return float(s)  # "nan", "inf", "-inf", "infinity", "1e-3"
        except ValueError:
            return None
    try:
        return float(x)  # numpy scalars
    except (TypeError, ValueError):
        return None


def flatten(obj: Mapping, prefix: str = "", out: dict | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flatten(v, key + "/", out)
        else:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    out: dict = {}
    for key, v in flat.items():
        parts = str(key).split("/")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node[parts[-1]] = v
    return out


def is_rllib(flat: Mapping[str, Any]) -> bool:
    return any(str(k).split("/", 1)[0] in _RLLIB_ROOTS for k in flat)


def map_keys(flat: Mapping[str, Any], nested: Mapping | None = None,
             dropped: list[str] | None = None, keep_nan_returns: bool = False) -> tuple[dict[str, float], list[str]]:
    """One flattened record -> (normalized metrics, numeric keys that meant nothing to us).

    RLlib result dicts go through :func:`normalize_result` first; the alias
    table then fills what is still missing (old API stack, other loggers).
    NaN episode statistics are dropped (no episode finished: no data) and
    their names appended to ``dropped`` when given; not a NaN RLHF reward
    (:data:`RLHF_REWARD_KEYS`), which is evidence, and not with
    ``keep_nan_returns`` (a live loop: there a NaN return of finished episodes
    is a NaN reward, and :func:`supervisor.metrics.drop_no_data` decides by the
    episode count).
    """
    metrics: dict[str, float] = {}
    handled: set[str] = set()
    if is_rllib(flat):
        result = nested if nested is not None else unflatten(flat)
        metrics.update(normalize_result(result, "scan")["metrics"])
        mids = module_ids_of(result)
        mid = mids[0]
        if len(mids) == 1 and mid != modules.DEFAULT:
            # a log of one shared policy (self-play, a team): judged as that policy's stream, as live
            for k, v in modules.module_view(metrics, mid).items():
                metrics.setdefault(k, v)
        # what normalize_result read (or deliberately dropped: a NaN return with no episode) is settled
        handled = {name for name, path in RESULT_PATHS.items() if path.format(m=mid) in flat}
        handled.update(path.format(m=m) for m in mids for path in RESULT_PATHS.values())  # not "ignored"
        if dropped is not None:  # normalize_result drops no-data NaNs itself: count them here
            dropped.extend(n for n in EPISODE_STATS if n not in metrics and n in RESULT_PATHS
                           and (v := number(flat.get(RESULT_PATHS[n].format(m=mid)))) is not None and math.isnan(v))
    best: dict[str, tuple[int, float, str]] = {}
    ignored: list[str] = []
    steps = set(STEP_KEYS)
    for key, raw in flat.items():
        if key in steps or key in handled:
            continue
        v = number(raw)
        if v is None:
            continue
        hit = lookup(key)
        if hit is None:
            if key not in TUNE_BOOKKEEPING:
                ignored.append(key)
            continue
        name, rank, neg = hit
        if name in metrics or name in handled:
            continue
        if name not in best or rank < best[name][0]:
            best[name] = (rank, -v if neg else v, key)
    for name, (_, v, _) in best.items():
        metrics[name] = v
    for name in () if keep_nan_returns else EPISODE_STATS:
        src = best.get(name, (0, 0.0, ""))[2].lower().rsplit("/", 1)[-1]
        if name in metrics and math.isnan(metrics[name]) and src not in RLHF_REWARD_KEYS:
            del metrics[name]
            if dropped is not None:
                dropped.append(name)
    if best:  # the learner's no-data values (SB3's NaN explained variance), as for RLlib's results
        drop_no_data(metrics)
    return metrics, ignored


def normalize_keys(record: Mapping[str, Any]) -> dict[str, float]:
    """One logged record (flat or nested, any of the loggers above) -> ``{normalized name: float}``.

    Unknown keys and step counters are left out; NaN/inf stay (evidence),
    except NaN episode statistics (no episode finished yet: no data; an RLHF
    reward's NaN stays).
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"normalize_keys expects a mapping, got {type(record).__name__}")
    return map_keys(flatten(record), record)[0]


# --------------------------------------------------------------------------- ignored keys, for people

_LEARNER_WORDS = ("loss", "kl", "entrop", "grad", "reward", "return", "value", "clip", "adv")
_LR = re.compile(r"(?:^|[/_. -])(?:cur_|curr_)?lr(?:$|[/_. -])")  # "lr", not the "lr" in "allreduce"
_CONFIG_PREFIXES = ("config/", "hparams/", "hyperparameters/", "params/", "args/", "trial_params/")
# Settings that loggers report next to statistics (SB3's train/clip_range, train/n_updates...).
HYPERPARAMETERS = frozenset((
    "clip_range", "clip_range_vf", "clip_param", "vf_clip_param", "gamma", "lambda", "gae_lambda", "n_steps",
    "batch_size", "minibatch_size", "sgd_minibatch_size", "train_batch_size", "n_epochs", "num_epochs",
    "num_sgd_iter", "target_kl", "kl_target", "max_grad_norm", "grad_clip", "vf_loss_coeff", "vf_coef",
    "n_updates", "num_train_epochs", "warmup_steps", "weight_decay"))


def is_config_key(key: str) -> bool:
    k = key.lower()
    return k.startswith(_CONFIG_PREFIXES) or "/config/" in k or k.rsplit("/", 1)[-1] in HYPERPARAMETERS


def looks_like_learner(key: str) -> bool:
    k = key.lower()
    return any(w in k for w in _LEARNER_WORDS) or _LR.search(k) is not None


def rank_ignored(keys: Iterable[str], limit: int = 20) -> tuple[list[str], int, int]:
    """Ignored keys for people: (up to ``limit`` names, learner-looking first; how many more; config keys).

    ``config/*`` dumps and :data:`HYPERPARAMETERS` are counted, not listed:
    twenty of them would hide the one learner statistic that was not mapped.
    """
    keys = sorted(set(keys))
    config = [k for k in keys if is_config_key(k)]
    rest = [k for k in keys if not is_config_key(k)]
    ordered = [k for k in rest if looks_like_learner(k)] + [k for k in rest if not looks_like_learner(k)]
    return ordered[:limit], max(0, len(ordered) - limit), len(config)
