"""The per-token limit at the moment a request leaves (``vkscraper.downloadhandlers.ratelimit``):
the log in memory and in Redis, and a request logged again when its bytes go to the socket."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import os
import ssl
import threading
import time
import uuid
from pathlib import Path

import pytest
from scrapy import Request
from scrapy.exceptions import DownloadFailedError
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from tests.helpers.clock import FakeClock
from vkscraper.downloadhandlers.ratelimit import (
    KEY,
    LocalRateLimit,
    SharedRateLimit,
    VkDownloadHandler,
)
from vkscraper.dropped import CrawlStopping

REDIS_URL = os.environ.get("VK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NEEDS_REDIS = pytest.mark.integration
ON_REDIS = pytest.param(True, marks=NEEDS_REDIS)  # the shared log, in Redis


def never() -> bool:
    return False


async def acquire(limit: LocalRateLimit | SharedRateLimit, tag: str) -> float:
    """Seconds the limit made a request of ``tag`` wait (0.0: it went at once)."""
    waited, _ = await limit.acquire(tag, give_up=1, stopping=never)
    return waited


def limit_and_clock(shared: bool, limit: int, window: float):
    """The limit under test and the clock its waits are measured on: the memory log runs on a
    clock that moves only when it waits (exact), the Redis log on Redis's and the real one."""
    if shared:
        return SharedRateLimit(REDIS_URL, limit, window), time.monotonic, sleep
    clock = FakeClock()
    return LocalRateLimit(limit, window, clock=clock, sleep=clock.sleep), clock, clock.sleep


@deferred_f_from_coro_f
async def test_the_log_lets_limit_requests_of_a_token_into_any_window():
    clock = FakeClock()
    limit = LocalRateLimit(3, 0.3, clock=clock, sleep=clock.sleep)
    assert [await acquire(limit, "a") for _ in range(3)] == [0, 0, 0]
    await clock.sleep(0.1)
    assert await acquire(limit, "b") == 0  # another token: its own log
    # The fourth of "a" waits until the first leaves the window: 0.3 after it, not a new
    # window starting with the fourth.
    assert await acquire(limit, "a") == pytest.approx(0.2)
    assert clock.elapsed == pytest.approx(0.3)


async def restamped(limit: SharedRateLimit, tag: str, member: str, before: float | None) -> None:
    """Wait until Redis holds the background restamp of ``member`` (its score moved)."""
    deadline = time.monotonic() + 10
    while await limit.redis.zscore(KEY.format(tag=tag), member) == before:
        assert time.monotonic() < deadline, "the restamp never reached Redis"
        await sleep(0.01)


@pytest.mark.parametrize("shared", [False, ON_REDIS], ids=["memory", "redis"])
@deferred_f_from_coro_f
async def test_a_restamped_request_counts_once_from_its_new_time(shared):
    limit, clock, pause = limit_and_clock(shared, 2, 0.6)
    tag = uuid.uuid4().hex[:8]
    try:
        _, member = await limit.acquire(tag, give_up=1, stopping=never)
        before = await limit.redis.zscore(KEY.format(tag=tag), member) if shared else None
        await pause(0.2)
        limit.restamp(tag, member)
        if shared:
            await restamped(limit, tag, member, before)  # Redis's restamp runs in the background
        start = clock()
        assert await acquire(limit, tag) == 0  # moved, not added: one entry in the log
        await acquire(limit, tag)
        # 0.6 after the restamp (start), not after the first time (0.4 after start)
        assert clock() - start >= 0.55
    finally:
        await limit.close()


@pytest.mark.parametrize("shared", [False, ON_REDIS], ids=["memory", "redis"])
@deferred_f_from_coro_f
async def test_a_hold_keeps_every_request_of_the_token_back_until_it_ends(shared):
    """Retry-After: nothing of the token passes before the hold ends, whatever the log says;
    a shorter hold asked for later does not shorten it; other tokens go on."""
    limit, clock, _ = limit_and_clock(shared, 3, 0.3)
    tag, other = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    try:
        start = clock()
        await limit.hold(tag, 0.6)
        await limit.hold(tag, 0.1)
        assert await acquire(limit, other) == 0
        await acquire(limit, tag)
        assert clock() - start >= 0.55
    finally:
        await limit.close()


