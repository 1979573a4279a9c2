"""How a trial talks to the supervisor without ever depending on it.

Every call has a short timeout. A report that gets no answer is kept in a
bounded buffer and replayed (the store ignores duplicates by seq) once the
supervisor answers again, so a slow, dead or restarting supervisor costs the
trial at most one timeout per iteration and never its training.

A report call that timed out may still be answered later: its verdicts (and the
interventions decided in them, which the store already holds) are kept and handed
out with the next answer, since a replay of the same reports only gets
"duplicate". When the trial ends, ``drain`` replays what is still buffered,
waiting a little for a restarting supervisor.

What the trial did with the actions it was handed goes through ``acknowledge``,
the one route for it: kept until the supervisor takes it, and always sent before
the next report (which verifies the change).

Checkpoint records (``record``: a new rollback target, a new best) travel the
same way: kept in order until the supervisor answers each, sent before the next
report (which may need that target), and their answers (``acks``: the rollback
target and best the supervisor holds) tell the trial what it may delete.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import ray

from actors.supervisor_actor import find_supervisor
from supervisor.verdict import Verdict

log = logging.getLogger(__name__)


class SupervisorClient:
    MAX_TRIES = 5  # error verdicts a report may get before it is given up (a report the engine cannot take)

    def __init__(self, run_id: str, run_info: dict, timeout_s: float = 2.0, buffer: int = 1000,
                 retry_after_s: float = 5.0):
        self.run_id, self.run_info, self.timeout_s = run_id, run_info, timeout_s
        self.buffer: deque = deque(maxlen=buffer)  # oldest dropped first: bounded memory
        self.retry_after_s = retry_after_s
        self._handle = None
        self._down_since: float | None = None
        self._inflight = None  # a call that timed out but may still be answered
        self._inflight_method: str | None = None
        self.late: list[Verdict] = []  # verdicts of a timed-out report call that was answered after all
        self._given: dict = {}  # ids of the actions handed to the trial (an ordered, bounded set)
        self.dropped = 0
        self._tries: dict[int, int] = {}  # id(report) -> error verdicts it got
        self.unacked: dict[str, list[dict]] = {}  # trial id -> applied entries the supervisor has not taken yet
        self.records: deque = deque(maxlen=256)  # (method, args) checkpoint records not answered yet, oldest first
        self.acks: dict[str, dict] = {}  # method -> the supervisor's answer to the newest record it took
        self._record_tries = 0  # error answers the oldest record got

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
            self._take_late()
        try:
            actor = self._actor()
            if actor is None:
                raise RuntimeError("no supervisor actor")
            ref = getattr(actor, method).remote(*args)
            try:
                out = ray.get(ref, timeout=timeout_s or self.timeout_s)
            except ray.exceptions.GetTimeoutError:
                self._inflight, self._inflight_method = ref, method
                raise
            self._down_since = None
            return out
        except Exception as e:  # timeouts, a dead actor, a restarting actor: never the trial's problem
            log.warning("supervisor unreachable (%s: %s: %s); training continues", method, e.__class__.__name__, e)
            self._handle = None
            self._down_since = time.monotonic()
            return None

    def _take_late(self) -> None:
        """The timed-out call is done. If it was a report that got verdicts, keep them: the store has
        what they decided, and the trial must still hear it (a replay is only answered "duplicate")."""
        ref, method = self._inflight, self._inflight_method
        self._inflight = self._inflight_method = None
        if method not in ("report", "report_batch"):
            return
        try:
            out = ray.get(ref, timeout=0)
        except Exception:  # it failed (the actor died): the replay will tell
            return
        self.late.extend(v for v in _verdicts(out) or [] if not v.unknown_run)

    def register(self, trial_id: str, node_id: str | None, config: dict | None, wait_s: float = 0.0
                 ) -> dict | None:
        """Register (or re-register) the trial; retry for up to ``wait_s`` while the supervisor is down."""
        deadline = time.monotonic() + wait_s
        while True:
            out = self.call("register_trial", trial_id, self.run_id, node_id, config, self.run_info,
                            timeout_s=max(self.timeout_s, 10.0))
            if out is not None or time.monotonic() >= deadline:
                return out
            time.sleep(1.0)
            self._down_since = None

    @property
    def outstanding(self) -> bool:
        """Something the supervisor has not got yet: buffered reports, late verdicts, acknowledgements."""
        return bool(self.buffer or self.late or self.unacked or self.records)

    def acknowledge(self, trial_id: str, applied: list[dict]) -> bool:
        """Hand the supervisor what the trial did with the actions it was handed (``Engine.acknowledge``).
        What does not get through is kept and sent again, before anything else; True once all went."""
        if applied:
            self.unacked.setdefault(trial_id, []).extend(applied)
        return self._send_acks()

    def record(self, method: str, *args) -> bool:
        """A checkpoint record (``record_checkpoint``, ``record_best_checkpoint``): kept until the supervisor
        answers it, sent again (in order) before anything else; True once every record went."""
        self.records.append((method, args))
        return self._send_records()

    def _send_records(self) -> bool:
        while self.records:
            method, args = self.records[0]
            out = self.call(method, *args)
            if isinstance(out, dict) and out.get("unknown_run") and \
                    self.call("open_run", self.run_id, *self._run_args()) is not None:
                out = self.call(method, *args)  # the actor had lost the run
            if not isinstance(out, dict) or out.get("unknown_run"):
                return False
            if out.get("error"):  # the supervisor could not store it: again later, a few times at most
                self._record_tries += 1
                if self._record_tries < self.MAX_TRIES:
                    return False
                log.warning("supervisor refused a checkpoint record %d times (%s); dropped", self._record_tries,
                            out["error"])
            else:
                self.acks[method] = out
            self._record_tries = 0
            self.records.popleft()
        return True

    def _send_acks(self) -> bool:
        if not self._send_records():
            return False
        for trial_id in list(self.unacked):
            entries = self.unacked[trial_id]
            out = self.call("acknowledge", self.run_id, trial_id, entries)
            if out is False and self.call("open_run", self.run_id, *self._run_args()) is not None:
                out = self.call("acknowledge", self.run_id, trial_id, entries)  # the actor had lost the run
            if not out:
                return False
            del self.unacked[trial_id]
        return True

    def report(self, report: dict) -> list[Verdict] | None:
        """Send this report, after any buffered ones, in one call. Returns one verdict per report
        sent (oldest first; the last is this report's), or None when the supervisor did not answer."""
        batch = [*self.buffer, report]
        verdicts = self._send(batch)
        if verdicts is None:
            self._keep(report)
            return None
        self._settle(batch, verdicts)
        return verdicts

    def _settle(self, batch: list[dict], verdicts: list[Verdict]) -> None:
        """Only what got a real verdict leaves the buffer: an error verdict is not an acknowledgement
        (that report was not stored). A report that keeps failing is given up after a few tries."""
        mine = verdicts[-len(batch):]
        self.buffer.clear()
        for r, v in zip(batch, mine):
            if not v.error:
                self._tries.pop(id(r), None)
                continue
            n = self._tries.get(id(r), 0) + 1
            if n >= self.MAX_TRIES:
                self._tries.pop(id(r), None)
                self.dropped += 1
                log.warning("supervisor refused a report %d times (%s); dropped", n, v.error)
                continue
            self._tries[id(r)] = n
            self._keep(r)
        live = {id(r) for r in self.buffer}
        self._tries = {k: n for k, n in self._tries.items() if k in live}

    def _send(self, batch: list[dict]) -> list[Verdict] | None:
        """One call for ``batch`` (acknowledgements first); its verdicts, after any late ones (oldest first),
        or None."""
        if not self._send_acks():
            return None
        verdicts = _verdicts(self.call("report_batch", self.run_id, batch) if len(batch) > 1 else
                             self.call("report", self.run_id, batch[0]))
        if verdicts and verdicts[-1].unknown_run:
            # the actor restarted and lost this run: reopen it, then resend
            if self.call("open_run", self.run_id, *self._run_args()) is not None:
                verdicts = _verdicts(self.call("report_batch", self.run_id, batch))
        if not verdicts or verdicts[-1].unknown_run:
            return None
        late, self.late = self.late, []
        return self._once([*late, *verdicts])

    def _once(self, verdicts: list[Verdict]) -> list[Verdict]:
        """Each decided action reaches the trial once: a late answer and the replay of the same report
        (which hands out again what was never confirmed applied) may both carry it."""
        for v in verdicts:
            acts = v.actions
            if not acts:
                continue
            keep = []
            for a in acts:
                i = a.get("id")
                if i is not None and not isinstance(i, bool):
                    if i in self._given:
                        continue
                    self._given[i] = None
                    if len(self._given) > 4096:  # bounded: ids only repeat within a few iterations
                        del self._given[next(iter(self._given))]
                keep.append(a)
            v.actions = keep
        return verdicts

    def drain(self, timeout_s: float = 20.0) -> list[Verdict] | None:
        """The trial ends: send what is outstanding (acknowledgements, buffered reports) until the supervisor
        takes it or ``timeout_s`` passes; a restarting supervisor is waited for. Returns the verdicts (late
        ones first), or None when nothing got through."""
        deadline = time.monotonic() + timeout_s
        got: list[Verdict] = []  # verdicts of an earlier round in which some reports failed
        while True:
            batch = list(self.buffer)
            if not batch and not self.unacked and not self.records:
                late, self.late = self.late, []
                return [*got, *late]
            if self._inflight is not None:
                ray.wait([self._inflight], timeout=max(0.0, min(2.0, deadline - time.monotonic())))
            self._down_since = None  # no back-off now: this is the last chance
            if not batch:
                if self._send_acks():  # the records first, then the acknowledgements
                    continue
            elif (verdicts := self._send(batch)) is not None:
                self._settle(batch, verdicts)
                if not self.buffer:
                    return [*got, *verdicts]
                got.extend(verdicts)
            if time.monotonic() >= deadline:
                return got or None
            time.sleep(0.5)

    def _run_args(self) -> tuple:
        i = self.run_info
        return (i["run_dir"], i["name"], i["kind"], i.get("settings"), i.get("spec"), i.get("profile"), None,
                i.get("storage"))  # open_run's alert_env (the driver's to give), then the run storage

    def _keep(self, report: dict) -> None:
        if self.buffer and self.buffer[-1] is report:
            return
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
        self.buffer.append(report)


def _verdicts(out) -> list[Verdict] | None:
    """The actor's answer to ``report`` (one verdict) or ``report_batch`` (a list), typed; None: no answer."""
    if out is None:
        return None
    return [Verdict.from_dict(v) for v in ([out] if isinstance(out, dict) else out)]
