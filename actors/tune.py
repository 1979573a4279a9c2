"""Ray Tune pieces: every trial of a sweep supervised; failing trials stopped or restarted through Tune.

What is here
------------
``StabilityStopper``      a ``tune.Stopper`` that ends exactly the trials the supervisor judged
                          unrecoverable (``result["supervisor"]["stop"]``).
``SupervisedPPO``         RLlib's PPO as a Tune trainable that knows its real Tune trial id.
``SupervisorTuneCallback`` the driver side: opens the run in the supervisor actor, prints progress,
                          and closes every trial with the right status (completed / recovered /
                          stopped / errored).
``supervised_trainable_config(config, run_dir)``  put your own Tune script under supervision.
``run_sweep(sweep, source, ...)``                 what ``supervise sweep SWEEP.yaml`` runs.

Your own Tune script, in a few lines::

    from ray import tune
    from ray.rllib.algorithms.ppo import PPOConfig
    from actors.tune import supervised_trainable_config

    config = PPOConfig().environment("CartPole-v1").training(lr=tune.grid_search([3e-4, 1e-3, 5.0]))
    sup = supervised_trainable_config(config, run_dir="runs/my-sweep")
    tune.Tuner(sup.trainable, param_space=sup.param_space,
               run_config=sup.run_config(stop={"training_iteration": 30})).fit()
    # then: supervise report runs/my-sweep

Trial ids. Inside RLlib callbacks under Tune, ``algorithm.trial_id`` and
``tune.get_context().get_trial_id()`` give "default"/None: Tune hands the
trainable its ``_TrialInfo`` inside the config dict (key ``TRIAL_INFO``), and
``Algorithm.__init__`` turns that dict into an ``AlgorithmConfig`` before
``Trainable.__init__`` can pop it, so it is lost. ``SupervisedPPO.__init__``
takes it out of the dict first and writes Tune's real trial id into the
supervisor's section of ``learner_config_dict``, where the callback's
``on_algorithm_init`` reads it (and it restores ``algorithm.trial_id``).

Restarts. ``restart_trial`` makes the RLlib callback raise
``RestartRequested``; with ``FailureConfig(max_failures=N)`` Tune restarts the
trial in a new process from its latest checkpoint. The new process registers
again under the same trial id and gets back the hyperparameters the supervisor
changed (``overrides``); ``SupervisedPPO.load_checkpoint`` re-applies them once
more after Tune's restore, because restoring the learner also restores the
optimizer's old learning rate.

Checkpoints. Tune's periodic checkpointing is off (``checkpoint_frequency=0``);
a trial asks Tune for a checkpoint (``result["should_checkpoint"] = True``)
exactly when the supervisor's verdict says the iteration is healthy enough to
checkpoint. So Tune's checkpoints are the supervisor's health-gated ones: a
restart never resumes from a state the supervisor would not have kept. The
supervisor's own copies (``RUN_DIR/checkpoints/<trial_id>/``) stay what
in-process ``rollback`` uses.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import ray
from ray.rllib.algorithms.ppo import PPO
from ray.tune import Callback, Stopper

from actors.callback import CONFIG_KEY, find_callback
from supervisor.metrics import get_path

log = logging.getLogger(__name__)

SEARCH_KEY = "_supervisor_search"  # param_space key holding the sampled PPOConfig values of a sweep
RETURN_METRIC = "env_runners/episode_return_mean"
STOP_KEYS = {  # experiment file stop: key -> Tune result key (nested keys joined by "/")
    "iterations": "training_iteration",
    "timesteps": "num_env_steps_sampled_lifetime",
    "episode_return_mean": RETURN_METRIC,
    "time_s": "time_total_s",
}


# ---------------------------------------------------------------------------
# stoppers
# ---------------------------------------------------------------------------


class StabilityStopper(Stopper):
    """Stop trials that the supervisor judged unrecoverable.

    The supervisor's RLlib callback adds ``result["supervisor"]`` to every
    training result. When the supervisor's escalation policy decides
    ``stop_trial`` for a trial (its ladder is exhausted, or too many
    interventions in too short a time), that trial's result carries
    ``result["supervisor"]["stop"] = True`` and this stopper ends that trial,
    and only that one. It never stops the whole experiment.

    Args:
        key: The result key the supervisor's callback writes to.

    Examples:
        >>> from ray import tune
        >>> from ray.tune.stopper import CombinedStopper, MaximumIterationStopper
        >>> from actors.tune import StabilityStopper
        >>>
        >>> stopper = CombinedStopper(
        ...     StabilityStopper(),
        ...     MaximumIterationStopper(max_iter=50),
        ... )
        >>> tuner = tune.Tuner(
        ...     trainable,  # doctest: +SKIP
        ...     run_config=tune.RunConfig(stop=stopper),
        ... )

    ``stopped`` holds the ids of the trials it stopped.
    """

    def __init__(self, key: str = "supervisor"):
        self._key = key
        self.stopped: set[str] = set()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        sup = result.get(self._key) if isinstance(result, Mapping) else None
        if isinstance(sup, Mapping) and bool(sup.get("stop")):
            self.stopped.add(trial_id)
            return True
        return False

    def stop_all(self) -> bool:
        return False


class ThresholdStopper(Stopper):
    """Stop a trial once any result value reaches its threshold, like Tune's ``stop={...}`` dict.

    Args:
        thresholds: result key (nested keys joined by ``/``) -> value; a trial
            stops when ``result[key] >= value``. Missing or non-finite values never stop.
    """

    def __init__(self, thresholds: Mapping[str, float]):
        self.thresholds = dict(thresholds)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        for key, limit in self.thresholds.items():
            v = _nested(result, key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= limit:
                return True
        return False

    def stop_all(self) -> bool:
        return False


def _nested(result: Mapping, key: str):
    """Tune's results may come flattened ("a/b" keys) or nested."""
    return result[key] if key in result else get_path(result, key)


