"""Supervise your own RLlib loop, without Tune and without ``supervise run``:

    from actors.rllib import supervise, finish

    config = supervise(PPOConfig().environment("CartPole-v1"), run_dir="runs/my-ppo")
    algo = config.build_algo()
    for _ in range(100):
        result = algo.train()
        if result["supervisor"]["stop"]:      # the supervisor judged the run unrecoverable
            break
    finish(algo)                               # closes the trial and run: completed / recovered / stopped

``supervise`` opens the run at the cluster's supervisor actor (starting a local Ray when none is
running and no ``address`` is given), adds the supervisor callback to the config's callbacks and, for
torch PPO, the instrumented learner. From then on the callback does what it does under
``supervise run``: every ``train()`` result is judged, its actions are applied before the next
iteration, health-gated checkpoints go to ``run_dir/checkpoints``. ``restart_trial`` raises
:class:`~actors.callback.RestartRequested` from ``algo.train()``; outside Tune catch it and call
``algo = restart(algo, config)`` (a fresh algorithm from the newest healthy checkpoint, with the
supervisor's hyperparameter changes re-applied), or leave ``restart_trial`` out of the ladders.

A crash inside ``algo.train()`` is told to the supervisor first (``trial_crashed``, in the run's report):
when it decides to restart, ``RestartRequested`` comes out of ``train()`` (chained to the original error);
when it decides to stop (the same crash again, non-finite data from the environment), ``train()`` returns
``{"supervisor": {"stop": True, "reason": ...}, "done": True, ...}`` instead of raising; when the supervisor
cannot be reached, the original error comes out unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import ray

from actors import run_registry
from actors.callback import RestartRequested, SupervisorCallback, attach, find_callback
from actors.supervisor_actor import get_or_create_supervisor

__all__ = ["supervise", "finish", "restart", "RestartRequested"]


def supervise(config, run_dir: str | Path, *, name: str | None = None, settings: Any = None,
              profile: str | Path | Mapping | None = None, address: str | None = None,
              trial_id: str | None = None, storage: str | None = None):
    """Put the algorithm ``config`` builds under supervision; returns the same config.

    Args:
        config: an RLlib ``AlgorithmConfig`` (new API stack).
        run_dir: the run folder (``supervisor.db``, ``checkpoints/``), read by ``supervise report``.
        name: the run's name (default: the folder's name; its id is the folder's name plus a hash of its
            path, as for ``supervise run``).
        settings: the experiment file's ``supervisor:`` section (dict or ``SupervisorConfig``).
        profile: a calibrated profile (path or dict).
        address: the Ray cluster to attach to when Ray is not initialized yet (default: ``RAY_ADDRESS``,
            else a local Ray).
        trial_id: the trial's id (default: the folder's name).
        storage: the run storage (as the experiment file's ``storage:``): a shared path or a URI such as
            ``s3://bucket/prefix``; checkpoints, TensorBoard files and snapshots of the store go to
            ``storage/<run folder's name>/`` (default: the run folder itself).
    """
    from supervisor.api import _profile, _validated
    from supervisor.config import SupervisorConfig
    from supervisor.storage import Storage, storage_problem
    from supervisor.identity import run_id_for

    from actors.bootstrap import init_ray

    if not ray.is_initialized():
        init_ray(address)
    s = settings if isinstance(settings, SupervisorConfig) else (_validated(settings) if settings else
                                                                 SupervisorConfig())
    run_dir = Path(run_dir).resolve()
    if storage is not None and storage_problem(storage):
        raise ValueError(f"storage: {storage_problem(storage)}")
    store = Storage.for_run(storage, run_dir)
    if not store.is_run_dir(run_dir):
        store.probe()  # StorageError in one line now, not at the first checkpoint
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = run_id_for(run_dir)  # as `supervise run` does: a/ppo and b/ppo are two runs
    prof = _profile(profile if profile is not None else s.profile)
    algo_name = type(config).__name__.removesuffix("Config") or "algorithm"
    run_info = {"run_dir": str(run_dir), "name": name or run_dir.name, "kind": "run",
                "settings": s.model_dump(mode="json"), "spec": {"algorithm": algo_name, "kind": "rllib"},
                 "profile": prof, "storage": store.root}
    info = {"run_id": run_id, "trial_id": str(trial_id or run_dir.name), "run_info": run_info,
            "timeout_s": s.report_timeout_s, "retry_after_s": s.retry_after_s,
            "keep_checkpoints": s.keep_checkpoints, "trial_config": _trial_config(config)}
    ray.get(get_or_create_supervisor().open_run.remote(run_id, **run_info), timeout=60)
    run_registry.publish(run_id, info)  # what the callback reads; the config carries only the run id

    cbs = config.callbacks_class
    cbs = list(cbs) if isinstance(cbs, (list, tuple)) else [cbs]
    if SupervisorCallback not in cbs:
        from ray.rllib.callbacks.callbacks import RLlibCallback

        cbs = [c for c in cbs if c is not RLlibCallback] + [SupervisorCallback]  # the no-op default goes
        config.callbacks(cbs if len(cbs) > 1 else cbs[0])
    attach(config, run_id)
    if algo_name == "PPO" and config.framework_str == "torch":
        from actors.learner import use_supervised_learner

        use_supervised_learner(config)
    return config


def finish(algo, status: str | None = None) -> str:
    """Close the trial and the run. ``status`` default: ``stopped`` when the supervisor said stop, else
    ``completed`` (the supervisor turns it into ``recovered`` when an intervention helped)."""
    cb = find_callback(algo)
    if cb is None or cb.client is None:
        raise ValueError("this algorithm was not built from a config that supervise() prepared")
    status = status or ("stopped" if cb.stop_requested else "completed")
    final = cb.on_trial_end(status) or status
    cb.client.call("close_run", cb.info["run_id"], final, timeout_s=10.0)
    cb.client.call("wait_snapshot", cb.info["run_id"], 60.0, timeout_s=90.0)  # the store's copy in the storage
    return final


def restart(algo, config):
    """After ``RestartRequested``: stop ``algo``, build a fresh one from ``config`` (it re-registers and
    gets the supervisor's overrides back) and restore the newest healthy checkpoint into it."""
    from actors.run import _restart

    return _restart(algo, config)


def _trial_config(config) -> dict:
    keys = ("lr", "train_batch_size_per_learner", "minibatch_size", "num_epochs", "gamma", "lambda_",
            "entropy_coeff", "kl_coeff", "clip_param", "grad_clip", "num_env_runners")
    out = {}
    for k in keys:
        v = getattr(config, k, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
    env = getattr(config, "env", None)
    if isinstance(env, str):
        out["env"] = env
    return out
