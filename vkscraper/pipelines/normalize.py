"""VkNormalizePipeline: what VK sent (raw items) → :class:`VkPost` / :class:`VkComment`.

First of the three steps in ``ITEM_PIPELINES`` (normalize 100, store 300, task metrics 900), so
a user's own pipeline placed between 100 and 300 sees normalized items before they are stored
(a filter, an enrichment), and one between 300 and 900 sees them after (a second sink).

A comment (or post) whose fields VK sent malformed is dropped with a task error naming it; the
rest of its page is kept. Other items pass through untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.exceptions import DropItem

from vkscraper.exceptions import VkMalformedResponse
from vkscraper.extensions.task import VkTaskExtension
from vkscraper.items import VkRawComment, VkRawPost
from vkscraper.normalize import normalize_comment, normalize_post

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
        try:
            if isinstance(item, VkRawPost):
                return normalize_post(item.data, item.group_id)
            if isinstance(item, VkRawComment):
                return normalize_comment(item)
        except VkMalformedResponse as exc:
            where = _where(item)
            task = self.crawler.get_extension(VkTaskExtension)
            if task is not None:
                group = -item.owner_id
                post = item.post_vk_id if isinstance(item, VkRawComment) else item.data["id"]
                await task.add_error(f"{where}: {exc}", group=group, post=post)
            raise DropItem(f"{where}: {exc}") from exc
        return item


def _where(item: VkRawPost | VkRawComment) -> str:
    if isinstance(item, VkRawPost):
        return f"group {item.group_id} post {item.data['id']}"
    return f"group {-item.owner_id} post {item.post_vk_id} comment {item.data['id']}"
