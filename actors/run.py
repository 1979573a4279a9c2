"""``supervise run``: one supervised RLlib PPO trial, trained in this process.

The driver trains the algorithm directly (no Tune in the way); the
supervisor actor judges every iteration through the RLlib callback. Exit
codes follow the interface: 0 completed or recovered, 3 stopped by the
supervisor, 1 any other failure (bad input, 2, is raised before training).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import ray
import yaml

from supervisor.config import Experiment
from supervisor.errors import InputError
from supervisor.metrics import normalize_result
from supervisor.progress import Progress

from actors.algo_config import build_config
from actors.callback import RestartRequested, find_callback
from actors.supervisor_actor import get_or_create_supervisor

log = logging.getLogger(__name__)


def init_ray(address: str | None) -> str:
    """Attach to ``address``/RAY_ADDRESS, or start an embedded local Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return "attached"
    if address:
        ray.init(address=address, log_to_driver=False)
        return address
    # address="local": always a fresh embedded Ray, never a cluster someone else started here
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    return "local"


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def stop_reason(exp: Experiment, metrics: dict, iteration: int, started: float) -> str | None:
    s = exp.stop
    if s.iterations is not None and iteration >= s.iterations:
        return "iterations"
    if s.timesteps is not None and metrics.get("env_steps_lifetime", 0) >= s.timesteps:
        return "timesteps"
    ret = metrics.get("episode_return_mean")
    if s.episode_return_mean is not None and ret is not None and math.isfinite(ret) and ret >= s.episode_return_mean:
        return "episode_return_mean"
    if s.time_s is not None and time.time() - started >= s.time_s:
        return "time_s"
    return None


def run_experiment(exp: Experiment, source: str, out: str | None = None, address: str | None = None,
                   quiet: bool = False) -> int:
    run_dir = Path(out) if out else default_run_dir(exp.name)
    run_dir = run_dir.resolve()
    run_id = run_dir.name
    settings = exp.supervisor.model_dump(mode="json")
    run_info = {"run_dir": str(run_dir), "name": exp.name, "kind": "run", "settings": settings,
                "spec": exp.model_dump(mode="json"), "profile": load_profile(exp, source)}
    info = {"run_id": run_id, "trial_id": run_id, "run_info": run_info,
            "timeout_s": exp.supervisor.report_timeout_s, "retry_after_s": exp.supervisor.retry_after_s,
            "keep_checkpoints": exp.supervisor.keep_checkpoints,
            "trial_config": exp.config}
    config = build_config(exp, source, info)  # raises InputError before anything starts
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "experiment.yaml").write_text(yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False))

    progress = Progress(exp.name, exp.stop.iterations)
    where = init_ray(address)
    started = time.time()
    status, iteration, metrics, algo = "errored", 0, {}, None
    try:
        sup = get_or_create_supervisor()
        ray.get(sup.open_run.remote(run_id, **run_info), timeout=60)
        if not quiet:
            progress.start(str(run_dir), where)
        algo = config.build_algo()
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
            metrics = normalize_result(result, run_id)["metrics"]
            supv = result.get("supervisor")
            if not quiet:
                progress.iteration(iteration, metrics, supv)
            if supv and supv.get("stop"):
                status = "stopped"
                break
            reason = stop_reason(exp, metrics, iteration, started)
            if reason:
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
            ray.get(sup.close_run.remote(run_id, status), timeout=10)
        except Exception:
            pass
        if algo is not None:
            algo.stop()
    if not quiet:
        progress.done(status, iteration, time.time() - started, metrics.get("episode_return_mean"))
        print(f"report: supervise report {run_dir}")
    return {"completed": 0, "recovered": 0, "stopped": 3}.get(status, 1)


def _restart(algo, config):
    from actors import interventions as iv

    cb = find_callback(algo)
    ckpt = None
    if cb is not None and cb.last_verdict:
        for a in cb.last_verdict.get("actions", []):
            ckpt = ckpt or (a.get("params") or {}).get("checkpoint")
    ckpt = ckpt or (cb.checkpoints[-1] if cb and cb.checkpoints else None)
    algo.stop()
    fresh = config.build_algo()  # on_algorithm_init re-registers and re-applies overrides
    if ckpt:
        iv.rollback(fresh, ckpt, None)
    return fresh


def load_profile(exp: Experiment, source: str) -> dict | None:
    if not exp.supervisor.profile:
        return None
    p = Path(exp.supervisor.profile)
    if not p.is_absolute():
        p = Path(source).parent / p
    if not p.is_file():
        raise InputError(source, "supervisor.profile", f"no such file: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError:
        raise InputError(str(p), None, "malformed YAML")
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise InputError(str(p), "metrics", "a profile needs a 'metrics' mapping")
    return data["metrics"]
