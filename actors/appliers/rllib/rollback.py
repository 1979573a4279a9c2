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
from supervisor.modules import DEFAULT, by_module, packed
from supervisor.storage import display, is_uri, open_fs

from actors import compat
from actors.appliers.rllib.checkpoints import HPARAMS_SIDECAR, checkpoint_hparams, is_checkpoint
from actors.appliers.rllib.hparams import HPARAM_KEYS, NOT_REAPPLIED, current_hparams, set_hparams
from actors.appliers.rllib.remote import foreach_env_runner, foreach_learner

#: Learned state outside the learner's module and optimizer state (``get_state`` leaves it out): restored from
#: the checkpoint's hparams sidecar on rollback.
_LEARNED = ("alpha",)


# ---------------------------------------------------------------------------
# shipped to the learners / env runners
# ---------------------------------------------------------------------------


def _learner_seq_no(learner) -> int:
    return compat.weights_seq_no(learner)


def _set_learner_seq_no(learner, seq_no: int) -> int:
    return compat.set_weights_seq_no(learner, seq_no)


def _env_runner_seq_no(env_runner) -> int:
    return compat.weights_seq_no(env_runner)


def _reset_env_runner_seq_no(env_runner) -> int:
    return compat.set_weights_seq_no(env_runner, 0)


def _learner_snapshot(learner):
    """The learner's seq no, then its inference-only module state: what is pushed, and checked on the runners."""
    from ray.rllib.core import COMPONENT_RL_MODULE

    seq = compat.weights_seq_no(learner)
    return seq, learner.get_state(components=COMPONENT_RL_MODULE, inference_only=True)[COMPONENT_RL_MODULE]


def _env_runner_holds(env_runner, weights, seq_no: int):
    """Whether the runner's module holds exactly ``weights`` (``{module_id: {param: ndarray}}``) at ``seq_no``;
    None for a runner without a module (an async algorithm's local env runner may have none)."""
    import numpy as np

    from actors.appliers.rllib.weights import _env_runner_weights

    mine = _env_runner_weights(env_runner)
    if not mine:
        return None
    if compat.weights_seq_no(env_runner) != seq_no:
        return False
    pushed = {f"{mid}/{k}": v for mid, params in weights.items() for k, v in params.items()}
    shared = [k for k in pushed if k in mine]
    return bool(shared) and all(np.array_equal(mine[k], np.asarray(pushed[k])) for k in shared)


def _force_env_runner_weights(env_runner, state, seq_no: int) -> int:
    env_runner.set_state(state)  # weights_seq_no 0 in state -> always applied
    return compat.set_weights_seq_no(env_runner, seq_no)


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


def _keep_modules(learner, modules) -> int:
    """Before a restore: keep these modules' weights and optimizer state on the learner itself (no copy
    leaves its process)."""
    from ray.rllib.core import COMPONENT_OPTIMIZER, COMPONENT_RL_MODULE

    state = learner.get_state(components=[f"{COMPONENT_RL_MODULE}/{m}" for m in modules] + [COMPONENT_OPTIMIZER])
    state[COMPONENT_OPTIMIZER] = {k: v for k, v in state[COMPONENT_OPTIMIZER].items() if v["module_id"] in modules}
    state.pop("should_module_be_updated", None)
    state["weights_seq_no"] = 0  # 0: always applied
    learner._supervisor_kept = state
    return len(modules)


def _put_back_modules(learner) -> int:
    state = learner.__dict__.pop("_supervisor_kept", None)
    if state is None:
        raise RuntimeError("no modules kept on this learner")
    seq = compat.weights_seq_no(learner)
    learner.set_state(state)
    compat.set_weights_seq_no(learner, seq)
    return 1


def push_learner_weights(algo, timeout_s: float) -> Dict[str, Any]:
    """``sync_weights``: one snapshot of the learner's weights, pushed to every env runner (local and remote,
    and eval) tagged with the learner's seq no, and verified on each against that snapshot: APPO's and
    IMPALA's learner keeps training in its own thread, so its live weights can move on between a push and a
    check, and a check against them would fail a push that arrived."""
    from ray.rllib.core import COMPONENT_RL_MODULE

    seq, weights = foreach_learner(algo, _learner_snapshot)[0]  # several learners hold the same weights (DDP)
    state = {COMPONENT_RL_MODULE: weights, "weights_seq_no": 0}  # 0 = force
    info: Dict[str, Any] = {"learner_seq_no": seq}
    held = []
    for name in ("env_runner_group", "eval_env_runner_group"):
        group = getattr(algo, name, None)
        if group is None:
            continue
        info[f"{name}_seq_nos"] = foreach_env_runner(group, _force_env_runner_weights, state=state, seq_no=seq,
                                                     timeout_s=timeout_s)
        held += foreach_env_runner(group, _env_runner_holds, weights=weights, seq_no=seq, timeout_s=timeout_s)
    held = [h for h in held if h is not None]
    info["verified"] = bool(held) and all(held)
    return info


