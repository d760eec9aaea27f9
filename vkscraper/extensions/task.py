"""VkTaskExtension: the task's lifecycle and live metrics, and the owner of the store.

On ``spider_opened`` it opens the store (``DATABASE_URL``; migrations applied), loads or
creates the task named by the spider's arguments and begins a run (``in_progress``): an
unfinished task resumes, skipping the groups an earlier run finished; a finished one starts a
fresh run (see :mod:`vkscraper.store.tasks`).

While the crawl runs it knows, per group, which requests and pages are still outstanding
(:class:`~vkscraper.extensions._tracking.GroupTracker`, fed by the spider and by Scrapy's signals:
a page is through the item pipelines on ``item_scraped``, ``item_dropped`` — a user's filter — or
``item_error``, a task error that fails the group). It announces the store and the task to the
other components (:data:`vkscraper.signals.task_opened`) and records what they report
(:data:`vkscraper.signals.task_error`). When nothing of a group is left, it asks the pipelines
to write what they buffer (:data:`vkscraper.signals.flush_requested`) and only then records
the group as done, marks the comments its complete posts no longer have as deleted, and
refreshes the group's stored-row counts. The groups in progress are also refreshed every
``VK_METRICS_INTERVAL`` seconds; the whole task is recounted once at close. On
``spider_closed`` it marks the task ``completed`` or ``failed`` (failed iff it has errors) —
except after a shutdown (Ctrl-C), which leaves it ``in_progress`` and resumable.

In worker mode (:class:`~vkscraper.distributed.extension.VkDistributed`) the same happens per
worker for the groups it crawls; only the crawl the coordinator names finalizes the task (the
other crawls write their errors and request counts and leave).

Every database call runs in a thread: the reactor never waits on the database. Errors that
cannot be written (database down) are kept and written later; at close they go to the log.

Settings: ``DATABASE_URL``, ``VK_METRICS_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import CloseSpider
from scrapy.utils.asyncio import run_in_thread

from vkscraper import signals as vk_signals
from vkscraper._periodic import Periodic
from vkscraper.cli import exitcodes
from vkscraper.distributed.extension import VkDistributed
from vkscraper.exceptions import StoreError
from vkscraper.extensions._tracking import GroupTracker
from vkscraper.items import VkPage
from vkscraper.store import Store, open_store
from vkscraper.store.tasks import group_key
from vkscraper.tokens.access import check_tokens, load_tokens, scrub
from vkscraper.vk.api import owner_id_for_group
from vkscraper.vk.grouprefs import GroupRef, parse_group_ref

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

    from vkscraper.items import VkGroup

logger = logging.getLogger(__name__)

# After these close reasons the task is finished: "finished", and our own "vk_*" reasons, which
# come with a task error saying why. "shutdown" (Ctrl-C) leaves it resumable, and so does
# "vk_no_token" (no token usable: the operator fixes the tokens and resumes; in worker mode it
# ends the task for every worker, see _resumable); any other reason (closespider_*,
# cancelled …) finishes it with an error naming the reason.
RESUMABLE_REASONS = {"shutdown", "vk_no_token"}
# Resumable closes that need the operator: an alert says why (VK_ALERT_ON "stopped").
STOPPED = {"vk_no_token": "no usable access token left (revoked, expired or refused by VK)"}


def _finished(reason: str) -> bool:
    return reason == "finished" or reason.startswith("vk_")


def job_settings(argv: Sequence[str], tokens: Sequence[str]) -> dict[str, str]:
    """The ``-s NAME=VALUE`` settings of this scrapyd job's command line (``setting=`` of
    scrapyd's own ``schedule.json`` as much as of our ``collect.json``) that a task may carry,
    recorded in ``tasks.job_settings``: a later run of the task without settings of its own
    runs as this job did. The command line, not cmdline-priority settings: the add-on sets
    some of those itself. Never a secret: names the service refuses and values holding the
    token are left out (the service checks the others again when it reuses them)."""
    # The service's own rule (imported here: the service module imports the reactor, and
    # this function runs once the crawl's reactor is installed).
    from vkscraper.service.core import CLIENT_SETTINGS, ENVIRONMENT_ONLY

    allowed = (CLIENT_SETTINGS | {"VK_API_URL"}) - set(ENVIRONMENT_ONLY)
    out: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        if arg in ("-s", "--set"):
            pair = next(args, "")
        elif arg.startswith("--set="):
            pair = arg[len("--set=") :]
        elif arg.startswith("-s") and len(arg) > 2 and not arg.startswith("--"):
            pair = arg[2:]
        else:
            continue
        name, sep, value = pair.partition("=")
        if sep and name in allowed and not any(t and t in value for t in tokens):
            out[name] = value
    return out


class VkTaskExtension:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.database_url: str | None = crawler.settings.get("DATABASE_URL") or None
        self.interval = crawler.settings.getfloat("VK_METRICS_INTERVAL")
        self.store: Store | None = None
        self.task_id: int | None = None
        self.refs: list[GroupRef] = []
        self.done_groups: set[str] = set()  # keys of groups an earlier run finished
        self.resuming = False
        self.segment_started: datetime | None = None
        self.tracker = GroupTracker()
        self.coordinator: VkDistributed | None = None  # worker mode only
        self._settling: set[int] = set()  # groups waiting for their items to be written
        self._background: set[asyncio.Task[Any]] = set()
        self._unsent_errors: list[tuple[str, str | None]] = []
        self._recorded: set[tuple[str | None, str]] = set()  # (group key, message)
        self._errors_lock = asyncio.Lock()  # one sender at a time: each error written once
        self._tokens = load_tokens()
        self._periodic = Periodic(self._refresh, self.interval)
        # A progress line in the crawl log, as often as Scrapy's own "Crawled N pages" line.
        self._progress = Periodic(
            self._log_progress, crawler.settings.getfloat("LOGSTATS_INTERVAL")
        )
        self._last_progress: tuple[float, int] | None = None
        self._requests_sent = 0  # of vk/answers, added to metrics.requests
        # The crawl could not do its job (a fatal error, the database, unfinished groups…):
        # the exit status says so (vkscraper.cli.exitcodes); set at close.
        self.incomplete = False
        self.exit_code = exitcodes.NOT_DONE
        connect = crawler.signals.connect
        connect(self.spider_opened, signal=signals.spider_opened)
        connect(self.spider_closed, signal=signals.spider_closed)
        connect(self._request_scheduled, signal=signals.request_scheduled)
        connect(self._request_dropped, signal=signals.request_dropped)
        connect(self._response_received, signal=signals.response_received)
        connect(self._spider_error, signal=signals.spider_error)
        # A page is through the item pipelines when one of these is sent for it.
        connect(self._page_scraped, signal=signals.item_scraped)
        connect(self._page_dropped, signal=signals.item_dropped)
        connect(self._page_failed, signal=signals.item_error)
        connect(self._task_error, signal=vk_signals.task_error)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # lifecycle

    async def spider_opened(self, spider: Spider) -> None:
        # Refused before anything is written: no task is created for a crawl that cannot run.
        if problem := check_tokens(self._tokens):
            logger.error("%(error)s", {"error": problem})
            raise CloseSpider("vk_bad_arguments")
        self.coordinator = self.crawler.get_extension(VkDistributed)
        try:
            self.store = await run_in_thread(open_store, self.database_url)
            if self.coordinator is not None:
                self.store.require_multiprocess("worker mode")
            await run_in_thread(self.store.migrate)
            if self.coordinator is not None and not self.coordinator.opener:
                await run_in_thread(self._join_task, getattr(spider, "task_id_arg", None))
            else:
                await run_in_thread(
                    self._open_task,
                    getattr(spider, "task_id_arg", None),
                    getattr(spider, "group_refs", None),
                    getattr(spider, "_job", None),  # scrapyd's job id (`-a _job=…`)
                )
        except StoreError as exc:
            logger.error("Cannot use the database: %(error)s", {"error": exc})
            raise CloseSpider("vk_store_unavailable") from exc
        except ValueError as exc:  # unknown task id and the like
            logger.error("%(error)s", {"error": exc})
            raise CloseSpider("vk_bad_arguments") from exc
        if self.coordinator is not None and not self.coordinator.opener:
            logger.info("Task %(task)s: joined (worker mode)", {"task": self.task_id})
        else:
            self._log_opened()
        began = self.coordinator is None or self.coordinator.opener
        await self.crawler.signals.send_catch_log_async(
            vk_signals.task_opened, store=self.store, task_id=self.task_id, run_began=began
        )
        self._periodic.start()
        self._progress.start()

    def _log_opened(self) -> None:
        logger.info(
            "Task %(task)s in progress: %(n)d group reference(s)%(resume)s",
            {
                "task": self.task_id,
                "n": len(self.refs),
                "resume": f", {len(self.done_groups)} done earlier" if self.resuming else "",
            },
        )

    def _open_task(
        self, task_id: int | None, refs: list[GroupRef] | None, job_id: str | None = None
    ) -> None:
        assert self.store is not None
        store = self.store
        if task_id is None:
            refs = list(refs) if refs is not None else store.active_group_refs()
            if not refs:
                raise ValueError(
                    "no groups to crawl: pass -a groups=… or add some with "
                    "`python -m vkscraper groups add …`"
                )
            task_id = store.create_task([r.group_id or str(r.screen_name) for r in refs])
        elif (existing := store.get_task(task_id)) is None:
            raise ValueError(f"task {task_id} does not exist")
        elif not existing.groups:
            raise ValueError(f"task {task_id} has no groups to crawl")
        settings = job_settings(sys.argv, self._tokens) if job_id is not None else None
        task = store.begin_run(task_id, job_id, settings)
        self.task_id = task_id
        # When this process's part of the run began (database clock): a post it crawls
        # completely has lost the comments not seen since, also on a resume.
        self.segment_started = task.updated_at
        self.resuming = bool(task.metrics.get("groups"))
        self.refs = [
            GroupRef(group_id=g) if isinstance(g, int) else GroupRef(screen_name=g)
            for g in task.groups
        ]
        groups = task.metrics.get("groups") or {}
        self.done_groups = {k for k, v in groups.items() if v.get("status") == "done"}

    def _join_task(self, task_id: int | None) -> None:
        """Worker mode, a task another worker opened: take part without beginning a run."""
        assert self.store is not None
        task = self.store.get_task(task_id) if task_id is not None else None
        if task is None:
            raise ValueError(f"task {task_id} does not exist")
        self.task_id = task_id
        # Comments of a complete post not seen since the run began are gone from VK.
        self.segment_started = task.started_at or task.updated_at

    async def spider_closed(self, spider: Spider, reason: str) -> None:
        await self._progress.stop()
        await self._periodic.stop()
        await self._drain()
        if reason == "vk_bad_arguments":
            self.exit_code = exitcodes.BAD_ARGUMENTS
        elif reason == "shutdown":
            self.exit_code = exitcodes.INTERRUPTED
        elif reason != "finished":
            self.incomplete = True
        if self.store is None or self.task_id is None:
            if self._unsent_errors:
                logger.critical("Errors not recorded in any task: %(errors)s",
                                {"errors": [m for m, _ in self._unsent_errors]})  # fmt: skip
            if self.store is not None:
                await run_in_thread(self.store.close)
            return
        outcome: str | None = None  # how the run ended, when this crawl ended it
        try:
            await self._finish_settled()  # groups whose rows a last flush may have stored
            if self.coordinator is not None:
                final = await self.coordinator.task_closing(reason)
                if final is None:
                    await self._close_part(reason)  # worker mode: not this crawl's to finalize
                    return
                if final == "finished":  # every group is done, whatever stopped this crawl
                    reason, self.incomplete = final, False
            if not _finished(reason) and not self._resumable(reason):
                self._unsent_errors.append((f"crawl stopped early: {reason}", None))
            if reason == "finished" and (unfinished := await self._completeness_errors()):
                self.incomplete = True
                for message in unfinished:
                    logger.error("Task %(task)s: %(error)s", {"task": self.task_id,
                                                              "error": message})  # fmt: skip
                    self._unsent_errors.append((message, None))
            await self._send_errors()
            await self._send_requests()
            await run_in_thread(self.store.refresh_counts, self.task_id)
            if self._resumable(reason):
                outcome = "interrupted"
                if reason in STOPPED:
                    # Resumable, but nothing resumes it until the operator acts: alert.
                    await run_in_thread(
                        self.store.record_task_stopped, self.task_id, STOPPED[reason]
                    )
                    self.crawler.signals.send_catch_log(
                        vk_signals.task_finished, task_id=self.task_id, status="stopped"
                    )
                logger.warning(
                    "Task %(task)s left in_progress (%(reason)s); resume it with "
                    "`scrapy crawl vk -a task_id=%(task)s`",
                    {"task": self.task_id, "reason": reason},
                )
            else:
                status = await run_in_thread(self.store.finish_task, self.task_id)
                outcome = status
                if self.coordinator is not None:
                    await self._call_quietly(self.coordinator.finalized)
                self.crawler.signals.send_catch_log(
                    vk_signals.task_finished, task_id=self.task_id, status=status
                )
                logger.info("Task %(task)s %(status)s", {"task": self.task_id, "status": status})
                if self.incomplete:
                    self.exit_code = exitcodes.NOT_DONE
                elif status == "failed":
                    self.exit_code = exitcodes.TARGET_ERRORS
                else:
                    self.exit_code = exitcodes.OK
        except StoreError as exc:
            self.exit_code = exitcodes.NOT_DONE
            logger.critical(
                "Task %(task)s could not be finished in the database (%(error)s); "
                "unrecorded errors: %(errors)s",
                {"task": self.task_id, "error": exc,
                 "errors": [m for m, _ in self._unsent_errors]},
            )  # fmt: skip
        finally:
            await self.crawler.signals.send_catch_log_async(
                vk_signals.task_closing, store=self.store, task_id=self.task_id, outcome=outcome
            )
            await run_in_thread(self.store.close)

    def _resumable(self, reason: str) -> bool:
        """The task stays ``in_progress`` after this close. A worker out of tokens has ended
        the task for every worker (VkDistributed.task_closing): that end is final."""
        return reason == "shutdown" or (reason in RESUMABLE_REASONS and self.coordinator is None)

    async def _close_part(self, reason: str) -> None:
        """Worker mode: this crawl's part of the task is over, the task goes on (or is
        finalized) elsewhere; what it holds back is written now."""
        await self._send_errors()
        await self._send_requests()
        if self._unsent_errors:
            self.exit_code = exitcodes.NOT_DONE
            logger.critical("Errors not recorded in task %(task)s: %(errors)s",
                            {"task": self.task_id,
                             "errors": [m for m, _ in self._unsent_errors]})  # fmt: skip
        elif reason == "finished":
            self.exit_code = exitcodes.OK
        logger.info("Task %(task)s: this worker's part is over (%(reason)s)",
                    {"task": self.task_id, "reason": reason})  # fmt: skip

    @staticmethod
    async def _call_quietly(func: Any) -> None:
        try:
            await run_in_thread(func)
        except Exception as exc:  # redis.RedisError, OSError: the task row is what counts
            logger.error("Could not mark the task finalized in Redis: %(error)s", {"error": exc})

    async def _completeness_errors(self) -> list[str]:
        """A crawl that ran out of requests is only complete if every group finished."""
        assert self.store is not None and self.task_id is not None
        task = await run_in_thread(self.store.get_task, self.task_id)
        if task is None:
            return []
        groups = task.metrics.get("groups") or {}
        unfinished = [g for g in task.groups if not (groups.get(group_key(g)) or {}).get("done")]
        if not unfinished:
            return []
        details = []
        for g in unfinished:
            if isinstance(g, int) and g in self._settling:
                causes = ["its rows could not all be written to the database"]
            elif isinstance(g, int):
                causes = self.tracker.causes(g)
            else:
                causes = ["never resolved to a group id"]
            details.append(f"{g} ({'; '.join(causes)})")
        return [f"{len(unfinished)} group(s) did not finish: {', '.join(details)}"]

    # what the spider reports

    def new_request(self, group: int, post: int | None = None) -> int:
        """Count a request the spider is about to yield; the serial goes into its meta."""
        return self.tracker.add_request(group, post)

    def new_post(self, group: int, post: int) -> None:
        self.tracker.add_post(group, post)

    def new_item(self, group: int) -> None:
        """Count an item the spider is about to yield."""
        self.tracker.add_item(group)

    def request_done(self, meta: Mapping[str, Any], *, failed: bool = False) -> None:
        """The callback or errback of the request with this meta is over; its group may be
        finished now."""
        serial = meta.get("vk_serial")
        if serial is None:
            return
        done = self.tracker.request_failed if failed else self.tracker.request_done
        group = done(serial)
        if group is not None:
            self._check(group)

    def item_done(self, group: int) -> None:
        """A page of the group is through the item pipelines, or will never be yielded."""
        self.tracker.item_done(group)
        self._check(group)

    def page_lost(self, page: VkPage) -> None:
        """A page counted for its group will never reach the item pipelines (its callback's
        output was abandoned): its rows are missing, so the group fails (and never counts as
        done, which a resume would skip)."""
        self.tracker.fail(page.group_id, page.post_id)
        where = f"group {page.group_id}" + (f" post {page.post_id}" if page.post_id else "")
        message = f"{where}: a page of VK's answer never reached the item pipelines"
        self._spawn(self.add_error(message, group=page.group_id, post=page.post_id))
        self.item_done(page.group_id)

    def _page_scraped(self, item: Any) -> None:
        if isinstance(item, VkPage):
            assert self.crawler.stats is not None
            kind = "post" if item.kind == "posts" else "comment"
            self.crawler.stats.inc_value(f"vk/items/{kind}", len(item.rows))
            self.item_done(item.group_id)

    def _page_dropped(self, item: Any) -> None:
        # A user's filter dropped the page on purpose: done, not a failure.
        if isinstance(item, VkPage):
            self.item_done(item.group_id)

    def _page_failed(self, item: Any, failure: Failure) -> None:
        if isinstance(item, VkPage):
            error = f"group {item.group_id}: an item pipeline failed: {failure.value!r}"
            self._spawn(self.add_error(error, group=item.group_id))
            self.item_done(item.group_id)

    async def _task_error(
        self, message: str, group: int | str | None = None, post: int | None = None
    ) -> None:
        await self.add_error(message, group=group, post=post)

    async def add_error(
        self, message: str, *, group: int | str | None = None, post: int | None = None
    ) -> None:
        """Record an error in the task (and log it); a group's error fails that group.

        The same message for the same group is recorded once (a broken pipeline fails every
        item alike); repeats are only counted (stat ``vk/task_errors_repeated``)."""
        message = scrub(message, self._tokens)
        assert self.crawler.stats is not None
        if isinstance(group, int):
            self.tracker.fail(group, post)
        key = None if group is None else group_key(group)
        if (key, message) in self._recorded:
            self.crawler.stats.inc_value("vk/task_errors_repeated")
            return
        self._recorded.add((key, message))
        logger.error("Task %(task)s: %(error)s", {"task": self.task_id, "error": message})
        self.crawler.stats.inc_value("vk/task_errors")
        self._unsent_errors.append((message, key))
        await self._send_errors()

    async def resolve_groups(self, groups: list[VkGroup], resolved: dict[str, int]) -> None:
        """Save what ``groups.getById`` said and put the ids in the task's group list."""
        assert self.store is not None and self.task_id is not None
        await self._call(self.store.save_resolved_groups, groups)
        await self._call(self.store.resolve_task_groups, self.task_id, resolved)

    async def deactivate(self, ref: str, reason: str) -> None:
        """Take a community VK reports unknown or deleted off the groups list (if it is on it):
        a plain crawl stops failing on it; ``groups add`` puts it back."""
        assert self.store is not None
        group = parse_group_ref(ref)
        if await self._call(self.store.deactivate_groups, {group: reason}):
            logger.warning(
                "Group %(ref)s taken off the groups list: %(reason)s",
                {"ref": ref, "reason": reason},
            )

    async def restart_group(self, group: int | str, *, always: bool = False) -> None:
        """A group is about to be crawled: forget what an interrupted run recorded for it
        (``always``: a worker's entry, perhaps replayed after another worker died)."""
        if isinstance(group, int):
            self.tracker.restart(group)  # a group finished here before can finish again
        if self.resuming or always:
            assert self.store is not None
            await self._call(self.store.reset_group, self.task_id, group)

    async def group_started(self, group_id: int, posts: int, comments: int) -> None:
        assert self.store is not None
        await self._call(
            self.store.add_progress,
            self.task_id,
            group_id=group_id,
            posts_expected=posts,
            comments_expected=comments,
            group_status="in_progress",
            # Set, not added: a resumed group keeps its earlier counts until now.
            replace_expected=True,
        )

    async def group_over(self, group: int | str, status: str) -> None:
        """A group (or an unresolvable reference) that needs no request: finished now."""
        if isinstance(group, int):
            self.tracker.finish(group)
        await self._record_finished(group, status)

    # group completion

    def _check(self, group: int) -> None:
        # Group 0 holds the groups.getById requests: not a group of the task.
        if group > 0 and self.tracker.settled(group) and group not in self._settling:
            self._settling.add(group)
            self._spawn(self._finish_settled())

    async def _finish_settled(self) -> None:
        """Write the buffered items, then record the settled groups as done."""
        ready = sorted(self._settling)
        if not ready or not await self._flush():
            return  # kept: the next flush or the close tries again
        for group in ready:
            if group not in self._settling:
                continue  # another run of this method got it
            self._settling.discard(group)
            if not self.tracker.settled(group):
                continue  # restarted meanwhile (worker mode): it settles again later
            self.tracker.finish(group)
            status = "failed" if self.tracker.failed(group) else "done"
            complete = self.tracker.complete_posts(group)
            if complete and self.store is not None:
                owner = owner_id_for_group(group)
                await self._call(self.store.mark_vanished, self.segment_started, owner, complete)
            await self._record_finished(group, status)

    async def _record_finished(self, group: int | str, status: str) -> None:
        assert self.store is not None
        await self._call(
            self.store.add_progress,
            self.task_id,
            group_id=group,
            group_status=status,
            group_done=True,
        )
        if isinstance(group, int):
            await self._call(self.store.refresh_counts, self.task_id, [group])
            await self.crawler.signals.send_catch_log_async(vk_signals.group_finished, group=group)

    async def _flush(self) -> bool:
        results = await self.crawler.signals.send_catch_log_async(vk_signals.flush_requested)
        return all(result is True for _, result in results)

    def _spawn(self, coro: Any) -> None:
        future = asyncio.ensure_future(coro)
        self._background.add(future)  # the event loop only keeps weak references to them
        future.add_done_callback(self._background.discard)

    async def _drain(self) -> None:
        while self._background:
            await asyncio.wait(list(self._background))

    # Scrapy signals

    def _request_scheduled(self, request: Request) -> None:
        for serial in _serials(request.meta):
            self.tracker.scheduled(serial)

    def _response_received(self, request: Request) -> None:
        # VK's answers only: worker mode's entries are answered locally (data: URLs).
        if request.meta.get("vk_method") is not None:
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("vk/answers")

    def _request_dropped(self, request: Request) -> None:
        groups = {self.tracker.dropped(serial) for serial in _serials(request.meta)}
        groups.discard(None)
        if groups:
            logger.error("The scheduler dropped %(request)s", {"request": request})
        for group in sorted(g for g in groups if g is not None):
            self._check(group)

    def _spider_error(self, failure: Failure, response: Response) -> None:
        # A callback crashed: its request ends here, failed (the rest of its output is lost).
        serials = _serials(response.meta)
        groups = {self.tracker.request_failed(serial) for serial in serials}
        groups.discard(None)
        if serials and not groups and response.request is not None:
            # An execute whose units were all handled when it crashed: still a bug that the
            # task must show, against the groups it was for.
            groups = {u.group_id for u in response.request.cb_kwargs.get("units", ())}
        message = f"{describe_request(response.request)}: callback error: {failure.value!r}"
        for group in sorted(g for g in groups if g is not None):
            self._spawn(self.add_error(message, group=group))
            self._check(group)

    # database plumbing

    async def _send_errors(self) -> None:
        if self.store is None or self.task_id is None:
            return  # kept; spider_closed logs them if they can never be written
        async with self._errors_lock:
            while self._unsent_errors:
                message, key = self._unsent_errors[0]
                try:
                    await run_in_thread(self.store.add_error, self.task_id, message, key)
                except StoreError as exc:
                    logger.error("Could not record a task error yet: %(error)s", {"error": exc})
                    return
                self._unsent_errors.pop(0)

    async def _send_requests(self) -> None:
        """Add the VK answers received since the last call to the run's metrics (a delta, so
        several processes of one run add up). Answers, not ``downloader/request_count``:
        that one counts requests when they join the download slot's queue, ahead of the
        pace, so a rate computed from it would read above the limit."""
        assert self.crawler.stats is not None and self.task_id is not None
        stats = self.crawler.stats
        total = stats.get_value("vk/answers", 0)
        if total > self._requests_sent and self.store is not None:
            delta = total - self._requests_sent
            self._requests_sent = total  # before the await: a concurrent call adds none twice
            try:
                await run_in_thread(self.store.add_requests, self.task_id, delta)
            except StoreError:
                self._requests_sent -= delta  # sent with the next one; the outage is logged

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Progress is best effort: a failed update is logged, the final refresh repairs it."""
        try:
            return await run_in_thread(func, *args, **kwargs)
        except StoreError as exc:
            # During an outage the store has logged it once; the final refresh repairs this.
            down = self.store is not None and self.store.down_since is not None
            log = logger.debug if down else logger.error
            log("Could not update task progress: %(error)s", {"error": exc})
            return None

    async def _log_progress(self) -> None:
        if self.store is None or self.task_id is None:
            return
        try:
            task = await run_in_thread(self.store.get_task, self.task_id)
        except StoreError:
            return  # the database outage is logged where it happens
        if task is None:
            return
        m = task.metrics
        assert self.crawler.stats is not None
        now = time.monotonic()
        requests = self.crawler.stats.get_value("downloader/request_count", 0)
        rate = 0.0
        if self._last_progress is not None:
            then, before = self._last_progress
            rate = (requests - before) / max(now - then, 1e-9)
        self._last_progress = (now, requests)
        logger.info(
            "Task %(task)s: groups %(done)s/%(total)s done, posts %(posts)s/%(pe)s, "
            "comments %(comments)s/%(ce)s stored, %(rate).2f requests/s, %(errors)s error(s)",
            {
                "task": self.task_id,
                "done": m.get("groups_done", 0),
                "total": m.get("groups_total", 0),
                "posts": m.get("posts", 0),
                "pe": m.get("posts_expected", 0),
                "comments": m.get("comments", 0),
                "ce": m.get("comments_expected", 0),
                "rate": rate,
                "errors": len(m.get("errors") or []),
            },
        )

    async def _refresh(self) -> None:
        if self.store is None or self.task_id is None:
            return
        await self._send_errors()
        await self._send_requests()
        await self._finish_settled()  # groups held back by a failed flush
        active = self.tracker.open_groups()
        if active:
            await self._call(self.store.refresh_counts, self.task_id, active)


def _serials(meta: Mapping[str, Any]) -> list[int]:
    """The bookkeeping serials a request carries: its own, or its units' (execute)."""
    if (serial := meta.get("vk_serial")) is not None:
        return [serial]
    return list(meta.get("vk_serials") or ())


def describe_request(request: Request | None) -> str:
    """``wall.getComments group 11 post 2 thread 5``: a VK request, for errors and logs."""
    if request is None:
        return "a request"
    meta, ctx = request.meta, request.cb_kwargs
    if ctx.get("units"):  # an execute: what it was for
        units = ctx["units"]
        more = f" and {len(units) - 3} more" if len(units) > 3 else ""
        return f"execute of {', '.join(u.describe() for u in units[:3])}{more}"
    parts = [f"group {meta.get('vk_group_id')}"] if meta.get("vk_group_id") else []
    if ctx.get("refs"):
        parts.append(f"groups {', '.join(ctx['refs'])}")
    if ctx.get("post_id"):
        parts.append(f"post {ctx['post_id']}")
    if ctx.get("comment_id"):
        parts.append(f"thread {ctx['comment_id']}")
    return f"{meta.get('vk_method')} " + " ".join(parts)
