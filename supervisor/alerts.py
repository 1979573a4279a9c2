"""Alerts: findings and the run-end summary sent to people, through Apprise.

``AlertSender`` is fed by whoever runs the Engine (the supervisor actor, after
each batch of verdicts). Deciding *whether* to alert is cheap and happens in
the caller: one alert per finding latch (a detector's findings on a trial are
one alert until that detector has been quiet for ``quiet`` iterations, or its
severity rises). Sending happens on a worker thread behind a bounded queue, so
a slow or dead destination never holds up a verdict: each delivery is retried
with backoff and then recorded as failed in the store, never raised. When
several trials fire at once a destination gets one digest instead of a flood,
and a per-destination rate limit folds the overflow into the next digest.

Secrets: a URL may hold a token; it can name ``${ENV_VAR}`` instead, expanded
only when the message is sent. Anywhere a destination is shown (logs, the
store, reports, the dashboard) it goes through ``mask_url``.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)
_THREAD = "alert-sender"


class _QuietSender(logging.Filter):
    """Apprise's debug lines show the URLs it loads (payload parameters unmasked) and urllib3's the
    request paths, where tokens live (a Slack webhook's path is its secret): only warnings and worse
    of Apprise get through, and of urllib3 on the sender's thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not record.name.startswith("apprise") and threading.current_thread().name != _THREAD


for _name in ("apprise", "urllib3.connectionpool"):
    _lg = logging.getLogger(_name)
    if not any(isinstance(f, _QuietSender) for f in _lg.filters):
        _lg.addFilter(_QuietSender())

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RANK = {"ok": 0, "info": 1, "warning": 2, "critical": 3}
_TYPES = {"info": "info", "warning": "warning", "critical": "failure",
          "completed": "success", "recovered": "success", "stopped": "failure", "errored": "failure",
          "lost": "failure"}


def env_names(url: str) -> list[str]:
    return _ENV.findall(url)


def expand(url: str, env: dict | None = None) -> str:
    """``${VAR}`` -> its value (from ``env``, else the process environment); KeyError naming a missing one."""
    env = os.environ if env is None else {**os.environ, **env}

    def sub(m):
        if m.group(1) not in env:
            raise KeyError(m.group(1))
        return env[m.group(1)]
    return _ENV.sub(sub, url)


def _instantiate(url: str):
    import apprise

    return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def check_url(url: str) -> None:
    """A config-time check: ValueError with a message that never includes the (expanded) URL."""
    try:
        full = expand(url)
    except KeyError as e:
        raise ValueError(f"environment variable {e.args[0]} is not set")
    if _instantiate(full) is None:
        scheme = full.split("://", 1)[0] if "://" in full else "?"
        raise ValueError(f"not a URL Apprise can send to (scheme {scheme!r}); see https://github.com/caronc/apprise/wiki")


def mask_url(url: str) -> str:
    """What may be shown of a destination: ``${VAR}`` names stay as written (they are not secrets);
    literal credentials and tokens are masked by Apprise's own privacy view."""
    if env_names(url):
        return url
    plugin = _instantiate(url)
    if plugin is None:
        return url.split("://", 1)[0] + "://****" if "://" in url else "****"
    return plugin.url(privacy=True).split("?", 1)[0]


def mask_settings(settings: dict) -> dict:
    """A copy of a ``supervisor:`` section (as a dict) with its alert URLs masked."""
    out = dict(settings)
    if out.get("alerts"):
        out["alerts"] = [{**a, "url": mask_url(a["url"])} for a in out["alerts"]]
    return out


@dataclass
class Alert:
    kind: str  # "finding", "digest" or "summary"
    title: str
    body: str
    severity: str
    run: str
    trial_id: str | None = None
    iteration: int | None = None
    detector: str | None = None
    items: list = field(default_factory=list)  # a digest's alerts


@dataclass
class _Destination:
    index: int
    url: str  # as configured (may hold ${VAR})
    shown: str  # masked
    min_severity: str
    detectors: set | None
    sent_at: deque = field(default_factory=deque)  # send times, for the rate limit
    held: list = field(default_factory=list)  # alerts over the rate limit, for the next digest

    def wants(self, detector: str, severity: str) -> bool:
        return (_RANK.get(severity, 0) >= _RANK[self.min_severity]
                and (self.detectors is None or detector in self.detectors))


class AlertSender:
    """Args:
        destinations: ``supervisor.alerts`` entries (dicts or pydantic models with url, min_severity, detectors).
        record: called on the worker thread with one dict per delivery attempt outcome (the store's
            ``record_alert``); exceptions it raises are logged, never propagated.
        run: the run's name, in every alert. dashboard_url: base URL linked in alerts.
        quiet: iterations without a finding from a detector on a trial that end its latch.
        env: extra variables for ``${VAR}`` expansion (the driver's, passed to a remote supervisor).
    """

    def __init__(self, destinations: Iterable[Any], record: Callable[[dict], None] | None = None, run: str = "",
                 dashboard_url: str | None = None, quiet: int = 10, env: dict | None = None,
                 retries: int = 3, backoff_s: float = 0.5, max_queue: int = 1000, digest_window_s: float = 0.25,
                 digest_min: int = 3, rate_per_min: int = 20, timeout_s: float = 5.0):
        self.dests = []
        for i, d in enumerate(destinations):
            d = d if isinstance(d, dict) else d.model_dump()
            self.dests.append(_Destination(i, d["url"], mask_url(d["url"]), d.get("min_severity") or "warning",
                                           set(d["detectors"]) if d.get("detectors") else None))
        self.record = record
        self.run, self.dashboard_url, self.quiet = run, (dashboard_url or "").rstrip("/") or None, quiet
        self.env = dict(env or {})
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self.digest_window_s, self.digest_min, self.rate_per_min = digest_window_s, digest_min, rate_per_min
        # latch per (destination, trial, detector): [severity rank alerted, seq last seen firing]
        self._latch: dict[tuple, list] = {}
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def __bool__(self) -> bool:
        return bool(self.dests)

    # ---------------------------------------------------------------- caller side (cheap, never blocks)
    def observe(self, trial_id: str, seq: int, iteration: int, findings: list[dict], actions: list[dict]) -> int:
        """One trial's verdict: enqueue the alerts it opens; returns how many."""
        n = 0
        taken = ", ".join(a.get("action", "?") + (f" ({a['module']})" if a.get("module") not in (None, "default_policy")
                                                 else "") for a in actions) or "none"
        for f in findings:
            det, sev = f.get("detector") or "?", f.get("severity") or "info"
            for d in self.dests:
                if not d.wants(det, sev):
                    continue
                key = (d.index, trial_id, det, f.get("module"))  # each module's latch its own
                latch = self._latch.get(key)
                fresh = latch is None or seq - latch[1] > self.quiet or seq < latch[1]
                if fresh or _RANK.get(sev, 0) > latch[0]:
                    self._latch[key] = [_RANK.get(sev, 0), seq]
                    self._put(d, self._finding_alert(trial_id, iteration, f, taken))
                    n += 1
                else:
                    latch[1] = seq
        return n

    def summary(self, status: str, trials: list[dict], started: float | None = None) -> None:
        """The run-end summary, to every destination whatever its filters."""
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.get("status") or "?"] = counts.get(t.get("status") or "?", 0) + 1
        lines = [f"run: {self.run}", f"status: {status}",
                 "trials: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none")]
        for t in trials[:20]:
            ret = t.get("final_return")
            lines.append(f"- {t.get('trial_id')}: {t.get('status')}, {t.get('iterations', 0)} iterations, "
                         f"health {t.get('health_score', 1.0):.2f}"
                         + (f", return {ret:.1f}" if isinstance(ret, (int, float)) else ""))
        if started:
            lines.append(f"wall time: {time.time() - started:.0f} s")
        if self.dashboard_url:
            lines.append(f"dashboard: {self.dashboard_url}/")
        alert = Alert("summary", f"[rl-supervisor] {self.run}: {status}", "\n".join(lines), status, self.run)
        for d in self.dests:
            self._put(d, alert)

    def _finding_alert(self, trial_id: str, iteration: int, f: dict, taken: str) -> Alert:
        sev, det = f.get("severity") or "info", f.get("detector") or "?"
        at = str(iteration) if iteration is not None and iteration >= 0 else "-"  # cluster findings: no iteration
        module = f.get("module")
        lines = [f"run: {self.run}", f"trial: {trial_id}", f"iteration: {at}", f"detector: {det}",
                 f"severity: {sev}", f"message: {f.get('message', '')}", f"action: {taken}"]
        if module is not None:  # the policy it is about (multi-agent); none: the trial's own
            lines.insert(2, f"module: {module}")
        where = f"{trial_id} module {module}" if module not in (None, "default_policy") else trial_id
        if self.dashboard_url:
            from urllib.parse import quote

            lines.append(f"dashboard: {self.dashboard_url}/#/trial/{quote(trial_id, safe='')}")
        return Alert("finding", f"[rl-supervisor] {sev}: {det} on {where}" + (f" (iteration {at})" if at != "-" else ""),
                     "\n".join(lines), sev, self.run, trial_id, iteration, det)

    def _put(self, d: _Destination, alert: Alert) -> None:
        self._ensure_thread()
        with self._lock:
            self._pending += 1
            self._idle.clear()
        try:
            self._q.put_nowait((d, alert))
        except queue.Full:  # a destination that cannot keep up costs alerts, never the report path
            self._done(1)
            self.dropped += 1
            self._record(d, alert, "dropped", 0, "alert queue full")

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=_THREAD, daemon=True)
            self._thread.start()

    def _done(self, n: int) -> None:
        with self._lock:
            self._pending -= n
            if self._pending <= 0:
                self._pending = 0
                self._idle.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued was delivered or recorded as failed; True if it was in time."""
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush, then end the worker thread (a later alert would start a new one)."""
        ok = self.flush(timeout_s)
        if self._thread is not None and self._thread.is_alive():
            try:
                self._q.put_nowait(None)
            except queue.Full:
                pass
        return ok

    # ---------------------------------------------------------------- worker side
    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:  # close()
                return
            batch = [first]
            deadline = time.monotonic() + self.digest_window_s
            while True:  # gather what arrives together: many trials firing at once become one digest
                left = deadline - time.monotonic()
                try:
                    item = self._q.get(timeout=max(left, 0)) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # close() while gathering: send these, then stop
                    self._q.put(None)
                    break
                batch.append(item)
            try:
                self._send_batch(batch)
            except Exception:  # never let the worker die: the next alerts still go out
                log.exception("alert worker error")
            finally:
                self._done(len(batch))

    def _send_batch(self, batch: list) -> None:
        by_dest: dict[int, tuple[_Destination, list]] = {}
        for d, a in batch:
            by_dest.setdefault(d.index, (d, []))[1].append(a)
        for d, alerts in by_dest.values():
            summaries = [a for a in alerts if a.kind == "summary"]
            findings = d.held + [a for a in alerts if a.kind != "summary"]
            d.held = []
            if findings:
                if not self._allowed(d):
                    d.held = findings  # over the rate limit: they go with the next digest
                elif len({a.trial_id for a in findings}) >= self.digest_min:
                    self._deliver(d, _digest(self.run, findings))
                else:
                    for a in findings:
                        if self._allowed(d):
                            self._deliver(d, a)
                        else:
                            d.held.append(a)
            for a in summaries:  # the summary goes out even when the rate limit is spent
                if d.held:
                    self._deliver(d, _digest(self.run, d.held))
                    d.held = []
                self._deliver(d, a)

    def _allowed(self, d: _Destination) -> bool:
        now = time.monotonic()
        while d.sent_at and now - d.sent_at[0] > 60.0:
            d.sent_at.popleft()
        return len(d.sent_at) < self.rate_per_min

    def _deliver(self, d: _Destination, alert: Alert) -> bool:
        d.sent_at.append(time.monotonic())
        error = None
        try:
            url = expand(d.url, self.env)
        except KeyError as e:
            self._record(d, alert, "failed", 0, f"environment variable {e.args[0]} is not set")
            return False
        plugin = _instantiate(url)
        if plugin is None:
            self._record(d, alert, "failed", 0, "not a URL Apprise can send to")
            return False
        plugin.socket_connect_timeout = plugin.socket_read_timeout = self.timeout_s
        for attempt in range(1, self.retries + 1):
            try:
                ok = plugin.notify(body=alert.body, title=alert.title, notify_type=_TYPES.get(alert.severity, "info"))
            except Exception as e:  # a plugin bug is a failed delivery, not a crash
                ok, error = False, f"{e.__class__.__name__}"
            if ok:
                self._record(d, alert, "sent", attempt, None)
                return True
            error = error or "destination did not accept the notification"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        log.warning("alert to %s failed after %d attempts", d.shown, self.retries)
        self._record(d, alert, "failed", self.retries, error)
        return False

    def _record(self, d: _Destination, alert: Alert, status: str, attempts: int, error: str | None) -> None:
        if self.record is None:
            return
        try:
            self.record({"time": time.time(), "kind": alert.kind, "trial_id": alert.trial_id,
                         "iteration": alert.iteration, "detector": alert.detector, "severity": alert.severity,
                         "destination": d.shown, "status": status, "attempts": attempts, "error": error,
                         "title": alert.title, "items": len(alert.items) or 1})
        except Exception:
            log.exception("could not record an alert delivery")


def _digest(run: str, alerts: list[Alert]) -> Alert:
    worst = max((a.severity for a in alerts), key=lambda s: _RANK.get(s, 0))
    trials = sorted({a.trial_id for a in alerts if a.trial_id})
    lines = [f"run: {run}", f"{len(alerts)} findings on {len(trials)} trials"]
    lines += [f"- {a.trial_id} iteration {a.iteration}: {a.detector} ({a.severity}) "
              f"{a.body.split('message: ', 1)[-1].splitlines()[0]}" for a in alerts[:50]]
    return Alert("digest", f"[rl-supervisor] {run}: {len(alerts)} findings on {len(trials)} trials", "\n".join(lines),
                 worst, run, items=list(alerts))
