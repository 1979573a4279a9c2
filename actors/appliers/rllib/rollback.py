"""``rollback``: the learners back to a health-gated checkpoint, in-process, and every env runner sampling with it.

RLlib 2.60 internals relied on (checked against the installed source):

* ``Learner._weights_seq_no`` and ``SingleAgentEnvRunner._weights_seq_no``:
  an env runner ignores a weight push unless its seq no is 0 or older than the
  pushed one.
* ``EnvRunnerGroup.sync_weights(from_worker_or_learner_group=..., inference_only=True)``
  (remote pushes are async and dropped when another ``set_state`` request is
  still in flight, hence the explicit drain/verify/fallback in ``rollback``).
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

from supervisor.actions.base import changed

from actors.appliers.rllib.checkpoints import HPARAMS_SIDECAR, checkpoint_hparams
from actors.appliers.rllib.hparams import HPARAM_KEYS, NOT_REAPPLIED, current_hparams, set_hparams
from actors.appliers.rllib.remote import foreach_env_runner, foreach_learner

#: Learned state outside the learner's module and optimizer state (``get_state`` leaves it out): restored from
#: the checkpoint's hparams sidecar on rollback.
_LEARNED = ("alpha",)


# ---------------------------------------------------------------------------
# shipped to the learners / env runners
# ---------------------------------------------------------------------------


def _learner_seq_no(learner) -> int:
    return int(learner._weights_seq_no)


def _set_learner_seq_no(learner, seq_no: int) -> int:
    learner._weights_seq_no = int(seq_no)
    return learner._weights_seq_no


def _env_runner_seq_no(env_runner) -> int:
    return int(getattr(env_runner, "_weights_seq_no", 0))


def _reset_env_runner_seq_no(env_runner) -> int:
    env_runner._weights_seq_no = 0
    return 0


def _force_env_runner_weights(env_runner, state, seq_no: int) -> int:
    env_runner.set_state(state)  # weights_seq_no 0 in state -> always applied
    env_runner._weights_seq_no = int(seq_no)
    return env_runner._weights_seq_no


# ---------------------------------------------------------------------------
# on the driver
# ---------------------------------------------------------------------------


def _push_weights_to_env_runners(algo, timeout_s: float) -> Dict[str, Any]:
    """Make every env runner (local and remote, and eval) sample with the
    learner's current weights; returns what it did and the seq nos seen."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE

    info: Dict[str, Any] = {"fallback_push": False}
    learner_seq = max(foreach_learner(algo, _learner_seq_no))
    groups = [("env_runner_group", algo.env_runner_group)]
    if getattr(algo, "eval_env_runner_group", None) is not None:
        groups.append(("eval_env_runner_group", algo.eval_env_runner_group))
    for name, group in groups:
        if group is None:
            continue
        # 1. Let the runners accept whatever seq no comes next.
        foreach_env_runner(group, _reset_env_runner_seq_no, timeout_s=timeout_s)
        # 2. RLlib's own push. Remote pushes are async, and a new one is
        #    silently dropped while an earlier "set_state" (PPO's end-of-iteration
        #    sync) is still in flight; a non-zero timeout first drains those.
        group.sync_weights(
            from_worker_or_learner_group=algo.learner_group,
            inference_only=True,
            timeout_seconds=timeout_s,
        )
        # 3. Verify (calls to one actor run in order, so this runs after the push).
        seqs = foreach_env_runner(group, _env_runner_seq_no, timeout_s=timeout_s)
        if any(s != learner_seq for s in seqs):
            # Fallback: synchronous, explicit push of the learner's weights.
            state = algo.learner_group.get_state(
                components=COMPONENT_LEARNER + "/" + COMPONENT_RL_MODULE,
                inference_only=True,
            )[COMPONENT_LEARNER]
            state = {COMPONENT_RL_MODULE: state[COMPONENT_RL_MODULE], "weights_seq_no": 0}  # 0 = force
            foreach_env_runner(group, _force_env_runner_weights, state=state, seq_no=learner_seq, timeout_s=timeout_s)
            info["fallback_push"] = True
            seqs = foreach_env_runner(group, _env_runner_seq_no, timeout_s=timeout_s)
        info[f"{name}_seq_nos"] = list(seqs)
    info["learner_seq_no"] = learner_seq
    return info


