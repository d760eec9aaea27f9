"""Requests dropped before their download: Scrapy's ``IgnoreRequest``, so the request goes to
its errback without an error logged by Scrapy.

Apart from :mod:`vkscraper.exceptions`, which imports nothing of Scrapy: the VK layer
(:mod:`vkscraper.vk`) and the store raise and catch those without loading Scrapy and Twisted.
"""

from __future__ import annotations

from scrapy.exceptions import IgnoreRequest


class NoUsableToken(IgnoreRequest):
    """No token of the pool can take the request (the message names each token's state)."""


class CrawlStopping(IgnoreRequest):
    """The crawl is closing while the request waited (for a token, for the shared limit): it
    is dropped unsent, and its group stays unfinished for the next run."""
