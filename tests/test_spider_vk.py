"""The vk spider end to end: in-process crawls against the emulator, on PostgreSQL and SQLite."""

from __future__ import annotations

import json
import logging

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from fakevk import FakeVk, generate_dataset
from tests.helpers.crawl import (
    DATASET,
    TOKEN,
    assert_stored_equals,
    close_as,
    edited,
    expected,
    group_refs,
    last_task,
    open_all_comments,
    run_crawl,
    small_dataset,
    stored_rows,
    task_of,
)
from vkscraper.spiders.vk import check_arguments
from vkscraper.store import open_store
from vkscraper.vk.grouprefs import GroupRef

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)
    return TOKEN


@pytest.fixture(scope="module")
def fakevk():
    with FakeVk(DATASET, tokens=[TOKEN]) as vk:
        yield vk


@deferred_f_from_coro_f
async def test_happy_path_stores_exactly_the_dataset(fakevk, store_url):
    crawler = await run_crawl(fakevk.url, store_url, groups=group_refs(DATASET))
    assert crawler.stats.get_value("finish_reason") == "finished"
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    posts, comments = assert_stored_equals(store_url, task.id, DATASET)
    # The dataset has what the issue asks for; make sure the test really covers it.
    assert any(c["parent_id"] for c in comments.values())
    assert any(c["deleted"] for c in comments.values())
    assert any((c["author_id"] or 0) < 0 for c in comments.values())
    assert any(c["thread_count"] > 10 for c in comments.values())
    assert max(p["comments_count"] for p in posts.values()) > 100
    assert len({k[1] for k in posts}) < len(posts)  # post ids repeat across groups
    assert len({k[1] for k in comments}) < len(comments)  # so do comment ids
    m = task.metrics
    assert (m["posts"], m["comments"]) == (len(posts), len(comments))
    assert m["groups_total"] == m["groups_done"] == 3
    assert m["posts_expected"] == len(posts)
    assert all(g["status"] == "done" for g in m["groups"].values())
    assert task.groups == [g["id"] for g in DATASET["groups"] if not g.get("author_only")]
    assert task.started_at <= task.finished_at


@deferred_f_from_coro_f
async def test_pinned_posts_and_short_walls(store_url):
    data = small_dataset()
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="pinnedrecent,threeposts,club12")
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    posts, _ = assert_stored_equals(store_url, task.id, data)
    assert (-10, 1) in posts  # recent pinned counted
    assert (-12, 1) not in posts  # old pinned excluded
    assert len([k for k in posts if k[0] == -12]) == 10
    assert len([k for k in posts if k[0] == -11]) == 3


@deferred_f_from_coro_f
async def test_closed_wall_and_unknown_name_fail_only_themselves(store_url):
    data = small_dataset()
    data["groups"].append({"id": 20, "screen_name": "closedwall", "name": "Closed", "wall": 0,
                           "posts": []})  # fmt: skip
    data["groups"].append({"id": 21, "screen_name": "gone", "name": "Gone",
                           "deactivated": "deleted", "posts": []})  # fmt: skip
    data["groups"][1]["posts"][0]["comments_closed"] = True
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts,closedwall,nosuchgroup,club12,gone")
    task = last_task(store_url)
    assert task.status == "failed"
    errors = task.metrics["errors"]
    assert len(errors) == 4, errors
    assert any("group 21 (gone): community is deleted" in e for e in errors)
    assert any("nosuchgroup" in e and "not found" in e for e in errors)
    assert any("group 20" in e and "VK error 15" in e and "wall is disabled" in e for e in errors)
    assert any("group 11 post 1" in e and "VK error 212" in e for e in errors)
    assert_stored_equals(store_url, task.id, data, only={11, 12})
    assert task.metrics["groups"]["11"]["status"] == "failed"  # one post's comments missing
    assert task.metrics["groups"]["12"]["status"] == "done"
    assert task.metrics["groups"]["20"]["status"] == "failed"
    assert task.metrics["groups"]["21"]["status"] == "failed"
    assert task.metrics["groups"]["nosuchgroup"]["status"] == "failed"
    # The unknown name stays in the task (a later run looks it up again), finished and failed.
    assert task.metrics["groups_done"] == task.metrics["groups_total"] == 5
    assert task.groups == [11, 20, "nosuchgroup", 12, 21]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_only_unknown_groups(store_url):
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="nosuchgroup,club999")
    task = last_task(store_url)
    assert task.status == "failed"
    assert sorted(task.metrics["errors"]) == [
        "group 999: not found on VK",
        "group nosuchgroup: not found on VK",
    ]
    assert task.groups == ["nosuchgroup", 999]
    assert task.metrics["groups_done"] == 2


