"""``supervise run``: one supervised RLlib PPO trial, trained in this process.

The driver trains the algorithm directly (no Tune in the way); the
supervisor actor judges every iteration through the RLlib callback. Exit
codes follow the interface: 0 completed or recovered, 3 stopped by the
supervisor, 1 any other failure (bad input, 2, is raised before training).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import ray

from supervisor.config import Experiment
from supervisor.errors import InputError
from supervisor.metrics import normalize_result
from supervisor.progress import Progress

from actors.algo_config import build_config
from actors.bootstrap import new_run, open_run, start
from actors.callback import RestartRequested, find_callback
from actors.supervisor_actor import get_or_create_supervisor
from actors.tune.stopper import StopRule

log = logging.getLogger(__name__)


def run_experiment(exp: Experiment, source: str, out: str | None = None, address: str | None = None,
                   quiet: bool = False, restore: str | None = None) -> int:
    run = new_run(exp, source, out, "run")
    restore_path = resolve_restore(restore) if restore else None  # InputError before anything starts
    config = build_config(exp, source, run.run_id)
    rule = StopRule(exp.stop)
    progress = Progress(exp.name, exp.stop.iterations, target=exp.stop.episode_return_mean,
                        total_steps=exp.stop.timesteps, time_budget=exp.stop.time_s)
    where = start(run, address)
    tb = None
    if exp.supervisor.tensorboard:
        from supervisor.tensorboard import TensorBoardLog

        tb = TensorBoardLog(run.run_dir, storage=run.store)
    started = time.time()
    status, iteration, metrics, algo = "errored", 0, {}, None
    try:
        open_run(run, get_or_create_supervisor(), trial_id=run.run_id, best_dir=str(run.run_dir / "best"))
        if not quiet:
            progress.start(str(run.run_dir), where)
        algo = config.build_algo()
        if restore_path:
            _restore(algo, restore_path)
            if not quiet:
                progress.console.print(f"restored weights from {restore_path}")
        restarts = 0
        while True:
            try:
                result = algo.train()
            except RestartRequested:
                # Outside Tune, "restart" means: a fresh algorithm from the last healthy checkpoint.
                restarts += 1
                algo = _restart(algo, config)
                continue
            iteration = int(result.get("training_iteration", iteration + 1))
            metrics = normalize_result(result, run.run_id, eval_interval=config.evaluation_interval)["metrics"]
            supv = result.get("supervisor")
            if tb is not None:
                tb.write(run.run_id, iteration, metrics, supv)
            if not quiet:
                progress.iteration(iteration, metrics, supv)
            if supv and supv.get("stop"):
                status = "stopped"
                break
            if rule.reason(result, elapsed_s=time.time() - started):
                status = "completed"
                break
        cb = find_callback(algo)
        final = cb.on_trial_end(status) if cb else None
        status = final or status
    except KeyboardInterrupt:
        status = "errored"
        raise
    except InputError:
        raise
    except Exception:
        log.exception("run failed")
        cb = find_callback(algo) if algo else None
        if cb:
            cb.on_trial_end("errored")
        status = "errored"
    finally:
        try:
            sup = get_or_create_supervisor()
            ray.get(sup.close_run.remote(run.run_id, status), timeout=10)
            snap = ray.get(sup.wait_snapshot.remote(run.run_id, 60.0), timeout=90)
            if snap is not None and not snap["ok"]:
                log.warning("the store's last snapshot did not reach %s: %s", snap["uri"], snap["error"])
        except Exception:
            pass
        if algo is not None:
            algo.stop()
        if tb is not None:
            tb.close()
    if not quiet:
        progress.done(status, iteration, time.time() - started, metrics.get("episode_return_mean"))
        print(f"report: supervise report {run.run_dir}")
        if not run.store.is_run_dir(run.run_dir):
            print(f"from any machine: supervise report '{run.store.root}'")
    return {"completed": 0, "recovered": 0, "stopped": 3}.get(status, 1)


def resolve_restore(path: str) -> str:
    """``--restore``: a checkpoint folder or URI (a run storage's, e.g. the report's best checkpoint), or a run
    folder (its best checkpoint)."""
    from supervisor.storage import display, is_uri

    from actors.appliers.rllib.checkpoints import is_checkpoint

    if is_uri(path):
        if not is_checkpoint(path):
            raise InputError("--restore", None, f"{display(path)}: not an RLlib checkpoint (no learner_group/ "
                                                "there, or the storage cannot be read from this machine)")
        return path
    p = Path(path)
    if (p / "best" / "learner_group").is_dir():
        p = p / "best"
    if not (p / "learner_group").is_dir():
        raise InputError("--restore", None, f"{path}: not an RLlib checkpoint (no learner_group/) "
                                            "nor a run folder with a best checkpoint")
    return os.path.abspath(p)


def _restore(algo, path: str) -> None:
    """Start from a checkpoint's weights and optimizer state (counters start at 0: a new run); the
    trial's first known-good state, its rollback target, becomes the restored one."""
    from actors.appliers.rllib import rollback

    rollback(algo, path, None)
    cb = find_callback(algo)
    if cb is not None and cb.client is not None:
        cb._checkpoint(algo, iteration=0, seq=cb.seq - 1)  # overwrites the initial one, same folder


def _restart(algo, config):
    from actors.appliers.rllib import rollback

    cb = find_callback(algo)
    ckpt = None
    if cb is not None and cb.last_verdict:
        for a in cb.last_verdict.actions:
            ckpt = ckpt or (a.get("params") or {}).get("checkpoint")
    ckpt = ckpt or (cb.checkpoints[-1] if cb and cb.checkpoints else None)
    algo.stop()
    fresh = config.build_algo()  # on_algorithm_init re-registers and re-applies overrides
    if ckpt:
        rollback(fresh, ckpt, None)
    return fresh
