"""Execute mode against the emulator, which runs the generated VKScript for real: the stored
rows and the task's errors equal the plain mode's on the same data, with faults, drift, oversize
answers, inner errors and a token that may not use execute."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from fakevk import FakeVk, generate_dataset
from tests.helpers.crawl import (
    COMMENT_KEYS,
    POST_KEYS,
    TOKEN,
    assert_stored_equals,
    close_as,
    comparable,
    edited,
    last_task,
    run_crawl,
    stored_rows,
)

pytestmark = pytest.mark.integration

EXECUTE = {"VK_EXECUTE": True}
PLAIN = {"VK_EXECUTE": False}

# Closed walls, a post with comments closed, a NUL byte, emoji, a 130-comment post, threads
# longer than the inline 10.
MIXED = generate_dataset(
    seed=7, groups=3, posts_per_group=12, max_comments=30, big_post=True, closed_groups=3
)
T0 = 1_700_000_000


def refs(dataset):
    return ",".join(g["screen_name"] for g in dataset["groups"] if not g.get("author_only"))


def deep_post(top=450, threads=3, replies=150):
    """One post: ``top`` top-level comments, ``threads`` of them with ``replies`` replies."""
    comments, next_id = [], iter(range(10, 10**6)).__next__
    for i in range(top):
        cid = next_id()
        n = replies if i % (top // threads) == 1 else 0
        comments.append(
            {"id": cid, "from_id": 1, "date": T0 + i, "text": f"c{cid} 🙂", "likes": 0,
             "replies": [{"id": 100_000 + cid * 1000 + r, "from_id": 1, "date": T0 + 10**5 + r,
                          "text": f"r{r}"} for r in range(n)]}
        )  # fmt: skip
    return {
        "profiles": [{"id": 1, "first_name": "Ann", "last_name": "Lee"}],
        "groups": [{"id": 30, "screen_name": "deep", "name": "Deep",
                    "posts": [{"id": 1, "date": T0, "text": "p", "comments": comments}]}],
    }  # fmt: skip


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)


def rows(url, task_id):
    posts, comments = stored_rows(url, task_id)
    return comparable(posts, POST_KEYS), comparable(comments, COMMENT_KEYS)


async def crawl(dataset, url, settings, **fakevk):
    with FakeVk(dataset, tokens=[TOKEN], **fakevk) as vk:
        crawler = await run_crawl(vk.url, url, settings=settings, groups=refs(dataset))
        log = vk.requests()
    return crawler, last_task(url), log


def inner_calls(log):
    """(method, params) of every call: plain ones and those made inside an execute."""
    return [c for r in log for c in r.get("calls", [r["method"]])]


def executes(log):
    return [r for r in log if r["method"] == "execute"]


@pytest.mark.parametrize(
    "fakevk",
    [
        {},
        {"faults": {"500": 0.08, "error10": 0.1, "malformed": 0.05, "drop": 0.05},
         "seed": 4, "retry_after": 0},
        {"drift": 3},
    ],
    ids=["clean", "faults", "drift"],
)  # fmt: skip
@deferred_f_from_coro_f
async def test_execute_stores_what_plain_stores_and_reports_the_same_errors(store_url, fakevk):
    # Enough retries that no call runs out of them (the emulator caps faults in a row per
    # call, but a retried execute is a new call for it): both runs must store everything.
    retries = {"RETRY_TIMES": 8}
    _, plain, _ = await crawl(MIXED, store_url, {**PLAIN, **retries}, **fakevk)
    plain_rows = rows(store_url, plain.id)
    crawler, task, log = await crawl(MIXED, store_url, {**EXECUTE, **retries}, **fakevk)
    assert_stored_equals(store_url, task.id, MIXED)
    assert rows(store_url, task.id) == plain_rows
    assert task.status == plain.status == "failed"  # the closed walls and the closed post
    assert sorted(task.metrics["errors"]) == sorted(plain.metrics["errors"])
    assert task.metrics["comments"] == plain.metrics["comments"]
    assert task.metrics["groups"] == plain.metrics["groups"]
    # Everything but the lookup went through execute, at most 25 calls each.
    assert {r["method"] for r in log} == {"groups.getById", "execute"}
    assert max(len(r["calls"]) for r in executes(log)) <= 25
    # Packing, not fault luck: an execute retried whole (HTTP 500, a dropped connection) is one
    # more request carrying the same calls again.
    retried = crawler.stats.get_value("retry/count") or 0
    assert len(log) - retried < len(inner_calls(log)) / 5
    if "faults" in fakevk:
        assert sum(r["execute_errors"] for r in executes(log)) > 0  # inner error 10s, retried
        assert crawler.stats.get_value("retry/count") > 0  # whole executes retried too


@deferred_f_from_coro_f
async def test_a_big_post_is_paged_inside_one_script_anchored_page_by_page(sqlite_url):
    data = deep_post()
    crawler, task, log = await crawl(data, sqlite_url, EXECUTE)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(sqlite_url, task.id, data)
    # 1 wall.get; 5 top-level pages (an anchored page repeats its anchor: 450 in 5 pages of
    # 100), walked in one script; then the 3 threads found on them, 2 pages each (140
    # replies after the 10 inline): 12 calls in 3 requests.
    calls = inner_calls(log)
    assert calls.count("wall.getComments") == 11
    assert [len(r["calls"]) for r in executes(log)] == [1, 5, 6]
    assert crawler.stats.get_value("vk/execute/calls") == 12


class ShortenExecutePages:
    """A downloader middleware removing the last comment of every full top-level page inside
    an execute answer, as VK does when it answers less than a level announced."""

    def process_response(self, request, response):
        if request.meta.get("vk_method") != "execute":
            return response
        data = json.loads(response.body)
        for pages in data["response"]["c"]:
            for page in pages:
                if page and len(page["items"]) == 100 and "thread" in page["items"][0]:
                    page["items"].pop()
        return response.replace(body=json.dumps(data).encode())


@deferred_f_from_coro_f
async def test_the_coverage_check_holds_inside_execute(sqlite_url):
    data = deep_post(top=150, threads=1, replies=0)
    settings = {**EXECUTE, "DOWNLOADER_MIDDLEWARES": {f"{__name__}.ShortenExecutePages": 560}}
    crawler, task, _ = await crawl(data, sqlite_url, settings)
    assert task.status == "failed"
    assert task.metrics["errors"] == [
        "group 30 post 1: incomplete, 99 of 150 comments announced by VK"
    ]
    # The script read on (it saw 100 comments); the spider, seeing 99, ended the level there.
    assert crawler.stats.get_value("vk/execute/pages_ignored") == 1


@deferred_f_from_coro_f
async def test_too_big_answers_are_split_down_to_plain_calls_and_nothing_is_lost(
    sqlite_url, caplog
):
    data = deep_post()
    # 60 kB: a few pages per execute; one page with its inline replies is ~35 kB.
    crawler, task, log = await crawl(data, sqlite_url, EXECUTE, execute_max_bytes=60_000)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(sqlite_url, task.id, data)
    assert crawler.stats.get_value("vk/execute/split") > 0
    assert {r["outcome"] for r in executes(log)} == {"ok", "error:13"}
    # The planner learned: after the first refusals, executes fit.
    assert [r["outcome"] for r in executes(log)][-3:] == ["ok"] * 3
    # Not even one page fits: each unit ends as a plain call.
    crawler, task, log = await crawl(data, sqlite_url, EXECUTE, execute_max_bytes=2_000)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(sqlite_url, task.id, data)
    assert "wall.getComments" in {r["method"] for r in log}


class RefuseExecute:
    """A downloader middleware answering VK error 12 ("Unable to compile code") to every
    execute: VK rejecting our script must not stop the crawl either."""

    def process_response(self, request, response):
        if request.meta.get("vk_method") != "execute":
            return response
        error = {"error_code": 12, "error_msg": "Unable to compile code"}
        return response.replace(body=json.dumps({"error": error}).encode())


@pytest.mark.parametrize("code", [28, 12])
@deferred_f_from_coro_f
async def test_a_token_that_may_not_execute_goes_on_with_plain_calls(sqlite_url, caplog, code):
    caplog.set_level(logging.INFO)
    if code == 28:  # the emulator refuses execute for this token, as VK does for some types
        _, task, log = await crawl(MIXED, sqlite_url, EXECUTE, no_execute_tokens=[TOKEN])
        assert [r["outcome"] for r in executes(log)] == ["error:28"]
    else:
        refuse = {"DOWNLOADER_MIDDLEWARES": {f"{__name__}.RefuseExecute": 560}}
        _, task, log = await crawl(MIXED, sqlite_url, {**EXECUTE, **refuse})
        assert len(executes(log)) == 1
    assert_stored_equals(sqlite_url, task.id, MIXED)
    assert {"wall.get", "wall.getComments"} <= {r["method"] for r in log}
    refusals = [r for r in caplog.records if "refused execute" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelname == "WARNING"
    assert f"VK error {code}" in refusals[0].getMessage()


class FailCommentReads:
    """A downloader middleware failing every request that reads comments: HTTP 500, or VK
    error 10 for the whole request (``mode``)."""

    mode = "500"

    def process_request(self, request):
        from scrapy.http import HtmlResponse, TextResponse

        method = request.meta.get("vk_method")
        if method == "wall.getComments" or (method == "execute" and b"C%3D%5B%5B" in request.body):
            if self.mode == "500":
                return HtmlResponse(request.url, status=500, body=b"<html>500</html>")
            error = {"error_code": 10, "error_msg": "Internal server error"}
            return TextResponse(request.url, body=json.dumps({"error": error}).encode())
        return None


@pytest.mark.parametrize("mode", ["500", "error10"])
@deferred_f_from_coro_f
async def test_a_failed_execute_is_reported_as_the_plain_calls_would_be(
    sqlite_url, mode, monkeypatch
):
    monkeypatch.setattr(FailCommentReads, "mode", mode)
    data = deep_post(top=150, threads=1, replies=0)
    settings = {"DOWNLOADER_MIDDLEWARES": {f"{__name__}.FailCommentReads": 560}, "RETRY_TIMES": 1}
    _, plain, _ = await crawl(data, sqlite_url, {**PLAIN, **settings})
    _, task, _ = await crawl(data, sqlite_url, {**EXECUTE, **settings})
    assert task.status == plain.status == "failed"
    if mode == "500":
        assert (
            task.metrics["errors"]
            == plain.metrics["errors"]
            == ["wall.getComments group 30 post 1: gave up after 1 retries (HTTP 500)"]
        )
    else:  # the same words; VK's error names the method that failed: the execute
        assert plain.metrics["errors"] == [
            "group 30 post 1: gave up after 1 retries (VK error 10 in wall.getComments: "
            "Internal server error)"
        ]
        assert task.metrics["errors"] == [
            "group 30 post 1: gave up after 1 retries (VK error 10 in execute: "
            "Internal server error)"
        ]


class FailFirstPages:
    """A downloader middleware turning the first page of every execute into ``false`` plus
    an error-10 ``execute_errors`` entry (the rest of that cursor's pages are dropped, as the
    script stops a cursor at a failed call)."""

    def process_response(self, request, response):
        if request.meta.get("vk_method") != "execute":
            return response
        data = json.loads(response.body)
        answer = data["response"]
        if answer["c"] and not answer["e"]:
            answer["c"][0] = [False]
            answer["e"] = [0]
            data["execute_errors"] = [
                {"method": "wall.getComments", "error_code": 10,
                 "error_msg": "Internal server error"}
            ]  # fmt: skip
        return response.replace(body=json.dumps(data).encode())


@deferred_f_from_coro_f
async def test_inner_errors_out_of_retries_are_recorded_per_target(sqlite_url):
    data = deep_post(top=150, threads=1, replies=0)
    failing = {"DOWNLOADER_MIDDLEWARES": {f"{__name__}.FailFirstPages": 560}}
    _, task, log = await crawl(data, sqlite_url, {**EXECUTE, **failing, "RETRY_TIMES": 2})
    assert task.status == "failed"
    assert task.metrics["errors"] == [
        "group 30 post 1: gave up after 2 retries (VK error 10 in wall.getComments: "
        "Internal server error)"
    ]
    # The first try and 2 retries, each inside an execute; the post itself was stored.
    assert len(executes(log)) == 1 + 3
    assert task.metrics["posts"] == 1 and task.metrics["comments"] == 0


@deferred_f_from_coro_f
async def test_inner_retries_back_off_and_the_crawl_waits_for_them(sqlite_url):
    # Backoff on: a retried unit waits in the planner with nothing else in flight; the timer
    # (not a callback) sends it.
    data = deep_post(top=150, threads=1, replies=0)
    settings = {**EXECUTE, "VK_BACKOFF_BASE": 0.2}
    _, task, log = await crawl(data, sqlite_url, settings, faults={"error10": 0.5}, seed=2)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(sqlite_url, task.id, data)
    assert any(r["execute_errors"] for r in executes(log))


@deferred_f_from_coro_f
async def test_an_interrupted_execute_crawl_resumes_to_the_same_rows(sqlite_url):
    data = edited(MIXED, lambda d: None)
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(
            vk.url, sqlite_url, settings={**EXECUTE, "VK_EXECUTE_CALLS": 3},
            groups=refs(data), after_items=(40, close_as("shutdown")),
        )  # fmt: skip
        interrupted = last_task(sqlite_url)
        assert interrupted.status == "in_progress"
        await run_crawl(vk.url, sqlite_url, settings=EXECUTE, task_id=str(interrupted.id))
    task = last_task(sqlite_url)
    assert task.id == interrupted.id and task.status == "failed"  # the closed targets
    assert_stored_equals(sqlite_url, task.id, data)


@deferred_f_from_coro_f
async def test_a_crash_after_every_unit_was_handled_still_fails_the_task(sqlite_url, monkeypatch):
    """The callback of the first execute (the wall) crashes after handling its unit: the task
    names the bug and fails, and what the wall led to is still crawled (from the planner)."""
    from vkscraper.spiders.vk import VkSpider

    real, calls = VkSpider._flush, []

    def flaky(self):
        calls.append(1)
        if len(calls) == 2:  # 1: after groups.getById; 2: after the first execute
            raise RuntimeError("simulated bug")
        return real(self)

    monkeypatch.setattr(VkSpider, "_flush", flaky)
    data = deep_post(top=150, threads=1, replies=0)
    _, task, _ = await crawl(data, sqlite_url, EXECUTE)
    assert task.status == "failed"
    assert task.metrics["errors"] == [
        "execute of wall.get group 30: callback error: RuntimeError('simulated bug')"
    ]
    assert_stored_equals(sqlite_url, task.id, data)


@deferred_f_from_coro_f
async def test_executes_dropped_by_a_spider_middleware_do_not_hold_the_rest(sqlite_url):
    """DEPTH_LIMIT drops the comment executes before the scheduler, so they never come back
    to lower the in-flight count; a partial batch left in the planner (2 calls per execute:
    the walls come in two executes, and the second leaves one cursor behind) must still go
    (and be dropped too), and the task must end naming what was lost, not hang."""
    settings = {**EXECUTE, "DEPTH_LIMIT": 1, "VK_EXECUTE_CALLS": 2, "CLOSESPIDER_TIMEOUT": 20}
    crawler, task, _ = await crawl(MIXED, sqlite_url, settings)
    assert crawler.stats.get_value("finish_reason") == "finished"
    assert task.status == "failed"
    assert any("never reached the scheduler" in e for e in task.metrics["errors"])


class SlowStage:
    """A pipeline stage that holds every page for 2 s; it notes, as it lets the first
    comments page go, how many comment calls the emulator has received."""

    log_path: str = ""
    seen_at_release: list[int] = []

    async def process_item(self, item):
        await asyncio.sleep(2)
        if item.kind == "comments" and not SlowStage.seen_at_release:
            with open(SlowStage.log_path, encoding="utf-8") as fh:
                log = [json.loads(line) for line in fh if line.strip()]
            SlowStage.seen_at_release.append(
                sum(c == "wall.getComments" for r in log for c in r.get("calls", [r["method"]]))
            )
        return item


@pytest.mark.parametrize("mode", [PLAIN, EXECUTE], ids=["plain", "execute"])
@deferred_f_from_coro_f
async def test_the_next_pages_request_leaves_before_a_slow_stage_lets_the_page_go(
    sqlite_url, mode
):
    """Requests before items: with one page in the pipelines at a time and each held 2 s,
    the request for the post's second page reaches VK before the first page is stored."""
    data = deep_post(top=250, threads=1, replies=0)
    settings = {**mode, "VK_EXECUTE_CALLS": 1, "CONCURRENT_ITEMS": 1,
                "ITEM_PIPELINES": {f"{__name__}.SlowStage": 200}}  # fmt: skip
    SlowStage.seen_at_release = []
    with FakeVk(data, tokens=[TOKEN]) as vk:
        SlowStage.log_path = str(vk.log_path)
        await run_crawl(vk.url, sqlite_url, settings=settings, groups=refs(data))
    assert last_task(sqlite_url).status == "completed"
    # Page 1 of the post is the first comment call; page 2's had reached VK already.
    assert SlowStage.seen_at_release and SlowStage.seen_at_release[0] >= 2


@deferred_f_from_coro_f
async def test_the_tasks_request_count_is_the_emulators(sqlite_url):
    """metrics.requests counts VK's answers: every request the emulator logged, once."""
    data = deep_post(top=250, threads=2, replies=30)
    _, task, log = await crawl(data, sqlite_url, EXECUTE)
    assert task.status == "completed"
    assert task.metrics["requests"] == len(log) > 2