@deferred_f_from_coro_f
async def test_faults_do_not_change_the_result(store_url):
    faults = {"500": 0.06, "502": 0.06, "503": 0.06, "429": 0.06, "error10": 0.06,
              "malformed": 0.06, "drop": 0.06}  # fmt: skip
    with FakeVk(DATASET, tokens=[TOKEN], faults=faults, seed=3, retry_after=0) as vk:
        crawler = await run_crawl(vk.url, store_url, groups=group_refs(DATASET))
        outcomes = {r["outcome"] for r in vk.requests()}
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(store_url, task.id, DATASET)
    for kind in ("500", "502", "503", "429", "error10", "malformed", "drop"):
        assert f"fault:{kind}" in outcomes
    assert crawler.stats.get_value("retry/count") > 0


@deferred_f_from_coro_f
async def test_second_run_updates_and_adds_nothing(store_url):
    data = small_dataset()
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts")
    first = last_task(store_url)
    before_posts, before_comments = stored_rows(store_url, first.id)

    def change(d):
        group = d["groups"][1]
        group["posts"][0]["likes"] = 999
        group["posts"][0]["text"] = "edited post"
        group["posts"][1]["comments"][0]["text"] = "edited comment 😀"
        group["posts"][1]["comments"][0]["likes"] = 42

    data2 = edited(data, change)
    with FakeVk(data2, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts")
    second = last_task(store_url)
    assert second.id != first.id and second.status == "completed"
    posts, comments = assert_stored_equals(store_url, second.id, data2, only={11})
    assert len(posts) == len(before_posts) and len(comments) == len(before_comments)
    assert posts[(-11, 1)]["likes"] == 999 and posts[(-11, 1)]["text"] == "edited post"
    assert comments[(-11, 12)]["text"] == "edited comment 😀"
    with open_store(store_url) as store:
        # The first task's results are still readable.
        assert len(store.task_results(first.id, "posts")) == 3


@deferred_f_from_coro_f
async def test_mini_load(store_url):
    generated = generate_dataset(
        seed=11, groups=3, posts_per_group=10, min_comments=3, max_comments=8, max_replies=8
    )
    data = edited(generated, open_all_comments)
    want_posts, want_comments = expected(data)
    assert len(want_posts) == 30 and 200 <= len(want_comments) <= 500, len(want_comments)
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups=group_refs(data))
    task = last_task(store_url)
    assert task.status == "completed"
    assert_stored_equals(store_url, task.id, data)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_token_never_logged_nor_stored(store_url, caplog):
    """The token is in no task error, group or row. (That no log line can carry it is proved
    in tests/test_secrets.py with a component that deliberately logs request headers: here
    nothing would log it, so the log check alone could not fail.)"""
    caplog.set_level(logging.DEBUG)
    faults = {"500": 0.1, "error10": 0.1, "drop": 0.1}
    data = small_dataset()
    data["groups"].append({"id": 20, "screen_name": "closedwall", "name": "C", "wall": 0,
                           "posts": []})  # fmt: skip
    with FakeVk(data, tokens=[TOKEN], faults=faults, seed=5, retry_after=0) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts,closedwall,missinggroup")
        log_text = vk.log_path.read_text()
    assert len(caplog.records) > 20
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert TOKEN not in logged
    assert TOKEN not in log_text
    with open_store(store_url) as store:
        dump = repr(store.list_tasks()) + repr(store.list_groups())
        for task in store.list_tasks():
            for kind in ("posts", "comments"):
                dump += repr(store.task_results(task.id, kind, limit=10_000))
    assert "group 20: VK error 15" in dump  # the dump holds the task errors
    assert TOKEN not in dump


