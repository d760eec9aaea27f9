"""Runs of the vk spider that the review broke on purpose: group resolution across batches,
re-runs and resumes, comments that vanish between runs, paging decisions, the coverage check,
and requests that something else drops. Each test failed on the code before its fix."""

from __future__ import annotations

import gc
import json
import logging

import pytest
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.utils.defer import deferred_f_from_coro_f

from fakevk import FakeVk
from tests.helpers.crawl import (
    TOKEN,
    assert_stored_equals,
    close_as,
    comparable,
    finished_groups,
    last_task,
    rows_scraped,
    run_crawl,
    small_dataset,
    stored_rows,
    task_of,
)
from vkscraper.extensions.task import VkTaskExtension
from vkscraper.items import VkPage
from vkscraper.store import open_store

pytestmark = pytest.mark.integration

T0 = 1_700_000_000
POST = 777_777  # post and comment ids share one id space per wall


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)


def comment(cid, replies=0, first_reply=None):
    reply_ids = range(first_reply or cid * 1000, (first_reply or cid * 1000) + replies)
    return {
        "id": cid, "from_id": 1, "date": T0 + cid, "text": f"c{cid}", "likes": 0,
        "replies": [{"id": r, "from_id": 1, "date": T0 + 50_000 + r, "text": f"r{r}"}
                    for r in reply_ids],
    }  # fmt: skip


def one_post_dataset(comments, gid=30):
    return {
        "profiles": [{"id": 1, "first_name": "Ann", "last_name": "Lee"}],
        "groups": [{"id": gid, "screen_name": "paging", "name": "Paging",
                    "posts": [{"id": POST, "date": T0, "text": "p", "comments": comments}]}],
    }  # fmt: skip


def comment_requests(log, **match):
    calls = [r for r in log if r["method"] == "wall.getComments"]
    return [r for r in calls if all(str(r["params"].get(k)) == str(v) for k, v in match.items())]


# Point 1 and 2: groups.getById batches


class FailGetById:
    """A downloader middleware answering 502 to the lookup of one group (out of retries)."""

    def process_request(self, request):
        if request.meta.get("vk_method") == "groups.getById" and b"pinnedold" in request.body:
            return Response(request.url, status=502, request=request)
        return None


@deferred_f_from_coro_f
async def test_a_failed_lookup_keeps_its_group_and_a_rerun_crawls_it(store_url):
    data = small_dataset()
    failing = {
        "VK_GROUPS_PER_REQUEST": 1,
        "RETRY_TIMES": 1,
        "DOWNLOADER_MIDDLEWARES": {f"{__name__}.FailGetById": 50},
    }
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts,pinnedold", settings=failing)
        task = last_task(store_url)
        assert task.status == "failed"
        assert task.groups == [11, "pinnedold"]  # resolved, and still to resolve
        assert task.metrics["groups_total"] == 2 and task.metrics["groups_done"] == 1
        assert any("did not finish: pinnedold" in e for e in task.metrics["errors"])

        await run_crawl(vk.url, store_url, task_id=str(task.id))
    task = task_of(store_url, task.id)
    assert task.status == "completed", task.metrics["errors"]
    assert task.groups == [11, 12]
    assert task.metrics["groups_done"] == task.metrics["groups_total"] == 2
    assert_stored_equals(store_url, task.id, data, only={11, 12})


@deferred_f_from_coro_f
async def test_one_group_by_id_and_by_name_in_two_batches_is_crawled_once(store_url):
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        await run_crawl(
            vk.url, store_url, groups="11,threeposts", settings={"VK_GROUPS_PER_REQUEST": 1}
        )
        walls = [r for r in vk.requests() if r["method"] == "wall.get"]
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    assert len(walls) == 1
    assert task.groups == [11]
    m = task.metrics
    assert (m["groups_total"], m["groups_done"], m["posts_expected"]) == (1, 1, 3)


# Point 3 and 15: re-runs and resumes


@deferred_f_from_coro_f
async def test_rerun_of_a_finished_task_is_a_fresh_run_with_history(store_url):
    data = small_dataset()
    data["groups"][1]["posts"][0]["comments_closed"] = True
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts")
    first = last_task(store_url)
    assert first.status == "failed" and len(first.metrics["errors"]) == 1

    fixed = small_dataset()  # the cause is gone
    with FakeVk(fixed, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, task_id=str(first.id))
    task = task_of(store_url, first.id)
    assert task.status == "completed", task.metrics["errors"]
    m = task.metrics
    assert m["errors"] == []
    assert (m["posts_expected"], m["comments_expected"], m["posts"], m["comments"]) == (3, 3, 3, 3)
    assert m["run"] == 2
    (old,) = m["history"]
    assert old["run"] == 1 and old["status"] == "failed" and len(old["errors"]) == 1
    assert old["posts_expected"] == 3
    assert task.started_at > first.started_at
    assert_stored_equals(store_url, task.id, fixed, only={11})


