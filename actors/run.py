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
from actors import heartbeat
from actors.callback import RestartRequested, TrialHung, find_callback
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
    why = None  # the supervisor's reason for a stop or a crash, for the exit line
    # a hung iteration is interrupted in this (main) thread: the training runs here, not in a Tune actor
    uninstall = heartbeat.install_interrupt(lambda: getattr(find_callback(algo), "phases", None) if algo else None,
                                            TrialHung)
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
            except TrialHung as e:
                why = f"hung: {e}"
                if tb is not None:
                    tb.event(run.run_id, iteration + 1, {"detector": "trial_hung", "severity": "critical",
                                                         "message": str(e)}, [])
                if e.stop:
                    status = "stopped"
                    break
                restarts += 1
                if not quiet:
                    progress.console.print(f"[bold red]trial hung[/]: {e}; restarting from the newest healthy checkpoint")
                algo = _restart(algo, config)
                continue
            except RestartRequested as e:
                # Outside Tune, "restart" means: a fresh algorithm from the last healthy checkpoint.
                restarts += 1
                crash = getattr(find_callback(algo), "crash", None)
                if crash:
                    why = f"crashed: {(crash.get('finding') or {}).get('message')}"
                    if tb is not None:
                        tb.event(run.run_id, iteration + 1, crash.get("finding"), crash.get("actions"))
                    if not quiet:
                        progress.console.print(f"trial crashed: {(crash.get('finding') or {}).get('message')}; "
                                               f"restarting: {crash.get('reason')}", markup=False)
                algo = _restart(algo, config)
                continue
            if result.get("__duplicate__"):  # the supervisor ended the trial after a crash or a hang
                status = "stopped"
                why = (result.get("supervisor") or {}).get("reason")
                crashed = (result.get("supervisor") or {}).get("crashed")
                crash = getattr(find_callback(algo), "crash", None)
                if tb is not None and crash:
                    tb.event(run.run_id, iteration + 1, crash.get("finding"), crash.get("actions"))
                if crashed:
                    why = f"crashed: {crashed}; stopped: {why}"
                break
            iteration = int(result.get("training_iteration", iteration + 1))
            metrics = normalize_result(result, run.run_id, eval_interval=config.evaluation_interval)["metrics"]
            supv = result.get("supervisor")
            if tb is not None:
                tb.write(run.run_id, iteration, metrics, supv)
            if not quiet:
                progress.iteration(iteration, metrics, supv)
            if supv and supv.get("stop"):
                status = "stopped"
                why = f"stopped: {supv['stop_reason']}" if supv.get("stop_reason") else why
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
    except Exception as exc:
        log.exception("run failed")
        cb = find_callback(algo) if algo else None
        why = _crash_line(run, cb, exc, iteration)
        if cb:
            cb.on_trial_end("errored")
        status = "errored"
    finally:
        uninstall()
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
        if why:
            progress.console.print(f"  {why}", markup=False)
        print(f"report: supervise report {run.run_dir}")
        if not run.store.is_run_dir(run.run_dir):
            print(f"from any machine: supervise report '{run.store.root}'")
    return {"completed": 0, "recovered": 0, "stopped": 3}.get(status, 1)


def _crash_line(run, cb, exc: BaseException, iteration: int) -> str:
    """A crash the trial could not tell (outside a training step, or the supervisor did not answer): told
    now from here; the line for the exit."""
    told = getattr(cb, "crash", None)
    if not told:
        from actors.crash import OWN_ROOTS, crash_report

        try:
            report = crash_report(exc, iteration=iteration + 1)
            report.update(source="driver", own_roots=list(OWN_ROOTS))
            sup = get_or_create_supervisor()
            told = ray.get(sup.trial_crashed.remote(run.run_id, getattr(cb, "trial_id", None) or run.run_id, report),
                           timeout=30)
        except Exception as e:
            log.warning("could not tell the supervisor about the crash: %s", e)
            told = None
    f = (told or {}).get("finding") or {}
    return f"crashed: {f.get('message')}" if f.get("message") else f"crashed: {exc.__class__.__name__}: {exc}"


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
