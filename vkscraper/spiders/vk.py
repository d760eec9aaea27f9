"""The ``vk`` spider: groups → their newest posts → every comment and reply.

    scrapy crawl vk -a groups=apiclub,club1,https://vk.com/somegroup,42
    scrapy crawl vk -a task_id=17      # run or resume an existing task
    scrapy crawl vk                    # every active group of the groups table

Flow per task: ``groups.getById`` (batched) resolves names and reports deleted communities;
per group one ``wall.get`` asks for ``VK_POSTS_PER_GROUP + 1`` posts (the pinned post takes a
slot even when old) and keeps the newest by date; per post with comments, top-level pages of
``wall.getComments`` (up to 10 replies inline) until ``current_level_count`` is reached (never
``count``, which includes replies); a thread with more replies than came inline is paged with
``comment_id``.

Paging is anchored on live data: each page after the first starts
at the last comment already seen (``start_comment_id``), which comes back once more and is
skipped (with its thread, already queued). A plain offset would skip one comment for every
comment deleted before it between two pages. Paging stops on a short page, or when everything
``current_level_count`` announced has been seen and that count has not changed since the first
page (a changed count means live edits, so only a short page ends it). A level that ends with
fewer comments than VK announced is a task error (the coverage check), never a silent gap.

Errors: a target error (closed wall, comments closed, deleted group…) or a request out of
retries becomes one entry in the task's errors, fails its group, and the crawl goes on; a
configuration error closes the spider at once (reason ``vk_fatal``) and fails the task; a token
error takes that token out of the pool, and with none left the spider closes (reason
``vk_no_token``) leaving the task resumable.

Execute mode (``VK_EXECUTE``, the default): the same calls are *units*
(:mod:`vkscraper.vk.execute`) that wait in a :class:`~vkscraper.vk.planner.Planner` and travel
packed into ``execute`` requests; every answer a unit gets is handled by the same code as the plain
call's (``_on_wall``, ``_on_comments``). A token VK refuses ``execute`` for falls back to plain
calls.

Worker mode (``python -m vkscraper worker``, :mod:`vkscraper.distributed.workqueue`): the worker
that opens a task resolves its groups and yields one *entry* per group (a ``data:`` request,
queued in Redis); whichever worker takes an entry crawls that group (``start_group``) as above.

The spider tells the task extension about every request and item it yields and when each
request is over, so the extension knows when a group is finished; the task itself (store,
metrics, status) belongs to :class:`~vkscraper.extensions.task.VkTaskExtension`.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import scrapy
from scrapy import signals
from scrapy.exceptions import CloseSpider, DontCloseSpider, IgnoreRequest
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.asyncio import call_later

from vkscraper._internals import crawl_stopping
from vkscraper.distributed.extension import VkDistributed
from vkscraper.downloadermiddlewares.auth import token_error
from vkscraper.dropped import CrawlStopping, NoUsableToken
from vkscraper.exceptions import (
    VkApiError,
    VkCaptchaError,
    VkError,
    VkFatalError,
    VkMalformedResponse,
    VkQuotaError,
    VkTargetError,
    VkTransientError,
)
from vkscraper.extensions.task import VkTaskExtension, describe_request
from vkscraper.items import VkGroup, VkPage
from vkscraper.tokens.access import load_tokens
from vkscraper.vk.api import (
    build_call,
    groups_get_by_id_params,
    wall_get_comments_params,
    wall_get_params,
)
from vkscraper.vk.backoff import backoff_delay
from vkscraper.vk.execute import (
    MAX_CALLS,
    CommentsUnit,
    PageParams,
    Unit,
    UnitResult,
    WallUnit,
    build_script,
    is_refusal,
    is_runtime_error,
    is_too_big,
    map_answer,
    retried,
)
from vkscraper.vk.grouprefs import GroupRef, parse_group_refs
from vkscraper.vk.normalize import (
    check_comments_page,
    latest_posts,
    parse_groups,
    parse_posts,
    threads_to_fetch,
)
from vkscraper.vk.planner import Planner

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

# Execute requests kept under way per token before a partial batch is sent: those an answer's
# latency keeps downloading (latency / interval, at least one) plus one waiting for the
# token's slot. Fewer would idle the slot; more would send half-empty batches.
MIN_IN_FLIGHT = 2
LATENCY_WEIGHT = 0.3  # of the newest execute answer in the running latency estimate

FIX_HINTS = {
    5: "the access token is invalid, expired or revoked: set a valid VK_ACCESS_TOKEN",
    7: "the token lacks a permission this method needs: issue it with the wall scope",
    8: "VK rejected the request itself: check VK_API_VERSION (5.81 or newer) and VK_API_URL",
    14: "VK wants a captcha solved for this token: open VK with it, or use another token",
    17: "VK wants the token's account validated: open the redirect_uri VK gave in a browser",
    27: "a community token cannot read walls: use a user or service token",
    28: "this application token type cannot call the method: use a user or service token",
    29: "the token's daily quota for this method is spent: wait a day or add tokens",
    1117: "the access token has expired: issue a new one and set VK_ACCESS_TOKEN",
}


class VkSpider(scrapy.Spider):
    name = "vk"
    # Set from settings in from_crawler.
    api_version: str
    posts_per_group: int
    page_size: int
    thread_items: int
    groups_per_request: int
    max_retries: int
    backoff: tuple[float, float]
    use_execute: bool
    tokens: int  # in the pool at start: each is a download slot of its own
    interval: float  # DOWNLOAD_DELAY: between two requests of a token
    planner: Planner
    page_params: PageParams

    def __init__(self, task_id: str | None = None, groups: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        # Bad arguments fail here, before anything is written, with the input named.
        self.task_id_arg, self.group_refs = check_arguments(task_id=task_id, groups=groups)
        self._scheduled_groups: set[int] = set()  # one wall.get per group, whatever the refs
        self._task_ext: VkTaskExtension | None = None
        self._in_flight = 0  # execute requests yielded whose callback has not run yet
        self._latency = 0.0  # running estimate of an execute's download latency (seconds)
        self._wakeup: tuple[float, Any] | None = None  # (due, timer) sending backed-off units
        # Worker mode (VK_DISTRIBUTED): groups go to Redis as entries; the opener says when
        # every one is queued (its groups.getById requests are over).
        self._resolving = 0
        self._started = False

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        # Settings are read when the spider opens, not here: the crawler creates the spider
        # before the add-ons run, and the add-on registers the VK_* defaults and sets the
        # delay and the retries.
        crawler.signals.connect(spider._read_settings, signal=signals.spider_opened)
        crawler.signals.connect(spider._spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(spider._request_dropped, signal=signals.request_dropped)
        return spider

    def _read_settings(self) -> None:
        s = self.crawler.settings
        self.api_version = s.get("VK_API_VERSION")
        self.posts_per_group = s.getint("VK_POSTS_PER_GROUP")
        self.page_size = s.getint("VK_COMMENTS_PAGE_SIZE")
        self.thread_items = s.getint("VK_THREAD_ITEMS_COUNT")
        self.groups_per_request = s.getint("VK_GROUPS_PER_REQUEST")
        # Inner calls of an execute are retried here, with Scrapy's retry settings.
        self.max_retries = s.getint("RETRY_TIMES") if s.getbool("RETRY_ENABLED") else 0
        self.backoff = (s.getfloat("VK_BACKOFF_BASE"), s.getfloat("VK_BACKOFF_MAX"))
        self.use_execute = s.getbool("VK_EXECUTE")
        self.tokens = max(1, len(load_tokens()))
        self.interval = s.getfloat("DOWNLOAD_DELAY")
        self.planner = Planner(self.page_size, s.getint("VK_EXECUTE_CALLS"))
        self.page_params = PageParams(self.posts_per_group, self.page_size, self.thread_items)

    @cached_property
    def api_url(self) -> str:
        """Read when the first request is built, not in from_crawler: the crawler creates
        the spider before the add-ons run, and the add-on may set VK_API_URL (the operator's
        environment), as the auth middleware then sees it."""
        return str(self.crawler.settings.get("VK_API_URL"))

    @property
    def task_ext(self) -> VkTaskExtension:
        """The task extension: this crawl's task (store, bookkeeping, errors, status)."""
        # Extensions are built after the spider: look it up when first needed, once (this is
        # called for every request and item).
        if self._task_ext is None:
            self._task_ext = self.crawler.get_extension(VkTaskExtension)
            if self._task_ext is None:
                raise RuntimeError("the vk spider needs VkTaskExtension (EXTENSIONS)")
        return self._task_ext

    @cached_property
    def distributed(self) -> VkDistributed | None:
        """Worker mode's coordinator, or None (built after the spider: looked up when first
        used, once)."""
        return self.crawler.get_extension(VkDistributed)

    async def start(self) -> AsyncIterator[Any]:
        if self.distributed is not None and not self.distributed.opener:
            return  # worker mode, joining a task: its groups come from Redis
        # A resume skips what an earlier run finished; failed groups are tried again.
        refs = [r for r in self.task_ext.refs if str(r) not in self.task_ext.done_groups]
        for i in range(0, len(refs), self.groups_per_request):
            batch = refs[i : i + self.groups_per_request]
            self._resolving += 1
            yield self._call(
                "groups.getById",
                groups_get_by_id_params([r.group_id or str(r.screen_name) for r in batch]),
                self.parse_groups,
                group_id=0,
                refs=[str(r) for r in batch],
            )
        self._started = True
        self._resolved(0)

    def _resolved(self, batches: int) -> None:
        """Worker mode: once every groups.getById batch is over, every entry is made."""
        self._resolving -= batches
        if self.distributed is not None and self._started and self._resolving == 0:
            self._started = False  # once
            self.distributed.resolved()

    # requests

    def _call(
        self,
        method: str,
        params: dict[str, Any],
        callback: Any,
        *,
        group_id: int,
        post_id: int | None = None,
        serial: int | None = None,
        **cb: Any,
    ) -> scrapy.Request:
        call = build_call(method, params, api_url=self.api_url, version=self.api_version)
        return scrapy.FormRequest(
            call.url,
            formdata=call.params,
            callback=callback,
            errback=self.on_request_error,
            cb_kwargs={**cb, **({"post_id": post_id} if post_id is not None else {})},
            # The API never redirects; following one would carry the token elsewhere.
            meta={
                "vk_method": method,
                "vk_group_id": group_id,
                "vk_serial": self.task_ext.new_request(group_id, post_id)
                if serial is None
                else serial,
                "dont_redirect": True,
            },
            dont_filter=True,  # re-runs and resumes must fetch again
        )

    def _unit(self, unit: Unit) -> Unit:
        """A new unit of work, counted for its group (and post) until it is over."""
        return replace(unit, serial=self.task_ext.new_request(unit.group_id, unit.post_id))

    def _requeued(self, unit: Unit) -> Unit:
        """The unit under a new serial, the old one closed: whatever happens to the request
        it came in (a crash fails its serials), the unit stays counted until it runs."""
        again = self._unit(unit)
        self.task_ext.request_done({"vk_serial": unit.serial})
        return again

    def _send(self, unit: Unit) -> Iterator[scrapy.Request]:
        """Plain mode: the unit's own request. Execute mode: it waits for a batch."""
        if self.use_execute:
            self.planner.add(unit)
        else:
            yield self._plain(unit)

    def _plain(self, unit: Unit) -> scrapy.Request:
        if isinstance(unit, WallUnit):
            return self._call(
                "wall.get",
                wall_get_params(unit.group_id, count=self.posts_per_group + 1),
                self.parse_wall,
                group_id=unit.group_id,
                serial=unit.serial,
            )
        params = wall_get_comments_params(
            unit.group_id,
            unit.post_id,
            count=self.page_size,
            comment_id=unit.comment_id,
            start_comment_id=unit.anchor,
            thread_items_count=self.thread_items,
        )
        return self._call(
            "wall.getComments",
            params,
            self.parse_comments,
            group_id=unit.group_id,
            post_id=unit.post_id,
            serial=unit.serial,
            comment_id=unit.comment_id,
            anchor=unit.anchor,
            seen=unit.seen,
            first_level_count=unit.first_level_count,
        )

    def _execute(self, units: list[Unit], calls: int | None = None) -> scrapy.Request:
        calls = calls or self.planner.max_calls
        script = build_script(units, self.page_params, calls)
        call = build_call(
            "execute", {"code": script}, api_url=self.api_url, version=self.api_version
        )
        self._in_flight += 1
        return scrapy.FormRequest(
            call.url,
            formdata=call.params,
            callback=self.parse_execute,
            errback=self.on_execute_error,
            cb_kwargs={"units": units},
            meta={
                "vk_method": "execute",
                "vk_methods": sorted({u.method for u in units}),
                "vk_group_id": units[0].group_id,
                "vk_serials": [u.serial for u in units],
                "vk_calls": calls,
                "dont_redirect": True,
                # An execute takes as long as its calls do: its latency says nothing about
                # VK's load, and must not make AutoThrottle slow the token down.
                "autothrottle_dont_adjust_delay": True,
            },
            dont_filter=True,
        )

    def _flush(self, *, full_only: bool = False) -> list[scrapy.Request]:
        """Execute requests for the units that are ready: full batches always, a partial one
        when fewer requests are under way than keep every token's slot busy
        (:meth:`_wanted_in_flight`), so no slot idles for want of a request; with
        ``full_only``, full batches only.
        """
        if not self.use_execute:
            return [self._plain(u) for u in self.planner.drain()]
        partial = not full_only and self._in_flight < self._wanted_in_flight()
        batches = self.planner.take(time.monotonic(), partial=partial)
        requests = [self._execute(batch) for batch in batches]
        self._arm_wakeup()
        return requests

    def _wanted_in_flight(self) -> int:
        per_token = MIN_IN_FLIGHT
        if self.interval > 0 and self._latency > self.interval:
            per_token = 1 + math.ceil(self._latency / self.interval)
        return self.tokens * per_token

    def _arm_wakeup(self) -> None:
        """Units backing off are sent when their time comes, even if nothing else runs."""
        due = self.planner.next_due()
        if due is None or (self._wakeup is not None and self._wakeup[0] <= due):
            return
        if self._wakeup is not None:
            self._wakeup[1].cancel()
        handle = call_later(max(0.0, due - time.monotonic()), self._woken)
        self._wakeup = (due, handle)

    def _woken(self) -> None:
        self._wakeup = None
        self._kick()

    def _kick(self) -> None:
        """Send what is ready from outside a callback (a timer, an errback, an idle engine)."""
        engine = self.crawler.engine
        if engine is None or not engine.running:
            return
        for request in self._flush():
            engine.crawl(request)

    def _spider_idle(self) -> None:
        # Idle: nothing is under way. A request a spider middleware dropped silently (e.g.
        # DEPTH_LIMIT) never came back to lower the count; it must not hold partial batches.
        self._in_flight = 0
        if len(self.planner):
            self._kick()
            raise DontCloseSpider

    def _request_dropped(self, request: scrapy.Request) -> None:
        if request.meta.get("vk_method") == "execute":
            self._in_flight -= 1

    # callbacks

    async def parse_groups(self, response: Response, refs: list[str]) -> AsyncIterator[Any]:
        try:
            found = parse_groups(self._data(response))
        except VkTargetError as exc:
            if exc.code != 100:  # 100: none of the batch exists, each is reported below
                await self._record(exc, f"groups {', '.join(refs)}", meta=response.meta)
                self.task_ext.request_done(response.meta)
                self._resolved(1)
                return
            found = []
        except VkError as exc:
            # The refs stay in the task unresolved: unfinished now, tried again by a re-run.
            await self._record(exc, f"groups {', '.join(refs)}", meta=response.meta)
            self.task_ext.request_done(response.meta)
            self._resolved(1)
            return
        by_key: dict[str, VkGroup] = {}
        for group in found:
            by_key[str(group.id)] = group
            if group.screen_name:
                by_key[group.screen_name.lower()] = group
        resolved: dict[str, int] = {}
        groups: list[VkGroup] = []
        for ref in refs:
            if crawl_stopping(self.crawler):
                # Stopping (Ctrl-C, a cancel, a task ended elsewhere): a batch of 500 unknown
                # names is 2,000 writes, and the engine waits for this callback. The rest
                # stays unresolved in the task, which a re-run resolves again.
                self.task_ext.request_done(response.meta)
                self._resolved(1)
                return
            match = by_key.get(ref.lower())
            if match is None:
                await self.task_ext.restart_group(ref)
                await self.task_ext.add_error(f"group {ref}: not found on VK", group=ref)
                await self.task_ext.deactivate(ref, "not found on VK")
                await self.task_ext.group_over(ref, "failed")
                continue
            resolved[ref] = match.id
            if match not in groups:
                groups.append(match)
        await self.task_ext.resolve_groups(groups, resolved)
        for group in groups:
            if group.id in self._scheduled_groups:
                continue  # the same group by id and by name, possibly in another batch
            self._scheduled_groups.add(group.id)
            if str(group.id) in self.task_ext.done_groups:
                logger.info("Group %(g)s was finished by an earlier run", {"g": group.id})
                continue
            await self.task_ext.restart_group(group.id)
            if group.deactivated:
                await self.task_ext.add_error(
                    f"group {group.id} ({group.screen_name}): community is {group.deactivated}",
                    group=group.id,
                )
                await self.task_ext.deactivate(str(group.id), f"community is {group.deactivated}")
                await self.task_ext.group_over(group.id, "failed")
            elif self.distributed is not None:
                self.distributed.entry_made()
                yield self._entry(group.id)  # crawled by whichever worker takes it
            else:
                for request in self._send(self._unit(WallUnit(group.id))):
                    yield request
        self.task_ext.request_done(response.meta)
        for request in self._flush():
            yield request
        self._resolved(1)

    def _entry(self, group_id: int) -> scrapy.Request:
        """Worker mode: a group's crawl, queued in Redis for any worker (no token in it)."""
        return scrapy.Request(
            f"data:,vk-group-{group_id}",
            callback=self.start_group,
            meta={"vk_entry": f"{group_id}:{secrets.token_hex(4)}", "vk_group_id": group_id},
            dont_filter=True,
        )

    async def start_group(self, response: Response) -> AsyncIterator[Any]:
        """Worker mode: this worker took the group's entry and crawls the whole group."""
        gid = response.meta["vk_group_id"]
        # The group may have been begun by a worker that died: count it once.
        await self.task_ext.restart_group(gid, always=True)
        for request in self._send(self._unit(WallUnit(gid))):
            yield request
        # Full batches only: a worker starts the groups it takes one callback each, and a
        # partial batch here would carry one wall.get; the rest goes with the next answer, or
        # when the engine idles (_spider_idle).
        for request in self._flush(full_only=True):
            yield request

    async def parse_wall(self, response: Response) -> AsyncIterator[Any]:
        unit = WallUnit(response.meta["vk_group_id"], response.meta["vk_serial"])
        async for out in self._plain_answer(unit, response):
            yield out

    async def parse_comments(
        self,
        response: Response,
        post_id: int,
        comment_id: int | None,
        anchor: int | None,
        seen: int,
        first_level_count: int | None,
    ) -> AsyncIterator[Any]:
        unit = CommentsUnit(
            response.meta["vk_group_id"],
            post_id,
            comment_id,
            anchor,
            seen,
            first_level_count,
            serial=response.meta["vk_serial"],
        )
        async for out in self._plain_answer(unit, response):
            yield out

    async def _plain_answer(self, unit: Unit, response: Response) -> AsyncIterator[Any]:
        """A plain call's answer: the units it leads to as requests, then its items (the
        requests leave before any item work is done)."""

        async def outputs() -> AsyncIterator[Any]:
            async for out in self._on_answer(unit, self._answer(response), response.meta):
                if isinstance(out, WallUnit | CommentsUnit):
                    for request in self._send(out):
                        yield request
                else:
                    yield out
            self.task_ext.request_done(response.meta)

        async for out in self._requests_first(outputs()):
            yield out

    async def parse_execute(self, response: Response, units: list[Unit]) -> AsyncIterator[Any]:
        self._in_flight -= 1
        if (latency := response.meta.get("download_latency")) is not None:
            self._latency += LATENCY_WEIGHT * (latency - self._latency)
        try:
            results = map_answer(
                units, self._data(response), response.meta.get("vk_execute_errors")
            )
        except VkError as exc:
            for request in await self._execute_failed(units, exc, response.meta):
                yield request
        else:
            calls = sum(len(r.answers) for r in results)
            self.planner.answered(len(response.body), calls)
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("vk/execute/calls", calls)
            tag = response.meta.get("vk_token_tag")

            async def outputs() -> AsyncIterator[Any]:
                for result in results:
                    async for page in self._replay(result, tag):
                        yield page
                for request in self._flush():
                    yield request

            async for out in self._requests_first(outputs()):
                yield out
            return
        for request in self._flush():
            yield request

    async def _requests_first(self, outputs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A callback's requests as they come, its pages once it is over: item work never
        holds back a request whose units are ready. A crash keeps the pages collected before
        it."""
        pages: list[Any] = []
        try:
            async for out in outputs:
                if isinstance(out, scrapy.Request):
                    yield out
                else:
                    pages.append(out)
        except Exception:
            async for page in self._yield_pages(pages):
                yield page
            raise
        except BaseException:
            self._abandon(pages)
            raise
        async for page in self._yield_pages(pages):
            yield page

    async def _yield_pages(self, pages: list[Any]) -> AsyncIterator[Any]:
        """Yield the pages of a callback once its requests are out."""
        for n, page in enumerate(pages):
            try:
                yield page
            except BaseException:  # the callback's output was abandoned (a closing crawl)
                self._abandon(pages[n + 1 :])
                raise

    def _abandon(self, pages: list[Any]) -> None:
        """Pages counted for their groups that will never be yielded (the callback's output
        was abandoned): not outstanding any more, and their groups failed."""
        for page in pages:
            self.task_ext.page_lost(page)

    async def _replay(self, result: UnitResult, token_tag: str | None) -> AsyncIterator[Any]:
        """Handle the answers one unit got inside an execute as the plain calls would be."""
        unit: Unit | None = result.unit
        if not result.answers:  # the script ran out of calls before this unit
            self.planner.add(self._requeued(result.unit))
            return
        for n, answer in enumerate(result.answers):
            assert unit is not None
            if isinstance(answer, VkApiError) and token_error(self.crawler, token_tag, answer):
                self.planner.add(self._requeued(unit))  # for another token
                return
            if isinstance(answer, VkTransientError) and unit.retries < self.max_retries:
                delay = backoff_delay(unit.retries, base=self.backoff[0], cap=self.backoff[1])
                due = time.monotonic() + delay if delay else 0.0
                self.planner.add(self._requeued(retried(unit)), due=due)
                return
            current, unit = unit, None
            async for out in self._on_answer(current, answer):
                if isinstance(out, CommentsUnit) and _same_cursor(out, current):
                    unit = out  # the same cursor, one page on
                elif isinstance(out, WallUnit | CommentsUnit):
                    self.planner.add(out)
                else:
                    yield out
            self.task_ext.request_done({"vk_serial": current.serial})
            if unit is None:
                if n + 1 < len(result.answers):
                    assert self.crawler.stats is not None
                    ignored = len(result.answers) - n - 1
                    self.crawler.stats.inc_value("vk/execute/pages_ignored", ignored)
                return
        if unit is not None:
            self.planner.add(unit)

    async def _execute_failed(
        self, units: list[Unit], exc: VkError, meta: Mapping[str, Any]
    ) -> list[scrapy.Request]:
        """The whole execute failed: fall back, split, or record the error for every unit."""
        assert self.crawler.stats is not None
        if is_refusal(exc):
            if self.use_execute:
                self.use_execute = False
                logger.warning(
                    "VK refused execute (%(error)s): going on with plain calls",
                    {"error": exc},
                )
            self.crawler.stats.inc_value("vk/execute/refused")
            return [self._plain(u) for u in units]
        if is_runtime_error(exc):
            calls = meta.get("vk_calls", MAX_CALLS)
            if is_too_big(exc):
                self.planner.too_big(calls)
            self.crawler.stats.inc_value("vk/execute/split")
            logger.info(
                "Execute of %(n)d units and %(calls)d calls failed (%(error)s): splitting it",
                {"n": len(units), "calls": calls, "error": exc},
            )
            if len(units) > 1:
                half = (len(units) + 1) // 2
                return [self._execute(units[:half], calls), self._execute(units[half:], calls)]
            if calls > 1:
                return [self._execute(units, calls // 2)]
            return [self._plain(units[0])]  # one page, alone: a plain call has no 5 MB limit
        for unit in units:
            await self._record(exc, unit.where(), unit=unit, meta=meta)
            self.task_ext.request_done({"vk_serial": unit.serial})
        return []

    async def on_execute_error(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        self._in_flight -= 1
        if self._unsent(failure):
            return  # its units stay open, their groups unfinished for the next run
        await self._no_token_left(failure, request)
        reason = self._failure_reason(failure, request)
        for unit in request.cb_kwargs["units"]:
            # Worded as the plain request's error: the call, the target, the reason.
            await self.task_ext.add_error(
                f"{unit.describe()}: {reason}", group=unit.group_id, post=unit.post_id
            )
            self.task_ext.request_done({"vk_serial": unit.serial}, failed=True)
        self._kick()

    # what one answer means (the same in plain and execute mode)

    def _on_answer(
        self, unit: Unit, answer: Any, meta: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Any]:
        if isinstance(unit, WallUnit):
            return self._on_wall(unit, answer, meta)
        return self._on_comments(unit, answer, meta)

    async def _on_wall(
        self, unit: WallUnit, answer: Any, meta: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Any]:
        gid = unit.group_id
        try:
            data = _checked(answer)
            # Parsed here only to choose the posts and their comment requests; the items are
            # what VK sent, normalized by the normalize pipeline.
            posts = latest_posts(parse_posts(data, gid), self.posts_per_group)
        except VkError as exc:
            await self._record(exc, unit.where(), unit=unit, meta=meta)
            return
        await self.task_ext.group_started(gid, len(posts), sum(p.comments_count for p in posts))
        for post in posts:
            self.task_ext.new_post(gid, post.vk_post_id)
            if post.comments_count > 0:
                yield self._unit(CommentsUnit(gid, post.vk_post_id, hint=post.comments_count))
        if posts:
            chosen = {p.vk_post_id for p in posts}
            self.task_ext.new_item(gid)
            # What VK sent, for the normalize pipeline (parsed here only to choose the posts).
            raw = [item for item in data["items"] if item["id"] in chosen]
            yield VkPage("posts", gid, raw={"items": list({i["id"]: i for i in raw}.values())})

    async def _on_comments(
        self, unit: CommentsUnit, answer: Any, meta: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Any]:
        gid, post_id, comment_id, anchor = (
            unit.group_id,
            unit.post_id,
            unit.comment_id,
            unit.anchor,
        )
        where = f"group {gid} post {post_id}" + (f" thread {comment_id}" if comment_id else "")
        try:
            data = _checked(answer)
            items = check_comments_page(data)
        except VkError as exc:
            await self._record(exc, where, unit=unit, meta=meta)
            return
        # An anchored page starts with the anchor, read (with its thread) on the page before.
        repeated = anchor is not None and bool(items) and items[0]["id"] == anchor
        new_items = items[1:] if repeated else items
        if new_items:
            self.task_ext.new_item(gid)
            yield VkPage("comments", gid, post_id, comment_id, raw=data, anchor=anchor)
        seen = unit.seen + len(new_items)
        level_now = data.get("current_level_count", data.get("count", 0))
        first_level_count = unit.first_level_count
        if first_level_count is None:
            first_level_count = level_now
        # Done on a short page, or when everything announced has been read and the count did
        # not move since the first page (a moving count means live edits: read on).
        complete = seen >= level_now and level_now == first_level_count
        if len(items) >= self.page_size and new_items and not complete:
            yield self._unit(
                CommentsUnit(
                    gid,
                    post_id,
                    comment_id,
                    anchor=items[-1]["id"],
                    seen=seen,
                    first_level_count=first_level_count,
                    hint=max(0, level_now - seen),
                )
            )
        elif seen < level_now:
            # The coverage check: VK announced more than the level gave.
            await self.task_ext.add_error(
                f"{where}: incomplete, {seen} of {level_now} comments announced by VK",
                group=gid,
                post=post_id,
            )
        if comment_id is None:
            for thread in threads_to_fetch({"items": new_items}):
                yield self._unit(
                    CommentsUnit(
                        gid,
                        post_id,
                        comment_id=thread.comment_id,
                        anchor=thread.last_seen_id,
                        seen=thread.seen,
                        first_level_count=thread.total,
                        hint=thread.total - thread.seen,
                    )
                )

    async def on_request_error(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        if request.meta.get("vk_method") == "groups.getById":
            self._resolved(1)
        if self._unsent(failure):
            return  # its group stays unfinished for the next run
        await self._no_token_left(failure, request)
        gid = request.meta.get("vk_group_id", 0)
        await self.task_ext.add_error(
            f"{describe_request(request)}: {self._failure_reason(failure, request)}",
            group=gid or None,
            post=request.cb_kwargs.get("post_id"),
        )
        self.task_ext.request_done(request.meta, failed=True)

    def _unsent(self, failure: Failure) -> bool:
        """Never sent (the crawl is closing), or lost to the close itself: a download cut
        while the crawl stops is no finding about VK, so it is left for the next run."""
        if isinstance(failure.value, CrawlStopping):
            return True
        real_answer = isinstance(failure.value, HttpError | IgnoreRequest)
        return not real_answer and crawl_stopping(self.crawler)

    async def _no_token_left(self, failure: Failure, request: scrapy.Request) -> None:
        """Every token is dropped or parked too long: the crawl stops, saying why for each,
        and the task stays resumable (a run with usable tokens skips the groups done)."""
        if not isinstance(failure.value, NoUsableToken):
            return
        for serial in request.meta.get("vk_serials") or [request.meta.get("vk_serial")]:
            self.task_ext.request_done({"vk_serial": serial}, failed=True)
        message = str(failure.value)
        hints = [hint for code, hint in FIX_HINTS.items() if f"VK error {code} " in message]
        await self.task_ext.add_error(" — ".join([message, *hints]))
        raise CloseSpider("vk_no_token")

    # helpers

    @staticmethod
    def _failure_reason(failure: Failure, request: scrapy.Request) -> str:
        retries = request.meta.get("retry_times", 0)
        if isinstance(failure.value, HttpError):
            return f"gave up after {retries} retries (HTTP {failure.value.response.status})"
        if isinstance(failure.value, IgnoreRequest):
            return f"dropped before download by a downloader middleware ({failure.value!r})"
        return f"gave up after {retries} retries ({type(failure.value).__name__}: {failure.value})"

    def _data(self, response: Response) -> Any:
        """The parsed ``response`` (set by VkRetryMiddleware) or the VK error it carried."""
        return _checked(self._answer(response))

    @staticmethod
    def _answer(response: Response) -> Any:
        """The parsed data of ``response``, or the :class:`VkError` it carried."""
        error = response.meta.get("vk_error")
        if error is not None:
            return error
        if "vk_response" not in response.meta:
            return VkMalformedResponse(
                "the response was not parsed: is VkRetryMiddleware enabled?"
            )
        return response.meta["vk_response"]

    async def _record(
        self,
        exc: VkError,
        where: str,
        *,
        unit: Unit | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Record ``exc`` in the task (it fails the group and post it names); a token or
        configuration error closes the spider."""
        meta = meta or {}
        gid = unit.group_id if unit is not None else (meta.get("vk_group_id") or None)
        post = unit.post_id if unit is not None else None
        if isinstance(exc, VkFatalError | VkCaptchaError | VkQuotaError):
            hint = FIX_HINTS.get(exc.code, "check the token and the VK_* settings")
            await self.task_ext.add_error(f"{exc} — {hint}")
            # What reaches here is not the token's (the pool takes those): the configuration
            # is wrong, and the task fails.
            raise CloseSpider("vk_fatal")
        if isinstance(exc, VkTransientError):
            # Retries of a plain request are Scrapy's (meta); of a call inside execute, ours.
            retries = meta.get("retry_times", 0) if meta else 0
            retries = max(retries, unit.retries if unit is not None else 0)
            message = f"{where}: gave up after {retries} retries ({exc})"
        else:  # a target error, or a VK code we do not know
            message = f"{where}: {exc}"
        await self.task_ext.add_error(message, group=gid, post=post)


def _same_cursor(unit: CommentsUnit, other: Unit) -> bool:
    return (
        isinstance(other, CommentsUnit)
        and unit.post_id == other.post_id
        and unit.comment_id == other.comment_id
    )


def _checked(answer: Any) -> Any:
    """An answer is data or the VkError the call ended with."""
    if isinstance(answer, VkError):
        raise answer
    return answer


def check_arguments(
    task_id: str | None = None, groups: str | None = None
) -> tuple[int | None, list[GroupRef] | None]:
    """The spider's ``-a`` arguments, checked: ``(task id, group references)``.

    A list given with ``-a groups=`` is refused as a whole when one reference is malformed
    (the message names each bad one): a typo should not silently shrink the task. Lists from
    the groups table were checked when they were added.
    """
    if task_id is not None and groups is not None:
        raise ValueError("give either -a task_id=… or -a groups=…, not both")
    if task_id is not None:
        if not re.fullmatch(r"[0-9]+", task_id.strip()) or int(task_id) <= 0:
            raise ValueError(f"-a task_id must be a positive number, got {task_id!r}")
        return int(task_id), None
    if groups is None:
        return None, None
    try:
        refs = parse_group_refs(groups)
    except ValueError as exc:
        raise ValueError(f"-a groups: {exc}") from None
    if not refs:
        raise ValueError("-a groups= is empty: name at least one group")
    return None, refs
