"""The per-token rate limit, checked at the moment a request leaves: in memory, or in Redis
for every process that uses the token.

Scrapy's download delay spaces the moments the download slot lets a request go, not the
moments it is sent: the middlewares in between take longer for some requests than for others,
so four requests released 0.35 s apart can leave within one window of 1.05 s (a limit of 3
in any 1.05 s). So every VK request also passes a sliding-window log of its token in the
download handler (:class:`VkDownloadHandler`), after the slot's delay: at most
``VK_REQUESTS_PER_SECOND`` requests of a token go in any window of ``VK_RATE_MARGIN`` seconds
(1.05: the margin absorbs the network's jitter; :func:`vkscraper.addon.rate_window`). A
request is logged when it passes, and again, as sent then, each time the socket sends its
bytes. The slot's delay stays in force as the floor.

A 429 or 503 answer with ``Retry-After`` holds the token: none of its requests passes the
limit before that time, in this process or (shared) in any other; the retry included.

- :class:`LocalRateLimit` (the default): the log in this process's memory.
- :class:`SharedRateLimit` (``VK_SHARED_RATE_LIMIT = True`` and ``REDIS_URL``): the log of
  every process using the token: each process paces only itself, so two on one token send
  more than 3 requests/s together, and VK answers error 6 above 3. :data:`SCRIPT` keeps the
  log in a sorted set, on Redis's own clock, atomic because Redis runs one script at a time.
  Keys are ``vkscraper:rate:<tag>`` (and ``vkscraper:rate:<tag>:hold``, the time
  ``Retry-After`` asked for): the token's non-secret tag, never the token. If Redis cannot be
  reached or does not answer within 5 s, requests wait (one WARNING per outage) rather than
  go out unpaced, for at most ``DOWNLOAD_TIMEOUT``; then the request fails like a connection
  error (retried, then recorded with the reason).

A wait ends at once when the crawl is closing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.utils.asyncio import sleep
from twisted.web.client import HTTPConnectionPool

from vkscraper._internals import crawl_stopping, on_socket_write, socket_transport, watch_pool
from vkscraper.addon import rate_window
from vkscraper.dropped import CrawlStopping
from vkscraper.vk.backoff import parse_retry_after

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.internet.interfaces import IStreamClientEndpoint

logger = logging.getLogger(__name__)

KEY = "vkscraper:rate:{tag}"
HOLD_KEY = "vkscraper:rate:{tag}:hold"
REDIS_TIMEOUT = 5.0  # seconds for one script call
HELD_STATUSES = (429, 503)  # the answers whose Retry-After holds the token
# KEYS[1] the token's log, KEYS[2] its hold; ARGV: limit, window (µs), a unique member.
# Returns 0 when the request may go (and logs it), else the µs until the hold ends or the
# oldest entry leaves the window.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
if held > now then
  return math.ceil(held - now)
end
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""

# KEYS[1] the token's log; ARGV: the member, window (µs). The member's time becomes now.
RESTAMP = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) / 1000) + 1000)
return 0
"""


# KEYS[1] the token's hold; ARGV[1] the µs it lasts from now. Never shortens a longer hold.
HOLD = """
local t = redis.call('TIME')
local hold = tonumber(ARGV[1])
local til = tonumber(t[1]) * 1000000 + tonumber(t[2]) + hold
if til > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.0f', til), 'PX', math.ceil(hold / 1000) + 1000)
end
return 0
"""


class RedisUnreachable(OSError):
    """Redis did not answer the shared limit's script for too long."""


