"""How a trial talks to the supervisor without ever depending on it.

Every call has a short timeout. A report that gets no answer is kept in a
bounded buffer and replayed (the store ignores duplicates by seq) once the
supervisor answers again, so a slow, dead or restarting supervisor costs the
trial at most one timeout per iteration and never its training.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import ray

from actors.supervisor_actor import find_supervisor

log = logging.getLogger(__name__)


class SupervisorClient:
    def __init__(self, run_id: str, run_info: dict, timeout_s: float = 2.0, buffer: int = 1000,
                 retry_after_s: float = 5.0):
        self.run_id, self.run_info, self.timeout_s = run_id, run_info, timeout_s
        self.buffer: deque = deque(maxlen=buffer)  # oldest dropped first: bounded memory
        self.retry_after_s = retry_after_s
        self._handle = None
        self._down_since: float | None = None
        self._inflight = None  # a call that timed out but may still be answered
        self.dropped = 0

    def _actor(self):
        if self._handle is None:
            self._handle = find_supervisor()
        return self._handle

    def call(self, method: str, *args, timeout_s: float | None = None):
        """Call a supervisor method; None when it is unreachable (and remember that for a while)."""
        if self._down_since is not None and time.monotonic() - self._down_since < self.retry_after_s:
            return None
        if self._inflight is not None:
            # Backpressure: never more than one call in flight. A call that timed out earlier is
            # still queued at the supervisor; until it is answered we send nothing more.
            ready, _ = ray.wait([self._inflight], timeout=0)
            if not ready:
                return None
            self._inflight = None
        try:
            actor = self._actor()
            if actor is None:
                raise RuntimeError("no supervisor actor")
            ref = getattr(actor, method).remote(*args)
            try:
                out = ray.get(ref, timeout=timeout_s or self.timeout_s)
            except ray.exceptions.GetTimeoutError:
                self._inflight = ref
                raise
            self._down_since = None
            return out
        except Exception as e:  # timeouts, a dead actor, a restarting actor: never the trial's problem
            log.warning("supervisor unreachable (%s: %s); training continues", e.__class__.__name__, e)
            self._handle = None
            self._down_since = time.monotonic()
            return None

    def register(self, trial_id: str, node_id: str | None, config: dict | None) -> dict | None:
        return self.call("register_trial", trial_id, self.run_id, node_id, config, self.run_info,
                         timeout_s=max(self.timeout_s, 10.0))

    def report(self, report: dict) -> list[dict] | None:
        """Send this report, after any buffered ones, in one call. Returns one verdict per report
        sent (oldest first; the last is this report's), or None when the supervisor did not answer."""
        batch = [*self.buffer, report]
        verdicts = self.call("report_batch", self.run_id, batch) if len(batch) > 1 else \
            _listify(self.call("report", self.run_id, report))
        if verdicts and verdicts[-1].get("unknown_run"):
            # the actor restarted and lost this run: reopen it, then resend
            if self.call("open_run", self.run_id, *self._run_args()) is not None:
                verdicts = self.call("report_batch", self.run_id, batch)
        if not verdicts or verdicts[-1].get("unknown_run"):
            self._keep(report)
            return None
        self.buffer.clear()
        return verdicts

    def _run_args(self) -> tuple:
        i = self.run_info
        return (i["run_dir"], i["name"], i["kind"], i.get("settings"), i.get("spec"), i.get("profile"))

    def _keep(self, report: dict) -> None:
        if self.buffer and self.buffer[-1] is report:
            return
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
        self.buffer.append(report)


def _listify(v):
    return None if v is None else [v]
