"""Supervise any training loop: the Python API.

    from supervisor import Supervisor

    sup = Supervisor("runs/my-run", algorithm="ppo")
    for it in range(n):
        metrics = train_one_iteration()          # any key style: CleanRL, SB3, TRL, plain names
        verdict = sup.observe(it, metrics)       # findings and actions, stored in runs/my-run/supervisor.db
        sup.apply(verdict, applier)              # or read verdict.actions yourself
        if verdict.stop:
            break
    sup.close()

Locally (the default) the same ``Engine`` the RLlib supervisor actor wraps judges each report in this
process and writes the run folder that ``supervise report``, ``supervise dashboard --run`` and
``supervise calibrate`` read. With ``address=...`` the reports go to the cluster's supervisor actor
instead (``actors/api_backend.py``, imported only then), so the run shows in ``supervise status`` and
the cluster dashboard. Nothing here imports Ray.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from supervisor import actions
from supervisor.verdict import Verdict

log = logging.getLogger(__name__)

__all__ = ["Supervisor", "Verdict", "normalize_metrics"]


def normalize_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A foreign metrics dict (CleanRL ``losses/approx_kl``, SB3 ``train/...``, TRL ``objective/kl``,
    plain ``loss``/``lr``, nested dicts, numpy or 0-d tensor values) -> the normalized names the
    detectors read. The one place this module maps keys: the same tables ``supervise scan`` uses."""
    from supervisor.keymaps import flatten, map_keys, number
    from supervisor.metrics import RESULT_PATHS, drop_no_data

    from supervisor import modules

    flat = flatten(metrics) if any(isinstance(v, dict) for v in metrics.values()) else metrics
    out = map_keys(flat, keep_nan_returns=True)[0]
    for k in RESULT_PATHS.keys() & flat.keys() - out.keys():  # already-normalized names (env_steps_lifetime)
        v = number(flat[k])
        if v is not None:
            out[k] = v
    for k, raw in flat.items():  # several policies: modules/<id>/<normalized name>, each its own stream
        p = modules.parse(k) if isinstance(k, str) else None
        if p is not None and p[1] in RESULT_PATHS and (v := number(raw)) is not None:
            out[k] = v
    return drop_no_data(out)


class _LocalBackend:
    """The engine in this process, writing ``run_dir/supervisor.db``."""

    def __init__(self, run_dir: Path, run_id: str, name: str, kind: str, settings, spec: dict, profile):
        from supervisor.engine import Engine
        from supervisor.store import Store

        self.run_id, self.name, self.kind = run_id, name, kind
        # WAL checkpoints from a thread: a checkpoint's fsync never stalls the training loop.
        self.store = Store(run_dir / "supervisor.db", background_checkpoints=True)
        self.store.upsert_run(run_id, name, kind, "running", spec)
        self.engine = Engine(self.store, settings, profile)
        self.alerts = None  # supervisor.alerts: sent from a thread, as the supervisor actor does
        if settings is not None and settings.alerts:
            from supervisor.alerts import AlertSender

            self._alert_store = Store(run_dir / "supervisor.db")
            self.alerts = AlertSender(settings.alerts, self._alert_store.record_alert, run=name,
                                      dashboard_url=settings.dashboard_url, quiet=settings.alert_quiet)
        self.started = time.time()

    def register(self, trial_id: str, config: dict | None) -> dict:
        return self.engine.register_trial(trial_id, self.run_id, None, config)

    def report(self, report: dict) -> Verdict:
        # A batch of one: its summary row is written at most every FLUSH_S, one transaction per report.
        v = self.engine.observe_batch([report])[0]
        if self.alerts is not None and v.findings:
            self.alerts.observe(str(report.get("trial_id")), v.seq, int(report.get("iteration") or 0),
                                v.findings, v.actions)
        return v

    def request(self, trial_id: str, action: str, params: dict, reason: str) -> bool:
        return self.engine.request_action(trial_id, action, params, reason)

    def record_checkpoint(self, trial_id: str, seq: int, iteration: int, path: str, hparams: dict | None) -> None:
        self.engine.record_checkpoint(trial_id, seq, iteration, path, hparams)

    def acknowledge(self, trial_id: str, applied: list) -> None:
        self.engine.acknowledge(trial_id, applied)

    def finish(self, trial_id: str, status: str) -> str:
        final = self.engine.finish_trial(trial_id, status)
        self.store.upsert_run(self.run_id, self.name, self.kind, final, ended=time.time())
        if self.alerts is not None:
            t = self.store.trial(trial_id) or {}
            from supervisor.engine import json_or_empty

            self.alerts.summary(final, [{**t, "final_return": json_or_empty(t.get("final")).get("episode_return_mean")}],
                                self.started)
            if self.alerts.close(timeout_s=8.0):
                self._alert_store.close()
        self.store.close()
        return final