def combine_stop(stop) -> Stopper:
    """StabilityStopper OR-ed with ``stop`` (None, a dict like Tune's, a Stopper or a callable)."""
    from ray.tune.stopper import CombinedStopper, FunctionStopper

    parts: list[Stopper] = [StabilityStopper()]
    if isinstance(stop, Mapping):
        parts.append(ThresholdStopper(stop))
    elif isinstance(stop, Stopper):
        parts.append(stop)
    elif callable(stop):
        parts.append(FunctionStopper(stop))
    elif stop is not None:
        raise TypeError(f"stop must be a dict, a Stopper or a callable, got {type(stop).__name__}")
    return CombinedStopper(*parts)


def stability_stopper_of(stopper) -> StabilityStopper | None:
    if isinstance(stopper, StabilityStopper):
        return stopper
    for s in getattr(stopper, "_stoppers", ()) or ():
        if isinstance(s, StabilityStopper):
            return s
    return None


# ---------------------------------------------------------------------------
# the trainable
# ---------------------------------------------------------------------------


class SupervisedPPO(PPO):
    """PPO as a Tune trainable that knows its real Tune trial id.

    Behaves exactly like ``PPO`` (``tune.Tuner("PPO", ...)``) and, when the
    config carries the supervisor (``learner_config_dict["supervisor"]``):

    - the supervisor sees Tune's trial id (``algorithm.trial_id`` works too);
    - values a sweep samples under ``"_supervisor_search"`` are applied by their
      PPOConfig names (so ``train_batch_size_per_learner`` or ``lambda_`` need
      no knowledge of ``AlgorithmConfig.to_dict``'s renamed keys);
    - a healthy verdict asks Tune for a checkpoint (``should_checkpoint``);
    - after Tune restores a checkpoint (a restart), the supervisor's overrides
      are applied again.
    """

    def __init__(self, config=None, env=None, **kwargs):
        trial_info = None
        if isinstance(config, dict):
            config, trial_info = _prepare_trial_config(type(self), config)
        super().__init__(config=config, env=env, **kwargs)
        if trial_info is not None and getattr(self, "_trial_info", None) is None:
            self._trial_info = trial_info

    def log_result(self, result: dict) -> None:
        # RLlib runs ``on_train_result`` (the supervisor's verdict) inside ``log_result``, after
        # ``step()``; Tune reads ``should_checkpoint`` from this same dict once ``train()`` returns.
        super().log_result(result)
        cb = find_callback(self)
        if cb is None or cb.client is None:
            return
        v = cb.last_verdict or {}
        sup = result.get("supervisor")
        fresh = isinstance(sup, dict) and sup.get("reported") and v.get("seq") == cb.seq - 1
        if fresh and v.get("checkpoint") and not v.get("actions"):
            result["should_checkpoint"] = True  # Tune's checkpoints are the health-gated ones

    def cleanup(self) -> None:
        # Tune stops the trial (``Trainable.stop``), after the driver's ``on_trial_complete``: reports
        # buffered while the supervisor was down, and what the last verdict made this trial apply,
        # would die with this process.
        cb = find_callback(self)
        if cb is not None and cb.client is not None:
            try:
                cb.flush()
            except Exception:
                log.exception("could not hand the supervisor what this trial still held")
        super().cleanup()

    def load_checkpoint(self, checkpoint) -> None:
        super().load_checkpoint(checkpoint)
        cb = find_callback(self)
        if cb is None or cb.client is None:
            return
        overrides = cb.client.call("trial_overrides", cb.info["run_id"], cb.trial_id)
        if overrides:
            from actors import interventions as iv

            try:
                after = iv.set_hparams(self, overrides)
                cb.applied.append({"id": None, "action": "overrides", "after": after, "ok": True})
                log.info("trial %s restored with supervisor overrides %s", cb.trial_id, after)
            except Exception:
                log.exception("could not re-apply supervisor overrides after restore")


