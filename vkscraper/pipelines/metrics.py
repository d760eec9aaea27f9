"""VkTaskMetricsPipeline: the last step — each item that reaches it is done for its group.

The task extension counts the items the spider yields per group; a group is finished only when
all of them are through the pipelines (and its requests are over). An item is through when it
reaches this pipeline, or when an earlier pipeline dropped it (``item_dropped``) or failed on
it (``item_error``: a task error, the group fails). Keep it last in ``ITEM_PIPELINES`` (900):
an item dropped after it was already counted, and is not counted twice.

Stats: ``vk/items/post``, ``vk/items/comment`` — rows (posts, comments and replies) that
left the pipelines; Scrapy's ``item_scraped_count`` counts pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy import signals

from vkscraper.extensions.task import VkTaskExtension
from vkscraper.items import VkPage

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from twisted.python.failure import Failure


class VkTaskMetricsPipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.task: VkTaskExtension | None = None
        # id(item) -> group, for items counted here whose last signal has not come yet: the
        # scraper holds them until then, so an id cannot be reused meanwhile.
        self._through: dict[int, int] = {}
        crawler.signals.connect(self._scraped, signal=signals.item_scraped)
        crawler.signals.connect(self._dropped, signal=signals.item_dropped)
        crawler.signals.connect(self._failed, signal=signals.item_error)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def open_spider(self) -> None:
        self.task = self.crawler.get_extension(VkTaskExtension)

    def process_item(self, item: Any) -> Any:
        if isinstance(item, VkPage) and self.task is not None:
            self._through[id(item)] = item.group_id
            self.task.item_done(item.group_id)
            assert self.crawler.stats is not None
            kind = "post" if item.kind == "posts" else "comment"
            self.crawler.stats.inc_value(f"vk/items/{kind}", len(item.rows))
        return item

    def _scraped(self, item: Any) -> None:
        self._through.pop(id(item), None)

    def _dropped(self, item: Any) -> None:
        # A filter dropped it on purpose before it got here: done, not a failure.
        if self._through.pop(id(item), None) is None and self.task is not None:
            if (group := _group_of(item)) is not None:
                self.task.item_done(group)

    def _failed(self, item: Any, failure: Failure) -> None:
        counted = self._through.pop(id(item), None) is not None
        if self.task is not None and (group := _group_of(item)) is not None:
            error = f"group {group}: an item pipeline failed: {failure.value!r}"
            self.task.item_done(group, error=error, counted=counted)


def _group_of(item: Any) -> int | None:
    return item.group_id if isinstance(item, VkPage) else None
