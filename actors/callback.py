"""The RLlib callback that puts a trial under supervision.

``on_train_result`` normalizes the result, sends it to the supervisor, and
applies the verdict's interventions to the algorithm *before the next
iteration* (this hook runs inside ``Algorithm.train()``, after the update).
What it applied is acknowledged at once (``SupervisorClient.acknowledge``, the
one route for it); the next report shows whether the change took effect.
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import ray
from ray.rllib.callbacks.callbacks import RLlibCallback

from actors import run_registry
from actors.algos import EXTRA_ROOT, name_of
from actors.appliers.rllib import RLlibApplier, current_hparams, extra_metrics, save_checkpoint, set_hparams
from actors.client import SupervisorClient
from actors.priors import modules_of, priors_of
from supervisor import actions
from supervisor.actions import apply as apply_action
from supervisor.metrics import normalize_result
from supervisor.verdict import Verdict

log = logging.getLogger(__name__)
CONFIG_KEY = "supervisor"  # in AlgorithmConfig.learner_config_dict: {"run_id": ...}, nothing else
# The trial a Tune trainable is building (its Tune id, its sampled values): set around the algorithm's
# construction (actors.tune.trainable), read in on_algorithm_init; never part of RLlib's config.
_TRIAL: ContextVar[dict | None] = ContextVar("supervised_trial", default=None)


class RestartRequested(RuntimeError):
    """Raised from the callback to make Tune restart the trial from its latest checkpoint."""


def attach(config, run_id: str):
    """Point an RLlib ``AlgorithmConfig`` at its supervised run; returns the config. The run id is all it
    carries (so all every checkpoint holds): the callback reads the rest from ``actors.run_registry``."""
    config.learners(learner_config_dict={**(config.learner_config_dict or {}), CONFIG_KEY: {"run_id": run_id}})
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
        self.checkpoints: list[str] = []
        self.trial_config: dict = {}

    # ------------------------------------------------------------------ setup
    def on_algorithm_init(self, *, algorithm, metrics_logger=None, **kwargs) -> None:
        info = supervisor_info(algorithm)
        if not info:
            return
        self.info = info
        self.trial_id = info.get("trial_id") or _tune_trial_id() or "default"
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
        reg = self.client.register(self.trial_id, _node_id(), self.trial_config,
                                   wait_s=info.get("register_wait_s", 20.0))
        if reg is None:
            log.warning("supervisor unreachable at trial start; %s trains on and registers once it answers",
                        self.trial_id)
            self.registered = False
            return
        self._registered(algorithm, reg)

    def _registered(self, algorithm, reg: dict) -> None:
        self.registered = True
        self.seq = reg["next_seq"]
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
            if verdict.checkpoint and not verdict.actions:
                self._checkpoint(algorithm, report["iteration"], seq=report["seq"])
            if verdict.best and not verdict.actions:
                self._save_best(algorithm, report["iteration"], report["seq"], verdict.best)
                sup["best"] = verdict.best
        sup["stop"] = self.stop_requested
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
            entries.append(entry)
        self.client.acknowledge(self.trial_id, entries)  # kept and resent if the supervisor does not answer
        self.stop_requested |= applier.stop_requested
        self.restart_requested |= applier.restart_requested

    def _checkpoint(self, algorithm, iteration: int, seq: int = -1) -> None:
        root = Path(self.info["run_info"]["run_dir"]) / "checkpoints" / _safe(self.trial_id)
        path = root / f"seq_{seq + 1:06d}"
        try:
            save_checkpoint(algorithm, str(path))
        except Exception:
            log.exception("checkpoint failed; training continues")
            return
        self.client.call("record_checkpoint", self.info["run_id"], self.trial_id, seq, iteration, str(path),
                         current_hparams(algorithm))
        self.checkpoints.append(str(path))
        keep = int(self.info.get("keep_checkpoints", 3))
        while len(self.checkpoints) > keep:
            shutil.rmtree(self.checkpoints.pop(0), ignore_errors=True)

    def _save_best(self, algorithm, iteration: int, seq: int, best: dict) -> None:
        """Replace the trial's best checkpoint (written aside, then swapped in: a crash mid-save keeps the old)."""
        path = Path(self.info.get("best_dir") or Path(self.info["run_info"]["run_dir"]) / "checkpoints"
                    / _safe(self.trial_id) / "best")
        tmp = path.with_name(path.name + ".saving")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            save_checkpoint(algorithm, str(tmp))
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        except Exception:
            log.exception("best checkpoint failed; training continues")
            return
        self.client.call("record_best_checkpoint", self.info["run_id"], self.trial_id, seq, iteration, str(path),
                         best["metric"], best["value"], current_hparams(algorithm))

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
        if self.client is None:
            return None
        self.flush()  # what is outstanding first: what it decides comes before the closing record
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


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
