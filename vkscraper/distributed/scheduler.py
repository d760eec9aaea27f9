"""VkScheduler: scrapy-redis's scheduler for worker mode, with a group's own requests local.

A task's *entries* (one request per group, meta ``vk_entry``) go to Redis through
scrapy-redis (queue class :class:`~vkscraper.distributed.workqueue.EntryQueue`), where any worker
takes them. Every other request — a group's ``wall.get``, its comment pages, an ``execute`` — stays
in this process's memory (newest first, as Scrapy's default memory queue): the group is
crawled where its entry was taken, so its batching and bookkeeping never cross processes, and
a killed worker's groups are replayed whole from their entries.

Entries are taken only while the worker's next requests need more calls than it has on hand
(:mod:`vkscraper.distributed._workload`), up to ``VK_WORKER_GROUPS`` unfinished groups, so one
worker cannot hoard a task's groups (scrapy-redis alone pops whatever the engine asks for);
:class:`~vkscraper.distributed.extension.VkDistributed` decides.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import ScrapyDeprecationWarning
from scrapy_redis.scheduler import Scheduler

from vkscraper.distributed.extension import VkDistributed

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request, Spider
    from scrapy.crawler import Crawler


# scrapy-redis 0.9.1's Scheduler.open() says "Resuming crawl (N requests scheduled)" with
# Spider.log(), which Scrapy deprecates: one warning in the log of every worker that joins
# a task with entries queued. Harmless (the message is a debug line); only that call is muted.
warnings.filterwarnings(
    "ignore",
    message=r"Spider\.log\(\) is deprecated",
    category=ScrapyDeprecationWarning,
    module=r"scrapy_redis\.scheduler\Z",
)


class VkScheduler(Scheduler):
    distributed: VkDistributed

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        scheduler = super().from_crawler(crawler)
        distributed = crawler.get_extension(VkDistributed)
        if distributed is None:
            raise RuntimeError("VkScheduler needs the VkDistributed extension (worker mode)")
        scheduler.distributed = distributed
        return scheduler

    def open(self, spider: Spider) -> None:
        super().open(spider)
        self.local: list[Request] = []
        self.distributed.queue = self.queue

    def __len__(self) -> int:
        return len(self.local)

    def has_pending_requests(self) -> bool:
        # Entries in Redis are every worker's: this process is idle when its own work is done
        # (VkDistributed keeps it open while the task runs).
        return bool(self.local)

    def enqueue_request(self, request: Request) -> bool:
        if "vk_entry" in request.meta and "vk_entry_data" not in request.meta:
            self.queue.push(request)  # a new entry, for any worker
            self.distributed.entry_queued()
            self._inc("scheduler/enqueued/redis")
        else:
            self.local.append(request)
            self._inc("scheduler/enqueued/memory")
        return True

    def next_request(self) -> Request | None:
        if self.local:
            self._inc("scheduler/dequeued/memory")
            return self.local.pop()
        request = self.distributed.take()
        if request is not None:
            self._inc("scheduler/dequeued/redis")
        return request

    def close(self, reason: str) -> Any:
        return None  # SCHEDULER_PERSIST: the queue is every worker's

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)
