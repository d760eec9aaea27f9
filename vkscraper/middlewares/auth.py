"""VkAuthMiddleware: add the access token at download time, one download slot per token.

Requests are built without the token (see :mod:`vkscraper.api`), so what waits in the
scheduler — and later in Redis — never holds it. This middleware puts it in the
``Authorization: Bearer`` header just before the download (never in the URL or body, which
Scrapy logs) and takes it off again when the download is over.

Settings: none of its own; the token comes only from the ``VK_ACCESS_TOKEN`` environment
variable (comma-separated for several; the pool itself is future work, the first is used).

Meta keys: ``vk_method`` marks a VK API request (others pass through untouched);
``vk_token_tag`` is set to the tag of the token used; ``download_slot`` is set to
``vk-<tag>`` so that Scrapy's delay applies per token.
Stats: ``vk/requests/<method>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vkscraper.tokens import load_tokens, token_tag

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

AUTH_HEADER = b"Authorization"


class VkAuthMiddleware:
    def __init__(self, crawler: Crawler, tokens: list[str]) -> None:
        self.crawler = crawler
        self.tokens = tokens

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler, load_tokens())

    def process_request(self, request: Request) -> None:
        method = request.meta.get("vk_method")
        if method is None or not self.tokens:
            # Without a token the spider refuses to start; a request without one gets
            # VK's own error 5, which the spider reports as fatal.
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


def strip_token(request: Request) -> None:
    """Remove the token from a request that is done downloading (or is about to be re-queued)."""
    request.headers.pop(AUTH_HEADER, None)