@deferred_f_from_coro_f
async def test_bad_token_stops_at_once_and_leaves_the_task_resumable(store_url, monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", "not-a-valid-token")
    with FakeVk(DATASET, tokens=[TOKEN]) as vk:
        crawler = await run_crawl(vk.url, store_url, groups=group_refs(DATASET))
        n_requests = len(vk.requests())
    assert crawler.stats.get_value("finish_reason") == "vk_no_token"
    assert n_requests == 1
    task = last_task(store_url)
    assert task.status == "in_progress"  # a run with a valid token resumes it
    (error,) = task.metrics["errors"]
    assert "VK error 5" in error and "VK_ACCESS_TOKEN" in error


@pytest.mark.parametrize("value", [None, "t", "short-token", "a token with spaces in it"])
@deferred_f_from_coro_f
async def test_a_missing_or_implausible_token_is_refused_before_anything(
    store_url, monkeypatch, caplog, value
):
    if value is None:
        monkeypatch.delenv("VK_ACCESS_TOKEN")
    else:
        monkeypatch.setenv("VK_ACCESS_TOKEN", value)
    with FakeVk(DATASET, tokens=[TOKEN]) as vk:
        crawler = await run_crawl(vk.url, store_url, groups="1")
        assert vk.requests() == []
    assert crawler.stats.get_value("finish_reason") == "vk_bad_arguments"
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert error.startswith("VK_ACCESS_TOKEN")
    with open_store(store_url) as store:
        store.migrate()
        assert store.list_tasks() == []  # no junk task left behind


@deferred_f_from_coro_f
async def test_interrupted_task_stays_in_progress_and_resumes(store_url):
    with FakeVk(DATASET, tokens=[TOKEN]) as vk:
        # Close like Ctrl-C does, once some items are in.
        await run_crawl(
            vk.url, store_url, groups=group_refs(DATASET),
            settings={"CONCURRENT_REQUESTS": 1}, after_items=(40, close_as("shutdown")),
        )  # fmt: skip
        task = last_task(store_url)
        assert task.status == "in_progress"
        assert task.finished_at is None
        started = task.started_at
        partial_posts, _ = stored_rows(store_url, task.id)
        assert 0 < len(partial_posts)

        await run_crawl(vk.url, store_url, task_id=str(task.id))
    task = task_of(store_url, task.id)
    assert task.status == "completed", task.metrics["errors"]
    assert task.started_at == started
    posts, comments = assert_stored_equals(store_url, task.id, DATASET)
    m = task.metrics
    assert m["groups_done"] == m["groups_total"] == 3
    assert (m["posts"], m["comments"]) == (len(posts), len(comments))
    assert m["posts_expected"] == len(posts)  # groups re-crawled on resume are not counted twice


@deferred_f_from_coro_f
async def test_no_arguments_crawls_the_active_groups_table(store_url):
    data = small_dataset()
    with open_store(store_url) as store:
        store.migrate()
        store.add_groups([GroupRef(screen_name="threeposts"), GroupRef(group_id=12)])
        store.add_groups([GroupRef(group_id=10)])
        store.remove_groups([GroupRef(group_id=10)])
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url)
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    assert sorted(task.groups) == [11, 12]
    assert_stored_equals(store_url, task.id, data, only={11, 12})
    with open_store(store_url) as store:
        groups = {g["id"]: g for g in store.list_groups() if g.get("id")}
    assert groups[11]["name"] == "Three posts"  # the name was resolved and saved


@pytest.mark.rate
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_rate_limit_is_never_exceeded(store_url):
    generated = generate_dataset(
        seed=5, groups=3, posts_per_group=10, min_comments=1, max_comments=5, max_replies=12
    )
    data = edited(generated, open_all_comments)
    with FakeVk(data, tokens=[TOKEN], rate_limit=3) as vk:
        await run_crawl(vk.url, store_url, groups=group_refs(data),
                        settings={"VK_REQUESTS_PER_SECOND": 3})  # fmt: skip
        log = vk.requests()
    assert len(log) >= 30  # ten seconds at the full rate: windows in every phase of a crawl
    assert [r for r in log if r["outcome"] == "error:6"] == []
    times = sorted(r["t"] for r in log)
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 3
    task = last_task(store_url)
    assert task.status == "completed"
    assert_stored_equals(store_url, task.id, data)


