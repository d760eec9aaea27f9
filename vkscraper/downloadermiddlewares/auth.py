"""VkAuthMiddleware: add the access token at download time, one download slot per token.

Requests are built without the token (see :mod:`vkscraper.vk.api`), so what waits in the
scheduler — and later in Redis — never holds it. This middleware puts it in the
``Authorization: Bearer`` header just before the download (never in the URL or body, which
Scrapy logs) and takes it off again as soon as the download is over.

It sits above every built-in downloader middleware (priority in :mod:`vkscraper.addon`), so
none of them sees the token: not the HTTP cache, which stores request headers on disk, nor the
redirect and retry middlewares, which copy requests into new ones. A new request (a retry, a
redirect) comes back through here and gets the token again only if it qualifies.

The token goes only to the origin of ``VK_API_URL`` (scheme, host and port), whatever the meta
says: a redirect keeps ``vk_method`` in its meta, and a request carrying it to another host
must not carry the token too. And ``VK_API_URL`` itself must be VK's API or an origin the
operator allows in the environment (:mod:`vkscraper.tokens.trust`), checked when the crawl starts:
a setting can come from anyone who can reach scrapyd, the environment only from the operator.

Several tokens (``VK_ACCESS_TOKEN=t1,t2,…``) form a pool (:mod:`vkscraper.tokens.pool`): each
request goes to the usable token with the least work in its download slot. When none can take
it, the request waits for a parked token (at most ``VK_TOKEN_MAX_WAIT``), or fails with
:class:`~vkscraper.dropped.NoUsableToken`, which stops the crawl naming every token's state by
its tag.

Settings: ``VK_API_URL`` (the origin trusted with the token), ``VK_TOKEN_PARK_SECONDS``,
``VK_QUOTA_PARK_SECONDS``, ``VK_TOKEN_MAX_WAIT``. The tokens come only from the
``VK_ACCESS_TOKEN`` environment variable.

Meta keys: ``vk_method`` marks a VK API request (others pass through untouched);
``vk_methods`` the methods it calls (an execute's inner ones, for the pool's per-method parks);
``vk_token_tag`` is set to the tag of the token used; ``download_slot`` is set to
``vk-<tag>`` so that Scrapy's delay applies per token.
Stats: ``vk/requests/<method>``, ``vk/requests/token/<tag>``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy.utils.asyncio import sleep

from vkscraper import defaults
from vkscraper._internals import crawl_stopping, downloader_slots
from vkscraper.dropped import CrawlStopping, NoUsableToken
from vkscraper.tokens.access import load_tokens, token_tag
from vkscraper.tokens.pool import TokenPool
from vkscraper.tokens.trust import Origin, check_api_url, parse_origin

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from vkscraper.exceptions import VkApiError

logger = logging.getLogger(__name__)

AUTH_HEADER = b"Authorization"


class VkAuthMiddleware:
    def __init__(
        self, crawler: Crawler, tokens: list[str], api_url: str, max_wait: float = 0.0
    ) -> None:
        self.crawler = crawler
        self.tokens = tokens
        check_api_url(api_url)  # also refused by the add-on; this holds without it
        self.api_origin: Origin = parse_origin(api_url)
        s = crawler.settings
        self.pool = TokenPool(
            tokens,
            park_seconds=s.getfloat("VK_TOKEN_PARK_SECONDS", defaults.VK_TOKEN_PARK_SECONDS),
            quota_seconds=s.getfloat("VK_QUOTA_PARK_SECONDS", defaults.VK_QUOTA_PARK_SECONDS),
        )
        self.max_wait = max_wait

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        api_url = crawler.settings.get("VK_API_URL", defaults.VK_API_URL)
        max_wait = crawler.settings.getfloat("VK_TOKEN_MAX_WAIT", defaults.VK_TOKEN_MAX_WAIT)
        return cls(crawler, load_tokens(), api_url, max_wait)

    def process_request(self, request: Request) -> Coroutine[Any, Any, None] | None:
        method = request.meta.get("vk_method")
        if method is None or not self.tokens:
            # Without a token the spider refuses to start; a request without one gets
            # VK's own error 5, which the spider reports as fatal.
            return None
        if _request_origin(request) != self.api_origin:
            logger.warning(
                "Not sending the token with %(request)s: not the origin of VK_API_URL",
                {"request": request},
            )
            return None
        methods = [method, *request.meta.get("vk_methods", ())]
        token = self.pool.pick(methods, self._load)
        if token is None:  # every token is out for now: Scrapy awaits this
            return self._wait_for_token(request, methods)
        self._authorize(request, token)
        return None

    async def _wait_for_token(self, request: Request, methods: list[str]) -> None:
        """Wait for a parked token, at most ``max_wait``; else
        :class:`~vkscraper.dropped.NoUsableToken`."""
        deadline = time.monotonic() + self.max_wait
        while (token := self.pool.pick(methods, self._load)) is None:
            ready = self.pool.next_ready(methods)
            if ready is None or ready > deadline:
                raise NoUsableToken(f"no usable access token left: {self.pool.summary()}")
            if crawl_stopping(self.crawler):
                raise CrawlStopping("the crawl is stopping")
            await sleep(min(0.5, max(0.05, ready - time.monotonic())))
        self._authorize(request, token)

    def _authorize(self, request: Request, token: str) -> None:
        tag = token_tag(token)
        request.headers[AUTH_HEADER] = f"Bearer {token}"
        request.meta["vk_token_tag"] = tag
        request.meta["download_slot"] = f"vk-{tag}"
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"vk/requests/{request.meta['vk_method']}")
        if len(self.tokens) > 1:
            self.crawler.stats.inc_value(f"vk/requests/token/{tag}")

    def _load(self, tag: str) -> int:
        """Requests in the token's download slot (queued or downloading)."""
        slot = downloader_slots(self.crawler).get(f"vk-{tag}") if len(self.tokens) > 1 else None
        return len(slot.active) if slot is not None else 0

    def process_response(self, request: Request, response: Response) -> Response:
        strip_token(request)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        strip_token(request)


def _request_origin(request: Request) -> Origin | None:
    try:
        return parse_origin(request.url)
    except ValueError:  # user-info, an odd host or port: never trusted
        return None


def token_error(crawler: Crawler, tag: str | None, exc: VkApiError) -> bool:
    """Tell the pool about a VK error answered to the token ``tag`` (a whole request's, or a
    call's inside an execute). True when it concerns the token (dropped or parked: the work
    goes to another token), False when it is the target's or the request's."""
    try:
        auth = crawler.get_downloader_middleware(VkAuthMiddleware)
    except RuntimeError:  # before the engine exists (unit tests)
        return False
    done = auth.pool.report(tag, exc.code, exc.method, exc.message) if auth else None
    if done is None:
        return False
    if done:  # "" : already out for this (an answer to a request sent before)
        logger.warning("Token %(tag)s %(done)s", {"tag": tag, "done": done})
    assert crawler.stats is not None
    crawler.stats.inc_value(f"vk/token_errors/{exc.code}")
    return True


def strip_token(request: Request) -> None:
    """Remove the token from a request that is done downloading (or is about to be re-queued)."""
    request.headers.pop(AUTH_HEADER, None)