class Supervisor:
    """Put one training run under supervision.

    Args:
        run_dir: the run folder (created); ``supervisor.db`` and what the integrations save go there.
            Opening an existing folder with the same ``trial_id`` resumes that trial.
        algorithm: recorded with the run (``ppo``, ``dqn``, ``sft``, ...).
        settings: the experiment file's ``supervisor:`` section, as a dict or ``SupervisorConfig``.
        profile: a calibrated profile (``supervise calibrate``): a path, or the loaded dict (its
            ``metrics`` mapping, or the whole file). Default: ``settings.profile`` when set.
        address: a Ray cluster address (``"auto"``, ``host:port``): report to the cluster's supervisor
            actor instead of judging in this process. Needs Ray; the only path that imports it.
        trial_id: the trial's id in the run (default: the folder's name).
        name: the run's name (default: the folder's name). The run's id is the folder's name plus a hash
            of its full path, as ``supervise run`` makes it (``supervisor.identity``).
        config: the trial's hyperparameters, stored with it.
        kind: the run's kind as stored (``api``; the integrations pass ``sb3``, ``hf``).
    """

    def __init__(self, run_dir: str | Path, algorithm: str = "ppo", settings: Any = None,
                 profile: str | Path | Mapping | None = None, address: str | None = None, *,
                 trial_id: str | None = None, name: str | None = None, config: Mapping | None = None,
                 kind: str = "api"):
        from supervisor.config import SupervisorConfig

        from supervisor.identity import run_id_for

        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id_for(self.run_dir)  # as `supervise run` does: a/ppo and b/ppo are two runs
        self.trial_id = str(trial_id or self.run_dir.name)
        self.algorithm = algorithm
        if settings is None:
            settings = SupervisorConfig()
        elif not isinstance(settings, SupervisorConfig):
            settings = _validated(settings)
        self.settings = settings
        profile = _profile(profile if profile is not None else settings.profile)
        spec = {"algorithm": algorithm, "kind": kind, "config": dict(config or {})}
        name = name or self.run_dir.name
        if address is None:
            self._backend = _LocalBackend(self.run_dir, self.run_id, name, kind, settings, spec, profile)
        else:
            from actors.api_backend import RemoteBackend  # Ray only on this path

            self._backend = RemoteBackend(address, self.run_dir, self.run_id, name, kind,
                                          settings.model_dump(mode="json"), spec, profile)
        reg = self._backend.register(self.trial_id, dict(config or {})) or {}
        self.seq = int(reg.get("next_seq", 0))
        self.overrides: dict = dict(reg.get("overrides") or {})  # what the supervisor changed before a resume
        self.checkpoint: dict | None = reg.get("checkpoint")  # the newest healthy checkpoint it knows
        # the loop's training wall time (the compute account), counted on from a resumed trial's last report
        prior = reg.get("time_total_s")
        self._prior_s = float(prior) if isinstance(prior, (int, float)) and math.isfinite(prior) and prior >= 0 else 0.0
        self._opened = time.monotonic()  # not the wall clock: an NTP step or a suspend must not move it
        self.applied: list[dict] = []  # applied entries the supervisor has not taken yet (sent again)
        self.last: Verdict | None = None
        self.stopped = False
        self.closed = False
        self.status: str | None = None

    # ------------------------------------------------------------------ every iteration
    def observe(self, iteration: int, metrics: Mapping[str, Any], applied: Iterable[dict] | None = None) -> Verdict:
        """Judge one iteration's metrics; returns the verdict (never raises for a supervisor fault:
        training must not die of its watchdog; a bad argument raises TypeError)."""
        if self.closed:
            raise RuntimeError("observe() after close()")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping of name -> number, got {type(metrics).__name__}")
        self._acknowledge(applied)  # before the report, which verifies the change
        now = time.time()
        norm = normalize_metrics(metrics)
        if "time_total_s" not in norm:  # the loop's own figure when it gives one (an RLlib result)
            norm["time_total_s"] = round(self._prior_s + time.monotonic() - self._opened, 3)
        report = {"trial_id": self.trial_id, "seq": self.seq, "iteration": int(iteration), "time": now,
                  "metrics": norm}
        try:
            raw = self._backend.report(report)
        except Exception as e:  # the store's disk, a detector bug outside the engine's guard, ...
            log.warning("supervisor failed on iteration %s (%s: %s); training continues", iteration,
                        e.__class__.__name__, e)
            raw = None
        self.seq += 1
        if raw is not None and raw.error:
            log.warning("supervisor could not judge iteration %s: %s", iteration, raw.error)
        v = raw if raw is not None and raw.reported else Verdict(int(iteration), reported=False)
        self.stopped |= v.stop
        self.last = v
        return v

    def apply(self, verdict: Verdict, applier) -> list[dict]:
        """Carry out the verdict's actions through ``applier`` (``supervisor.actions.Applier``); returns
        the entries (``ok``, ``before``/``after``, or ``error``), which go to the supervisor at once (the
        next report then verifies the change, and the outcome is judged on the reports after it)."""
        entries = [actions.apply(applier, a) for a in verdict.actions]
        for e in entries:
            if not e["ok"]:
                log.warning("could not apply %s: %s", e["action"], e.get("error"))
        self._acknowledge(entries)
        return entries

    def _acknowledge(self, applied: Iterable[dict] | None = None) -> None:
        """What the loop applied, to the supervisor (the one route: ``Engine.acknowledge``); what a fault
        keeps from it is sent again next time."""
        self.applied.extend(applied or ())
        if not self.applied:
            return
        try:
            self._backend.acknowledge(self.trial_id, self.applied)
            self.applied = []
        except Exception as e:  # the store's disk: never the training loop's problem
            log.warning("supervisor could not take what was applied (%s: %s); sent again with the next report",
                        e.__class__.__name__, e)

    def request(self, action: str, params: Mapping | None = None, reason: str = "requested by the training loop"
                ) -> bool:
        """Queue an action (e.g. ``stop_trial`` when the loop knows it cannot go on): it goes out, and is
        recorded, with the next verdict. False when the supervisor does not know the action or trial."""
        return bool(self._backend.request(self.trial_id, action, dict(params or {}), reason))

    def checkpoint_saved(self, iteration: int, path: str | Path, hparams: Mapping | None = None) -> None:
        """Record a healthy checkpoint (save when ``verdict.checkpoint``): the target of later rollbacks.
        ``hparams``: the hyperparameters it was trained with (lr, entropy_coeff, kl_coeff, grad_clip)."""
        path = str(Path(path).resolve())
        hp = {k: float(v) for k, v in (hparams or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._backend.record_checkpoint(self.trial_id, self.seq - 1, int(iteration), path, hp)
        self.checkpoint = {"path": path, "seq": self.seq - 1, "iteration": int(iteration), "hparams": hp}

    def close(self, status: str | None = None) -> str:
        """Finish the trial and the run. ``status``: completed (default; ``stopped`` when a verdict said
        stop), stopped, errored. Returns the final status (``completed`` becomes ``recovered`` when an
        intervention helped)."""
        if self.closed:
            return self.status or "completed"
        status = status or ("stopped" if self.stopped else "completed")
        self.closed = True
        self._acknowledge()
        self.status = self._backend.finish(self.trial_id, status)
        return self.status

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("errored" if exc_type is not None else None)  # as supervise run: an interrupt is errored too


def _validated(settings: Any):
    from pydantic import ValidationError

    from supervisor.config import SupervisorConfig, _first_error

    if not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a dict or SupervisorConfig, got {type(settings).__name__}")
    try:
        return SupervisorConfig.model_validate(dict(settings))
    except ValidationError as e:
        raise _first_error(e, "settings") from None


def _profile(profile: Any) -> dict | None:
    if profile is None:
        return None
    if isinstance(profile, (str, Path)):
        from supervisor.calibrate import load_profile

        return load_profile(profile)
    if isinstance(profile, Mapping):
        return dict(profile["metrics"] if isinstance(profile.get("metrics"), Mapping) else profile)
    raise TypeError(f"profile must be a path or a dict, got {type(profile).__name__}")