def some_group_finished(crawler) -> bool:
    return bool(finished_groups(crawler))


@deferred_f_from_coro_f
async def test_resume_skips_done_groups_and_counts_each_error_once(store_url):
    data = small_dataset()
    data["groups"].append({"id": 21, "screen_name": "gone", "name": "Gone",
                           "deactivated": "deleted", "posts": []})  # fmt: skip
    data["groups"][1]["posts"][0]["comments_closed"] = True  # group 11 fails
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(
            vk.url, store_url, groups="gone,threeposts,pinnedold,pinnedrecent",
            settings={"CONCURRENT_REQUESTS": 1},
            when=(some_group_finished, close_as("shutdown")),
        )  # fmt: skip
        task = last_task(store_url)
        assert task.status == "in_progress"
        done_before = {
            int(k) for k, v in task.metrics["groups"].items() if v.get("status") == "done"
        }
        assert done_before and done_before < {10, 11, 12}
        first_log = len(vk.requests())

        await run_crawl(vk.url, store_url, task_id=str(task.id))
        resumed_walls = {
            -int(r["params"]["owner_id"])
            for r in vk.requests()[first_log:]
            if r["method"] == "wall.get"
        }
    assert resumed_walls.isdisjoint(done_before)  # done groups are not fetched again
    task = task_of(store_url, task.id)
    assert task.status == "failed"
    errors = task.metrics["errors"]
    assert sum("community is deleted" in e for e in errors) == 1, errors
    assert sum("VK error 212" in e for e in errors) == 1, errors
    assert len(errors) == 2, errors
    m = task.metrics
    assert m["groups_done"] == m["groups_total"] == 4
    posts, comments = assert_stored_equals(store_url, task.id, data, only={10, 11, 12})
    assert m["posts_expected"] == len(posts) == m["posts"]


def two_group_dataset(wall_of_31=1):
    """Group 30 (one post, 250 comments: three pages) and group 31 (one post), whose wall
    is closed with ``wall_of_31=0``."""
    data = one_post_dataset([comment(i) for i in range(1, 251)])
    post = {"id": 5, "date": T0, "text": "q", "comments": []}
    data["groups"].append(
        {"id": 31, "screen_name": "other", "name": "Other", "wall": wall_of_31, "posts": [post]}
    )
    return data


def failed_while_30_runs(crawler) -> bool:
    finished = finished_groups(crawler)
    tracker = crawler.get_extension(VkTaskExtension).tracker
    return 31 in finished and tracker.failed(31) and 30 not in finished


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_a_resume_crawls_again_the_groups_that_failed(store_url):
    """A group that failed (its entry is ``done``, status ``failed``) is retried by the resume,
    not skipped as if it were done."""
    with FakeVk(two_group_dataset(wall_of_31=0), tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="paging,other",
                        settings={"CONCURRENT_REQUESTS": 1, "VK_REQUESTS_PER_SECOND": 5},
                        when=(failed_while_30_runs, close_as("shutdown")))  # fmt: skip
    task = last_task(store_url)
    assert task.status == "in_progress"
    entry = task.metrics["groups"]["31"]
    assert entry["status"] == "failed" and entry["done"], entry
    assert task.metrics["groups"]["30"].get("status") != "done"

    fixed = two_group_dataset()  # the cause is gone
    with FakeVk(fixed, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, task_id=str(task.id))
        walls = {-int(r["params"]["owner_id"]) for r in vk.requests() if r["method"] == "wall.get"}
    assert walls == {30, 31}  # the failed group is crawled again
    task = task_of(store_url, task.id)
    assert task.status == "completed", task.metrics["errors"]
    assert task.metrics["groups"]["31"]["status"] == "done"
    assert_stored_equals(store_url, task.id, fixed)


# Point 4: comments that vanish between runs