@deferred_f_from_coro_f
async def test_dead_database_loses_nothing_collected(pg_admin_url, pg_url, tmp_path, caplog):
    """The database goes away mid-crawl: what was collected ends up in the DB or the dump."""
    from testkit.pg import admin_execute

    dbname = pg_url.rsplit("/", 1)[1]

    def kill_db(crawler):
        admin_execute(pg_admin_url, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
        admin_execute(
            pg_admin_url,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'",
        )

    try:
        with FakeVk(DATASET, tokens=[TOKEN]) as vk:
            await run_crawl(
                vk.url, pg_url, groups=group_refs(DATASET), after_items=(60, kill_db),
                settings={"VK_UNSAVED_DIR": str(tmp_path), "VK_STORE_BATCH_SIZE": 20},
            )  # fmt: skip
    finally:
        admin_execute(pg_admin_url, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
    assert any(r.levelname == "CRITICAL" and "unsaved" in r.getMessage() for r in caplog.records)
    (dump,) = tmp_path.glob("vkscraper-unsaved-task*.jsonl")
    dumped = [json.loads(line) for line in dump.read_text().splitlines()]
    task = last_task(pg_url)
    posts, comments = stored_rows(pg_url, task.id)
    post_keys = {(r["owner_id"], r["vk_post_id"]) for r in posts}
    comment_keys = {(r["owner_id"], r["vk_comment_id"]) for r in comments}
    for row in dumped:
        if row["kind"] == "VkPost":
            post_keys.add((row["owner_id"], row["vk_post_id"]))
        else:
            comment_keys.add((row["owner_id"], row["vk_comment_id"]))
    want_posts, want_comments = expected(DATASET)
    assert len(posts) < len(want_posts) or len(comments) < len(want_comments)
    assert dumped
    assert post_keys == set(want_posts)
    assert comment_keys == set(want_comments)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_comments_deleted_while_paging_do_not_shift_pages(store_url):
    """Live data: 5 comments vanish right after a post's first page. Anchored pages lose
    nothing; plain offsets would skip 5 comments of the second page."""
    with FakeVk(DATASET, tokens=[TOKEN], drift=5) as vk:
        await run_crawl(vk.url, store_url, groups=group_refs(DATASET))
        anchored = [r for r in vk.requests() if "start_comment_id" in r["params"]]
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    assert anchored
    # The deleted comments were read on the first page, so they are stored too.
    assert_stored_equals(store_url, task.id, DATASET)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_a_callback_bug_cannot_end_in_completed(store_url, monkeypatch):
    """A crash in a callback leaves its group unfinished: the task says so and fails."""
    import vkscraper.spiders.vk as vk_module

    real = vk_module.check_comments_page

    def flaky(data):
        if any(item.get("id") == 12 for item in data["items"]):  # group 11 post 2's page
            raise RuntimeError("simulated bug")
        return real(data)

    monkeypatch.setattr(vk_module, "check_comments_page", flaky)
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts,club12")
    task = last_task(store_url)
    assert task.status == "failed"
    assert task.metrics["errors"] == [
        "wall.getComments group 11 post 2: callback error: RuntimeError('simulated bug')"
    ]
    # The crash ended its request: the group is over, failed, with the cause named.
    assert task.metrics["groups"]["11"]["status"] == "failed"
    assert task.metrics["groups"]["12"]["status"] == "done"


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_concurrent_errors_are_each_recorded_once(store_url):
    import asyncio

    from scrapy.utils.test import get_crawler

    from vkscraper.extensions.task import VkTaskExtension

    crawler = get_crawler(settings_dict={"DATABASE_URL": store_url, "VK_METRICS_INTERVAL": 0})
    ext = VkTaskExtension(crawler)
    ext.store = open_store(store_url)
    ext.store.migrate()
    ext.task_id = ext.store.create_task([1])
    try:
        await asyncio.gather(*(ext.add_error(f"error {i}") for i in range(30)))
        errors = ext.store.get_task(ext.task_id).metrics["errors"]
    finally:
        ext.store.close()
    assert sorted(errors) == sorted(f"error {i}" for i in range(30))


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_requests_out_of_retries_become_task_errors(store_url):
    with FakeVk(small_dataset(), tokens=[TOKEN], faults={"502": 1.0},
                max_faults_per_request=10) as vk:  # fmt: skip
        crawler = await run_crawl(
            vk.url, store_url, groups="threeposts", settings={"RETRY_TIMES": 1}
        )
        assert len(vk.requests()) == 2
    task = last_task(store_url)
    assert task.status == "failed"
    assert task.metrics["errors"] == [
        "groups.getById groups threeposts: gave up after 1 retries (HTTP 502)",
        # never resolved, so never crawled; it stays in the task for a re-run
        "1 group(s) did not finish: threeposts (never resolved to a group id)",
    ]
    assert crawler.stats.get_value("retry/max_reached") == 1
    assert "0" not in task.metrics["groups"]  # a lookup failure is no group of its own


@pytest.mark.parametrize("task_id", ["0", "-3", "007x"])
def test_task_id_must_be_a_positive_number(task_id):
    with pytest.raises(ValueError, match=r"-a task_id must be a positive number"):
        check_arguments(task_id=task_id)
    assert check_arguments(task_id=" 7 ") == (7, None)