@deferred_f_from_coro_f
async def test_a_wait_ends_when_the_crawl_stops():
    clock = FakeClock()
    limit = LocalRateLimit(1, 60, clock=clock, sleep=clock.sleep)
    await acquire(limit, "a")
    stop_at = clock() + 0.2
    with pytest.raises(CrawlStopping):
        await limit.acquire("a", give_up=1, stopping=lambda: clock() > stop_at)
    assert clock() <= stop_at + 0.5  # a waiting request looks at the crawl twice a second


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as VK

    def do_POST(self) -> None:  # noqa: N802
        self.server.arrivals.append(time.time())  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(0.5)  # a slow answer
        self.server.answered.append(time.time())  # type: ignore[attr-defined]
        body = b'{"response": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (Scrapy does not verify it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


@pytest.fixture
def slow_server(request, tmp_path):
    """A keep-alive server answering every POST 0.5 s late, in plain HTTP or TLS; its
    ``arrivals`` are the times requests came, ``answered`` the times their answers went."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.arrivals = []  # type: ignore[attr-defined]
    server.answered = []  # type: ignore[attr-defined]
    if request.param == "https":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*_certificate(tmp_path))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"{request.param}://127.0.0.1:{server.server_address[1]}/"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("slow_server", "shared"),
    [
        ("http", False),
        pytest.param("http", True, marks=NEEDS_REDIS),
        pytest.param("https", True, marks=NEEDS_REDIS),
    ],  # fmt: skip
    ids=["http-memory", "http-redis", "https-redis"],
    indirect=["slow_server"],
)
@deferred_f_from_coro_f
async def test_a_request_counts_from_when_its_bytes_go_to_the_socket(shared, slow_server):
    """1 request per 1.0 s; answers come 0.5 s late.

    - The first request opens the connection: it counts from its answer (0.5 s), so the second
      goes 1.5 s after it.
    - The second is logged, then the loop is blocked for 0.3 s before it is sent (as in a busy
      process): the third goes 1.0 s after the second was sent — not 1.0 s after it was
      logged (0.7 s after it was sent), nor 1.0 s after it was answered (1.5 s)."""
    tag = uuid.uuid4().hex[:8]  # a fresh log in Redis
    settings = {"VK_REQUESTS_PER_SECOND": 1, "VK_RATE_MARGIN": 1,
                "VK_SHARED_RATE_LIMIT": shared, "REDIS_URL": REDIS_URL}  # fmt: skip
    handler = VkDownloadHandler.from_crawler(get_crawler(settings_dict=settings))
    acquire = handler.limit.acquire

    restamp = handler.limit.restamp
    logged, restamped = [], []

    async def late_acquire(*args, **kwargs):
        waited, member = await acquire(*args, **kwargs)
        logged.append(member)
        if len(slow_server.arrivals) == 1:
            time.sleep(0.3)  # blocks the loop: nothing is sent meanwhile
        return waited, member

    def restamp_of(tag, member):
        restamped.append(member)
        restamp(tag, member)

    handler.limit.acquire = late_acquire  # type: ignore[method-assign]
    handler.limit.restamp = restamp_of  # type: ignore[method-assign]
    try:
        for _ in range(3):
            request = Request(slow_server.url, method="POST", body=b"owner_id=-1",
                              meta={"vk_token_tag": tag})  # fmt: skip
            response = await handler.download_request(request)
            assert response.status == 200
    finally:
        await handler.close()
    first, second, third = slow_server.arrivals
    assert second - first >= 1.45, second - first
    assert third - second >= 0.95, third - second
    # Before 1.0 s after the second was answered: counted from its sending, not its answer.
    assert third < slow_server.answered[1] + 1.0, third - slow_server.answered[1]
    assert set(restamped) == set(logged)  # each send moved its own request's entry


@deferred_f_from_coro_f
async def test_a_request_on_a_dropped_connection_is_not_resent_behind_the_log():
    """Twisted would resend a GET whose kept-alive connection died on a connection it opens
    itself, which the log never sees; Scrapy's retry (through the handler again) does it."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []

    def serve() -> None:
        for n in (1, 2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                for r in (1, 2):
                    if not conn.recv(65536):
                        break
                    seen.append(f"connection {n} request {r}")
                    if (n, r) == (1, 2):
                        break  # hang up without an answer
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    settings = {"VK_REQUESTS_PER_SECOND": 3, "VK_RATE_MARGIN": 1.05}
    handler = VkDownloadHandler.from_crawler(get_crawler(settings_dict=settings))
    try:
        response = await handler.download_request(Request(url, meta={"vk_token_tag": "t"}))
        assert response.status == 200
        with pytest.raises(DownloadFailedError):  # Twisted's ResponseNeverReceived
            await handler.download_request(Request(url, meta={"vk_token_tag": "t"}))
    finally:
        await handler.close()
        listener.close()
    assert seen == ["connection 1 request 1", "connection 1 request 2"]
