"""A real local webhook receiver: an HTTP server in a thread that records every POST (path and
JSON body) and answers each path with the statuses it is told, in turn (then 200)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, delay: float = 0.0) -> None:
        self.received: list[tuple[str, Any]] = []
        self.raw: list[bytes] = []
        self.statuses: dict[str, list[int]] = {}
        self.delay = delay
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    queue = receiver.statuses.get(self.path) or []
                    status = queue.pop(0) if queue else 200
                    receiver.raw.append(body)
                    receiver.received.append((self.path, json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self, path: str) -> list[Any]:
        with self._lock:
            return [body for p, body in self.received if p == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 15.0) -> list[Any]:
        """The bodies POSTed to ``path`` once there are ``count`` of them (polled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(found := self.bodies(path)) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.bodies(path))} of {count} alerts received")
