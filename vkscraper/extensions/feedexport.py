"""VkFeedExporter: Scrapy's feed exports (``-O``, ``FEEDS``) with one row per post or comment.

Pages travel through Scrapy as one item each (:class:`~vkscraper.items.VkPage`); a feed holds
their rows, so ``-O out.jsonl|.json|.csv`` and ``FEEDS`` (``item_classes``, ``fields``,
batches) see posts and comments exactly as a per-row crawl would. Other items are exported as
they are. The add-on puts it in place of Scrapy's ``FeedExporter``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.extensions.feedexport import FeedExporter

from vkscraper.items import VkPage

if TYPE_CHECKING:
    from scrapy import Spider


class VkFeedExporter(FeedExporter):
    def item_scraped(self, item: Any, spider: Spider) -> None:
        if not isinstance(item, VkPage):
            super().item_scraped(item, spider)
            return
        for row in item.rows:
            super().item_scraped(row, spider)
