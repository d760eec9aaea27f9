"""VkAuthMiddleware: add the access token at download time, one download slot per token.

Requests are built without the token (see :mod:`vkscraper.api`), so what waits in the
scheduler — and later in Redis — never holds it. This middleware puts it in the
``Authorization: Bearer`` header just before the download (never in the URL or body, which
Scrapy logs) and takes it off again as soon as the download is over.

It sits above every built-in downloader middleware (priority in :mod:`vkscraper.addon`), so
none of them sees the token: not the HTTP cache, which stores request headers on disk, nor the
redirect and retry middlewares, which copy requests into new ones. A new request (a retry, a
redirect) comes back through here and gets the token again only if it qualifies.

The token goes only to the origin of ``VK_API_URL`` (scheme, host and port), whatever the meta
says: a redirect keeps ``vk_method`` in its meta, and a request carrying it to another host
must not carry the token too.

Settings: ``VK_API_URL`` (the origin trusted with the token). The token comes only from the
``VK_ACCESS_TOKEN`` environment variable (comma-separated for several; the pool itself is
future work, the first is used).

Meta keys: ``vk_method`` marks a VK API request (others pass through untouched);
``vk_token_tag`` is set to the tag of the token used; ``download_slot`` is set to
``vk-<tag>`` so that Scrapy's delay applies per token.
Stats: ``vk/requests/<method>``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

from scrapy.utils.httpobj import urlparse_cached

from vkscraper import defaults
from vkscraper.tokens import load_tokens, token_tag

if TYPE_CHECKING:
    from typing import Self
    from urllib.parse import ParseResult

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

AUTH_HEADER = b"Authorization"
DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int | None]


class VkAuthMiddleware:
    def __init__(self, crawler: Crawler, tokens: list[str], api_url: str) -> None:
        self.crawler = crawler
        self.tokens = tokens
        self.api_origin = origin(urlsplit(api_url))

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        api_url = crawler.settings.get("VK_API_URL", defaults.VK_API_URL)
        return cls(crawler, load_tokens(), api_url)

    def process_request(self, request: Request) -> None:
        method = request.meta.get("vk_method")
        if method is None or not self.tokens:
            # Without a token the spider refuses to start; a request without one gets
            # VK's own error 5, which the spider reports as fatal.
            return
        if _request_origin(request) != self.api_origin:
            logger.warning(
                "Not sending the token with %(request)s: not the origin of VK_API_URL",
                {"request": request},
            )
            return
        token = self.tokens[0]
        tag = token_tag(token)
        request.headers[AUTH_HEADER] = f"Bearer {token}"
        request.meta["vk_token_tag"] = tag
        request.meta["download_slot"] = f"vk-{tag}"
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(f"vk/requests/{method}")

    def process_response(self, request: Request, response: Response) -> Response:
        strip_token(request)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        strip_token(request)


def origin(url: SplitResult | ParseResult) -> Origin:
    """(scheme, host, port) with the scheme's default port filled in; raises ValueError on a
    malformed port."""
    scheme = url.scheme.lower()
    return scheme, url.hostname or "", url.port or DEFAULT_PORTS.get(scheme)


def _request_origin(request: Request) -> Origin | None:
    try:
        return origin(urlparse_cached(request))
    except ValueError:
        return None


def strip_token(request: Request) -> None:
    """Remove the token from a request that is done downloading (or is about to be re-queued)."""
    request.headers.pop(AUTH_HEADER, None)