class LocalRateLimit:
    """The same sliding-window log as :data:`SCRIPT`, in this process's memory (monotonic
    clock): the default, when one process uses its tokens."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = sleep,
    ) -> None:
        self.limit = limit
        self.window = window
        # The clock and the wait it measures: tests pass a clock that moves only when waited on.
        self._clock = clock
        self._sleep = sleep
        self._sent: dict[str, deque[tuple[float, str]]] = defaultdict(deque)
        self._held: dict[str, float] = {}  # tag -> monotonic time its hold ends

    async def acquire(
        self, tag: str, *, give_up: float, stopping: Callable[[], bool]
    ) -> tuple[float, str]:
        """Wait until a request of the token ``tag`` may be sent; returns the seconds waited
        and the request's entry in the log (for :meth:`restamp`). Raises
        :class:`~vkscraper.dropped.CrawlStopping` when ``stopping()`` turns
        true. (``give_up`` is for the shared limit's Redis; memory always answers.)"""
        sent = self._sent[tag]
        member = uuid.uuid4().hex
        waited = 0.0
        while True:
            if stopping():
                raise CrawlStopping("the crawl is stopping")
            now = self._clock()
            while sent and sent[0][0] <= now - self.window:
                sent.popleft()
            held = self._held.get(tag, 0.0) - now
            if held <= 0 and len(sent) < self.limit:
                sent.append((now, member))
                return waited, member
            step = min(max(held, sent[0][0] + self.window - now if sent else 0.0), 0.5)
            await self._sleep(step)
            waited += step

    async def hold(self, tag: str, seconds: float) -> None:
        """No request of the token ``tag`` passes for ``seconds`` (VK's ``Retry-After``)."""
        self._held[tag] = max(self._held.get(tag, 0.0), self._clock() + seconds)

    def restamp(self, tag: str, member: str) -> None:
        """Log the request ``member`` as sent now (see :class:`VkDownloadHandler`)."""
        sent = self._sent[tag]
        kept = [entry for entry in sent if entry[1] != member]
        sent.clear()
        sent.extend(kept)
        sent.append((self._clock(), member))

    async def close(self) -> None:
        pass


class SharedRateLimit:
    def __init__(self, redis_url: str, limit: int, window: float) -> None:
        import redis.asyncio  # only this mode needs Redis

        # A Redis that accepts connections but never answers must not hold requests forever.
        self.redis = redis.asyncio.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self.script = self.redis.register_script(SCRIPT)
        self.restamp_script = self.redis.register_script(RESTAMP)
        self.hold_script = self.redis.register_script(HOLD)
        self._restamps: set[asyncio.Future[None]] = set()
        self._closed = False
        self.limit = limit
        self.window_us = int(window * 1_000_000)
        self._down = False

    async def acquire(
        self, tag: str, *, give_up: float, stopping: Callable[[], bool]
    ) -> tuple[float, str]:
        """Wait until a request of the token ``tag`` may be sent; returns the seconds waited
        and the request's entry in the log (for :meth:`restamp`).

        Raises :class:`RedisUnreachable` (an ``OSError``: Scrapy retries it, then the request
        fails with that message) when Redis has not answered for ``give_up`` seconds, and
        :class:`~vkscraper.dropped.CrawlStopping` when ``stopping()`` turns
        true."""
        member = uuid.uuid4().hex
        waited = 0.0
        unreachable_since: float | None = None
        while True:
            if stopping():
                raise CrawlStopping("the crawl is stopping")
            try:
                wait_us = await self.script(
                    keys=[KEY.format(tag=tag), HOLD_KEY.format(tag=tag)],
                    args=[self.limit, self.window_us, member],
                )
            except Exception as exc:  # redis.exceptions.RedisError, OSError …
                if not self._down:
                    logger.warning(
                        "Redis unreachable for the shared rate limit (%(error)s): requests "
                        "wait until it is back",
                        {"error": exc},
                    )
                    self._down = True
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since >= give_up:
                    raise RedisUnreachable(
                        f"the shared rate limit needs Redis, unreachable for {give_up:g} s "
                        f"({type(exc).__name__}: {exc})"
                    ) from None
                wait_us = 500_000
            else:
                if self._down:
                    logger.info("Redis back: the shared rate limit goes on")
                    self._down = False
                if not wait_us:
                    return waited, member
            step = min(int(wait_us), 500_000) / 1_000_000  # check for a close twice a second
            await sleep(step)
            waited += step

    async def hold(self, tag: str, seconds: float) -> None:
        """No request of the token ``tag`` passes for ``seconds`` (VK's ``Retry-After``), in
        any process: awaited, so the retry of the answer that asked for it waits too."""
        try:
            await self.hold_script(
                keys=[HOLD_KEY.format(tag=tag)], args=[int(seconds * 1_000_000)]
            )
        except Exception as exc:  # redis.exceptions.RedisError, OSError …
            logger.warning(
                "Could not hold token %(tag)s in Redis for Retry-After: %(error)s",
                {"tag": tag, "error": exc},
            )

    def restamp(self, tag: str, member: str) -> None:
        """Log the request ``member`` as sent now (see :class:`VkDownloadHandler`), in the
        background: nothing waits for Redis. If Redis fails, its earlier time stays."""
        if self._closed:
            return
        task = asyncio.ensure_future(self._restamp(tag, member))
        self._restamps.add(task)
        task.add_done_callback(self._restamps.discard)

    async def _restamp(self, tag: str, member: str) -> None:
        try:
            await self.restamp_script(keys=[KEY.format(tag=tag)], args=[member, self.window_us])
        except Exception as exc:  # redis.exceptions.RedisError, OSError …
            logger.debug("could not restamp a request in the shared rate limit: %s", exc)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._restamps):
            task.cancel()
        await self.redis.aclose()


class _Sending:
    """A download in flight: ``stamp`` logs its request as sent now. ``transport`` is the
    socket's transport once the pool has given the download a connection; ``opened`` tells
    whether that connection is new."""

    __slots__ = ("opened", "stamp", "transport")

    def __init__(self, stamp: Callable[[], None]) -> None:
        self.stamp = stamp
        self.transport: Any = None
        self.opened = False


# The current download's _Sending, read by the pool when it hands out a connection.
_SENDING: ContextVar[_Sending | None] = ContextVar("vkscraper_sending", default=None)
_ATTR = "_vkscraper_sending"  # on a socket's transport: the _Sending whose bytes it writes


