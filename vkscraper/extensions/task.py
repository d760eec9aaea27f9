"""VkTaskExtension: the task's lifecycle and live metrics, and the owner of the store.

On ``spider_opened`` it opens the store (``DATABASE_URL``; migrations applied), loads or
creates the task named by the spider's arguments and marks it ``in_progress``. While the crawl
runs it appends errors as they happen, records each group's expected counts and completion,
and refreshes the stored-row counts of a group when it finishes and of the groups in progress
every ``VK_METRICS_INTERVAL`` seconds (only their rows are counted: cheap on big tasks); the
whole task is recounted once at close. On ``spider_closed`` it marks the task ``completed``
or ``failed`` (failed iff it has errors) — except after a shutdown (Ctrl-C), which leaves
it ``in_progress`` and resumable.

Every database call runs in a thread: the reactor never waits on the database. Errors that
cannot be written (database down) are kept and written later; at close they go to the log.

Settings: ``DATABASE_URL``, ``VK_METRICS_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import CloseSpider
from scrapy.utils.asyncio import create_looping_call, run_in_thread

from vkscraper import defaults
from vkscraper.exceptions import StoreError
from vkscraper.grouprefs import GroupRef
from vkscraper.store import Store, open_store
from vkscraper.tokens import load_tokens, scrub

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Spider
    from scrapy.crawler import Crawler

    from vkscraper.items import VkGroup

logger = logging.getLogger(__name__)

# After these close reasons the task is finished: "finished", and our own "vk_*" reasons, which
# come with a task error saying why. "shutdown" (Ctrl-C) leaves it resumable; any other reason
# (closespider_*, cancelled …) finishes it with an error naming the reason.
RESUMABLE_REASONS = {"shutdown"}


def _finished(reason: str) -> bool:
    return reason == "finished" or reason.startswith("vk_")


class VkTaskExtension:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.database_url: str | None = crawler.settings.get("DATABASE_URL") or None
        self.interval = crawler.settings.getfloat(
            "VK_METRICS_INTERVAL", defaults.VK_METRICS_INTERVAL
        )
        self.store: Store | None = None
        self.task_id: int | None = None
        self.refs: list[GroupRef] = []
        self.done_groups: set[int] = set()  # finished in an earlier run of this task
        # What an interrupted run already counted as expected for a group it started; a
        # resumed run replaces those numbers instead of adding them twice.
        self._counted: dict[int, tuple[int, int]] = {}
        # Groups being crawled: the periodic refresh counts only their rows.
        self._active: set[int] = set()
        self._unsent_errors: list[str] = []
        self._errors_lock = asyncio.Lock()  # one sender at a time: each error written once
        self._tokens = load_tokens()
        self._loop: Any = None
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # lifecycle

    async def spider_opened(self, spider: Spider) -> None:
        try:
            self.store = await run_in_thread(open_store, self.database_url)
            await run_in_thread(self.store.migrate)
            await run_in_thread(
                self._open_task,
                getattr(spider, "task_id_arg", None),
                getattr(spider, "group_refs", None),
            )
        except StoreError as exc:
            logger.error("Cannot use the database: %(error)s", {"error": exc})
            raise CloseSpider("vk_store_unavailable") from exc
        except ValueError as exc:  # unknown task id and the like
            logger.error("%(error)s", {"error": exc})
            raise CloseSpider("vk_bad_arguments") from exc
        logger.info(
            "Task %(task)s in progress: %(n)d group reference(s)",
            {"task": self.task_id, "n": len(self.refs)},
        )
        if self.interval > 0:
            self._loop = create_looping_call(spawn, self._refresh)
            self._loop.start(self.interval, now=False)

    def _open_task(self, task_id: int | None, refs: list[GroupRef] | None) -> None:
        assert self.store is not None
        store = self.store
        if task_id is not None:
            task = store.get_task(task_id)
            if task is None:
                raise ValueError(f"task {task_id} does not exist")
            self.refs = [
                GroupRef(group_id=g) if isinstance(g, int) else GroupRef(screen_name=g)
                for g in task.groups
            ]
            if task.status == "in_progress":  # resuming: skip groups an earlier run finished
                for gid, info in (task.metrics.get("groups") or {}).items():
                    if info.get("status") == "done":
                        self.done_groups.add(int(gid))
                    else:
                        counted = (info.get("posts_expected", 0), info.get("comments_expected", 0))
                        self._counted[int(gid)] = counted
        else:
            self.refs = list(refs) if refs is not None else store.active_group_refs()
            task_id = store.create_task([r.group_id or str(r.screen_name) for r in self.refs])
        self.task_id = task_id
        store.start_task(task_id)
        if not self.refs:
            store.add_error(
                task_id,
                "no groups to crawl: pass -a groups=… or add some with "
                "`python -m vkscraper groups add …`",
            )

    async def spider_closed(self, spider: Spider, reason: str) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.store is None or self.task_id is None:
            if self._unsent_errors:
                logger.critical("Errors not recorded in any task: %(errors)s",
                                {"errors": self._unsent_errors})  # fmt: skip
            return
        try:
            if not _finished(reason) and reason not in RESUMABLE_REASONS:
                self._unsent_errors.append(f"crawl stopped early: {reason}")
            if reason == "finished":
                self._unsent_errors.extend(await self._completeness_errors())
            await self._send_errors()
            await run_in_thread(self.store.refresh_counts, self.task_id)
            if reason in RESUMABLE_REASONS:
                logger.warning(
                    "Task %(task)s left in_progress (%(reason)s); resume it with "
                    "`scrapy crawl vk -a task_id=%(task)s`",
                    {"task": self.task_id, "reason": reason},
                )
            else:
                status = await run_in_thread(self.store.finish_task, self.task_id)
                logger.info("Task %(task)s %(status)s", {"task": self.task_id, "status": status})
        except StoreError as exc:
            logger.critical(
                "Task %(task)s could not be finished in the database (%(error)s); "
                "unrecorded errors: %(errors)s",
                {"task": self.task_id, "error": exc, "errors": self._unsent_errors},
            )
        finally:
            await run_in_thread(self.store.close)

    async def _completeness_errors(self) -> list[str]:
        """A crawl that ran out of requests is only complete if every group finished."""
        assert self.store is not None and self.task_id is not None
        errors = []
        stats = self.crawler.stats
        assert stats is not None
        if failures := stats.get_value("spider_exceptions/count", 0):
            errors.append(f"{failures} callback error(s) in the spider; see the log")
        task = await run_in_thread(self.store.get_task, self.task_id)
        if task is not None:
            groups = task.metrics.get("groups") or {}
            unfinished = [g for g in task.groups if not (groups.get(str(g)) or {}).get("done")]
            if unfinished:
                ids = ", ".join(str(g) for g in unfinished)
                errors.append(f"{len(unfinished)} group(s) did not finish: {ids}")
        return errors

    # progress, called by the spider and the store pipeline

    async def add_error(self, message: str) -> None:
        message = scrub(message, self._tokens)
        logger.error("Task %(task)s: %(error)s", {"task": self.task_id, "error": message})
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("vk/task_errors")
        self._unsent_errors.append(message)
        await self._send_errors()

    async def _send_errors(self) -> None:
        if self.store is None or self.task_id is None:
            return  # kept; spider_closed logs them if they can never be written
        async with self._errors_lock:
            while self._unsent_errors:
                try:
                    await run_in_thread(self.store.add_error, self.task_id, self._unsent_errors[0])
                except StoreError as exc:
                    logger.error("Could not record a task error yet: %(error)s", {"error": exc})
                    return
                self._unsent_errors.pop(0)

    async def save_groups(self, groups: list[VkGroup], group_ids: list[int]) -> None:
        assert self.store is not None and self.task_id is not None
        await self._call(self.store.save_resolved_groups, groups)
        await self._call(self.store.set_task_groups, self.task_id, group_ids)

    async def group_started(self, group_id: int, posts: int, comments: int) -> None:
        assert self.store is not None
        self._active.add(group_id)
        old_posts, old_comments = self._counted.pop(group_id, (0, 0))
        await self._call(
            self.store.add_progress,
            self.task_id,
            group_id=group_id,
            posts_expected=posts - old_posts,
            comments_expected=comments - old_comments,
            group_status="in_progress",
        )

    async def group_finished(self, group_id: int, status: str) -> None:
        assert self.store is not None
        await self._call(
            self.store.add_progress,
            self.task_id,
            group_id=group_id,
            group_status=status,
            group_done=True,
        )
        await self._call(self.store.refresh_counts, self.task_id, [group_id])
        self._active.discard(group_id)

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> None:
        """Progress is best effort: a failed update is logged, the final refresh repairs it."""
        try:
            await run_in_thread(func, *args, **kwargs)
        except StoreError as exc:
            logger.error("Could not update task progress: %(error)s", {"error": exc})

    async def _refresh(self) -> None:
        if self.store is not None and self.task_id is not None:
            await self._send_errors()
            if self._active:
                await self._call(self.store.refresh_counts, self.task_id, sorted(self._active))


_background: set[asyncio.Task[Any]] = set()


def spawn(func: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run a periodic coroutine without blocking the looping call that fires it."""
    task = asyncio.ensure_future(func())
    _background.add(task)  # the event loop only keeps weak references to tasks
    task.add_done_callback(_background.discard)


def get_task_extension(crawler: Crawler) -> VkTaskExtension:
    """The crawler's task extension; the vk spider and the store pipeline need it."""
    for ext in crawler.extensions.middlewares:
        if isinstance(ext, VkTaskExtension):
            return ext
    raise RuntimeError("VkTaskExtension is not enabled (EXTENSIONS); the vk spider needs it")
