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

Paging is anchored (design-notes.md, "Paging on live data"): each page after the first starts
at the last comment already seen (``start_comment_id``), which comes back once more and is
upserted twice, harmlessly. A plain offset would skip one comment for every comment deleted
before it between two pages. Paging stops on a short page, or when everything
``current_level_count`` announced has been seen and that count has not changed since the first
page (a changed count means live edits, so only a short page ends it).

Errors: a target error (closed wall, comments closed, deleted group…) or a request out of
retries becomes one entry in the task's errors and the crawl goes on; a token or configuration
error closes the spider at once (reason ``vk_fatal``) and fails the task.

The task itself (store, metrics, status) belongs to
:class:`~vkscraper.extensions.task.VkTaskExtension`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import scrapy
from scrapy.exceptions import CloseSpider
from scrapy.spidermiddlewares.httperror import HttpError

from vkscraper import defaults
from vkscraper.api import (
    build_call,
    groups_get_by_id_params,
    wall_get_comments_params,
    wall_get_params,
)
from vkscraper.exceptions import (
    VkCaptchaError,
    VkError,
    VkFatalError,
    VkMalformedResponse,
    VkQuotaError,
    VkTargetError,
    VkTransientError,
)
from vkscraper.extensions.task import VkTaskExtension, get_task_extension
from vkscraper.grouprefs import GroupRef, parse_group_refs
from vkscraper.items import GroupDone, VkGroup
from vkscraper.normalize import (
    latest_posts,
    parse_comments,
    parse_groups,
    parse_posts,
    threads_to_fetch,
)
from vkscraper.tokens import load_tokens

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

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
    api_url: str
    api_version: str
    posts_per_group: int
    page_size: int
    thread_items: int
    groups_per_request: int

    def __init__(self, task_id: str | None = None, groups: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if task_id is not None and groups is not None:
            raise ValueError("give either -a task_id=… or -a groups=…, not both")
        try:
            self.task_id_arg = int(task_id) if task_id is not None else None
        except ValueError:
            raise ValueError(f"task_id must be a number, got {task_id!r}") from None
        # A bad reference fails here, before anything is written, with the input named.
        self.group_refs: list[GroupRef] | None = (
            parse_group_refs(groups) if groups is not None else None
        )
        self._pending: dict[int, int] = defaultdict(int)  # group id -> requests in flight
        self._failed_groups: set[int] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        s = crawler.settings
        spider.api_url = s.get("VK_API_URL", defaults.VK_API_URL)
        spider.api_version = s.get("VK_API_VERSION", defaults.VK_API_VERSION)
        spider.posts_per_group = s.getint("VK_POSTS_PER_GROUP", defaults.VK_POSTS_PER_GROUP)
        spider.page_size = s.getint("VK_COMMENTS_PAGE_SIZE", defaults.VK_COMMENTS_PAGE_SIZE)
        spider.thread_items = s.getint("VK_THREAD_ITEMS_COUNT", defaults.VK_THREAD_ITEMS_COUNT)
        spider.groups_per_request = s.getint(
            "VK_GROUPS_PER_REQUEST", defaults.VK_GROUPS_PER_REQUEST
        )
        return spider

    @property
    def task(self) -> VkTaskExtension:
        # Extensions are built after the spider, so look it up when first needed.
        return get_task_extension(self.crawler)

    async def start(self) -> AsyncIterator[Any]:
        if not load_tokens():
            await self.task.add_error(
                "VK_ACCESS_TOKEN is not set: export a user or service token to crawl"
            )
            raise CloseSpider("vk_fatal")
        refs = self.task.refs
        self._resolved_ids: list[int] = []
        for i in range(0, len(refs), self.groups_per_request):
            batch = refs[i : i + self.groups_per_request]
            yield self._call(
                "groups.getById",
                groups_get_by_id_params([r.group_id or str(r.screen_name) for r in batch]),
                self.parse_groups,
                group_id=0,
                refs=[str(r) for r in batch],
            )

    # requests

    def _call(
        self, method: str, params: dict[str, Any], callback: Any, *, group_id: int, **cb: Any
    ) -> scrapy.Request:
        call = build_call(method, params, api_url=self.api_url, version=self.api_version)
        self._pending[group_id] += 1
        return scrapy.FormRequest(
            call.url,
            formdata=call.params,
            callback=callback,
            errback=self.on_request_error,
            cb_kwargs=cb,
            # The API never redirects; following one would carry the token elsewhere.
            meta={
                "vk_method": method,
                "vk_group_id": group_id,
                "dont_redirect": True,
            },
            dont_filter=True,  # re-runs and resumes must fetch again
        )

    # callbacks

    async def parse_groups(self, response: Response, refs: list[str]) -> AsyncIterator[Any]:
        try:
            found = parse_groups(self._data(response))
        except VkTargetError as exc:
            if exc.code != 100:  # 100: none of the batch exists, each is reported below
                await self._record(response.meta, exc, f"groups {', '.join(refs)}")
                return
            found = []
        except VkError as exc:
            await self._record(response.meta, exc, f"groups {', '.join(refs)}")
            return
        by_key: dict[str, VkGroup] = {}
        for group in found:
            by_key[str(group.id)] = group
            if group.screen_name:
                by_key[group.screen_name.lower()] = group
        resolved: list[VkGroup] = []
        for ref in refs:
            match = by_key.get(ref.lower())
            if match is None:
                await self.task.add_error(f"group {ref}: not found on VK")
            elif match not in resolved:
                resolved.append(match)
        self._resolved_ids.extend(g.id for g in resolved if g.id not in self._resolved_ids)
        await self.task.save_groups(resolved, self._resolved_ids)
        for group in resolved:
            if group.deactivated:
                await self.task.add_error(
                    f"group {group.id} ({group.screen_name}): community is {group.deactivated}"
                )
                yield GroupDone(group.id, "failed")
            elif group.id in self.task.done_groups:
                logger.info("Group %(g)s was finished by an earlier run", {"g": group.id})
            else:
                yield self._call(
                    "wall.get",
                    wall_get_params(group.id, count=self.posts_per_group + 1),
                    self.parse_wall,
                    group_id=group.id,
                )

    async def parse_wall(self, response: Response) -> AsyncIterator[Any]:
        gid = response.meta["vk_group_id"]
        try:
            posts = latest_posts(parse_posts(self._data(response), gid), self.posts_per_group)
        except VkError as exc:
            await self._record(response.meta, exc, f"group {gid}")
        else:
            await self.task.group_started(gid, len(posts), sum(p.comments_count for p in posts))
            for post in posts:
                yield post
                if post.comments_count > 0:
                    yield self._comments(gid, post.vk_post_id)
        for item in self._request_done(gid):
            yield item

    async def parse_comments(
        self,
        response: Response,
        post_id: int,
        comment_id: int | None,
        anchor: int | None,
        seen: int,
        first_level_count: int | None,
    ) -> AsyncIterator[Any]:
        gid = response.meta["vk_group_id"]
        where = f"group {gid} post {post_id}" + (f" thread {comment_id}" if comment_id else "")
        try:
            data = self._data(response)
            comments = parse_comments(data, gid, post_id, parent_id=comment_id)
        except VkError as exc:
            await self._record(response.meta, exc, where)
        else:
            for comment in comments:
                yield comment
            items = data["items"]
            repeated = 1 if anchor is not None and items and items[0]["id"] == anchor else 0
            seen += len(items) - repeated
            level_now = data.get("current_level_count", data.get("count", 0))
            if first_level_count is None:
                first_level_count = level_now
            complete = seen >= level_now and level_now == first_level_count
            if len(items) >= self.page_size and not complete and items[-1]["id"] != anchor:
                yield self._comments(
                    gid,
                    post_id,
                    comment_id=comment_id,
                    anchor=items[-1]["id"],
                    seen=seen,
                    first_level_count=first_level_count,
                )
            if comment_id is None:
                for thread in threads_to_fetch(data):
                    yield self._comments(
                        gid,
                        post_id,
                        comment_id=thread.comment_id,
                        anchor=thread.last_seen_id,
                        seen=thread.seen,
                        first_level_count=thread.total,
                    )
        for item in self._request_done(gid):
            yield item

    def _comments(
        self,
        gid: int,
        post_id: int,
        *,
        comment_id: int | None = None,
        anchor: int | None = None,
        seen: int = 0,
        first_level_count: int | None = None,
    ) -> scrapy.Request:
        """A page of the top level (``comment_id`` None) or of one thread, starting at
        ``anchor`` (a comment already seen) or at the beginning."""
        params = wall_get_comments_params(
            gid,
            post_id,
            count=self.page_size,
            comment_id=comment_id,
            start_comment_id=anchor,
            thread_items_count=self.thread_items,
        )
        return self._call(
            "wall.getComments",
            params,
            self.parse_comments,
            group_id=gid,
            post_id=post_id,
            comment_id=comment_id,
            anchor=anchor,
            seen=seen,
            first_level_count=first_level_count,
        )

    async def on_request_error(self, failure: Failure) -> AsyncIterator[Any]:
        request = failure.request  # type: ignore[attr-defined]
        gid = request.meta.get("vk_group_id", 0)
        retries = request.meta.get("retry_times", 0)
        if isinstance(failure.value, HttpError):
            reason = f"HTTP {failure.value.response.status}"
        else:
            reason = f"{type(failure.value).__name__}: {failure.value}"
        await self.task.add_error(
            f"{_describe(request)}: gave up after {retries} retries ({reason})"
        )
        self._failed_groups.add(gid)
        for item in self._request_done(gid):
            yield item

    # helpers

    def _data(self, response: Response) -> Any:
        """The parsed ``response`` (set by VkRetryMiddleware) or the VK error it carried."""
        error = response.meta.get("vk_error")
        if error is not None:
            raise error
        if "vk_response" not in response.meta:
            raise VkMalformedResponse("the response was not parsed: is VkRetryMiddleware enabled?")
        return response.meta["vk_response"]

    async def _record(self, meta: dict[str, Any], exc: VkError, where: str) -> None:
        gid = meta.get("vk_group_id", 0)
        self._failed_groups.add(gid)
        if isinstance(exc, VkFatalError | VkCaptchaError | VkQuotaError):
            hint = FIX_HINTS.get(exc.code, "check the token and the VK_* settings")
            await self.task.add_error(f"{exc} — {hint}")
            raise CloseSpider("vk_fatal")
        if isinstance(exc, VkTransientError):
            retries = meta.get("retry_times", 0)
            await self.task.add_error(f"{where}: gave up after {retries} retries ({exc})")
        else:  # a target error, or a VK code we do not know
            await self.task.add_error(f"{where}: {exc}")

    def _request_done(self, gid: int) -> Iterator[GroupDone]:
        """Count a finished request; the group is done when none of its requests is left."""
        self._pending[gid] -= 1
        if gid and self._pending[gid] == 0:
            status = "failed" if gid in self._failed_groups else "done"
            yield GroupDone(gid, status)


def _describe(request: scrapy.Request) -> str:
    meta, ctx = request.meta, request.cb_kwargs
    parts = [f"group {meta.get('vk_group_id')}"] if meta.get("vk_group_id") else []
    if ctx.get("refs"):
        parts.append(f"groups {', '.join(ctx['refs'])}")
    if ctx.get("post_id"):
        parts.append(f"post {ctx['post_id']}")
    if ctx.get("comment_id"):
        parts.append(f"thread {ctx['comment_id']}")
    return f"{meta.get('vk_method')} " + " ".join(parts)
