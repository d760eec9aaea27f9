"""One rate limit per token for every process that uses it, kept in Redis.

Scrapy's download delay paces one process. Two processes on one token were measured at
4.6 requests/s, and VK answers error 6 above 3. With ``VK_SHARED_RATE_LIMIT = True`` (and
``REDIS_URL``), every VK request passes :data:`SCRIPT` just before it is sent: a sliding-window
log per token in a sorted set, on Redis's own clock, atomic because Redis runs one script at a
time. At most ``VK_REQUESTS_PER_SECOND`` requests of a token are let through in any window of
``VK_RATE_MARGIN`` seconds (1.05: the margin absorbs the network's jitter), whichever process
sends them. The process's own delay stays in force as the local floor.

The gate sits in the download handler (:class:`VkDownloadHandler`), after the download slot's
delay, so the time the log records is the time the request leaves. Keys are
``vkscraper:rate:<tag>``: the token's non-secret tag, never the token. If Redis cannot be
reached, requests wait (one WARNING per outage) rather than go out unpaced, for at most
``DOWNLOAD_TIMEOUT``; then the request fails like a connection error (retried, then recorded
with the reason). A wait ends at once when the crawl is closing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.utils.asyncio import sleep

from vkscraper.middlewares.auth import CrawlStopping, crawl_stopping

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

KEY = "vkscraper:rate:{tag}"
# KEYS[1] the token's log; ARGV: limit, window (µs), a unique member. Returns 0 when the
# request may go (and logs it), else the µs until the oldest entry leaves the window.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
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


class RedisUnreachable(OSError):
    """Redis did not answer the shared limit's script for too long."""


class SharedRateLimit:
    def __init__(self, redis_url: str, limit: int, window: float) -> None:
        import redis.asyncio  # only this mode needs Redis

        self.redis = redis.asyncio.from_url(redis_url)
        self.script = self.redis.register_script(SCRIPT)
        self.limit = limit
        self.window_us = int(window * 1_000_000)
        self._down = False

    async def acquire(self, tag: str, *, give_up: float, stopping: Callable[[], bool]) -> float:
        """Wait until a request of the token ``tag`` may be sent; returns the seconds waited.

        Raises :class:`RedisUnreachable` (an ``OSError``: Scrapy retries it, then the request
        fails with that message) when Redis has not answered for ``give_up`` seconds, and
        :class:`~vkscraper.middlewares.auth.CrawlStopping` when ``stopping()`` turns true."""
        waited = 0.0
        unreachable_since: float | None = None
        while True:
            if stopping():
                raise CrawlStopping("the crawl is stopping")
            try:
                wait_us = await self.script(
                    keys=[KEY.format(tag=tag)], args=[self.limit, self.window_us, uuid.uuid4().hex]
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
                    return waited
            step = min(int(wait_us), 500_000) / 1_000_000  # check for a close twice a second
            await sleep(step)
            waited += step

    async def close(self) -> None:
        await self.redis.aclose()


class VkDownloadHandler(HTTP11DownloadHandler):
    """Scrapy's HTTP/1.1 handler, with the shared limit passed just before a VK request goes
    (``DOWNLOAD_HANDLERS`` for http and https; off unless ``VK_SHARED_RATE_LIMIT``)."""

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        s = crawler.settings
        self.limit: SharedRateLimit | None = None
        if s.getbool("VK_SHARED_RATE_LIMIT"):
            url = s.get("REDIS_URL")
            if not url:
                raise ValueError("VK_SHARED_RATE_LIMIT needs REDIS_URL (redis://host:6379/0)")
            rate, margin = s.getfloat("VK_REQUESTS_PER_SECOND"), s.getfloat("VK_RATE_MARGIN")
            # 3/s with the 1.05 margin: 3 in any 1.05 s; 2.5/s: 2 in any 0.84 s.
            count = max(1, int(rate))
            self.limit = SharedRateLimit(url, count, margin * count / rate)
        self.stats = crawler.stats
        self.crawler = crawler
        self.give_up = s.getfloat("DOWNLOAD_TIMEOUT")

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def download_request(self, request: Request) -> Response:
        tag = request.meta.get("vk_token_tag")
        if self.limit is not None and tag:
            waited = await self.limit.acquire(
                tag, give_up=self.give_up, stopping=lambda: crawl_stopping(self.crawler)
            )
            if waited and self.stats is not None:
                self.stats.inc_value("vk/shared_limit/waits")
        return await super().download_request(request)

    async def close(self) -> None:
        if self.limit is not None:
            await self.limit.close()
        await super().close()
