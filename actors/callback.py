"""The RLlib callback that puts a trial under supervision.

``on_train_result`` normalizes the result, sends it to the supervisor, and
applies the verdict's interventions to the algorithm *before the next
iteration* (this hook runs inside ``Algorithm.train()``, after the update).
What it applied is acknowledged at once (``SupervisorClient.acknowledge``, the
one route for it); the next report shows whether the change took effect.

Around that, on the algorithm's own process (``on_algorithm_init``): the
iteration's phases are tracked and told to the supervisor by a heartbeat thread
(``actors/heartbeat.py``; the supervisor finds a hung trial on its own clock),
and ``Algorithm.step`` is wrapped so that a crash is told before it ends the
process (``actors/crash.py``): the supervisor's answer turns it into a restart
(``RestartRequested``, Tune's ``FailureConfig`` restarts the trial) or a clean
stop. On every env runner, ``on_sample_end`` runs the data guard
(``actors/data_guard.py``) on each sampled batch.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar

import ray
from ray.rllib.callbacks.callbacks import RLlibCallback

from actors import compat, run_registry
from actors.algos import EXTRA_ROOT, name_of
from actors.appliers.rllib import RLlibApplier, current_hparams, extra_metrics, save_checkpoint, set_hparams
from actors.client import SupervisorClient
from actors.crash import OWN_ROOTS, crash_report, probe
from actors.data_guard import EnvRunnerGuard, LostIterations
from actors.heartbeat import Heartbeat, Phases
from actors.learner_results import guard_updates, keep_current, learner_thread_crash
from actors.priors import modules_of, priors_of
from supervisor import actions
from supervisor.actions import apply as apply_action
from supervisor.metrics import normalize_result
from supervisor.storage import Storage, display
from supervisor.verdict import Verdict

log = logging.getLogger(__name__)
#: Algorithms whose env runners sample asynchronously: an iteration may report no sample of its own, and asking
#: their busy env runners for the guard's counts would block (their metrics are never dropped wholesale).
ASYNC_SAMPLING = ("APPO", "IMPALA")
CONFIG_KEY = "supervisor"  # in AlgorithmConfig.learner_config_dict: {"run_id": ...}, nothing else
# The trial a Tune trainable is building (its Tune id, its sampled values): set around the algorithm's
# construction (actors.tune.trainable), read in on_algorithm_init; never part of RLlib's config.
_TRIAL: ContextVar[dict | None] = ContextVar("supervised_trial", default=None)


class RestartRequested(RuntimeError):
    """Raised from the callback to make Tune restart the trial from its latest checkpoint. Its message
    carries its name: Tune's error file keeps only the message of an exception it was handed (Ray 2.60),
    and the driver callback tells a requested restart from a crash by it."""

    def __str__(self) -> str:
        return f"RestartRequested: {super().__str__()}"


class LearnerThreadDied(RuntimeError):
    """APPO's or IMPALA's learner thread died in an update (``report``: its crash report, built in the learner's
    process); RLlib lets the algorithm sample on without learning. Raised after the iteration, it is told as a
    crash (a restart, then a stop if it repeats); unheard, it ends the trial with its cause."""

    def __init__(self, message: str, report: dict | None = None):  # (message,): copyable and picklable, as Tune needs
        super().__init__(message)
        self.report = report or {}

    @classmethod
    def of(cls, report: dict) -> "LearnerThreadDied":
        return cls(f"RLlib's learner thread died: {report.get('exception')}: "
                   f"{str(report.get('message') or '')[:300]} (the trial can no longer learn)", report)


class TrialHung(RestartRequested):
    """Raised in ``supervise run``'s own process when the supervisor found its iteration hung (``stop``: the
    supervisor stopped the trial instead of restarting it)."""

    def __init__(self, reason: str, stop: bool = False):
        super().__init__(reason)
        self.stop = stop


def stop_result(reason: str, **sup) -> dict:
    """What ``Algorithm.step`` returns instead of an iteration when the supervisor ends the trial after a crash
    or a hang: Tune ends the trial as done (``RESULT_DUPLICATE``: no iteration counted, no restart burned);
    a plain loop reads ``result["supervisor"]["stop"]``."""
    from ray.tune.result import RESULT_DUPLICATE

    return {RESULT_DUPLICATE: True, "done": True, "supervisor": {"stop": True, "reported": True, "reason": reason,
                                                                  **sup}}


def attach(config, run_id: str):
    """Point an RLlib ``AlgorithmConfig`` at its supervised run; returns the config. The run id is all it
    carries (so all every checkpoint holds): the callback reads the rest from ``actors.run_registry``."""
    compat.set_learner_options(config, learner_config_dict={**(config.learner_config_dict or {}),
                                                            CONFIG_KEY: {"run_id": run_id}})
    return config


def run_id_of(config) -> str | None:
    """The run an ``AlgorithmConfig`` (or its dict form) was attached to, if any."""
    lcd = config.get("learner_config_dict") if isinstance(config, dict) else getattr(config, "learner_config_dict",
                                                                                      None)
    ref = (lcd or {}).get(CONFIG_KEY)
    return ref.get("run_id") if isinstance(ref, dict) else None


@contextmanager
def trial_context(trial: dict | None):
    """While an algorithm is built inside: its Tune trial (``trial_id``, ``trial_name``, ``params``: Tune's
    config dict, ``search``: the values sampled under ``SEARCH_KEY``), on top of what the run publishes."""
    token = _TRIAL.set(trial)
    try:
        yield
    finally:
        _TRIAL.reset(token)


def supervisor_info(algorithm) -> dict | None:
    """What the callback needs about the algorithm's run (``RunInfo.callback_info``), or None: not supervised."""
    run_id = run_id_of(algorithm.config)
    if run_id is None:
        return None
    info = run_registry.lookup(run_id)
    if info is None:
        log.warning("run %s is not open (closed, or its driver is gone): this algorithm trains unsupervised", run_id)
        return None
    return with_trial(info, _TRIAL.get())