def _prepare_trial_config(algo_cls, config: dict) -> tuple[Any, Any]:
    """Tune's dict config -> PPOConfig, with the trial id and the sampled sweep values in place."""
    from ray.tune.result import TRIAL_INFO

    config = dict(config)
    trial_info = config.pop(TRIAL_INFO, None)
    search = config.pop(SEARCH_KEY, None) or {}
    if not search and trial_info is None:
        return config, None
    cfg = algo_cls.get_default_config().update_from_dict(config)
    if search:
        search = dict(search)
        env_cfg = search.pop("env_config", None)
        if env_cfg:
            cfg.environment(env_config={**(cfg.env_config or {}), **env_cfg})
        if "seed" in search:
            cfg.debugging(seed=search.pop("seed"))
        cfg.update_from_dict(search)
        if env_cfg:
            search["env_config"] = env_cfg
    info = (cfg.learner_config_dict or {}).get(CONFIG_KEY)
    if isinstance(info, dict):
        info = dict(info)
        if trial_info is not None:
            info["trial_id"] = trial_info.trial_id
            info["trial_name"] = trial_info.trial_name
        sampled = {k: config[k] for k in info.get("search_keys", ()) if k in config}
        info["trial_config"] = {**(info.get("trial_config") or {}), **sampled, **search}
        cfg.learners(learner_config_dict={**(cfg.learner_config_dict or {}), CONFIG_KEY: info})
    return cfg, trial_info


# ---------------------------------------------------------------------------
# the driver side
# ---------------------------------------------------------------------------


