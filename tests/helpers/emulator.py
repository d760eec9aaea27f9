"""Stand-ins and probes for VK: calls to the emulator over plain HTTP (urllib, no Scrapy), the
dataset lookups its tests share, a socket that records what a client sends, and the count of
requests in a one-second window of the emulator's log."""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse
import urllib.request
from typing import Any

from fakevk import FakeVk

TOKEN = "test-token"


def call(
    vk: FakeVk, method: str, *, token: str | None = TOKEN, get: bool = False, **params: Any
) -> Any:
    """POST (or GET) one method and return the parsed JSON envelope."""
    params.setdefault("v", "5.199")
    if token is not None:
        params["access_token"] = token
    encoded = urllib.parse.urlencode(params)
    if get:
        request = urllib.request.Request(f"{vk.url}{method}?{encoded}")
    else:
        request = urllib.request.Request(vk.url + method, data=encoded.encode())
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def ok(vk: FakeVk, method: str, **params: Any) -> Any:
    body = call(vk, method, **params)
    assert "response" in body, body
    return body["response"]


def err(vk: FakeVk, method: str, **params: Any) -> dict[str, Any]:
    body = call(vk, method, **params)
    assert "error" in body, body
    return body["error"]


def first_group(data: dict[str, Any]) -> dict[str, Any]:
    return data["groups"][0]


def by_flag(data: dict[str, Any], **flags: Any) -> dict[str, Any]:
    return next(g for g in data["groups"] if all(g.get(k) == v for k, v in flags.items()))


def big_post(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    group = first_group(data)
    return group, max(group["posts"], key=lambda p: len(p["comments"]))


def windows(times: list[float]) -> int:
    """The most requests in any one-second window [t, t + 1) of these arrival times."""
    times = sorted(times)
    return max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)


class Listener:
    """A real socket that records every byte sent to it (and answers nothing useful)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/method/"
        self.received = b""
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    while chunk := conn.recv(65536):
                        self.received += chunk
                        if b"\r\n\r\n" in self.received:
                            conn.sendall(b"HTTP/1.1 500 No\r\nContent-Length: 0\r\n\r\n")
                            break
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
