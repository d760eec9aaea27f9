"""VkDistributed: one worker's part of a task in worker mode (``VK_DISTRIBUTED``).

Built for every crawl the worker runs (:mod:`vkscraper.distributed.worker`), one per task. It
takes the task's entries (one per group, see :mod:`vkscraper.distributed.workqueue`) while the
calls it has on hand would not fill its next requests
(:mod:`vkscraper.distributed._workload`) and it holds fewer than ``VK_WORKER_GROUPS`` unfinished
groups, acks an entry when the task extension reports its group finished (rows written, status
recorded), and keeps the crawl open while the task runs elsewhere: idle, it waits for an entry
in a blocking Redis call (``BLMOVE``, 2 s at a time)
— quiet, and a new entry starts within moments.

At close it tells the task extension whether this crawl finalizes the task: after its last
group (the ack that emptied ``pending``), or when the crawl stops early for a reason that ends
the task (a fatal token error); a stop (SIGTERM, Ctrl-C) puts its entries back instead. A task
ended elsewhere (cancelled through the HTTP service, collected again — a new run —, a fatal
error in another worker) closes this crawl within ``WAIT_SECONDS``, its unfinished groups put
back (a later run resumes); so does a task whose state Redis lost, which nobody finalizes:
the database keeps it ``in_progress``, resumable.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import DontCloseSpider, NotConfigured
from scrapy.utils.asyncio import run_in_thread

from vkscraper import signals as vk_signals
from vkscraper._internals import crawl_stopping
from vkscraper._periodic import Periodic
from vkscraper.distributed._workload import Workload

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler

    from vkscraper.distributed.workqueue import EntryQueue

logger = logging.getLogger(__name__)

WAIT_SECONDS = 2  # one blocking take at a time while idle


class VkDistributed:
    queue: EntryQueue  # set by VkScheduler when it opens

    def __init__(self, crawler: Crawler) -> None:
        s = crawler.settings
        if not s.getbool("VK_DISTRIBUTED"):
            raise NotConfigured
        self.crawler = crawler
        self.worker: str = s.get("VK_WORKER_ID")
        self.opener = s.get("VK_WORKER_ROLE") == "open"
        # "finalize": the worker that was to finalize the task died; this crawl only does that.
        self.finalizer = s.get("VK_WORKER_ROLE") == "finalize"
        self.max_groups = max(1, s.getint("VK_WORKER_GROUPS"))
        self.workload = Workload(crawler)
        self.held: dict[int, list[tuple[str, bytes]]] = {}  # group -> its entries taken
        self._unacked: list[tuple[str, bytes]] = []  # entries of finished groups
        self.closing = False
        self._waiter: asyncio.Task[Any] | None = None
        self._take_failed = False
        self._closer: asyncio.Future[Any] | None = None
        self._entries_made = self._entries_queued = 0
        self._resolved = self._opened = False
        # A task ended elsewhere (cancelled, a fatal error) stops this crawl within moments.
        self._watch = Periodic(self._check_ended, WAIT_SECONDS)
        crawler.signals.connect(self._watch.start, signal=signals.spider_opened)
        crawler.signals.connect(self._spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(self._group_finished, signal=vk_signals.group_finished)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    @property
    def task_id(self) -> int:
        return self.queue.task_queue.task_id

    # taking entries

    def room(self) -> bool:
        """Another group would be welcome: its calls are needed to fill the next requests."""
        return len(self.held) < self.max_groups and self.workload.room(self.held)

    def take(self) -> Request | None:
        """The next entry, if this worker has room for another group."""
        if self.closing or not self.room():
            return None
        try:
            request = self.queue.pop()
        except Exception as exc:  # redis.RedisError, OSError: the move may have happened
            self._lost_take(exc)
            return None
        if request is not None:
            self._taken(request)
        return request

    def _lost_take(self, exc: Exception) -> None:
        self._redis_failed(exc)
        self._take_failed = True  # an entry may sit in our owner list, unheld: _restore

    def _redis_failed(self, exc: Exception) -> None:
        logger.warning("Task %(task)s: Redis: %(error)s", {"task": self.task_id, "error": exc})

    def _restore(self) -> None:
        """After a take that failed: entries Redis moved to this worker but whose answer was
        lost go back to the queue (else this live worker would own them for good, and the
        task would never end). Not while a blocking take runs: its entry is not held yet."""
        if not self._take_failed or (self._waiter is not None and not self._waiter.done()):
            return
        held = [data for entries in self.held.values() for _, data in entries]
        held += [data for _, data in self._unacked]
        try:
            moved = self.queue.task_queue.restore(held)
        except Exception as exc:  # redis.RedisError, OSError: tried again on the next tick
            self._redis_failed(exc)
            return
        self._take_failed = False
        if moved:
            logger.warning(
                "Task %(task)s: %(n)d group(s) taken while Redis was failing went back to the "
                "queue",
                {"task": self.task_id, "n": moved},
            )

    def _taken(self, request: Request) -> None:
        meta = request.meta
        self.held.setdefault(meta["vk_group_id"], []).append(
            (meta["vk_entry"], meta["vk_entry_data"])
        )
        self.workload.taken(request)
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("vk/worker/entries_taken")
        self.crawler.stats.max_value("vk/worker/groups_held_max", len(self.held))
        logger.info(
            "Task %(task)s: took group %(group)s", {"task": self.task_id,
                                                     "group": meta["vk_group_id"]}
        )  # fmt: skip

    def _refill(self) -> int:
        """Take entries up to the limit and hand them to the engine (outside the scheduler's
        own pull: after an ack, or when one arrived during an idle wait)."""
        engine = self.crawler.engine
        taken = 0
        while engine is not None and engine.running and (request := self.take()) is not None:
            engine.crawl(request)
            taken += 1
        return taken

    def _spider_idle(self) -> None:
        try:
            self._ack_all()
            self._restore()
            over = not self._unacked and (
                self.finalizer or self.closing or self.queue.task_queue.done()
            )
            if not over and not self._refill() and (self._waiter is None or self._waiter.done()):
                self._waiter = asyncio.ensure_future(self._wait())
        except Exception as exc:  # redis.RedisError, OSError: keep waiting, try again
            self._redis_failed(exc)
            over = False
        if not over:
            raise DontCloseSpider

    async def _wait(self) -> None:
        """Idle: block in Redis (in a thread) until an entry comes or the task ends."""
        task_queue = self.queue.task_queue
        while not self.closing and self.room():
            try:
                data = await run_in_thread(task_queue.take, WAIT_SECONDS)
            except Exception as exc:  # redis.RedisError, OSError: the move may have happened
                self._lost_take(exc)
                return
            if data is not None:
                request = self.queue.entry(data)
                self._taken(request)
                engine = self.crawler.engine
                if engine is not None and engine.running and not self.closing:
                    engine.crawl(request)
                else:  # closing meanwhile: it goes back with the rest
                    await run_in_thread(task_queue.release)
                self._refill()
                return
            if await run_in_thread(task_queue.done):
                return

    async def _check_ended(self) -> None:
        self._ack_all()  # acks a Redis error held back
        self._restore()
        if self.closing or self.finalizer or not self.held:
            return  # idle, it closes by itself once the task is done
        engine = self.crawler.engine
        try:
            status = await run_in_thread(self.queue.task_queue.status)
        except Exception as exc:  # redis.RedisError, OSError: the next check tries again
            self._redis_failed(exc)
            return
        if status in ("opening", "open") or engine is None:
            return
        if status == "lost":
            # Not a cancel, not an end: the database keeps the task in_progress, resumable
            # (collected again, it resumes from the groups recorded done).
            logger.warning(
                "Task %(task)s: its state in Redis is gone (Redis restarted without its data?): "
                "closing; the task stays in_progress, collect it again to resume it",
                {"task": self.task_id},
            )
            reason = "redis_state_lost"
        else:
            logger.info(
                "Task %(task)s was ended elsewhere (cancelled, collected again, or a fatal "
                "error): closing",
                {"task": self.task_id},
            )
            reason = "cancelled"
        # Not awaited here: closing stops this very check and waits for it.
        self._closer = asyncio.ensure_future(engine.close_spider_async(reason=reason))

    # the task's progress

    def _group_finished(self, group: int) -> None:
        self._unacked.extend(self.held.pop(group, ()))
        self._ack_all()
        self._refill()

    def _ack_all(self) -> None:
        """Ack the entries of finished groups; one Redis cannot take now is tried again (on
        the next tick or idle), never dropped: unacked, it would hold the task open."""
        while self._unacked:
            entry_id, data = self._unacked[0]
            try:
                last = self.queue.task_queue.ack(entry_id, data)
            except Exception as exc:  # redis.RedisError, OSError
                logger.warning(
                    "Task %(task)s: could not acknowledge a finished group yet: %(error)s",
                    {"task": self.task_id, "error": exc},
                )
                return
            self._unacked.pop(0)
            if last:
                self.finalizer = True
                logger.info(
                    "Task %(task)s: its last group is done here; this worker finalizes it",
                    {"task": self.task_id},
                )

    def finalized(self) -> None:
        """The task extension finalized the task."""
        self.queue.task_queue.finalized()

    # opening the task (the opener only)

    def entry_made(self) -> None:
        """The spider yielded an entry (it reaches Redis a little later)."""
        self._entries_made += 1

    def entry_queued(self) -> None:
        """The scheduler pushed an entry into Redis."""
        self._entries_queued += 1
        self._maybe_opened()

    def resolved(self) -> None:
        """The spider resolved every group: every entry it will make is made."""
        self._resolved = True
        self._maybe_opened()

    def _maybe_opened(self) -> None:
        # Scrapy handles a callback's output concurrently: the spider's generator runs ahead
        # of the scheduler, so "every entry made" is not yet "every entry queued".
        if crawl_stopping(self.crawler):
            return  # stopped while opening: the next worker to take the task opens it
        if self._resolved and self._entries_queued >= self._entries_made and not self._opened:
            self._opened = True
            if self.queue.task_queue.opened():
                self.finalizer = True  # nothing to crawl (every group done or unresolvable)

    async def task_closing(self, reason: str) -> str | None:
        """The crawl is closing. Returns the reason to finalize the task with when this crawl
        finalizes it, else None (its part is over; the task goes on or ends elsewhere)."""
        self.closing = True
        task_queue = self.queue.task_queue
        await self._watch.stop()
        if self._waiter is not None:
            await asyncio.wait([self._waiter])
        self._ack_all()
        if self.finalizer:
            return "finished"  # every group is done, whatever stops this crawl now
        released = await run_in_thread(task_queue.release)
        if released:
            logger.info(
                "Task %(task)s: %(n)d group(s) not finished here went back to the queue",
                {"task": task_queue.task_id, "n": released},
            )
        if reason in ("finished", "shutdown"):
            return None
        # Any other end (a fatal token error…) ends the task for every worker.
        return reason if await run_in_thread(task_queue.claim) else None
