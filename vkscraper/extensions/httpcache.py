"""VkCachePolicy: Scrapy's HTTP cache policy, minus VK error answers.

VK reports errors as HTTP 200 with an ``error`` object, which Scrapy's default policy caches
like any 200: a retry of a transient error (6, 10 …) would then be answered from the cache, and
so would every later run. With ``HTTPCACHE_ENABLED``, the add-on makes this the policy unless
``HTTPCACHE_POLICY`` is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.extensions.httpcache import DummyPolicy

from vkscraper.exceptions import VkError
from vkscraper.vk.api import parse_response

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.http import Response


class VkCachePolicy(DummyPolicy):
    def should_cache_response(self, response: Response, request: Request) -> bool:
        if not super().should_cache_response(response, request):
            return False
        method = request.meta.get("vk_method")
        if method is None:
            return True
        try:
            parse_response(response.body, method)
        except VkError:
            return False  # an error or a malformed body: ask VK again next time
        return True