def rollback(
    algo,
    path: str,
    hparams: Optional[Dict[str, Any]] = None,
    *,
    module: Optional[str] = None,
    timeout_s: float = 60.0,
) -> Dict[str, Any]:
    """Roll the learner(s) back to a checkpoint written by :func:`save_checkpoint`.

    * Restores only the ``learner_group`` component (RL module weights and
      optimizer state) in-process, so the iteration counter, the lifetime
      sample counters and the env runners' connector state keep going.
    * ``module``: only that RLModule goes back (a multi-agent trial's sick policy); the other modules keep
      their weights and optimizer state (kept on each learner across the restore, then put back).
      None: every module.
    * Keeps the learner's weights sequence number monotonic (old + 1) and pushes
      the restored weights to every env runner (see
      :func:`_push_weights_to_env_runners`).
    * Hyperparameters: a restore brings back the optimizer's lr from the
      checkpoint for one update only and leaves entropy/KL/grad-clip as they
      were, so the values in effect before the rollback are re-applied (each module its own), with
      ``hparams`` (any of lr, entropy_coeff, kl_coeff, grad_clip, flat or per module as
      ``supervisor.modules`` writes them; or the string ``"checkpoint"`` for the values saved with the
      checkpoint) applied on top.
    * With several learners (``num_learners >= 2``) every learner is restored, and ``learners_equal`` says
      whether they hold the same weights afterwards.
    """
    from ray.rllib.core import COMPONENT_LEARNER_GROUP

    from actors.appliers.rllib.hparams import modules_of
    from actors.appliers.rllib.weights import learners_equal

    t0 = time.perf_counter()
    path = os.fspath(path)
    if not is_uri(path):
        path = os.path.abspath(path)
    if not is_checkpoint(path):
        raise FileNotFoundError(f"{display(path)} is not an RLlib algorithm checkpoint (no {COMPONENT_LEARNER_GROUP}/)")
    fs, fs_path = open_fs(path)  # a folder, or a run-storage URI: read through its filesystem on any node
    if hparams == "checkpoint":
        hparams = checkpoint_hparams(path)
        if hparams is None:
            raise ValueError(f"{path} has no {HPARAMS_SIDECAR}")
    hparams = by_module(hparams) if hparams is not None else {}
    for m, hp in hparams.items():
        unknown = set(hp) - set(HPARAM_KEYS)
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)} in rollback hparams")
    ids = modules_of(algo)
    if module is not None and module not in ids:
        raise ValueError(f"unknown module {module!r}; the learners have {ids}")
    others = [m for m in ids if m != module] if module is not None else []

    before = current_hparams(algo)
    old_seq = max(foreach_learner(algo, _learner_seq_no))

    t_restore = time.perf_counter()
    # APPO's and IMPALA's learner thread waits out the restore (one landing mid-update killed it)
    paused = any(foreach_learner(algo, compat.pause_learner_thread))
    try:
        if others:
            foreach_learner(algo, _keep_modules, modules=others)
        algo.restore_from_path(f"{fs_path.rstrip('/')}/{COMPONENT_LEARNER_GROUP}",
                               component=COMPONENT_LEARNER_GROUP, filesystem=fs)
        if others:
            foreach_learner(algo, _put_back_modules)
    finally:
        if paused:
            foreach_learner(algo, compat.resume_learner_thread)
    restore_s = time.perf_counter() - t_restore

    # Learner.set_state lowered the seq no to the checkpoint's; keep it
    # monotonic so that no env runner treats the restored weights as stale.
    new_seq = old_seq + 1
    foreach_learner(algo, _set_learner_seq_no, seq_no=new_seq)

    t_sync = time.perf_counter()
    sync_info = _push_weights_to_env_runners(algo, timeout_s)
    sync_s = time.perf_counter() - t_sync

    saved = by_module(checkpoint_hparams(path))
    target: Dict[str, Dict[str, Any]] = {}
    for m, was in by_module(before).items():
        if len(ids) == 1:
            m = ids[0]
        t = {k: was[k] for k in HPARAM_KEYS if k in was and k not in NOT_REAPPLIED
             and (was[k] is not None or k == "grad_clip")}
        # Learned values the learner keeps outside its module and optimizers (SAC's log_alpha) are not in
        # the restored state: they come back from the checkpoint's sidecar.
        own = saved.get(m) or (saved.get(DEFAULT) if len(ids) == 1 else None) or {}
        if module is None or m == module:
            t.update({k: own[k] for k in _LEARNED if k in was and own.get(k) is not None})
        t.update({k: v for k, v in (hparams.get(m) or (hparams.get(DEFAULT) if len(ids) == 1 else None) or {}).items()
                  if k not in NOT_REAPPLIED})
        target[m] = t
    # The checkpoint's optimizer state carries its own lr: always rewrite.
    after = set_hparams(algo, packed(target) if len(ids) > 1 else target.get(ids[0], {}))

    return {
        "action": "rollback",
        "checkpoint": path,
        "module": module,
        "before": before,
        "after": after,
        "changed": _changed(before, after),
        "hparams_reapplied": packed(target),
        "weights_seq_no": new_seq,
        "learners_equal": learners_equal(algo),
        "sync": sync_info,
        "restore_s": restore_s,
        "sync_s": sync_s,
        "total_s": time.perf_counter() - t0,
    }


def _changed(before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Any]:
    b, a = by_module(before), by_module(after)
    if set(b) | set(a) <= {DEFAULT}:
        return changed(before, after)
    return {m: c for m in a if (c := changed(b.get(m, {}), a[m]))}
