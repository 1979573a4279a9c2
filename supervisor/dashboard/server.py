"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer, nothing else.

Routes (GET unless said):

    /                       the single-page app (static/index.html)
    /static/<file>          the app's own JS/CSS and the vendored uPlot, from memory (no file-system paths from URLs)
    /api/state              runs, trials, nodes, the alert feed, and the event cursor
    /api/trial?id=ID        one trial: its reports (column-wise), findings, interventions, checkpoints
    /api/events?last=N      server-sent events after event N (or the Last-Event-ID header)
    /api/config             mode and whether controls are on
    POST /api/action        a manual action; only with the configured token, only in live mode

Read-only unless a token is configured; mutating calls must carry it
(``Authorization: Bearer TOKEN`` or ``X-Token: TOKEN``), compared in constant
time. Every response carries a strict Content-Security-Policy (no inline
script or style) and ``X-Content-Type-Options: nosniff``. When bound to a
loopback address, requests whose Host is not a loopback name are refused
(DNS rebinding).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from supervisor import actions
from supervisor.dashboard.data import Hub, to_json

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# The registry's manual actions, plus "set_lr": a target lr, sent as reduce_lr/increase_lr clamped to it.
ACTIONS = tuple(n for n, spec in actions.ACTIONS.items() if spec.manual) + ("set_lr",)
MAX_BODY = 16 * 1024
HEARTBEAT_S = 15.0
# One thread per connection (ThreadingHTTPServer): bounded, and no socket waits forever on a silent client.
MAX_CONNECTIONS = 64
MAX_SSE_CLIENTS = 16  # live event streams (browser tabs); beyond: 503, the page falls back to polling
SOCKET_TIMEOUT_S = 10.0
TRIAL_PAGE = 2000  # reports per /api/trial page (5,000 iterations of every metric was 4 MB in one answer)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}

RUN_MODE_REFUSAL = ("controls need a live supervisor: this dashboard reads a run folder (--run) read-only; "
                    "start it with --address (or RAY_ADDRESS) to act on trials")
NO_TOKEN_REFUSAL = ("read-only dashboard: controls are off; start it with --token "
                    "(or SUPERVISOR_DASHBOARD_TOKEN) to enable them")


