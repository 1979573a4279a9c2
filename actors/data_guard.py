"""The data guard on an RLlib env runner: every sampled batch checked before a learner or a replay buffer.

RLlib's new API stack calls ``RLlibCallback.on_sample_end(env_runner, metrics_logger, samples)`` on the
env runner at the end of every ``EnvRunner.sample()``, with the very list of episodes ``sample()`` returns
to the algorithm (PPO hands it to its learners, DQN and SAC add it to their replay buffer). The
supervisor's callback calls :meth:`EnvRunnerGuard.on_sample_end` there: the episodes' rewards,
observations and actions go through ``supervisor.data_guard.DataGuard`` (a few numpy calls for the whole
batch), the episodes it drops are removed from that list in place, and what it found is logged to the env
runner's metrics under ``data_guard/...``: summed over the iteration's samples and env runners, it is in
the iteration's own result (``env_runners/data_guard/...``), where the ``data_poisoned`` and
``obs_out_of_range`` detectors read it.

Checked: PPO, APPO, IMPALA, DQN, SAC (``SingleAgentEpisode``) and multi-agent episodes (every agent's
episode; a poisoned agent drops the whole multi-agent episode). Evaluation env runners are not guarded
(their samples train nothing).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from supervisor.data_guard import DataGuard

log = logging.getLogger(__name__)

KEY = "data_guard"
_SUMS = ("steps", "episodes", "poisoned_episodes", "nonfinite_rewards", "nonfinite_obs", "nonfinite_actions",
         "out_of_range_episodes", "out_of_range_steps", "dropped_episodes", "dropped_steps", "check_s")


class EnvRunnerGuard:
    """Args: ``settings``: the ``supervisor.data_guard`` section (a dict)."""

    def __init__(self, settings: dict | None = None):
        s = dict(settings or {})
        self.enabled = bool(s.get("enabled", True))
        self.guard = DataGuard(float(s.get("range_factor", 10.0)), int(s.get("warmup_steps", 1000)),
                               bool(s.get("hold", True)))
        # counts since the env runner started (a crash report, or an iteration whose metrics RLlib dropped,
        # takes its share)
        self.totals = {k: 0 for k in _SUMS}

    @property
    def quarantine(self) -> bool:
        return self.guard.quarantine

    def set_quarantine(self, on: bool = True) -> None:
        self.guard.quarantine = bool(on)

    def on_sample_end(self, env_runner, metrics_logger, samples) -> None:
        if not self.enabled or samples is None:
            return
        if getattr(getattr(env_runner, "config", None), "in_evaluation", False):
            return
        t0 = time.perf_counter()
        parts, owner = [], []
        for i, ep in enumerate(samples):
            for sae in _agent_episodes(ep):
                parts.append(sae)
                owner.append(i)
        if not parts:
            return
        rewards, obs, acts = [], [], []
        for sae in parts:
            rewards.append(_array(sae.get_rewards()))
            obs.append(_features(sae.get_observations()))
            acts.append(_features(sae.get_actions()))
        keep, st = self.guard.check(rewards, obs, acts)
        if not keep.all():
            drop = {owner[j] for j in np.flatnonzero(~keep)}
            samples[:] = [ep for i, ep in enumerate(samples) if i not in drop]
        st.check_s = time.perf_counter() - t0  # extracting the arrays included
        for k in self.totals:
            self.totals[k] += getattr(st, k)
        if metrics_logger is not None:
            self._log(metrics_logger, st)

    def _log(self, ml, st) -> None:
        from actors.compat import log_per_iteration  # each iteration's own counts, on every supported Ray

        for k in _SUMS:
            log_per_iteration(ml, (KEY, k), float(getattr(st, k)), "sum")
        log_per_iteration(ml, (KEY, "range_excess"), float(st.range_excess), "max")
        # the lowest feature out of range in this sample (-1: none); the iteration's is the largest of those
        log_per_iteration(ml, (KEY, "out_of_range_feature"),
                          float(st.out_of_range_features[0]) if st.out_of_range_features else -1.0, "max")
        log_per_iteration(ml, (KEY, "out_of_range_features"), float(len(st.out_of_range_features)), "max")
        log_per_iteration(ml, (KEY, "quarantine"), 1.0 if self.guard.quarantine else 0.0, "max")


def _agent_episodes(ep):
    agents = getattr(ep, "agent_episodes", None)
    if isinstance(agents, dict):
        return list(agents.values())
    return [ep]


def _array(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) if not isinstance(x, np.ndarray) else x


def _features(x):
    """Observations or actions as one (rows, features) array: dict/tuple spaces flattened; None when not numbers."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (dict, tuple)) or (isinstance(x, list) and x and isinstance(x[0], (dict, tuple))):
        try:
            import tree

            leaves = [np.asarray(v) for v in tree.flatten(x)]
            n = len(leaves[0]) if leaves else 0
            if all(v.dtype.kind in "fciub" and len(v) == n for v in leaves):
                return np.concatenate([v.reshape(n, -1).astype(np.float64) for v in leaves], axis=1)
        except Exception:
            return None
        return None
    try:
        return np.asarray(x)
    except Exception:
        return None


def _totals(env_runner) -> dict | None:
    """Runs on an env runner: its guard's counts so far (None: no guard there)."""
    for cb in getattr(env_runner, "_callbacks", None) or ():
        guard = getattr(cb, "guard", None)  # the supervisor's callback (duck-typed: this ships by value)
        if guard is not None and isinstance(getattr(guard, "totals", None), dict):
            return {**guard.totals, "quarantine": 1.0 if guard.quarantine else 0.0}
    return None


class LostIterations:
    """The guard's figures of iterations whose env-runner metrics RLlib dropped.

    PPO drops an iteration's env-runner metrics when it got no episode back (``if not episodes: return`` in
    its ``training_step``): exactly what happens when the guard held every episode of the iteration out. On
    the algorithm's side, every iteration's ``data_guard`` sums are added up; when a result lacks them, the
    guard's totals are read from the env runners and the difference is the lost iteration's share."""

    def __init__(self):
        self.reported: dict = {}

    def fill(self, algorithm, result: dict) -> None:
        from supervisor.metrics import get_path

        here = get_path(result, f"env_runners/{KEY}")
        steps = here.get("steps") if isinstance(here, dict) else None
        # missing, or empty (RLlib reduces a sum with no values in the iteration to NaN): the metrics were dropped
        if not isinstance(steps, (int, float)) or not steps > 0:
            group = getattr(algorithm, "env_runner_group", None)
            if group is None:
                return
            from actors.appliers.rllib.remote import foreach_env_runner

            try:
                each = foreach_env_runner(group, _totals, local=group.num_remote_env_runners() == 0)
            except Exception as e:
                log.warning("could not read the data guard's counts: %s", e)
                return
            each = [t for t in each if t]
            if not each:
                return
            totals = {k: sum(float(t.get(k, 0)) for t in each) for k in _SUMS}
            here = {k: max(0.0, totals[k] - self.reported.get(k, 0.0)) for k in _SUMS}
            here["quarantine"] = max(t.get("quarantine", 0.0) for t in each)
            if any(totals[k] < self.reported.get(k, 0.0) for k in _SUMS):  # an env runner restarted: resync
                self.reported = dict(totals)
            runners = result.get("env_runners")
            if not isinstance(runners, dict):
                runners = result["env_runners"] = {}
            runners[KEY] = here
        for k in _SUMS:
            v = here.get(k)
            if isinstance(v, (int, float)) and v == v:
                self.reported[k] = self.reported.get(k, 0.0) + float(v)
