"""VkNormalizePipeline: a page as VK sent it (``VkPage.raw``) → its rows (``VkPage.rows``).

First of the two steps in ``ITEM_PIPELINES`` (normalize 100, store 300), so
a user's own pipeline placed between 100 and 300 sees a page's normalized rows before they are
stored (it may filter or change them), and one after 300 sees them after (a second sink).

A comment (or post) whose fields VK sent malformed is left out with a task error naming it
(:data:`vkscraper.signals.task_error`); the rest of its page is kept. Other items pass through
untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vkscraper.items import VkPage
from vkscraper.signals import task_error
from vkscraper.vk.normalize import normalize_comments, normalize_posts

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler


class VkNormalizePipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, VkPage) or item.raw is None:
            return item
        normalize = normalize_posts if item.kind == "posts" else normalize_comments
        rows, errors = normalize(item)
        item.rows, item.raw = rows, None  # the raw page is not kept nor exported
        for message, post in errors:
            await self.crawler.signals.send_catch_log_async(
                task_error, message=message, group=item.group_id, post=post
            )
        return item