@deferred_f_from_coro_f
async def test_comments_deleted_on_vk_between_runs_are_marked_and_not_counted(store_url):
    data = one_post_dataset([comment(1), comment(2), comment(3, replies=2)])
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="paging")
    first = last_task(store_url)
    assert first.metrics["comments"] == 5

    gone = one_post_dataset([comment(1), comment(3, replies=1)])  # 2 and reply 3001 deleted
    with FakeVk(gone, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="paging")
    second = last_task(store_url)
    assert second.status == "completed", second.metrics["errors"]
    m = second.metrics
    assert m["comments"] == m["comments_expected"] == 3
    _, comments = stored_rows(store_url, second.id)
    assert sorted(c["vk_comment_id"] for c in comments) == [1, 3, 3000]
    assert not any(c["deleted"] for c in comments)

    # The rows stay, marked deleted, with when VK last had them; task 1 still reads them.
    _, old = stored_rows(store_url, first.id)
    by_id = {c["vk_comment_id"]: c for c in old}
    assert sorted(by_id) == [1, 2, 3, 3000, 3001]
    assert by_id[2]["deleted"] and by_id[3001]["deleted"]
    assert not by_id[1]["deleted"]
    assert by_id[2]["last_seen_at"] < second.started_at <= by_id[1]["last_seen_at"]


# Point 5: settings out of VK's range, and the coverage check


@deferred_f_from_coro_f
async def test_page_size_above_vk_maximum_is_refused(store_url):
    with pytest.raises(ValueError, match="VK_COMMENTS_PAGE_SIZE must be between 2 and 100"):
        await run_crawl("http://127.0.0.1:9/method/", store_url, groups="1",
                        settings={"VK_COMMENTS_PAGE_SIZE": 200})  # fmt: skip
    with open_store(store_url) as store:
        store.migrate()
        assert store.list_tasks() == []  # refused before anything was written


class LoseOneComment:
    """A downloader middleware that removes the last comment of a full top-level page: VK
    answers a short page, as when a page size above its maximum is asked for."""

    def process_response(self, request, response):
        if request.meta.get("vk_method") != "wall.getComments" or b"comment_id=" in request.body:
            return response
        data = json.loads(response.body)
        items = data["response"]["items"]
        if len(items) == 100:
            items.pop()
            return response.replace(body=json.dumps(data).encode())
        return response


@deferred_f_from_coro_f
async def test_a_level_shorter_than_announced_is_a_task_error(store_url):
    data = one_post_dataset([comment(i) for i in range(1, 151)])
    with FakeVk(data, tokens=[TOKEN]) as vk:
        lose = {"DOWNLOADER_MIDDLEWARES": {f"{__name__}.LoseOneComment": 560}}
        await run_crawl(vk.url, store_url, groups="paging", settings=lose)
    task = last_task(store_url)
    assert task.status == "failed"
    assert task.metrics["errors"] == [
        f"group 30 post {POST}: incomplete, 99 of 150 comments announced by VK"
    ]
    assert task.metrics["groups"]["30"]["status"] == "failed"


# Point 6 and 18: paging decisions, counted in requests


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_the_anchor_thread_is_fetched_once(store_url):
    # Comment 100 ends page 1 and anchors page 2; its thread needs a request of its own.
    comments = [comment(i) for i in range(1, 100)] + [comment(100, replies=15), comment(101)]
    data = one_post_dataset(comments)
    with FakeVk(data, tokens=[TOKEN]) as vk:
        crawler = await run_crawl(vk.url, store_url, groups="paging")
        log = vk.requests()
    assert len(comment_requests(log)) == 3  # page 1, page 2, the thread of 100
    assert len(comment_requests(log, comment_id=100)) == 1
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(store_url, task.id, data)
    # Each comment is scraped once (the anchor that opens page 2 is not repeated).
    assert rows_scraped(crawler.stats) == 1 + 101 + 15


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("top", "replies", "requests"),
    [
        (199, 0, 2),  # page 2 (anchored) ends exactly on the last comment: no third page
        (201, 0, 3),  # two comments past page 2
        (203, 0, 3),
        (50, 208, 1 + 2),  # a thread: 10 inline, then anchored pages of 99 new replies
        (50, 212, 1 + 3),
    ],
)
@deferred_f_from_coro_f
async def test_paging_stops_exactly_when_the_level_is_read(store_url, top, replies, requests):
    comments = [comment(i) for i in range(1, top + 1)]
    comments[0] = comment(1, replies=replies, first_reply=10_000)
    data = one_post_dataset(comments)
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="paging")
        log = vk.requests()
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(store_url, task.id, data)
    assert len(comment_requests(log)) == requests


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("execute", [False, True])
@deferred_f_from_coro_f
async def test_paging_reads_on_when_the_count_moved_during_the_crawl(store_url, execute):
    """25 comments, pages of 10; 5 of page 1 vanish once it is served. Page 2 then reads 10
    more and VK announces 20, which "seen" has reached: only the count having moved since page
    1 (25) says that 5 comments are still unread."""
    data = one_post_dataset([comment(i) for i in range(1, 26)])
    settings = {"VK_COMMENTS_PAGE_SIZE": 10, "VK_EXECUTE": execute}
    with FakeVk(data, tokens=[TOKEN], drift=5) as vk:
        await run_crawl(vk.url, store_url, groups="paging", settings=settings)
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    _, comments = stored_rows(store_url, task.id)
    assert sorted(c["vk_comment_id"] for c in comments) == list(range(1, 26))