def with_trial(info: dict, trial: dict | None) -> dict:
    """The run's callback info for one Tune trial: its id and name, and the values sampled for it (those of
    the run's ``search_keys`` in Tune's config, and the sweep's ``search``) on top of the run's trial config."""
    if not trial:
        return info
    info = {**info, **{k: trial[k] for k in ("trial_id", "trial_name") if trial.get(k) is not None}}
    info["tune"] = trial.get("trial_id") is not None  # Tune takes the health-gated checkpoints
    params = trial.get("params") or {}
    sampled = {k: params[k] for k in info.get("search_keys", ()) if k in params}
    info["trial_config"] = {**(info.get("trial_config") or {}), **sampled, **(trial.get("search") or {})}
    return info


class SupervisorCallback(RLlibCallback):
    def __init__(self):
        super().__init__()
        self.client: SupervisorClient | None = None
        self.info: dict = {}
        self.trial_id = "default"
        self.seq = 0
        self.registered = True
        self.stop_requested = False
        self.restart_requested = False
        self.last_verdict: Verdict | None = None
        self.checkpoints: list[str] = []  # this trial's checkpoints it may rotate, oldest first (paths or URIs)
        self.best_versions: list[str] = []  # its best checkpoints, the current one last
        self.storage: Storage | None = None
        self.trial_config: dict = {}
        self.phases = Phases()
        self.heartbeat: Heartbeat | None = None
        self.stop_reason: str | None = None  # the supervisor ended this trial after a crash or a hang
        self.verdict_stop_reason: str | None = None  # the reason of a verdict's stop_trial
        self.crash: dict | None = None  # the supervisor's decision on this process's crash
        self.watch_learner_thread = False  # APPO/IMPALA with their learner thread guarded: its death is a crash
        self.quarantined = False
        self.guard: EnvRunnerGuard | None = None  # on an env runner: its data guard
        self._guard_mark: dict = {}  # the local guard's counts when the iteration in progress started
        self.lost = LostIterations()  # the guard's figures of iterations whose env-runner metrics RLlib dropped

    # ------------------------------------------------------------------ setup
    def on_algorithm_init(self, *, algorithm, metrics_logger=None, **kwargs) -> None:
        info = supervisor_info(algorithm)
        if not info:
            return
        self.info = info
        self.trial_id = info.get("trial_id") or _tune_trial_id() or "default"
        # where checkpoints go: the run folder, or the run storage every node reaches (supervisor.storage)
        run_info = info["run_info"]
        self.storage = Storage(run_info.get("storage") or run_info["run_dir"])
        self.client = SupervisorClient(info["run_id"], info["run_info"], info.get("timeout_s", 2.0),
                                       retry_after_s=info.get("retry_after_s", 5.0))
        # A (re)started trial must learn its next seq, or its reports would be taken for replays:
        # give a supervisor that Ray is restarting a few seconds.
        # The detectors' priors come from the trial's own config and spaces (kl_target, clip_param,
        # vf_clip_param, the action space's maximum entropy): they judge from iteration 1. The algorithm
        # picks which detectors and ladders apply (supervisor.algorithms).
        self.trial_config = {**(info.get("trial_config") or {}), "algorithm": name_of(algorithm),
                             "priors": priors_of(algorithm)}
        try:  # every module its own stream: which ones RLlib trains, and each one's priors
            self.trial_config["modules"] = modules_of(algorithm)
        except Exception:
            log.warning("could not read the algorithm's modules; judged as one", exc_info=True)
        self.phases.attach(algorithm, lambda step: self._guarded_step(algorithm, step))
        _wrap_stop(algorithm, self)
        if self.trial_config["algorithm"] in ASYNC_SAMPLING:
            keep_current(algorithm)  # report the learner's newest results, not RLlib 2.60's growing backlog
            # a rollback waits for the learner thread's update (one mid-update killed it); the guard also keeps
            # what killed the thread, which every step then checks for (RLlib samples on without learning)
            self.watch_learner_thread = guard_updates(algorithm)
        reg = self.client.register(self.trial_id, _node_id(), self.trial_config,
                                   wait_s=info.get("register_wait_s", 20.0))
        hang = (info["run_info"].get("settings") or {}).get("hang") or {}
        if hang.get("enabled", True):
            self.heartbeat = Heartbeat(info["run_id"], self.trial_id, self.phases,
                                       float(hang.get("heartbeat_s", 5.0)), _node_id(), self._told).start()
        if reg is None:
            log.warning("supervisor unreachable at trial start; %s trains on and registers once it answers",
                        self.trial_id)
            self.registered = False
            return
        self._registered(algorithm, reg)

    def _registered(self, algorithm, reg: dict) -> None:
        self.registered = True
        self.seq = reg["next_seq"]
        if reg.get("checkpoint") and reg["checkpoint"]["path"] not in self.checkpoints:
            # a restarted trial's rollback target: kept until the supervisor takes a newer one, then rotated
            self.checkpoints.insert(0, reg["checkpoint"]["path"])
        if reg.get("stop"):  # stopped after a crash or a hang: this restarted process ends at its first step
            self.stop_reason = reg["stop"]
            return
        if reg.get("quarantine"):
            self._quarantine(algorithm)
        if reg.get("overrides"):  # a restarted trial re-applies what the supervisor changed
            after = set_hparams(algorithm, reg["overrides"])
            log.info("trial %s restarted with supervisor overrides %s", self.trial_id, after)
        if reg.get("checkpoint") is None:
            # The starting point is the first known-good state: rollback always has a target.
            self._checkpoint(algorithm, iteration=getattr(algorithm, "iteration", 0) or 0, seq=self.seq - 1)

    # ------------------------------------------------------------------ every iteration
    def on_train_result(self, *, algorithm, metrics_logger=None, result: dict, **kwargs) -> None:
        if self.client is None:
            return
        if not self.registered:
            # Until the supervisor tells this trial its next seq, a report could pass for a replay.
            reg = self.client.register(self.trial_id, _node_id(), self.trial_config)
            if reg is None:
                result["supervisor"] = {"reported": False, "registered": False}
                return
            self._registered(algorithm, reg)
        if (self.info["run_info"].get("settings") or {}).get("data_guard", {}).get("enabled", True) \
                and self.trial_config.get("algorithm") not in ASYNC_SAMPLING:
            self.lost.fill(algorithm, result)
        extra = extra_metrics(algorithm)  # what RLlib keeps off the result (DQN's epsilon)
        if extra:
            result[EXTRA_ROOT] = extra
        report = normalize_result(result, self.trial_id, _node_id(),
                                  getattr(algorithm.config, "evaluation_interval", None))
        report["seq"] = self.seq
        t0 = time.perf_counter()
        verdicts = self.client.report(report)
        self.seq += 1
        sup = {"reported": verdicts is not None, "buffered": len(self.client.buffer),
               "call_ms": round(1000 * (time.perf_counter() - t0), 3)}
        if verdicts:
            verdict = Verdict.merged(verdicts)  # replayed reports' actions included: they still apply
            if verdict.health:
                self.last_verdict = verdict
                per = verdict.health.get("modules") or {}
                sup.update(health_score=verdict.health["score"], worst_severity=verdict.health["worst_severity"],
                           findings=[_where(f) + f"{f['detector']}:{f['severity']}" for f in verdict.findings],
                           finding_text=[_where(f) + f"{f['detector']} ({f['severity']}): {f['message']}"
                                         for f in verdict.findings],
                           actions=[_where(a) + a["action"] for a in verdict.actions], repairing=verdict.repairing)
                if len(per) > 1 or set(per) - {"default_policy"}:
                    sup["module_health"] = {m: h.get("score") for m, h in per.items()}
            self._apply(algorithm, verdict.actions)
            if verdict.checkpoint and not verdict.actions and not self.info.get("tune"):
                # under Tune the trainable asks Tune for it (should_checkpoint): one save, Tune's, in storage
                self._checkpoint(algorithm, report["iteration"], seq=report["seq"])
            if verdict.best and not verdict.actions:
                self._save_best(algorithm, report["iteration"], report["seq"], verdict.best)
                sup["best"] = verdict.best
        sup["stop"] = self.stop_requested
        if self.stop_requested and self.verdict_stop_reason:
            sup["stop_reason"] = self.verdict_stop_reason
        result["supervisor"] = sup  # reaches Tune's loggers and stoppers
        if self.restart_requested:
            # What was applied with the restart (e.g. reduce_lr) was acknowledged in _apply: the
            # restarted trial gets it back as overrides.
            raise RestartRequested(f"supervisor asked to restart trial {self.trial_id}")

    def _apply(self, algorithm, actions: list[dict]) -> None:
        if not actions:
            return
        applier = RLlibApplier(algorithm, self.trial_id)
        entries = []
        for a in actions:
            entry = apply_action(applier, a)
            if not entry["ok"]:
                log.warning("could not apply %s: %s", a["action"], entry["error"])
            elif a["action"] == "quarantine":
                self.quarantined = True
            entries.append(entry)
        self.client.acknowledge(self.trial_id, entries)  # kept and resent if the supervisor does not answer
        self.stop_requested |= applier.stop_requested
        self.restart_requested |= applier.restart_requested
        self.verdict_stop_reason = self.verdict_stop_reason or applier.stop_reason

    def _checkpoint(self, algorithm, iteration: int, seq: int = -1) -> None:
        """Save a checkpoint into the run storage (``checkpoints/<trial>/seq_N``) and record it: the trial's
        rollback target once the supervisor acknowledges it."""
        where = self.storage.uri("checkpoints", _safe(self.trial_id), f"seq_{seq + 1:06d}")
        try:
            save_checkpoint(algorithm, where)
        except Exception:
            log.exception("checkpoint failed; training continues")
            return
        self.record_checkpoint(seq, iteration, where, current_hparams(algorithm))

    def record_checkpoint(self, seq: int, iteration: int, where: str, hparams: dict | None) -> None:
        """Hand a checkpoint (ours, or the one Tune just persisted) to the supervisor, like a report: kept and
        sent again until it answers; then rotate what its answer allows."""
        if where in self.checkpoints:
            self.checkpoints.remove(where)  # saved again at the same place (--restore's starting point)
        self.checkpoints.append(where)
        self.client.record("record_checkpoint", self.info["run_id"], self.trial_id, seq, iteration, where, hparams)
        self.rotate()

    def rotate(self) -> None:
        """Delete this trial's checkpoints beyond ``keep_checkpoints``, only those older than the rollback
        target the supervisor acknowledged (never that target: a rollback may be on its way to it), and
        earlier best checkpoints once the supervisor holds a newer best. Never raises."""
        target = (self.client.acks.get("record_checkpoint") or {}).get("target")
        if target in self.checkpoints:
            keep = int(self.info.get("keep_checkpoints", 3))
            older = self.checkpoints[:self.checkpoints.index(target)]
            for where in older[:max(0, len(self.checkpoints) - keep)]:
                if self._delete(where):
                    self.checkpoints.remove(where)
        best = (self.client.acks.get("record_best_checkpoint") or {}).get("best")
        if best is not None and self.best_versions:
            current = self.best_versions[-1]
            if best == current or best == self._best_link():
                for where in self.best_versions[:-1]:
                    if self._delete(where):
                        self.best_versions.remove(where)

    def _delete(self, where: str) -> bool:
        try:
            Storage(where).delete()
            return True
        except Exception as e:  # the storage is down: deleted on a later rotation
            log.warning("could not delete old checkpoint %s: %s", display(where), e)
            return False

    def _best_link(self) -> str | None:
        """The stable name of the trial's best checkpoint in a local run storage (``RUN_DIR/best`` for a single
        run): a symlink to the newest version; None for remote storage (no symlinks there)."""
        if not self.storage.is_local:
            return None
        return self.info.get("best_dir") or self.storage.uri("checkpoints", _safe(self.trial_id), "best")

    def _save_best(self, algorithm, iteration: int, seq: int, best: dict) -> None:
        """A new best checkpoint, swapped in without a moment with no best: written whole into a new folder
        (``checkpoints/<trial>/best-N``) beside the old one, then made current (in a local storage the
        ``best`` symlink is replaced in one rename), recorded, and the old version deleted only once the
        supervisor holds the new one."""
        where = self.storage.uri("checkpoints", _safe(self.trial_id), f"best-{seq + 1:06d}")
        link = self._best_link()
        try:
            save_checkpoint(algorithm, where)
            if link is not None:
                swap_link(link, where)
        except Exception:
            log.exception("best checkpoint failed; training continues")
            return
        if where in self.best_versions:
            self.best_versions.remove(where)
        self.best_versions.append(where)
        self.client.record("record_best_checkpoint", self.info["run_id"], self.trial_id, seq, iteration,
                           link or where, best["metric"], best["value"], current_hparams(algorithm))
        self.rotate()

    # ------------------------------------------------------------------ crashes
    def _guarded_step(self, algorithm, step):
        """``Algorithm.step``, with a crash told to the supervisor before it ends the process."""

        def guarded():
            if self.stop_reason:
                self.stop_requested = True
                return stop_result(self.stop_reason)
            self._guard_mark = self._local_guard_counts(algorithm)
            try:
                out = step()
                if self.watch_learner_thread:
                    died = learner_thread_crash(algorithm)
                    if died is not None:
                        raise LearnerThreadDied.of(died)
                return out
            except RestartRequested:
                raise
            except Exception as exc:
                decision = self._crashed(algorithm, exc)
                if not decision or decision.get("action") is None:
                    raise
                if decision["action"] == "stop":
                    self.stop_reason = decision["reason"]
                    self.stop_requested = True
                    return stop_result(decision["reason"], crashed=(decision.get("finding") or {}).get("message"))
                raise RestartRequested(f"supervisor restarts trial {self.trial_id} after a crash: "
                                       f"{decision['reason']}") from exc

        return guarded

    def _crashed(self, algorithm, exc: BaseException) -> dict | None:
        if self.client is None:
            return None
        now = self._local_guard_counts(algorithm)
        guard = {k: now.get(k, 0) - self._guard_mark.get(k, 0) for k in now}
        try:
            seen = probe(algorithm)
        except Exception:
            seen = {}
        if seen.get("nonfinite_obs_now"):
            guard["nonfinite_obs"] = guard.get("nonfinite_obs", 0) + seen["nonfinite_obs_now"]
        try:
            iteration = int(getattr(algorithm, "iteration", 0) or 0) + 1
            if isinstance(exc, LearnerThreadDied) and exc.report:  # described in the learner's process, where it died
                report = {**exc.report, "node_id": exc.report.get("node_id") or _node_id(), "iteration": iteration,
                          "guard": guard}
            else:
                report = crash_report(exc, node_id=_node_id(), iteration=iteration,
                                      phase=self.phases.failed_in or self.phases.phase, guard=guard)
        except Exception:
            log.exception("could not describe the crash")
            return None
        report["own_roots"] = list(OWN_ROOTS)
        if "weights_finite" in seen:
            report["weights_finite"] = seen["weights_finite"]
        self.flush(timeout_s=5.0)  # buffered reports and acknowledgements first: the crash comes after them
        decision = self.client.call("trial_crashed", self.info["run_id"], self.trial_id, report, self.info["run_info"],
                                    timeout_s=max(self.client.timeout_s, 10.0))
        if isinstance(decision, dict):
            self.crash = decision
            log.error("trial %s crashed: %s -> %s", self.trial_id,
                      (decision.get("finding") or {}).get("message"), decision.get("action"))
            return decision
        return None

    # ------------------------------------------------------------------ hangs
    def _told(self, told: dict) -> None:
        """The heartbeat's answer: the supervisor found this trial hung. In a Tune trial the supervisor ends the
        actor itself; in a driver (``supervise run``) the run loop interrupts its own training."""
        if self.heartbeat is not None and self.heartbeat.handle is None:
            from actors import heartbeat

            heartbeat.interrupt_main(told)

    # ------------------------------------------------------------------ the data guard (env runners)
    def guard_for(self, env_runner) -> EnvRunnerGuard:
        if self.guard is None:
            settings = {}
            run_id = run_id_of(getattr(env_runner, "config", None))
            info = run_registry.lookup(run_id) if run_id else None
            if info:
                settings = ((info.get("run_info") or {}).get("settings") or {}).get("data_guard") or {}
            else:
                settings = {"enabled": False}  # not supervised: no guard
            self.guard = EnvRunnerGuard(settings)
        return self.guard

    def on_sample_end(self, *, env_runner=None, metrics_logger=None, samples=None, **kwargs) -> None:
        try:
            self.guard_for(env_runner).on_sample_end(env_runner, metrics_logger, samples)
        except Exception:  # the guard never takes sampling down
            log.exception("data guard failed on this sample; the sample goes on unchecked")

    def on_env_runners_recreated(self, *, algorithm, env_runner_group=None, env_runner_indices=None, **kwargs) -> None:
        if self.quarantined:
            self._quarantine(algorithm)

    def _quarantine(self, algorithm) -> None:
        from actors.appliers.rllib.quarantine import quarantine

        try:
            quarantine(algorithm, True)
            self.quarantined = True
        except Exception as e:
            log.warning("could not quarantine the env runners of %s: %s", self.trial_id, e)

    @staticmethod
    def _local_guard_counts(algorithm) -> dict:
        """The data guard's counts so far on this process's own env runner (the one a crash report can read)."""
        er = getattr(algorithm, "env_runner", None)
        for cb in getattr(er, "_callbacks", None) or ():
            if isinstance(cb, SupervisorCallback) and cb.guard is not None:
                return dict(cb.guard.totals)
        return {}

    def flush(self, timeout_s: float = 20.0) -> bool:
        """The trial ends (Tune stops it, or our runner closes it): nothing it knows may be lost.

        Sends what the supervisor has not got yet (acknowledgements, reports buffered while it was down
        or restarting), and acknowledges the interventions decided in the replayed reports' verdicts as
        not applied, since the trial can no longer apply them. Waits up to ``timeout_s`` for a restarting
        supervisor. True when everything reached it."""
        if self.client is None or not self.client.outstanding:
            return True  # the common case: nothing outstanding, no call
        verdicts = self.client.drain(timeout_s=timeout_s)
        if verdicts is None:
            log.warning("trial %s ends with %d reports the supervisor never got", self.trial_id,
                        len(self.client.buffer))
            return False
        skipped = []
        applier = _EndedTrial(self.trial_id)
        for a in (a for v in verdicts for a in v.actions):
            if actions.get(a["action"]).applies_after_end:  # an alert, or a stop: the trial stops anyway
                skipped.append(apply_action(applier, a))
            else:
                skipped.append({"id": a.get("id"), "action": a["action"], "ok": False,
                                "error": "not applied: the trial ended before this verdict reached it"})
        self.stop_requested |= applier.stop_requested
        if skipped and not self.client.acknowledge(self.trial_id, skipped):
            return self.client.drain(timeout_s=timeout_s) is not None and not self.client.unacked
        return True

    def on_trial_end(self, status: str) -> str | None:
        """Called by our runner (not RLlib) when the trial ends; returns the final status."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.client is None:
            return None
        self.flush()  # what is outstanding first: what it decides comes before the closing record
        self.rotate()  # what the last acknowledgements allow
        for attempt in range(3):  # the closing record is worth a few seconds: the supervisor may be restarting
            out = self.client.call("finish_trial", self.info["run_id"], self.trial_id, status, timeout_s=5.0)
            if out is not None:
                return out
            time.sleep(self.client.retry_after_s)
        return None


def find_callback(algorithm) -> SupervisorCallback | None:
    cbs = getattr(algorithm, "callbacks", None)
    for cb in cbs if isinstance(cbs, (list, tuple)) else [cbs]:
        if isinstance(cb, SupervisorCallback):
            return cb
    return None


class _EndedTrial(RLlibApplier):
    """The applier for verdicts that arrive after the trial's last iteration: no algorithm to change."""

    def __init__(self, trial_id: str):
        super().__init__(None, trial_id)


