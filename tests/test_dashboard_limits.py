"""The dashboard's resources are bounded: socket timeouts, a connection cap, an SSE cap, short bodies.

A real ``DashboardServer`` on a real socket, reading a real run folder; clients
are raw sockets so that they can misbehave (stay idle, send half a body).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from supervisor.dashboard import server as srvmod
from supervisor.dashboard.data import Hub, RunView
from supervisor.store import Store


@pytest.fixture
def dash(tmp_path, monkeypatch):
    monkeypatch.setattr(srvmod, "MAX_CONNECTIONS", 12)
    monkeypatch.setattr(srvmod, "MAX_SSE_CLIENTS", 3)
    monkeypatch.setattr(srvmod, "HEARTBEAT_S", 0.3)  # a stream notices its client left at its next write
    st = Store(tmp_path / "supervisor.db")
    st.upsert_run("r", "limits", "run", "running")
    st.close()
    hub = Hub("run", str(tmp_path), [RunView(tmp_path)], poll_s=0.2)
    srv = srvmod.serve(hub, "127.0.0.1", 0, token="tok")
    srv.timeout_s = 1.0
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield srv
    srv.stopping.set()
    srv.shutdown()
    hub.stop()
    srv.server_close()


def connect(srv) -> socket.socket:
    s = socket.create_connection(srv.server_address[:2], timeout=10)
    return s


def get(srv, path: str) -> tuple[int, bytes]:
    s = connect(srv)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = b""
    s.settimeout(10)
    while True:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
        if b"text/event-stream" in data:
            break
    s.close()
    return int(data.split(b" ", 2)[1]), data


def handler_threads() -> int:
    return sum(t.name.startswith("Thread-") or "process_request" in t.name for t in threading.enumerate())


def test_idle_sockets_are_capped_and_timed_out(dash):
    before = threading.active_count()  # other tests of the session may have left threads of their own
    idle = [connect(dash) for _ in range(40)]  # never send a byte
    time.sleep(0.3)
    grown = threading.active_count() - before
    assert grown <= 12 + 2, grown  # capped: at most one thread per admitted socket, not one per socket
    refused = 0
    for s in idle:
        s.settimeout(5)
        try:
            if s.recv(100).startswith(b"HTTP/1.1 503"):
                refused += 1
        except (TimeoutError, ConnectionError):
            pass
    assert refused >= 40 - 12  # past the cap: an immediate 503
    for s in idle:
        s.close()
    time.sleep(1.5)  # the idle ones inside the cap were dropped after timeout_s
    assert get(dash, "/api/config")[0] == 200  # and the server still answers


def test_sse_clients_are_capped_with_503(dash):
    streams = []
    for _ in range(3):
        s = connect(dash)
        s.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(10)
        assert b"200" in s.recv(4096).split(b"\r\n")[0]
        streams.append(s)
    status, body = get(dash, "/api/events")
    assert status == 503 and b"live event streams" in body
    streams.pop().close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the closed stream's slot comes back (its next write fails)
        status, _ = get(dash, "/api/events")
        if status == 200:
            break
        time.sleep(0.3)
    assert status == 200
    for s in streams:
        s.close()


def test_a_post_with_a_short_body_does_not_hang(dash):
    s = connect(dash)
    body = json.dumps({"trial_id": "t", "action": "alert"}).encode()
    s.sendall(b"POST /api/action HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer tok\r\nContent-Length: 500\r\n\r\n" + body)  # 500 promised, fewer sent
    s.settimeout(10)
    t0 = time.monotonic()
    answer = s.recv(4096)
    assert time.monotonic() - t0 < 9
    assert answer.split(b" ", 2)[1] == b"408", answer
    s.close()
