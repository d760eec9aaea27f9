"""VkRetryMiddleware: Scrapy's RetryMiddleware, plus VK's error classification and backoff.

It takes the place of ``scrapy.downloadermiddlewares.retry.RetryMiddleware`` (the add-on sets
that one to ``None``: one retry budget, not two) and keeps its settings and meta keys:
``RETRY_ENABLED``, ``RETRY_TIMES``, ``RETRY_HTTP_CODES``, ``RETRY_EXCEPTIONS``,
``RETRY_PRIORITY_ADJUST``, ``RETRY_GIVE_UP_LOG_LEVEL``; ``dont_retry``, ``max_retry_times``,
``priority_adjust``; stats ``retry/*``. Requests other than VK API calls are handled exactly
as Scrapy's middleware would.

What it adds for VK API calls (meta ``vk_method``):

* VK answers most errors as HTTP 200 with an ``error`` object, so the body is parsed here,
  once, and handed to the spider in ``meta["vk_response"]`` (the data) or ``meta["vk_error"]``
  (a :class:`~vkscraper.exceptions.VkError` not worth retrying, or a transient one out of
  retries); an ``execute`` answer's ``execute_errors`` go to ``meta["vk_execute_errors"]``.
  Malformed bodies and VK errors 1, 6, 9, 10, 36 are retried like a 503. Parsing
  happens even with ``RETRY_ENABLED = False`` (then nothing is retried): the spider needs it.
* Each retry waits ``backoff_delay()`` — exponential with jitter, capped, at least the
  server's ``Retry-After`` — by awaiting in ``process_response``: only that request waits,
  and its download slot is free meanwhile. The new request goes back through the scheduler,
  so it is still paced by the per-token delay; the token is stripped from it first. (The
  ``Retry-After`` of a 429 or 503 also holds the whole token, in every process when the
  limit is shared: :mod:`vkscraper.downloadhandlers.ratelimit`.)

Settings of its own: ``VK_BACKOFF_BASE``, ``VK_BACKOFF_MAX``. Stats: ``vk/api_error/<code>``,
``vk/malformed``, ``vk/responses/<tag>/<method>/<outcome>`` (each attempt: ``ok``,
``vk_error``, ``malformed``, ``http_error``, ``network_error``).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.settings import BaseSettings
from scrapy.utils.asyncio import sleep

from vkscraper._internals import downloader_slots, retry_request
from vkscraper.downloadermiddlewares.auth import strip_token, token_error
from vkscraper.exceptions import VkApiError, VkError, VkMalformedResponse, VkTransientError
from vkscraper.vk.api import parse_envelope
from vkscraper.vk.backoff import backoff_delay, parse_retry_after

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.http import Response

logger = logging.getLogger(__name__)


class VkRetryMiddleware(RetryMiddleware):
    def __init__(self, settings: BaseSettings) -> None:
        # Scrapy's switches the middleware off when RETRY_ENABLED is False; this one must
        # still parse VK answers, so it only stops retrying.
        self.enabled = settings.getbool("RETRY_ENABLED")
        if not self.enabled:
            settings = BaseSettings(settings)  # an unfrozen copy, priorities kept
            settings.set("RETRY_ENABLED", True, priority=1000)
        super().__init__(settings)
        self.base = settings.getfloat("VK_BACKOFF_BASE")
        self.cap = settings.getfloat("VK_BACKOFF_MAX")
        self.rng = random.Random()

    async def process_response(  # type: ignore[override]
        self, request: Request, response: Response
    ) -> Request | Response:
        method = request.meta.get("vk_method")
        if method is None:
            return super().process_response(request, response) if self.enabled else response
        for key in ("vk_response", "vk_error", "vk_execute_errors"):
            request.meta.pop(key, None)
        if response.status != 200:
            self._answered(request, "http_error")
        if response.status in self.retry_http_codes:
            retry_after = parse_retry_after(response.headers.get(b"Retry-After"))
            return await self._backoff_retry(request, f"HTTP {response.status}", retry_after) or (
                response
            )
        if response.status != 200:
            return response  # HttpErrorMiddleware turns it into an errback
        try:
            envelope = parse_envelope(response.body, method)
            request.meta["vk_response"] = envelope["response"]
            if "execute_errors" in envelope:
                request.meta["vk_execute_errors"] = envelope["execute_errors"]
            self._answered(request, "ok")
        except VkError as exc:
            self._answered(request, "vk_error" if isinstance(exc, VkApiError) else "malformed")
            self._count(exc)
            tag = request.meta.get("vk_token_tag")
            if isinstance(exc, VkApiError) and token_error(self.crawler, tag, exc):
                return fresh_copy(request)  # another token takes it (or none can: errback)
            if isinstance(exc, VkApiError) and exc.code == 6:
                self._slow_down(request)
            if isinstance(exc, VkTransientError):
                new = await self._backoff_retry(request, _reason(exc), None)
                if new is not None:
                    return new
            request.meta["vk_error"] = exc
        return response

    async def process_exception(  # type: ignore[override]
        self, request: Request, exception: Exception
    ) -> Request | Response | None:
        if request.meta.get("vk_method") is None:
            return super().process_exception(request, exception) if self.enabled else None
        self._answered(request, "network_error")
        if not isinstance(exception, self.exceptions_to_retry):
            return None
        # None lets the exception reach the errback once the retries are spent.
        return await self._backoff_retry(request, exception, None)

    async def _backoff_retry(
        self, request: Request, reason: str | Exception, retry_after: float | None
    ) -> Request | None:
        if not self.enabled or request.meta.get("dont_retry", False):
            return None
        attempt = request.meta.get("retry_times", 0)
        new = retry_request(self, request, reason)
        if new is None:
            return None
        strip_token(new)
        for key in ("vk_response", "vk_error", "vk_execute_errors", "download_slot"):
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

    def _slow_down(self, request: Request) -> None:
        """Error 6: this token's requests came too fast for VK; space them out more (its
        delay decays back through AutoThrottle)."""
        key = request.meta.get("download_slot")
        slot = downloader_slots(self.crawler).get(key) if key else None
        if slot is not None:
            slower = slot.delay * 1.5
            # VK_BACKOFF_MAX caps the growth, never below the delay the token already has
            slot.delay = min(slower, max(self.cap, slot.delay)) if self.cap else slower
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("vk/token_slowed")

    def _answered(self, request: Request, outcome: str) -> None:
        """One attempt of a VK request is over (the Prometheus counters read this stat)."""
        tag = request.meta.get("vk_token_tag") or "none"
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"vk/responses/{tag}/{request.meta['vk_method']}/{outcome}")

    def _count(self, exc: VkError) -> None:
        assert self.crawler.stats is not None
        if isinstance(exc, VkApiError):
            self.crawler.stats.inc_value(f"vk/api_error/{exc.code}")
        elif isinstance(exc, VkMalformedResponse):
            self.crawler.stats.inc_value("vk/malformed")


def fresh_copy(request: Request) -> Request:
    """The request again, as it was before it was downloaded (no token, no slot, no answer):
    not a retry, it goes back to the scheduler for another token."""
    new = request.copy()
    strip_token(new)
    for key in ("vk_response", "vk_error", "vk_execute_errors", "download_slot", "vk_token_tag"):
        new.meta.pop(key, None)
    new.dont_filter = True
    return new


def _reason(exc: Any) -> str:
    return f"vk_error_{exc.code}" if isinstance(exc, VkApiError) else "vk_malformed"
