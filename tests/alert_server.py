"""A real HTTP endpoint on 127.0.0.1 that takes Apprise's ``json://`` webhook posts (test helper)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hook:
    def __init__(self):
        self.received: list[dict] = []  # each: the JSON body plus "_t" (arrival time.time())
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                body["_t"] = time.time()
                body["_path"] = self.path
                hook.received.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def refused_port() -> int:
    """A port on 127.0.0.1 with nobody listening: connections are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fields(message: str) -> dict:
    """``key: value`` lines of an alert's message."""
    out = {}
    for line in message.splitlines():
        if ": " in line and not line.startswith("- "):
            k, v = line.split(": ", 1)
            out[k] = v
    return out
