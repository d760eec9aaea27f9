"""VkRetryMiddleware: the one retry layer — classify VK answers, back off, retry.

Replaces Scrapy's ``RetryMiddleware`` (set to ``None`` by the add-on) so there is a single
retry budget. VK reports most errors as HTTP 200 with an ``error`` object, so the body is
parsed here, once, and the result is handed to the spider in ``meta["vk_response"]`` (the data)
or ``meta["vk_error"]`` (a :class:`~vkscraper.exceptions.VkError` that is not worth retrying,
or a transient one that ran out of retries).

Retried: HTTP codes in ``VK_RETRY_HTTP_CODES`` (429 and 5xx), the exceptions of Scrapy's
``RETRY_EXCEPTIONS`` (timeouts, dropped connections), malformed bodies and VK errors 1, 6, 9,
10, 36. Each retry waits ``backoff_delay()`` — exponential with jitter, capped, at least the
server's ``Retry-After`` — by awaiting in ``process_response``: only that request waits, and
its download slot is free meanwhile. The new request goes through
``get_retry_request`` (stats ``retry/*``) and back through the scheduler, so it is still paced
by the per-token delay; the token is stripped from it first.

Settings: ``VK_RETRY_TIMES``, ``VK_BACKOFF_BASE``, ``VK_BACKOFF_MAX``, ``VK_RETRY_HTTP_CODES``,
``RETRY_EXCEPTIONS``. Meta keys: ``vk_method`` (only VK requests are handled), ``dont_retry``,
``max_retry_times``. Stats: ``vk/api_error/<code>``, ``vk/malformed``.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.utils.asyncio import sleep
from scrapy.utils.misc import load_object

from vkscraper import defaults
from vkscraper.api import parse_response
from vkscraper.backoff import backoff_delay, parse_retry_after
from vkscraper.exceptions import VkApiError, VkError, VkMalformedResponse, VkTransientError
from vkscraper.middlewares.auth import strip_token

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)


class VkRetryMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        s = crawler.settings
        self.crawler = crawler
        self.max_retry_times = s.getint("VK_RETRY_TIMES", defaults.VK_RETRY_TIMES)
        self.base = s.getfloat("VK_BACKOFF_BASE", defaults.VK_BACKOFF_BASE)
        self.cap = s.getfloat("VK_BACKOFF_MAX", defaults.VK_BACKOFF_MAX)
        self.http_codes = {
            int(c) for c in s.getlist("VK_RETRY_HTTP_CODES", defaults.VK_RETRY_HTTP_CODES)
        }
        self.exceptions = tuple(
            load_object(e) if isinstance(e, str) else e for e in s.getlist("RETRY_EXCEPTIONS")
        )
        self.rng = random.Random()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        method = request.meta.get("vk_method")
        if method is None:
            return response
        request.meta.pop("vk_response", None)
        request.meta.pop("vk_error", None)
        if response.status in self.http_codes:
            retry_after = parse_retry_after(response.headers.get(b"Retry-After"))
            return await self._retry(request, f"HTTP {response.status}", retry_after) or response
        if response.status != 200:
            return response  # HttpErrorMiddleware turns it into an errback
        try:
            request.meta["vk_response"] = parse_response(response.body, method)
        except VkError as exc:
            self._count(exc)
            if isinstance(exc, VkTransientError) and not request.meta.get("dont_retry"):
                new = await self._retry(request, _reason(exc), None)
                if new is not None:
                    return new
            request.meta["vk_error"] = exc
        return response

    async def process_exception(self, request: Request, exception: Exception) -> Request | None:
        if request.meta.get("vk_method") is None or not isinstance(exception, self.exceptions):
            return None
        # None lets the exception reach the errback once the retries are spent.
        return await self._retry(request, type(exception).__name__, None)

    async def _retry(
        self, request: Request, reason: str, retry_after: float | None
    ) -> Request | None:
        if request.meta.get("dont_retry"):
            return None
        attempt = request.meta.get("retry_times", 0)
        new = get_retry_request(
            request,
            spider=self.crawler.spider,  # type: ignore[arg-type]
            reason=reason,
            max_retry_times=request.meta.get("max_retry_times", self.max_retry_times),
        )
        if new is None:
            return None
        strip_token(new)
        for key in ("vk_response", "vk_error", "download_slot"):
            new.meta.pop(key, None)
        delay = backoff_delay(
            attempt, base=self.base, cap=self.cap, retry_after=retry_after, rng=self.rng
        )
        if delay > 0:
            logger.debug(
                "Backing off %(delay).2fs before retrying %(request)s",
                {"delay": delay, "request": request},
            )
            await sleep(delay)
        return new

    def _count(self, exc: VkError) -> None:
        assert self.crawler.stats is not None
        if isinstance(exc, VkApiError):
            self.crawler.stats.inc_value(f"vk/api_error/{exc.code}")
        elif isinstance(exc, VkMalformedResponse):
            self.crawler.stats.inc_value("vk/malformed")


def _reason(exc: Any) -> str:
    return f"vk_error_{exc.code}" if isinstance(exc, VkApiError) else "vk_malformed"