def _watch(connection: Any, sending: _Sending) -> Any:
    """Make the socket under ``connection`` stamp ``sending`` each time it sends bytes."""
    transport = socket_transport(connection)
    if transport is None:
        return connection  # the download stamps when it ends instead
    if not hasattr(transport, _ATTR):  # a new connection: no download has used it
        sending.opened = True
        on_socket_write(transport, lambda: _stamp(transport))
    setattr(transport, _ATTR, sending)
    sending.transport = transport
    return connection


def _stamp(transport: Any) -> None:
    """The socket under ``transport`` sent bytes: log its download's request as sent now."""
    current = getattr(transport, _ATTR)
    if current is not None:
        try:
            current.stamp()
        except Exception:  # the bytes are gone: never fail the connection over it
            logger.exception("could not log a sent request in the rate limit")


class _WatchedPool(HTTPConnectionPool):
    """Twisted's pool, telling the connection it hands out which download it carries."""

    def getConnection(self, key: Any, endpoint: IStreamClientEndpoint) -> Any:  # noqa: N802
        sending = _SENDING.get()
        connection = super().getConnection(key, endpoint)
        if sending is not None:  # runs before the request is written on the connection
            connection.addCallback(_watch, sending)
        return connection


class VkDownloadHandler(HTTP11DownloadHandler):
    """Scrapy's HTTP/1.1 handler, with the token's limit passed just before a VK request goes
    (``DOWNLOAD_HANDLERS`` for http and https): in Redis with ``VK_SHARED_RATE_LIMIT``, else in
    memory.

    A request goes to the socket later than the limit logged it: after the rest of the download
    path and the loop's other work (Twisted sends a write on a later turn of the loop), after
    the TCP and TLS handshakes when it opens a connection, and, in shared mode, after Redis's
    answer came back, on a machine that may not run the process at once. On a loaded CI
    machine that exceeded 50 ms, the margin's worth: four requests reached the emulator within
    one second. So each time the socket sends bytes of the request, it is logged again, as sent
    then. A request that opened a connection is logged again when answered too: a delay beyond
    the socket (a proxy that connects onwards only then) would otherwise go unseen."""

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        # Same pool, settings and factory as Scrapy's.
        pool = watch_pool(self, _WatchedPool)
        # Twisted resends a failed idempotent request on a connection it opens itself, which
        # getConnection never sees: its bytes would go unlogged. Scrapy's RETRY_* retry it.
        pool.retryAutomatically = False
        s = crawler.settings
        count, window = rate_window(s)
        self.limit: LocalRateLimit | SharedRateLimit
        if s.getbool("VK_SHARED_RATE_LIMIT"):
            url = s.get("REDIS_URL")  # resolved by the add-on (vkscraper.connections)
            if not url:
                raise ValueError("VK_SHARED_RATE_LIMIT needs REDIS_URL (redis://host:6379/0)")
            self.limit = SharedRateLimit(url, count, window)
        else:
            self.limit = LocalRateLimit(count, window)
        self.stats = crawler.stats
        self.crawler = crawler
        self.give_up = s.getfloat("DOWNLOAD_TIMEOUT")

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def download_request(self, request: Request) -> Response:
        tag = request.meta.get("vk_token_tag")
        if not tag:
            reset = _SENDING.set(None)  # not another download's, whatever the context holds
            try:
                return await super().download_request(request)
            finally:
                _SENDING.reset(reset)
        waited, member = await self.limit.acquire(
            tag, give_up=self.give_up, stopping=lambda: crawl_stopping(self.crawler)
        )
        if waited and self.stats is not None:
            self.stats.inc_value("vk/rate_limit/waits")
            key = f"vk/rate_limit/wait_seconds/{tag}"
            self.stats.set_value(key, self.stats.get_value(key, 0.0) + waited)
        sending = _Sending(lambda: self.limit.restamp(tag, member))
        reset = _SENDING.set(sending)
        try:
            response = await super().download_request(request)
        finally:
            _SENDING.reset(reset)
            transport = sending.transport
            # No socket seen: the answer is the latest it can have left. A new connection may
            # have been held up beyond the socket (a proxy connecting onwards): likewise.
            if transport is None or sending.opened:
                sending.stamp()
            if sending.opened and self.stats is not None:
                self.stats.inc_value("vk/rate_limit/connections_opened")
            if transport is not None and getattr(transport, _ATTR, None) is sending:
                setattr(transport, _ATTR, None)  # the connection goes back to the pool
            # Cancelled timers keep this context, and with it `sending`, until they are due.
            sending.transport = None
        await self._honour_retry_after(tag, response)
        return response

    async def _honour_retry_after(self, tag: str, response: Response) -> None:
        """VK asked the token to come back later: hold it (every process, when shared)."""
        if response.status not in HELD_STATUSES:
            return
        seconds = parse_retry_after(response.headers.get(b"Retry-After"))
        if not seconds:
            return
        logger.info(
            "Token %(tag)s: HTTP %(status)d with Retry-After %(seconds)g s; its requests wait",
            {"tag": tag, "status": response.status, "seconds": seconds},
        )
        if self.stats is not None:
            self.stats.inc_value("vk/rate_limit/retry_after")
        await self.limit.hold(tag, seconds)

    async def close(self) -> None:
        await self.limit.close()
        await super().close()
