"""``Supervisor(run_dir, address=...)``: the Python API reporting to the cluster's supervisor actor.

The same calls as the in-process engine (``supervisor/api.py``), through the trial client
(``actors/client.py``): short timeouts, reports buffered and replayed while the actor is down or
restarting, training never blocked on it. The run then shows in ``supervise status`` and the cluster
dashboard like an RLlib trial. Imported only when an address is given.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

from actors.client import SupervisorClient
from actors.supervisor_actor import get_or_create_supervisor
from supervisor.verdict import Verdict

log = logging.getLogger(__name__)


class RemoteBackend:
    def __init__(self, address: str, run_dir: Path, run_id: str, name: str, kind: str, settings: dict, spec: dict,
                 profile: dict | None):
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False)
        self.run_id = run_id
        self.run_info = {"run_dir": str(run_dir), "name": name, "kind": kind, "settings": settings, "spec": spec,
                         "profile": profile}
        actor = get_or_create_supervisor()
        ray.get(actor.open_run.remote(run_id, **self.run_info), timeout=60)
        self.client = SupervisorClient(run_id, self.run_info, settings.get("report_timeout_s", 2.0),
                                       retry_after_s=settings.get("retry_after_s", 5.0))
        self.node_id = _node_id()

    def register(self, trial_id: str, config: dict | None) -> dict:
        reg = self.client.register(trial_id, self.node_id, config, wait_s=20.0)
        if reg is None:
            raise RuntimeError(f"the supervisor actor on {ray.get_runtime_context().gcs_address} did not answer")
        return reg

    def report(self, report: dict) -> Verdict | None:
        report = {**report, "node_id": self.node_id}
        # None: buffered, replayed with the next report. Verdicts of replayed or late-answered reports
        # may carry actions decided while we could not hear them: they still apply.
        return Verdict.merged(self.client.report(report) or [])

    def request(self, trial_id: str, action: str, params: dict, reason: str) -> bool:
        return bool(self.client.call("request_action", trial_id, action, params, reason))

    def record_checkpoint(self, trial_id: str, seq: int, iteration: int, path: str, hparams: dict | None) -> None:
        self.client.record("record_checkpoint", self.run_id, trial_id, seq, iteration, path, hparams)

    def acknowledge(self, trial_id: str, applied: list) -> None:
        self.client.acknowledge(trial_id, applied)  # kept and resent if the actor does not answer

    def finish(self, trial_id: str, status: str) -> str:
        if self.client.outstanding:
            self.client.drain(timeout_s=20.0)
        final = self.client.call("finish_trial", self.run_id, trial_id, status, timeout_s=10.0) or status
        self.client.call("close_run", self.run_id, final, timeout_s=10.0)
        return final


def _node_id() -> str | None:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return os.environ.get("RAY_NODE_ID")
