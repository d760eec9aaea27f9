"""VkNormalizePipeline: a page as VK sent it (``VkPage.raw``) → its rows (``VkPage.rows``).

First of the three steps in ``ITEM_PIPELINES`` (normalize 100, store 300, task metrics 900), so
a user's own pipeline placed between 100 and 300 sees a page's normalized rows before they are
stored (it may filter or change them), and one between 300 and 900 sees them after (a second
sink).

A comment (or post) whose fields VK sent malformed is left out with a task error naming it;
the rest of its page is kept. Other items pass through untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vkscraper.extensions.task import VkTaskExtension
from vkscraper.items import VkPage
from vkscraper.normalize import normalize_comments, normalize_posts

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
        if errors:
            task = self.crawler.get_extension(VkTaskExtension)
            for message, post in errors:
                if task is not None:
                    await task.add_error(message, group=item.group_id, post=post)
        return item
