"""VkStorePipeline: batch items and upsert them into the task's store, off the event loop.

Posts and comments are buffered and written in batches of ``VK_STORE_BATCH_SIZE`` (one
statement per batch, posts before comments), at least every ``VK_STORE_FLUSH_INTERVAL``
seconds, when the task extension is about to record a group as done
(:data:`vkscraper.signals.flush_requested`) and at close; other items pass through untouched.
Flushes run in a thread under an ``asyncio.Lock``: items of different responses
arrive concurrently and one connection cannot be entered twice.

When the database is down the batch stays buffered and is retried on the next flush; if it is
still down at close, the unsaved items are written to a JSON-lines file in ``VK_UNSAVED_DIR``
and the path is logged, so nothing collected is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy.utils.asyncio import run_in_thread

from vkscraper.exceptions import StoreError
from vkscraper.extensions.task import VkTaskExtension
from vkscraper.items import VkComment, VkPost
from vkscraper.periodic import Periodic
from vkscraper.signals import flush_requested

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class VkStorePipeline:
    def __init__(self, crawler: Crawler) -> None:
        s = crawler.settings
        self.crawler = crawler
        self.batch_size = s.getint("VK_STORE_BATCH_SIZE")
        self.unsaved_dir = Path(s.get("VK_UNSAVED_DIR"))
        self.posts: list[VkPost] = []
        self.comments: list[VkComment] = []
        self.dumped = False  # items went to a file: the groups they belong to are not stored
        self._lock = asyncio.Lock()
        self._periodic = Periodic(self.flush, s.getfloat("VK_STORE_FLUSH_INTERVAL"))
        self.task: VkTaskExtension | None = None
        crawler.signals.connect(self.flush, signal=flush_requested)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def open_spider(self) -> None:
        self.task = self.crawler.get_extension(VkTaskExtension)
        self._periodic.start()

    async def process_item(self, item: Any) -> Any:
        if isinstance(item, VkPost):
            self.posts.append(item)
        elif isinstance(item, VkComment):
            self.comments.append(item)
        else:
            return item
        if len(self.posts) + len(self.comments) >= self.batch_size:
            await self.flush()
        return item

    async def flush(self) -> bool:
        """Write what is buffered; False (and the items kept) when the database refused.

        A group is never recorded as done (and so skipped by a resume) while its rows are only
        in memory or in a dump file: the task extension asks for this first.
        """
        return await self._write() and not self.dumped

    async def _write(self) -> bool:
        async with self._lock:
            if not self.posts and not self.comments:
                return True
            assert self.task is not None
            store, task_id = self.task.store, self.task.task_id
            if store is None or task_id is None:
                return False
            stats = self.crawler.stats
            assert stats is not None
            try:
                # Slices, not the lists: items appended during the await stay buffered.
                while self.posts:
                    posts = self.posts[: self.batch_size]
                    result = await run_in_thread(store.upsert_posts, task_id, posts)
                    del self.posts[: len(posts)]
                    stats.inc_value("vk/store/posts_inserted", result.inserted)
                    stats.inc_value("vk/store/posts_updated", result.updated)
                while self.comments:
                    comments = self.comments[: self.batch_size]
                    result = await run_in_thread(store.upsert_comments, task_id, comments)
                    del self.comments[: len(comments)]
                    stats.inc_value("vk/store/comments_inserted", result.inserted)
                    stats.inc_value("vk/store/comments_updated", result.updated)
            except StoreError as exc:
                stats.inc_value("vk/store/errors")
                logger.error(
                    "Could not store %(n)d item(s), will retry: %(error)s",
                    {"n": len(self.posts) + len(self.comments), "error": exc},
                )
                return False
            return True

    async def close_spider(self) -> None:
        await self._periodic.stop()
        for attempt in range(3):
            if await self.flush():
                return
            await asyncio.sleep(1 + attempt)
        path = self._dump_unsaved()
        self.dumped = True
        assert self.task is not None
        await self.task.add_error(
            f"database unavailable: {len(self.posts)} post(s) and {len(self.comments)} "
            f"comment(s) were saved to {path} instead"
        )

    def _dump_unsaved(self) -> Path:
        task_id = self.task.task_id if self.task else None
        path = self.unsaved_dir / f"vkscraper-unsaved-task{task_id}-{int(time.time())}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            items: list[VkPost | VkComment] = [*self.posts, *self.comments]
            for item in items:
                row = {"kind": type(item).__name__, **asdict(item)}
                fh.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
        logger.critical(
            "The database stayed unavailable: %(n)d unsaved item(s) written to %(path)s",
            {"n": len(self.posts) + len(self.comments), "path": path},
        )
        return path


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")