class SupervisorTuneCallback(Callback):
    """Driver-side Tune callback: the run's lifecycle in the supervisor, and terminal progress.

    - ``setup``: starts (or finds) the supervisor actor and opens the run, so
      ``RUN_DIR/supervisor.db`` exists before the first trial reports;
    - ``on_trial_result``: notes trials the supervisor asked to stop; prints a line;
    - ``on_trial_recover``: Tune restarted a trial (from its latest checkpoint);
      a restart the supervisor asked for makes a completed trial ``recovered``;
    - ``on_trial_complete`` / ``on_trial_error``: ``finish_trial`` with
      ``stopped`` (the supervisor stopped it), ``recovered``, ``completed`` or
      ``errored``;
    - ``on_experiment_end``: closes the run.
    """

    def __init__(self, run_id: str, run_info: dict, console=None, quiet: bool = False,
                 search_keys: list[str] | None = None):
        self.run_id, self.run_info = run_id, run_info
        self.quiet = quiet
        self.console = console
        self.search_keys = list(search_keys or [])
        self.status: dict[str, str] = {}  # trial_id -> final status
        self.stop_asked: set[str] = set()
        self.restarts: dict[str, int] = {}
        self.supervisor_restarts: dict[str, int] = {}
        self.last: dict[str, dict] = {}  # trial_id -> last result summary
        self.labels: dict[str, str] = {}
        self.configs: dict[str, dict] = {}  # trial_id -> sampled values
        self.steps_consumed: dict[str, int] = {}  # env steps of every reported iteration, restarts included
        self.iterations_run: dict[str, int] = {}
        self._sup = None
        self._pid: int | None = None  # the supervisor actor's process when the run was opened
        self._unsure: set[str] = set()  # trials whose closing record may not have reached the store
        self.started = time.time()

    def __getstate__(self):  # Tune pickles its callbacks with the experiment (tuner.pkl)
        state = dict(self.__dict__)
        state.update(_sup=None, console=None)
        return state

    # -- plumbing
    def _actor(self):
        if self._sup is None:
            from actors.supervisor_actor import get_or_create_supervisor

            self._sup = get_or_create_supervisor()
        return self._sup

    def _call(self, method: str, *args, timeout: float = 30.0, retries: int = 0, **kwargs):
        for attempt in range(retries + 1):
            try:
                return ray.get(getattr(self._actor(), method).remote(*args, **kwargs), timeout=timeout)
            except Exception as e:  # the supervisor never takes the sweep down
                log.warning("supervisor call %s failed: %s: %s", method, e.__class__.__name__, e)
                self._sup = None
                if attempt < retries:
                    time.sleep(1.0)  # Ray is restarting it
        return None

    def _print(self, text: str) -> None:
        if self.quiet:
            return
        if self.console is None:
            from rich.console import Console

            self.console = Console(highlight=False, soft_wrap=True)
        self.console.print(text)

    def open(self) -> None:
        out = ray.get(self._actor().open_run.remote(self.run_id, **self.run_info), timeout=60)
        self._pid = out.get("pid") if isinstance(out, dict) else None

    def _reassert(self) -> None:
        """If the supervisor actor restarted during the sweep, a closing record may be missing: the
        restarted actor did not know the run or the trial yet (so ``finish_trial`` wrote nothing), or a
        trial's last replayed reports brought it back as running after it was closed. Trial actors
        have all stopped (and flushed) by now: write every trial's final status again."""
        ping = self._call("ping", retries=3)
        if ping is None or (ping.get("pid") == self._pid and not self._unsure):
            return
        for tid, status in sorted(self.status.items()):
            # register_trial reopens the run and reloads the trial from the store if the actor lost them
            if self._call("register_trial", tid, self.run_id, None, None, self.run_info, retries=3) is None:
                continue
            final = self._call("finish_trial", self.run_id, tid, status, retries=3)
            if final is not None:
                self.status[tid] = final
                self._unsure.discard(tid)

    # -- Tune hooks
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self.open()
        self._print(f"[bold]{self.run_info['name']}[/bold]  sweep of {total_num_samples or '?'} trials  "
                    f"run folder {self.run_info['run_dir']}")

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        tid = trial.trial_id
        if tid not in self.labels:
            cfg = trial.config or {}
            search = cfg.get(SEARCH_KEY) or {}
            vals = {**{k: cfg.get(k) for k in self.search_keys if k in cfg}, **search}
            self.configs[tid] = vals
            self.labels[tid] = " ".join(f"{k}={_short(v)}" for k, v in vals.items())
            self._print(f"[cyan]{tid}[/cyan] started  {self.labels[tid]}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        tid = trial.trial_id
        sup = result.get("supervisor") if isinstance(result, Mapping) else None
        ret = _nested(result, RETURN_METRIC)
        self.last[tid] = {"iteration": result.get("training_iteration"), "return": ret,
                          "env_steps": result.get("num_env_steps_sampled_lifetime")}
        steps = _nested(result, "env_runners/num_env_steps_sampled")
        if isinstance(steps, (int, float)) and math.isfinite(steps):
            self.steps_consumed[tid] = self.steps_consumed.get(tid, 0) + int(steps)
        self.iterations_run[tid] = self.iterations_run.get(tid, 0) + 1
        if isinstance(sup, Mapping):
            if sup.get("stop"):
                self.stop_asked.add(tid)
            self.last[tid]["health"] = sup.get("health_score")
        ret_s = f"{ret:8.1f}" if isinstance(ret, (int, float)) and math.isfinite(ret) else "       -"
        line = f"[cyan]{tid}[/cyan] iter {result.get('training_iteration', 0):4d}  return {ret_s}"
        if isinstance(sup, Mapping) and "health_score" in sup:
            sev = sup.get("worst_severity", "ok")
            color = {"ok": "green", "info": "cyan", "warning": "yellow", "critical": "red"}.get(sev, "white")
            line += f"  health [{color}]{sup['health_score']:.2f}[/]  finding {', '.join(sup.get('findings') or []) or '-'}"
            if sup.get("actions"):
                line += f"  [bold magenta]-> {', '.join(sup['actions'])}[/]"
        elif isinstance(sup, Mapping):
            line += "  health [dim]n/a[/] (supervisor unreachable)"
        self._print(line)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        tid = trial.trial_id
        self.restarts[tid] = self.restarts.get(tid, 0) + 1
        asked = _restart_requested(trial)
        if asked:
            self.supervisor_restarts[tid] = self.supervisor_restarts.get(tid, 0) + 1
        ckpt = getattr(trial, "checkpoint", None)
        where = f"from checkpoint {Path(ckpt.path).name}" if ckpt is not None else "from scratch (no checkpoint yet)"
        why = "the supervisor asked for a restart" if asked else "the trial failed"
        self._print(f"[cyan]{tid}[/cyan] [bold yellow]restarting {where}[/]: {why}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        tid = trial.trial_id
        if tid in self.stop_asked:
            status = "stopped"
        elif self.supervisor_restarts.get(tid):
            status = "recovered"
        else:
            status = "completed"
        self._finish(tid, status)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial.trial_id, "errored")
        if getattr(trial, "error_file", None):
            self._print(f"[cyan]{trial.trial_id}[/cyan] error: {trial.error_file}")

    def _finish(self, tid: str, status: str) -> None:
        final = self._call("finish_trial", self.run_id, tid, status)
        if final is None:
            self._unsure.add(tid)
        final = final or status
        self.status[tid] = final
        last = self.last.get(tid, {})
        ret = last.get("return")
        ret_s = f"{ret:.1f}" if isinstance(ret, (int, float)) and math.isfinite(ret) else "-"
        color = {"completed": "green", "recovered": "green", "stopped": "yellow", "errored": "red"}.get(final, "white")
        self._print(f"[cyan]{tid}[/cyan] [bold {color}]{final}[/] after {last.get('iteration') or 0} iterations; "
                    f"final return {ret_s}")

    def on_experiment_end(self, trials, **info) -> None:
        for t in trials:
            if t.trial_id not in self.status:  # interrupted, or never started
                self._finish(t.trial_id, "errored")
        self._reassert()
        # open_run is idempotent; after an actor restart it is what lets close_run find the run
        self._call("open_run", self.run_id, retries=3, **self.run_info)
        self._call("close_run", self.run_id, self.overall_status(), retries=3)

    def overall_status(self) -> str:
        vals = list(self.status.values())
        if not vals:
            return "errored"
        if all(v == "stopped" for v in vals):
            return "stopped"
        if any(v == "errored" for v in vals):
            return "errored"
        if any(v == "recovered" for v in vals):
            return "recovered"
        return "completed"

    def exit_code(self) -> int:
        return {"completed": 0, "recovered": 0, "stopped": 3}.get(self.overall_status(), 1)


def _restart_requested(trial) -> bool:
    """Was the trial's latest failure the supervisor's RestartRequested?"""
    try:
        err = trial.get_pickled_error()
        if err is not None and "RestartRequested" in f"{type(err).__name__} {err}":
            return True
    except Exception:
        pass
    try:
        path = trial.error_file
        if path and Path(path).is_file():
            text = Path(path).read_text(errors="replace")
            tail = text[text.rfind("Failure #"):] if "Failure #" in text else text
            return "RestartRequested" in tail
    except Exception:
        pass
    return False


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    s = str(v)
    return s if len(s) <= 40 else s[:37] + "..."


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
    extra: dict = field(default_factory=dict)

    def run_config(self, stop=None, callbacks=None, failure_config=None, checkpoint_config=None, **kwargs):
        """A ``tune.RunConfig`` with the supervisor in it: ``StabilityStopper`` OR ``stop``, the
        driver callback, restarts (``FailureConfig(max_failures)``), health-gated checkpoints
        (``checkpoint_frequency=0``: trials ask for a checkpoint when the supervisor finds them
        healthy) and storage under ``run_dir``. Other keyword arguments go to ``RunConfig``."""
        from ray import tune

        kwargs.setdefault("storage_path", str(self.run_dir))
        kwargs.setdefault("name", "tune")
        kwargs.setdefault("verbose", 0)
        return tune.RunConfig(
            stop=combine_stop(stop),
            callbacks=[*(callbacks or []), self.callback],
            failure_config=failure_config or tune.FailureConfig(max_failures=self.max_failures),
            checkpoint_config=checkpoint_config or tune.CheckpointConfig(num_to_keep=2, checkpoint_frequency=0,
                                                                         checkpoint_at_end=False),
            **kwargs)


def supervised_trainable_config(config, run_dir: str | Path, *, name: str | None = None,
                                settings: Mapping | None = None, max_failures: int = 2,
                                quiet: bool = False) -> SupervisedTune:
    """Put a PPO Tune sweep under supervision.

    ``config`` is a ``PPOConfig`` (its values may be Tune search spaces such as
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
    """
    from supervisor.config import SupervisorConfig

    from actors.callback import SupervisorCallback
    from actors.learner import use_supervised_learner

    run_dir = Path(run_dir).resolve()
    sup_cfg = SupervisorConfig.model_validate(dict(settings or {}))
    run_id = run_dir.name
    run_info = {"run_dir": str(run_dir), "name": name or run_id, "kind": "sweep",
                "settings": sup_cfg.model_dump(mode="json"), "spec": None, "profile": None}
    cfg = config.copy(copy_frozen=False)
    space_probe = cfg.to_dict()
    search_keys = [k for k, v in space_probe.items() if _is_search(v)]
    info = {"run_id": run_id, "run_info": run_info, "timeout_s": sup_cfg.report_timeout_s,
            "retry_after_s": sup_cfg.retry_after_s,
            "keep_checkpoints": sup_cfg.keep_checkpoints, "trial_config": {}, "search_keys": search_keys}
    if sup_cfg.enabled:
        current = getattr(cfg, "callbacks_class", None)
        if isinstance(current, (list, tuple)):
            cfg.callbacks([*current, SupervisorCallback])
        elif isinstance(current, type) and current.__name__ != "RLlibCallback" and current is not SupervisorCallback:
            cfg.callbacks([current, SupervisorCallback])  # keep the user's own callbacks
        else:
            cfg.callbacks(SupervisorCallback)
        cfg.learners(learner_config_dict={**(cfg.learner_config_dict or {}), CONFIG_KEY: info})
        use_supervised_learner(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    cb = SupervisorTuneCallback(run_id, run_info, quiet=quiet, search_keys=search_keys)
    return SupervisedTune(SupervisedPPO, cfg.to_dict(), cb, run_dir, max_failures)


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


def build_sweep_space(sweep, source: str, info: dict | None) -> tuple[dict, dict]:
    """Sweep -> (Tune param_space, {PPOConfig name: example}) ; raises InputError on a bad search key."""
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
            raise InputError(source, where, "only config.<PPOConfig parameter>, env_config.<key> and seed "
                                            "can be searched")
    exp = sweep
    if env_examples:
        exp = sweep.model_copy(update={"env_config": {**sweep.env_config, **env_examples}})
    try:
        cfg = build_config(exp, source, info, config_overrides=examples)
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

        max_t = sweep.stop.iterations or 100
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=RETURN_METRIC, mode="max",
                                  max_t=max_t, grace_period=max(1, max_t // 8), reduction_factor=3)
    return tune.TuneConfig(num_samples=sweep.num_samples, scheduler=scheduler,
                           max_concurrent_trials=max_concurrent or sweep.max_concurrent,
                           reuse_actors=False)


def file_stop(sweep) -> dict:
    return {STOP_KEYS[k]: v for k, v in sweep.stop.model_dump().items() if v is not None}


def run_sweep(sweep, source: str, out: str | None = None, max_concurrent: int | None = None,
              address: str | None = None, quiet: bool = False, num_cpus: int | None = None,
              result_sink: dict | None = None, variants: list[dict] | None = None) -> int:
    """``supervise sweep``: a Tune sweep of PPO trials, each supervised. Returns the exit code.

    ``variants`` (for scripts, e.g. benchmarks): instead of the cross product of ``search:``, one
    trial per dict of PPOConfig values (``{"lr": 5.0, "env_config": {...}}``) times ``num_samples``.
    ``result_sink`` receives the ResultGrid, the driver callback and the wall time."""
    import yaml
    from ray import tune

    from actors.run import default_run_dir, init_ray, load_profile

    run_dir = (Path(out) if out else default_run_dir(sweep.name)).resolve()
    run_id = run_dir.name
    settings = sweep.supervisor.model_dump(mode="json")
    run_info = {"run_dir": str(run_dir), "name": sweep.name, "kind": "sweep", "settings": settings,
                "spec": sweep.model_dump(mode="json"), "profile": load_profile(sweep, source)}
    info = {"run_id": run_id, "run_info": run_info, "timeout_s": sweep.supervisor.report_timeout_s,
            "retry_after_s": sweep.supervisor.retry_after_s,
            "keep_checkpoints": sweep.supervisor.keep_checkpoints, "trial_config": dict(sweep.config),
            "search_keys": []}
    param_space, _ = build_sweep_space(sweep, source, info)  # InputError before anything starts
    if variants is not None:
        param_space[SEARCH_KEY] = tune.grid_search([dict(v) for v in variants])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False))

    if not ray.is_initialized() and not (address or _env_address()):
        # address="local": a fresh embedded Ray, never whichever cluster `ray start` left on this machine
        import os

        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 2, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    else:
        init_ray(address)
    _quiet_tune()
    cb = SupervisorTuneCallback(run_id, run_info, quiet=quiet)
    loggers = _loggers()
    stopper = combine_stop(file_stop(sweep))
    started = time.time()
    tuner = tune.Tuner(
        SupervisedPPO,
        param_space=param_space,
        tune_config=sweep_tune_config(sweep, max_concurrent),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(run_dir), stop=stopper, callbacks=[*loggers, cb], verbose=0,
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_frequency=0, checkpoint_at_end=False)),
    )
    import os

    saved = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # our two loggers above, no TensorBoard
    try:
        grid = tuner.fit()
    except Exception:
        log.exception("sweep failed")
        cb._call("close_run", run_id, "errored")
        return 1
    finally:
        if saved is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = saved
    wall = time.time() - started
    if result_sink is not None:
        result_sink.update(grid=grid, callback=cb, wall_s=wall, run_dir=run_dir,
                           stopped_by_supervisor=set(stability_stopper_of(stopper).stopped) | cb.stop_asked)
    if not quiet:
        _summary(cb, grid, wall, run_dir)
    return cb.exit_code()


def _loggers() -> list:
    """result.json and progress.csv per trial; no TensorBoard files (whose writer warns on every NaN)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _quiet_tune() -> None:
    """Our own progress lines replace Tune's: no status tables, no tracebacks for restarts we asked for
    (an errored trial's line names its error file)."""
    import os

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray.tune", "ray.train", "ray.rllib"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _env_address() -> str | None:
    import os

    return os.environ.get("RAY_ADDRESS") or None


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
