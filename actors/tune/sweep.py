"""The sweep driver: ``supervise sweep`` (``run_sweep``) and your own Tune script (``supervised_trainable_config``)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from supervisor.storage import Storage, storage_problem

from actors.bootstrap import RunInfo, lock_run_dir, new_run, run_id_for, start
from actors.callback import attach
from actors.tune.callback import SupervisorTuneCallback
from actors.tune.stopper import RETURN_METRIC, StopRule, combine_stop, stability_stopper_of
from actors.tune.trainable import SEARCH_KEY, trainable_for

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# your own Tune script
# ---------------------------------------------------------------------------


@dataclass
class SupervisedTune:
    """What ``supervised_trainable_config`` returns: hand these to ``tune.Tuner``."""

    trainable: type
    param_space: dict
    callback: SupervisorTuneCallback
    run_dir: Path
    max_failures: int = 2
    storage: Any = None  # supervisor.storage.Storage: where Tune keeps its experiment
    extra: dict = field(default_factory=dict)

    def run_config(self, stop=None, callbacks=None, failure_config=None, checkpoint_config=None, **kwargs):
        """A ``tune.RunConfig`` with the supervisor in it: ``StabilityStopper`` OR ``stop``, the
        driver callback, restarts (``FailureConfig(max_failures)``), health-gated checkpoints
        (``checkpoint_frequency=0``: trials ask for a checkpoint when the supervisor finds them
        healthy) and Tune's storage in the run storage (``storage=``; by default ``run_dir``). Other
        keyword arguments go to ``RunConfig``."""
        from ray import tune

        if "storage_path" not in kwargs:
            kwargs.update(tune_storage(self.storage or Storage(self.run_dir)))
        kwargs.setdefault("name", "tune")
        kwargs.setdefault("verbose", 0)
        return tune.RunConfig(
            stop=combine_stop(stop),
            callbacks=[*(callbacks or []), self.callback],
            failure_config=failure_config or tune.FailureConfig(max_failures=self.max_failures),
            checkpoint_config=checkpoint_config or health_gated_checkpoints(),
            **kwargs)


def supervised_trainable_config(config, run_dir: str | Path, *, name: str | None = None,
                                settings: Mapping | None = None, max_failures: int = 2,
                                quiet: bool = False, storage: str | None = None) -> SupervisedTune:
    """Put a Tune sweep of PPO, APPO, IMPALA, DQN or SAC under supervision.

    ``config`` is a ``PPOConfig``, ``APPOConfig``, ``IMPALAConfig``, ``DQNConfig`` or ``SACConfig``
    (its values may be Tune search spaces such as
    ``tune.grid_search([...])``). Returns a ``SupervisedTune`` whose
    ``trainable``, ``param_space`` and ``run_config(...)`` go straight into
    ``tune.Tuner``::

        sup = supervised_trainable_config(
            PPOConfig().environment("CartPole-v1").training(lr=tune.grid_search([3e-4, 5.0])),
            run_dir="runs/my-sweep", settings={"checkpoint_every": 2})
        tune.Tuner(sup.trainable, param_space=sup.param_space,
                   run_config=sup.run_config(stop={"training_iteration": 30})).fit()

    ``settings`` is the experiment file's ``supervisor:`` section. The run
    folder gets ``supervisor.db`` (``supervise report RUN_DIR``), the
    supervisor's checkpoints and Tune's experiment folder (``tune/``).
    ``storage`` (as the experiment file's ``storage:``: a shared path or a
    URI such as ``s3://bucket/prefix``) puts the checkpoints, Tune's folder
    and snapshots of the store in ``storage/<run folder's name>/`` instead,
    for clusters whose nodes share no disk.
    """
    from supervisor import algorithms
    from supervisor.config import SupervisorConfig

    from actors.algos import config_name_of
    from actors.callback import SupervisorCallback
    from actors.learner import use_supervised_learner

    algorithm = config_name_of(config)
    if algorithm is None:
        raise ValueError(f"supervised_trainable_config takes the config of one of {', '.join(algorithms.NAMES)}, "
                         f"got {type(config).__name__}")
    run_dir = Path(run_dir).resolve()
    if storage is not None and storage_problem(storage):
        raise ValueError(f"storage: {storage_problem(storage)}")
    store = Storage.for_run(storage, run_dir)
    cfg = config.copy(copy_frozen=False)
    space_probe = cfg.to_dict()
    search_keys = tuple(k for k, v in space_probe.items() if _is_search(v))
    run = RunInfo(run_id=run_id_for(run_dir), run_dir=run_dir, name=name or run_dir.name, kind="sweep",
                  settings=SupervisorConfig.model_validate(dict(settings or {})), search_keys=search_keys,
                  storage=store.root)
    if run.settings.enabled:
        current = getattr(cfg, "callbacks_class", None)
        if isinstance(current, (list, tuple)):
            cfg.callbacks([*current, SupervisorCallback])
        elif isinstance(current, type) and current.__name__ != "RLlibCallback" and current is not SupervisorCallback:
            cfg.callbacks([current, SupervisorCallback])  # keep the user's own callbacks
        else:
            cfg.callbacks(SupervisorCallback)
        attach(cfg, run.run_id)  # the run's settings reach the trials through actors.run_registry
        if algorithms.ALGORITHMS[algorithm].instrumented:
            use_supervised_learner(cfg)
    lock_run_dir(run_dir)  # one writer per run folder
    if not store.is_run_dir(run_dir):
        store.probe()  # StorageError in one line now, not at the first checkpoint on a worker
    cb = SupervisorTuneCallback(run, quiet=quiet)
    return SupervisedTune(trainable_for(algorithm), cfg.to_dict(), cb, run_dir, max_failures, storage=store)


def health_gated_checkpoints():
    """Tune saves a trial only when the supervisor finds it healthy (``should_checkpoint``), never on a
    clock nor at the end; Tune keeps them all (``num_to_keep=None``): the trial rotates them itself once
    the supervisor acknowledged a newer rollback target (``SupervisorCallback``), so Tune never deletes the
    checkpoint a rollback would restore."""
    from ray import tune

    return tune.CheckpointConfig(num_to_keep=None, checkpoint_frequency=0, checkpoint_at_end=False)


def tune_storage(store) -> dict:
    """``RunConfig`` keywords that put Tune's experiment (its trial checkpoints, the ones Tune restarts
    from) in the run storage: the run folder as a path, or a URI through its pyarrow filesystem, which
    every node reaches."""
    if store.is_local:
        return {"storage_path": store.root}
    return {"storage_path": store.base, "storage_filesystem": store.fs}


def _is_search(v) -> bool:
    from ray.tune.search.sample import Domain

    return isinstance(v, Domain) or (isinstance(v, dict) and set(v) == {"grid_search"})


# ---------------------------------------------------------------------------
# supervise sweep
# ---------------------------------------------------------------------------


def search_domain(key: str, spec: dict, source: str):
    from ray import tune

    kind, arg = next(iter(spec.items()))
    if kind == "grid":
        return tune.grid_search(list(arg))
    if kind == "choice":
        return tune.choice(list(arg))
    if kind == "uniform":
        return tune.uniform(float(arg[0]), float(arg[1]))
    if kind == "loguniform":
        return tune.loguniform(float(arg[0]), float(arg[1]))
    if kind == "randint":
        if not all(float(a).is_integer() for a in arg):
            from supervisor.errors import InputError

            raise InputError(source, f"search.{key}.randint", "bounds must be integers")
        return tune.randint(int(arg[0]), int(arg[1]))
    raise ValueError(kind)


def _example(spec: dict):
    """One value of a search spec, to validate the key against PPOConfig before anything starts."""
    kind, arg = next(iter(spec.items()))
    if kind in ("grid", "choice"):
        return arg[0]
    if kind == "randint":
        return int(arg[0])
    return float(arg[0]) if kind == "uniform" else float(math.sqrt(arg[0] * arg[1]))


def build_sweep_space(sweep, source: str, run_id: str | None) -> tuple[dict, dict]:
    """Sweep -> (Tune param_space, {PPOConfig name: example}), its trials supervised in ``run_id`` (None: not
    supervised); raises InputError on a bad search key."""
    from supervisor.config import _check_config_values
    from supervisor.errors import InputError

    from actors.algo_config import build_config

    examples: dict[str, Any] = {}
    env_examples: dict[str, Any] = {}
    space: dict[str, Any] = {}
    for key, spec in sweep.search.items():
        parts = key.split(".")
        where = f"search.{key}"
        if parts[0] == "config" and len(parts) == 2 and parts[1]:
            examples[parts[1]] = _example(spec)
            for v in spec.get("grid") or spec.get("choice") or []:
                try:
                    _check_config_values({parts[1]: v})
                except ValueError as e:
                    raise InputError(source, where, str(e).split(": ", 1)[-1])
            space[parts[1]] = search_domain(key, spec, source)
        elif parts[0] == "env_config" and len(parts) == 2 and parts[1]:
            env_examples[parts[1]] = _example(spec)
            space.setdefault("env_config", {})[parts[1]] = search_domain(key, spec, source)
        elif key == "seed":
            space["seed"] = search_domain(key, spec, source)
        else:
            raise InputError(source, where, f"only algorithm, config.<{sweep.algorithm}Config parameter>, "
                                            "env_config.<key> and seed can be searched")
    exp = sweep
    if env_examples:
        exp = sweep.model_copy(update={"env_config": {**sweep.env_config, **env_examples}})
    try:
        cfg = build_config(exp, source, run_id, config_overrides=examples)
    except InputError as e:
        if e.key and e.key.startswith("config.") and e.key[len("config."):] in examples \
                and e.key[len("config."):] not in sweep.config:
            raise InputError(source, f"search.{e.key}", e.problem)
        raise
    if env_examples:  # the base env_config, without the example values
        cfg.environment(env_config=dict(sweep.env_config))
    if "env_config" in space:
        space["env_config"] = {**sweep.env_config, **space["env_config"]}
    for k in examples:  # the base config, without the example values
        if k in sweep.config:
            cfg.update_from_dict({k: sweep.config[k]})
    param_space = cfg.to_dict()
    param_space[SEARCH_KEY] = space
    return param_space, examples


def sweep_tune_config(sweep, max_concurrent: int | None):
    from ray import tune

    scheduler = None
    if sweep.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        from actors.tune.scheduler import SupervisedASHA

        max_t = sweep.stop.iterations or 100
        # supervised: ASHA waits for a repair's outcome before judging the trial (actors.tune.scheduler)
        cls = SupervisedASHA if sweep.supervisor.enabled else ASHAScheduler
        scheduler = cls(time_attr="training_iteration", metric=RETURN_METRIC, mode="max",
                        max_t=max_t, grace_period=max(1, max_t // 8), reduction_factor=3)
    return tune.TuneConfig(num_samples=sweep.num_samples, scheduler=scheduler,
                           max_concurrent_trials=max_concurrent or sweep.max_concurrent,
                           reuse_actors=False)


def run_sweep(sweep, source: str, out: str | None = None, max_concurrent: int | None = None,
              address: str | None = None, quiet: bool = False, num_cpus: int | None = None,
              result_sink: dict | None = None, variants: list[dict] | None = None) -> int:
    """``supervise sweep``: a Tune sweep, every trial supervised. Returns the exit code.

    A sweep over several algorithms (``search: {algorithm: {grid: [DQN, APPO]}}``) runs one Tune
    experiment per algorithm, one after the other (``RUN_DIR/tune-<algorithm>/``; each algorithm has its
    own trainable class and config), all in the same supervised run and report.

    ``variants`` (for scripts, e.g. benchmarks): instead of the cross product of ``search:``, one
    trial per dict of config values (``{"lr": 5.0, "env_config": {...}}``) times ``num_samples``.
    ``result_sink`` receives the ResultGrid (``grids``: one per algorithm), the driver callback and the
    wall time."""
    from ray import tune

    run = new_run(sweep, source, out, "sweep")
    names = sweep.algorithms()
    plans = []
    for name in names:  # every InputError before anything starts
        sub = sweep.for_algorithm(name) if "algorithm" in sweep.search else sweep
        param_space, _ = build_sweep_space(sub, source, run.run_id)
        if variants is not None:
            param_space[SEARCH_KEY] = tune.grid_search([dict(v) for v in variants])
        plans.append((name, sub, param_space))
    start(run, address, num_cpus)
    _quiet_tune()
    cb = SupervisorTuneCallback(run, quiet=quiet)
    cb.close_at_end = False  # closed here, after the last algorithm's experiment
    loggers = _loggers()
    started = time.time()
    grids, stopped = [], set()
    saved = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # our two loggers above, no TensorBoard
    try:
        for name, sub, param_space in plans:
            stopper = combine_stop(StopRule(sub.stop))
            tuner = tune.Tuner(
                trainable_for(name),
                param_space=param_space,
                tune_config=sweep_tune_config(sub, max_concurrent),
                run_config=tune.RunConfig(
                    name="tune" if len(plans) == 1 else f"tune-{name.lower()}", **tune_storage(run.store),
                    stop=stopper, callbacks=[*loggers, cb], verbose=0,
                    failure_config=tune.FailureConfig(max_failures=sub.max_failures),
                    checkpoint_config=health_gated_checkpoints()),
            )
            grids.append(tuner.fit())
            stopped |= set(stability_stopper_of(stopper).stopped)
    except Exception:
        log.exception("sweep failed")
        cb._call("close_run", run.run_id, "errored")
        return 1
    finally:
        if saved is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = saved
    cb.close_run()
    wall = time.time() - started
    if result_sink is not None:
        result_sink.update(grid=grids[-1], grids=grids, callback=cb, wall_s=wall, run_dir=run.run_dir,
                           stopped_by_supervisor=stopped | cb.stop_asked)
    if not quiet:
        _summary(cb, grids[-1], wall, run.run_dir)
    return cb.exit_code()


def _loggers() -> list:
    """result.json and progress.csv per trial; no TensorBoard files (whose writer warns on every NaN)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _quiet_tune() -> None:
    """Our own progress lines replace Tune's: no status tables, no tracebacks for restarts we asked for
    (an errored trial's line names its error file)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray.tune", "ray.train", "ray.rllib"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _summary(cb: SupervisorTuneCallback, grid, wall: float, run_dir: Path) -> None:
    from rich.table import Table

    table = Table(title=f"sweep finished in {wall:.0f} s", show_lines=False)
    for col in ("trial", "values", "status", "iterations", "restarts", "final return"):
        table.add_column(col)
    for tid in sorted(set(cb.status) | set(cb.labels)):
        last = cb.last.get(tid, {})
        ret = last.get("return")
        table.add_row(tid, cb.labels.get(tid, ""), cb.status.get(tid, "?"), str(last.get("iteration") or 0),
                      str(cb.restarts.get(tid, 0)),
                      f"{ret:.1f}" if isinstance(ret, (int, float)) and math.isfinite(ret) else "-")
    cb._print("")
    if cb.console is not None:
        cb.console.print(table)
    cb._print(f"report: supervise report {run_dir}")
    if not cb.run.store.is_run_dir(run_dir):
        cb._print(f"from any machine: supervise report '{cb.run.store.root}'")