def rollback(
    algo,
    path: str,
    hparams: Optional[Dict[str, Any]] = None,
    *,
    timeout_s: float = 60.0,
) -> Dict[str, Any]:
    """Roll the learner(s) back to a checkpoint written by :func:`save_checkpoint`.

    * Restores only the ``learner_group`` component (RL module weights and
      optimizer state) in-process, so the iteration counter, the lifetime
      sample counters and the env runners' connector state keep going.
    * Keeps the learner's weights sequence number monotonic (old + 1) and pushes
      the restored weights to every env runner (see
      :func:`_push_weights_to_env_runners`).
    * Hyperparameters: a restore brings back the optimizer's lr from the
      checkpoint for one update only and leaves entropy/KL/grad-clip as they
      were, so the values in effect before the rollback are re-applied, with
      ``hparams`` (any of lr, entropy_coeff, kl_coeff, grad_clip; or the
      string ``"checkpoint"`` for the values saved with the checkpoint)
      applied on top.
    """
    from ray.rllib.core import COMPONENT_LEARNER_GROUP

    t0 = time.perf_counter()
    path = os.path.abspath(os.fspath(path))
    lg_path = os.path.join(path, COMPONENT_LEARNER_GROUP)
    if not os.path.isdir(lg_path):
        raise FileNotFoundError(f"{path} is not an RLlib algorithm checkpoint (no {COMPONENT_LEARNER_GROUP}/)")
    if hparams == "checkpoint":
        hparams = checkpoint_hparams(path)
        if hparams is None:
            raise ValueError(f"{path} has no {HPARAMS_SIDECAR}")
    if hparams is not None:
        hparams = {k: v for k, v in hparams.items() if k not in NOT_REAPPLIED}
        unknown = set(hparams) - set(HPARAM_KEYS)
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)} in rollback hparams")

    before = current_hparams(algo)
    old_seq = max(foreach_learner(algo, _learner_seq_no))

    t_restore = time.perf_counter()
    algo.restore_from_path(lg_path, component=COMPONENT_LEARNER_GROUP)
    restore_s = time.perf_counter() - t_restore

    # Learner.set_state lowered the seq no to the checkpoint's; keep it
    # monotonic so that no env runner treats the restored weights as stale.
    new_seq = old_seq + 1
    foreach_learner(algo, _set_learner_seq_no, seq_no=new_seq)

    t_sync = time.perf_counter()
    sync_info = _push_weights_to_env_runners(algo, timeout_s)
    sync_s = time.perf_counter() - t_sync

    target = {k: before[k] for k in HPARAM_KEYS if k in before and k not in NOT_REAPPLIED
              and (before[k] is not None or k == "grad_clip")}
    # Learned values the learner keeps outside its module and optimizers (SAC's log_alpha) are not in
    # the restored state: they come back from the checkpoint's sidecar.
    saved = checkpoint_hparams(path) or {}
    target.update({k: saved[k] for k in _LEARNED if k in before and saved.get(k) is not None})
    if hparams:
        target.update(hparams)
    # The checkpoint's optimizer state carries its own lr: always rewrite.
    after = set_hparams(algo, target)

    return {
        "action": "rollback",
        "checkpoint": path,
        "before": before,
        "after": after,
        "changed": changed(before, after),
        "hparams_reapplied": target,
        "weights_seq_no": new_seq,
        "sync": sync_info,
        "restore_s": restore_s,
        "sync_s": sync_s,
        "total_s": time.perf_counter() - t0,
    }