# Point 7: requests that something else drops


class IgnoreThreads:
    """A user's downloader middleware that refuses thread pages."""

    def process_request(self, request):
        if b"comment_id=" in request.body:
            raise IgnoreRequest("no threads today")
        return None


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_a_request_dropped_by_a_downloader_middleware_is_named(store_url):
    data = one_post_dataset([comment(1, replies=15)])
    with FakeVk(data, tokens=[TOKEN]) as vk:
        ignore = {"DOWNLOADER_MIDDLEWARES": {f"{__name__}.IgnoreThreads": 50}}
        await run_crawl(vk.url, store_url, groups="paging", settings=ignore)
    task = last_task(store_url)
    assert task.status == "failed"
    (error,) = task.metrics["errors"]
    assert error.startswith(f"wall.getComments group 30 post {POST} thread 1: dropped before")
    assert "no threads today" in error
    assert task.metrics["groups"]["30"]["status"] == "failed"


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_requests_dropped_by_depth_limit_are_named(store_url):
    data = one_post_dataset([comment(i) for i in range(1, 151)])
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="paging", settings={"DEPTH_LIMIT": 2})
    task = last_task(store_url)
    assert task.status == "failed"
    (error,) = task.metrics["errors"]
    assert error == (
        "1 group(s) did not finish: 30 (1 request(s) never reached the scheduler "
        "(a spider middleware dropped them, e.g. DEPTH_LIMIT))"
    )


# Point 11: items are data only


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_feed_export_holds_only_posts_and_comments(store_url, tmp_path):
    data = small_dataset()
    out = tmp_path / "items.jsonl"
    with FakeVk(data, tokens=[TOKEN]) as vk:
        feeds = {"FEEDS": {str(out): {"format": "jsonlines"}}}
        crawler = await run_crawl(vk.url, store_url, groups="threeposts,club12", settings=feeds)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    posts, comments = stored_rows(store_url, last_task(store_url).id)
    assert len(rows) == len(posts) + len(comments)
    assert all("vk_post_id" in r or "vk_comment_id" in r for r in rows)
    assert rows_scraped(crawler.stats) == len(rows)
    assert comparable(comments, ("owner_id", "vk_comment_id", "date"))


# Issue 8, point 16: progress in the crawl log, and groups without rows


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_the_log_shows_progress_while_the_crawl_runs(store_url, caplog):
    caplog.set_level(logging.INFO)
    data = small_dataset()
    data["groups"].append({"id": 40, "screen_name": "empty", "name": "Empty", "posts": []})
    settings = {"LOGSTATS_INTERVAL": 0.2, "VK_REQUESTS_PER_SECOND": 10, "LOG_LEVEL": "INFO"}
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts,pinnedold,empty", settings=settings)
    lines = [r.getMessage() for r in caplog.records if "requests/s" in r.getMessage()]
    assert len(lines) >= 3, lines
    assert any("groups 0/3 done" in line or "groups 1/3 done" in line for line in lines)
    assert any(float(line.split(", ")[-2].split()[0]) > 5 for line in lines[1:]), lines
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    empty = task.metrics["groups"]["40"]
    assert (empty["posts"], empty["comments"], empty["status"]) == (0, 0, "done")


# Issue 8, point 14: what a crawl does to the groups table


