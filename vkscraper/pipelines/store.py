"""VkStorePipeline: batch items and upsert them into the task's store, off the event loop.

Posts and comments are buffered and written in batches of ``VK_STORE_BATCH_SIZE`` (one
statement per batch, posts before comments), at least every ``VK_STORE_FLUSH_INTERVAL``
seconds, when the task extension is about to record a group as done
(:data:`vkscraper.signals.flush_requested`) and at close; other items pass through untouched.
Flushes run in a thread under an ``asyncio.Lock``: items of different responses
arrive concurrently and one connection cannot be entered twice.

**Database outages.** The first write that fails starts an outage: one WARNING says the
database is unavailable and how many items wait. The items stay buffered and the write is
tried again with exponential backoff (1 s, 2 s, 4 s … at most 30 s apart), by whichever flush
comes first once the wait is over (a full batch, the periodic flush, the task extension); a
flush inside the wait answers False at once, so nothing is retried, nor logged, per item.
Failed attempts are DEBUG lines. The first write that succeeds ends the outage with one INFO
line: how long it lasted and how many items were written then.

**Bounded memory.** At most ``VK_STORE_MAX_BUFFER`` items are held. Beyond that, each item is
appended to the unsaved-items file (``vkscraper-unsaved-task<N>-<time>.jsonl`` in
``VK_UNSAVED_DIR``; JSON lines with a ``kind`` field) as it arrives, and counted; one WARNING
says so when it starts. A spilled item is not in the database, so from then on :meth:`flush`
answers False (no group is recorded as done: a later run crawls them again) and at close the
task gets an error naming how many items are in which file. If the database is still down at
close, what is buffered goes to the same file.

Why spill rather than back-pressure (awaiting in ``process_item`` until the database is
back): an item that waits in ``process_item`` keeps its response in Scrapy's scraper slot, so
Scrapy stops downloading only once ``SCRAPER_SLOT_MAX_ACTIVE_SIZE`` bytes of responses wait —
a bound in bytes of responses, not in items, with up to ``CONCURRENT_ITEMS`` items of each
response waiting at once. Worse, closing the spider (Ctrl-C, SIGTERM, a fatal VK error) waits
until every pending ``process_item`` is over, so a stall would hold the shutdown for as long
as the outage lasts; and a bounded wait has to end in a spill anyway when the outage is
longer than the wait. Spilling keeps the bound exact (a count of items), keeps the crawl and
its shutdown independent of the database, and keeps everything collected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from scrapy.utils.asyncio import run_in_thread

from vkscraper._periodic import Periodic
from vkscraper.exceptions import StoreError
from vkscraper.items import VkComment, VkPage, VkPost
from vkscraper.signals import flush_requested, task_error, task_opened

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

    from vkscraper.store import Store

logger = logging.getLogger(__name__)

# Waits between write attempts during an outage: doubled after each failure, capped.
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
CLOSE_ATTEMPTS = 3  # writes tried at close (1 s, then 2 s apart) before the rest is dumped


class VkStorePipeline:
    def __init__(self, crawler: Crawler) -> None:
        s = crawler.settings
        self.crawler = crawler
        self.batch_size = s.getint("VK_STORE_BATCH_SIZE")
        self.max_buffer = max(1, s.getint("VK_STORE_MAX_BUFFER"))
        self.unsaved_dir = Path(s.get("VK_UNSAVED_DIR"))
        self.posts: list[VkPost] = []
        self.comments: list[VkComment] = []
        self.peak_buffer = 0
        # Items that went to the unsaved file: the groups they belong to are not stored.
        self.unsaved_path: Path | None = None
        self.unsaved = {"VkPost": 0, "VkComment": 0}
        self._unsaved_fh: IO[str] | None = None
        # The outage in progress: when it began (monotonic), the next attempt, the wait.
        self._down_since: float | None = None
        self._next_attempt = 0.0
        self._retry_wait = RETRY_FIRST
        self._written_in_outage = 0  # by attempts that failed half-way (posts, not comments)
        self._spilling = False  # the buffer overflowed during this outage (logged once)
        self._lock = asyncio.Lock()
        self._writer: asyncio.Future[None] | None = None  # the background write, if any
        self._periodic = Periodic(self.flush, s.getfloat("VK_STORE_FLUSH_INTERVAL"))
        # Where rows go: announced by the task extension (task_opened).
        self.store: Store | None = None
        self.task_id: int | None = None
        crawler.signals.connect(self._task_opened, signal=task_opened)
        crawler.signals.connect(self.flush, signal=flush_requested)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    @property
    def dumped(self) -> bool:
        """Some items went to the unsaved file instead of the database."""
        return self.unsaved_path is not None

    @property
    def buffered(self) -> int:
        return len(self.posts) + len(self.comments)

    @property
    def down(self) -> bool:
        """A write failed and none has succeeded since."""
        return self._down_since is not None

    def _task_opened(self, store: Store, task_id: int) -> None:
        self.store, self.task_id = store, task_id

    def open_spider(self) -> None:
        self._periodic.start()

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, VkPage) or not item.rows:
            return item
        rows = item.rows
        if self.buffered + len(rows) > self.max_buffer and not self.down:
            # The database is up but behind: this page waits for room (the only wait here).
            await self._write()
        if len(rows) > self.max_buffer and not self.down:
            # One page holds more rows than the bound (up to 1,100): written now, the page
            # waiting as above; only what exceeds the bound is spilled if that write fails.
            (self.posts if item.kind == "posts" else self.comments).extend(rows)
            if not await self._write():
                self._spill_excess()
            return item
        if self.buffered + len(rows) > self.max_buffer:
            self._spill(rows)
            return item
        (self.posts if item.kind == "posts" else self.comments).extend(rows)
        if self.buffered > self.peak_buffer:
            self.peak_buffer = self.buffered
            assert self.crawler.stats is not None
            self.crawler.stats.max_value("vk/store/peak_buffer", self.peak_buffer)
        if (
            self.buffered >= min(self.batch_size, self.max_buffer)
            and self._attempt_due()
            and not self._lock.locked()
        ):
            # Written in the background: the page goes on, and the crawl with it. A group is
            # recorded as done only after a flush has written its rows (flush_requested).
            self._writer = asyncio.ensure_future(self._write_logged())
        return item

    async def _write_logged(self) -> None:
        try:
            await self._write()
        except Exception:  # a bug, not an outage (StoreError is handled in _write)
            logger.exception("Writing items to the database failed")

    async def flush(self) -> bool:
        """Write what is buffered; False (and the items kept) when the database refused or
        an outage's next attempt is not due yet, and False for good once items went to the
        unsaved file.

        A group is never recorded as done (and so skipped by a resume) while its rows are only
        in memory or in a dump file: the task extension asks for this first.
        """
        return await self._write() and not self.dumped

    def _attempt_due(self) -> bool:
        return not self.down or time.monotonic() >= self._next_attempt

    async def _write(self, *, force: bool = False) -> bool:
        """Write the buffer; during an outage only when the next attempt is due (or
        ``force``)."""
        if not force and not self._attempt_due():
            return False
        async with self._lock:
            if not self.posts and not self.comments:
                return True
            if not force and not self._attempt_due():
                return False  # the writer we waited for has just failed
            store, task_id = self.store, self.task_id
            if store is None or task_id is None:
                return False
            stats = self.crawler.stats
            assert stats is not None
            written = 0
            try:
                # Slices, not the lists: items appended during the await stay buffered.
                while self.posts:
                    posts = self.posts[: self.batch_size]
                    result = await run_in_thread(store.upsert_posts, task_id, posts)
                    del self.posts[: len(posts)]
                    written += len(posts)
                    stats.inc_value("vk/store/posts_inserted", result.inserted)
                    stats.inc_value("vk/store/posts_updated", result.updated)
                while self.comments:
                    comments = self.comments[: self.batch_size]
                    result = await run_in_thread(store.upsert_comments, task_id, comments)
                    del self.comments[: len(comments)]
                    written += len(comments)
                    stats.inc_value("vk/store/comments_inserted", result.inserted)
                    stats.inc_value("vk/store/comments_updated", result.updated)
            except StoreError as exc:
                stats.inc_value("vk/store/errors")
                self._failed(exc, written)
                return False
            if self.down:
                self._recovered(written)
            return True

    def _failed(self, exc: StoreError, written: int) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._retry_wait = RETRY_FIRST
            self._written_in_outage = 0  # what this call wrote before the failure was not late
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("vk/store/outages")
            logger.warning(
                "Database unavailable, %(n)d item(s) waiting; retrying with backoff (%(wait)g s, "
                "doubling up to %(max)g s): %(error)s",
                {"n": self.buffered, "wait": self._retry_wait, "max": RETRY_MAX, "error": exc},
            )
        else:
            self._written_in_outage += written
            self._retry_wait = min(self._retry_wait * 2, RETRY_MAX)
            logger.debug(
                "Database still unavailable after %(s).1f s, %(n)d item(s) waiting; next "
                "attempt in %(wait)g s: %(error)s",
                {"s": now - self._down_since, "n": self.buffered, "wait": self._retry_wait,
                 "error": exc},
            )  # fmt: skip
        self._next_attempt = now + self._retry_wait

    def _recovered(self, written: int) -> None:
        assert self._down_since is not None
        seconds = time.monotonic() - self._down_since
        stats = self.crawler.stats
        assert stats is not None
        total = stats.get_value("vk/store/outage_seconds", 0.0) + seconds
        stats.set_value("vk/store/outage_seconds", round(total, 3))
        written += self._written_in_outage
        spilled = ""
        if self._spilling:
            spilled = (
                f"; {sum(self.unsaved.values())} item(s) that did not fit in the buffer "
                f"are in {self.unsaved_path}"
            )
        logger.info(
            "Database back after %(s).1f s; %(n)d item(s) written%(spilled)s",
            {"s": seconds, "n": written, "spilled": spilled},
        )
        self._down_since = None
        self._spilling = False

    def _spill(self, rows: list[VkPost | VkComment]) -> None:
        """The buffer is full: the rows go to the unsaved file now."""
        if not self._spilling:
            self._spilling = True
            logger.warning(
                "Database unavailable and %(n)d item(s) buffered (VK_STORE_MAX_BUFFER): "
                "further items go to %(path)s until it is back",
                {"n": self.buffered, "path": self._unsaved_file_path()},
            )
        self._append_unsaved(rows)

    def _spill_excess(self) -> None:
        """The buffer holds more than the bound: the newest rows beyond it go to the file."""
        excess = self.buffered - self.max_buffer
        if excess <= 0:
            return
        spilled: list[VkPost | VkComment] = [*self.comments[-excess:]]
        del self.comments[len(self.comments) - len(spilled) :]
        if (more := excess - len(spilled)) > 0:
            spilled += self.posts[-more:]
            del self.posts[-more:]
        self._spill(spilled)

    def _unsaved_file_path(self) -> Path:
        if self.unsaved_path is None:
            task_id = self.task_id
            name = f"vkscraper-unsaved-task{task_id}-{int(time.time())}.jsonl"
            self.unsaved_path = self.unsaved_dir / name
        return self.unsaved_path

    def _append_unsaved(self, items: list[VkPost | VkComment]) -> None:
        if self._unsaved_fh is None:
            path = self._unsaved_file_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._unsaved_fh = path.open("a", encoding="utf-8")
        for item in items:
            # The class name, as the dump always had it (it overrides the items' own "kind").
            kind = type(item).__name__
            row = {**asdict(item), "kind": kind}
            self._unsaved_fh.write(json.dumps(row, ensure_ascii=False, default=_json_default))
            self._unsaved_fh.write("\n")
            self.unsaved[kind] += 1
        self._unsaved_fh.flush()  # on disk as it comes: a crash loses none of it
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("vk/store/unsaved_items", len(items))

    async def close_spider(self) -> None:
        await self._periodic.stop()
        if self._writer is not None:
            await self._writer
        for attempt in range(CLOSE_ATTEMPTS):
            if await self._write(force=True):
                break
            if attempt + 1 < CLOSE_ATTEMPTS:
                await asyncio.sleep(1 + attempt)
        else:
            self._append_unsaved([*self.posts, *self.comments])
            self.posts.clear()
            self.comments.clear()
        if self._unsaved_fh is not None:
            self._unsaved_fh.close()
            self._unsaved_fh = None
        if self.unsaved_path is None:
            return
        posts, comments = self.unsaved["VkPost"], self.unsaved["VkComment"]
        logger.critical(
            "The database was unavailable: %(n)d unsaved item(s) (%(p)d post(s), %(c)d "
            "comment(s)) are in %(path)s",
            {"n": posts + comments, "p": posts, "c": comments, "path": self.unsaved_path},
        )
        await self.crawler.signals.send_catch_log_async(
            task_error,
            message=f"database unavailable: {posts} post(s) and {comments} comment(s) were "
            f"saved to {self.unsaved_path} instead",
            group=None,
            post=None,
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")