def load_static() -> dict[str, tuple[bytes, str]]:
    """Every file under static/, read once: URL path -> (bytes, content type)."""
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
             ".txt": "text/plain; charset=utf-8"}
    out = {}
    for p in sorted(STATIC.rglob("*")):
        if p.is_file():
            rel = p.relative_to(STATIC).as_posix()
            ctype = types.get(p.suffix) or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
            if p.name.endswith("LICENSE"):
                ctype = "text/plain; charset=utf-8"
            out["/static/" + rel] = (p.read_bytes(), ctype)
    return out


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: a burst of connections is accepted (and capped), not stalled

    def __init__(self, addr: tuple[str, int], hub: Hub, token: str | None = None, actor_call=None):
        if ":" in addr[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(addr, Handler)
        self.hub = hub
        self.token = token.encode() if token else None
        self.actor_call = actor_call  # (trial_id, action, params, reason) -> bool; None in run mode
        self.static = load_static()
        self.loopback_only = is_loopback(addr[0])
        self.stopping = threading.Event()
        self.timeout_s = SOCKET_TIMEOUT_S
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._sse = threading.BoundedSemaphore(MAX_SSE_CLIENTS)

    def process_request(self, request, client_address):
        """A thread per connection, up to MAX_CONNECTIONS; beyond, a 503 from the accepting thread."""
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Retry-After: 2\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "rl-supervisor-dashboard"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet; errors go through logging
        log.debug("%s " + fmt, self.address_string(), *args)

    def setup(self):
        self.timeout = self.server.timeout_s  # every read and write on this socket: a silent client is dropped
        super().setup()

    def handle(self):
        try:
            super().handle()
        except (TimeoutError, ConnectionError):  # the client went quiet or away
            self.close_connection = True

    # ------------------------------------------------------------------ helpers
    def _headers(self, status: int, ctype: str, length: int | None, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", cache)
        self.end_headers()

    def _send(self, status: int, body: bytes, ctype: str, cache: str = "no-store") -> None:
        self._headers(status, ctype, len(body), cache)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, to_json(obj).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        if not self.server.loopback_only:
            return True
        host = (self.headers.get("Host") or "").strip()
        if host.startswith("["):
            name = host[: host.find("]") + 1]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return is_loopback(name.lower())

    def _token_ok(self) -> bool:
        if self.server.token is None:
            return False
        given = self.headers.get("X-Token")
        auth = self.headers.get("Authorization") or ""
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if not given:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.server.token)

    # ------------------------------------------------------------------ GET
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        url = urlsplit(self.path)
        path, q = url.path, parse_qs(url.query)
        try:
            if path in ("/", "/index.html"):
                body, ctype = self.server.static["/static/index.html"]
                return self._send(200, body, ctype)
            if path in self.server.static:
                body, ctype = self.server.static[path]
                return self._send(200, body, ctype, cache="no-cache")
            if path == "/favicon.ico":
                body, ctype = self.server.static["/static/favicon.svg"]
                return self._send(200, body, ctype, cache="no-cache")
            if path == "/api/config":
                return self._json(200, self._config())
            if path == "/api/state":
                return self._json(200, {**self.server.hub.state(), "controls": self._config()["controls"]})
            if path == "/api/trial":
                tid = (q.get("id") or [None])[0]
                if tid is None:
                    return self._error(400, "missing ?id=TRIAL_ID")
                try:
                    since = int((q.get("since_seq") or ["-1"])[0])
                    limit = int((q.get("limit") or [str(TRIAL_PAGE)])[0])
                except ValueError:
                    return self._error(400, "since_seq and limit: integers")
                if not 1 <= limit <= TRIAL_PAGE:
                    return self._error(400, f"limit: 1 to {TRIAL_PAGE}")
                d = self.server.hub.trial(tid, since_seq=since, limit=limit)
                if d is None:
                    return self._error(404, "no such trial")
                return self._json(200, d)
            if path == "/api/events":
                return self._events(q)
            return self._error(404, "not found")
        except (BrokenPipeError, ConnectionResetError):
            return None

    def _config(self) -> dict:
        hub = self.server.hub
        enabled = self.server.token is not None
        live = hub.mode == "live"
        note = None if (enabled and live) else (NO_TOKEN_REFUSAL if not enabled else RUN_MODE_REFUSAL)
        return {"mode": hub.mode, "source": hub.source,
                "controls": {"enabled": enabled, "live": live, "usable": enabled and live, "note": note,
                             "actions": list(ACTIONS)}}

    def _events(self, q) -> None:
        hub = self.server.hub
        last = self.headers.get("Last-Event-ID") or (q.get("last") or [None])[0]
        try:
            after = int(last) if last is not None else hub.last_event_id()
        except ValueError:
            after = hub.last_event_id()
        if not self.server._sse.acquire(blocking=False):
            self.close_connection = True
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"at most {MAX_SSE_CLIENTS} live event streams")
        try:
            self._stream(hub, after)
        finally:
            self.server._sse.release()

    def _stream(self, hub, after: int) -> None:
        self._headers(200, "text/event-stream; charset=utf-8", None)
        self.close_connection = True
        if self.command == "HEAD":
            return
        w = self.wfile
        w.write(b"retry: 2000\n\n")
        w.flush()
        while not self.server.stopping.is_set() and not hub.stopping.is_set():
            evs = hub.wait_events(after, HEARTBEAT_S)
            if evs is None:
                after = hub.last_event_id()
                w.write(f"id: {after}\nevent: reset\ndata: {{}}\n\n".encode())
            elif not evs:
                w.write(b": ping\n\n")
            else:
                chunks = []
                for eid, typ, data in evs:
                    chunks.append(f"id: {eid}\nevent: {typ}\ndata: {data}\n\n")
                    after = eid
                w.write("".join(chunks).encode())
            w.flush()

    # ------------------------------------------------------------------ POST
    def do_POST(self):
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        path = urlsplit(self.path).path
        if path != "/api/action":
            return self._error(404, "not found")
        if self.server.token is None:
            return self._error(HTTPStatus.FORBIDDEN, NO_TOKEN_REFUSAL)
        if not self._token_ok():
            return self._error(HTTPStatus.FORBIDDEN, "missing or wrong token")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body must be at most {MAX_BODY} bytes")
        try:
            raw = self.rfile.read(n)
        except TimeoutError:
            self.close_connection = True
            return self._error(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive (shorter than its Content-Length)")
        if len(raw) < n:
            self.close_connection = True
            return self._error(400, "the body is shorter than its Content-Length")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._error(400, "body is not JSON")
        if not isinstance(body, dict):
            return self._error(400, "body must be a JSON object")
        tid, action = body.get("trial_id"), body.get("action")
        if not isinstance(tid, str) or not tid:
            return self._error(400, "trial_id: a non-empty string")
        if action not in ACTIONS:
            return self._error(400, f"action: one of {', '.join(ACTIONS)}")
        reason = body.get("reason")
        reason = str(reason)[:200] if reason else ""
        reason = "manual (dashboard)" + (f": {reason}" if reason else "")
        params: dict = {}
        module = body.get("module")  # a multi-agent trial's policy (the trial page's module selector)
        if module is not None and (not isinstance(module, str) or not module or len(module) > 200):
            return self._error(400, "module: a module id (string)")
        if action == "set_lr":
            lr = body.get("lr")
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0 \
                    or lr > 10:
                return self._error(400, "lr: a number in (0, 10]")
        if self.server.actor_call is None:
            return self._error(HTTPStatus.CONFLICT, RUN_MODE_REFUSAL)
        hub = self.server.hub
        if action == "set_lr":
            view = hub.view_of(tid)
            cur = view.latest_metric(tid, f"modules/{module}/lr" if module else "lr") if view else None
            if cur is None or cur <= 0:
                return self._error(HTTPStatus.CONFLICT, "the trial's current lr is not known yet")
            lr = float(body["lr"])
            if abs(lr - cur) <= 1e-12 * max(cur, 1e-12):
                return self._error(HTTPStatus.CONFLICT, f"lr is already {cur:g}")
            action = "reduce_lr" if lr < cur else "increase_lr"
            params = {"factor": lr / cur, "min_lr": lr, "max_lr": lr}  # the clamp makes it exact
        if module:
            params["module"] = module  # the engine hands the action out for that module only
        try:
            ok = self.server.actor_call(tid, action, params, reason)
        except Exception as e:
            log.warning("request_action failed: %s", e)
            return self._error(HTTPStatus.BAD_GATEWAY, f"the supervisor did not answer: {e.__class__.__name__}")
        if not ok:
            return self._error(HTTPStatus.CONFLICT, "the supervisor refused: the trial is unknown to it or not running")
        return self._json(200, {"ok": True, "queued": {"trial_id": tid, "action": action, "params": params},
                                "note": "applied before the trial's next iteration"})


def serve(hub: Hub, host: str = "127.0.0.1", port: int = 8266, token: str | None = None,
          actor_call=None) -> DashboardServer:
    """Start the poller and a server bound to (host, port); the caller runs serve_forever()."""
    srv = DashboardServer((host, port), hub, token, actor_call)
    hub.start()
    return srv