def _wrap_stop(algorithm, cb: SupervisorCallback) -> None:
    """The heartbeat ends with the algorithm (``Algorithm.stop``: Tune's, or the runner's before a restart)."""
    stop = algorithm.stop

    def stopped(*args, **kwargs):
        if cb.heartbeat is not None:
            cb.heartbeat.stop()
        return stop(*args, **kwargs)

    algorithm.stop = stopped


def _node_id() -> str | None:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None


def _tune_trial_id() -> str | None:
    try:
        from ray import tune

        return tune.get_context().get_trial_id()
    except Exception:
        return None


def _where(item: dict) -> str:
    """"p1: " before a finding or action of a multi-agent trial's module (nothing for a single-agent one)."""
    m = item.get("module")
    return f"{m}: " if m not in (None, "default_policy") else ""


def swap_link(link: str, target: str) -> None:
    """Point the symlink ``link`` at ``target`` in one rename: a reader finds the old target or the new one,
    never nothing. A real folder already at ``link`` (a best from before versions) is moved aside first."""
    tmp = f"{link}.swap-{os.getpid()}"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(os.path.relpath(target, os.path.dirname(link)), tmp)
    if os.path.isdir(link) and not os.path.islink(link):
        os.rename(link, f"{link}-{int(time.time())}")
    os.replace(tmp, link)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