@deferred_f_from_coro_f
async def test_explicit_groups_do_not_join_the_list_and_dead_ones_leave_it(store_url):
    data = small_dataset()
    data["groups"].append({"id": 21, "screen_name": "gone", "name": "Gone",
                           "deactivated": "deleted", "posts": []})  # fmt: skip
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts")
        with open_store(store_url) as store:
            (known,) = store.list_groups()
            assert (known["id"], known["name"], known["is_active"]) == (11, "Three posts", False)
            assert store.active_group_refs() == []  # -a groups= did not add it to the list
            from vkscraper.vk.grouprefs import parse_group_refs

            store.add_groups(parse_group_refs("club12,99,gone,nosuchname"))
        await run_crawl(vk.url, store_url)
        first = last_task(store_url)
        assert first.status == "failed"
        with open_store(store_url) as store:
            groups = {g["id"] or g["screen_name"]: g for g in store.list_groups()}
            assert [str(r) for r in store.active_group_refs()] == ["12"]
        assert groups[99]["inactive_reason"] == "not found on VK"
        assert groups[21]["inactive_reason"] == "community is deleted"
        assert groups["nosuchname"]["inactive_reason"] == "not found on VK"
        assert groups[12]["is_active"] and groups[12]["inactive_reason"] is None
        await run_crawl(vk.url, store_url)  # the list now holds only what works
    assert last_task(store_url).status == "completed"


@deferred_f_from_coro_f
async def test_comments_gone_before_a_resume_are_marked_and_not_counted(store_url):
    """The interrupted run stored comments 5 and 6; they vanish before the resume, which
    crawls the post again completely: they are marked deleted and the task does not count
    them (the run's start is the interrupted run's, so "seen in this run" alone would)."""
    data = one_post_dataset([comment(i) for i in range(1, 251)])
    with FakeVk(data, tokens=[TOKEN]) as vk:
        # Slow enough that the stop comes while page 1's items are processed.
        await run_crawl(vk.url, store_url, groups="paging",
                        settings={"CONCURRENT_REQUESTS": 1, "VK_REQUESTS_PER_SECOND": 2},
                        after_items=(50, close_as("shutdown")))  # fmt: skip
    task = last_task(store_url)
    assert task.status == "in_progress"
    assert not task.metrics["groups"]["30"].get("done")
    _, before = stored_rows(store_url, task.id)
    assert {5, 6} <= {c["vk_comment_id"] for c in before}

    gone = one_post_dataset([comment(i) for i in range(1, 251) if i not in (5, 6)])
    with FakeVk(gone, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, task_id=str(task.id))
    task = task_of(store_url, task.id)
    assert task.status == "completed", task.metrics["errors"]
    m = task.metrics
    assert m["comments"] == m["comments_expected"] == 248
    _, comments = stored_rows(store_url, task.id)
    assert {c["vk_comment_id"] for c in comments} == set(range(1, 251)) - {5, 6}
    with open_store(store_url) as store:
        rows = store._run("read", lambda cur: (
            cur.execute("SELECT vk_comment_id, deleted FROM comments WHERE vk_comment_id IN "
                        "(4, 5, 6)"), sorted(cur.fetchall()))[1])  # fmt: skip
    assert [(r[0], bool(r[1])) for r in rows] == [(4, False), (5, True), (6, True)]


class KeepFirstCommentsPage:
    """A user's spider middleware that stops reading a callback's output after its first
    comments page (and lets the rest be garbage-collected)."""

    async def process_spider_output(self, response, result):
        async for out in result:
            yield out
            if isinstance(out, VkPage) and out.kind == "comments":
                await result.aclose()
                gc.collect()
                return


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_pages_a_spider_middleware_never_read_fail_their_group(store_url):
    """Pages of an abandoned callback output never reach the store: their group fails (it was
    recorded done, and the task completed, with 1 of 7 comments stored)."""
    data = small_dataset()
    data["groups"][1]["posts"][0]["comments"] = [
        {"id": 100 + i, "from_id": 1, "date": 1_700_000_050, "text": f"x{i}", "replies": []}
        for i in range(5)
    ]
    settings = {"SPIDER_MIDDLEWARES": {f"{__name__}.KeepFirstCommentsPage": 10},
                "VK_EXECUTE": True, "VK_COMMENTS_PAGE_SIZE": 2}  # fmt: skip
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts", settings=settings)
    task = last_task(store_url)
    _, comments = stored_rows(store_url, task.id)
    assert len(comments) < 7  # the middleware kept some pages from the store
    assert task.status == "failed"
    assert task.metrics["groups"]["11"]["status"] != "done"
    assert any("never reached the item pipelines" in e for e in task.metrics["errors"]), (
        task.metrics["errors"]
    )
