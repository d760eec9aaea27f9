"""The token pool in one process: k tokens share the work, each under its own 3 requests/s;
VK's errors 5, 14, 29 and 6 drop, park or slow down the token they concern, and the crawl
stops only when no token is left, naming each one's state by its tag."""

from __future__ import annotations

import logging

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from fakevk import FakeVk, generate_dataset
from tests.helpers.crawl import assert_stored_equals, last_task, run_crawl, small_dataset
from tests.helpers.emulator import windows
from vkscraper.cli import exitcodes
from vkscraper.extensions.task import VkTaskExtension
from vkscraper.tokens.access import token_tag
from vkscraper.tokens.pool import TokenPool

pytestmark = pytest.mark.integration

A = "token-a-5f2b9c-0123456789"
B = "token-b-77aa31-0123456789"
DATA = generate_dataset(seed=5, groups=3, posts_per_group=4, max_comments=20, max_replies=12)
for _group in DATA["groups"]:
    for _post in _group["posts"]:
        _post["comments_closed"] = False
REFS = ",".join(g["screen_name"] for g in DATA["groups"] if not g.get("author_only"))
MODES = {"plain": {"VK_EXECUTE": False}, "execute": {"VK_EXECUTE": True}}


async def crawl(monkeypatch, url, tokens, settings=None, data=DATA, **fakevk):
    monkeypatch.setenv("VK_ACCESS_TOKEN", ",".join(tokens))
    with FakeVk(data, tokens=[A, B], **fakevk) as vk:
        refs = ",".join(g["screen_name"] for g in data["groups"] if not g.get("author_only"))
        crawler = await run_crawl(vk.url, url, settings=settings or {}, groups=refs)
        log = vk.requests()
    return crawler, last_task(url), log


@deferred_f_from_coro_f
async def test_two_tokens_share_the_work_each_under_its_own_limit(sqlite_url, monkeypatch):
    # The emulator enforces 3/s per token; the crawl paces each token at its own 2.86/s.
    settings = {"VK_EXECUTE": False, "VK_REQUESTS_PER_SECOND": 3}
    _, task, log = await crawl(monkeypatch, sqlite_url, [A, B], settings, rate_limit=3)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(sqlite_url, task.id, DATA)
    per_token = {
        tag: [r["t"] for r in log if r["token"] == tag] for tag in {r["token"] for r in log}
    }
    assert set(per_token) == {token_tag(A), token_tag(B)}
    counts = sorted(len(t) for t in per_token.values())
    assert counts[0] >= 0.4 * len(log)  # spread, not one token doing it all
    assert all(windows(t) <= 3 for t in per_token.values())
    assert windows([r["t"] for r in log]) > 3  # together above one token's limit
    assert not [r for r in log if r["outcome"] == "error:6"]


@pytest.mark.parametrize("mode", MODES)
@deferred_f_from_coro_f
async def test_a_revoked_token_is_dropped_and_the_other_finishes(
    sqlite_url, monkeypatch, caplog, mode
):
    caplog.set_level(logging.WARNING)
    _, task, log = await crawl(
        monkeypatch, sqlite_url, [B, A], MODES[mode], token_errors={B: (5, None)}
    )
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(sqlite_url, task.id, DATA)
    revoked = [r for r in log if r["token"] == token_tag(B)]
    assert [r["outcome"] for r in revoked] == ["error:5"]  # dropped at its first answer
    (warning,) = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert warning.startswith(f"Token {token_tag(B)} dropped (VK error 5")
    assert A not in caplog.text and B not in caplog.text


@deferred_f_from_coro_f
async def test_no_usable_token_left_stops_the_crawl_naming_each(sqlite_url, monkeypatch):
    settings = {"VK_EXECUTE": False, "VK_TOKEN_MAX_WAIT": 0}
    crawler, task, log = await crawl(
        monkeypatch, sqlite_url, [A, B], settings, token_errors={A: (5, None), B: (14, None)}
    )
    assert crawler.stats.get_value("finish_reason") == "vk_no_token"
    assert task.status == "in_progress"  # resumable
    (error,) = task.metrics["errors"]
    assert error.startswith("no usable access token left: ")
    assert f"token {token_tag(A)}: dropped (VK error 5 in groups.getById" in error
    assert f"token {token_tag(B)}: parked 600 s more (VK error 14 in groups.getById" in error
    assert "VK_ACCESS_TOKEN" in error  # the hint for error 5
    assert A not in error and B not in error
    assert len(log) == 2


@deferred_f_from_coro_f
async def test_a_crawl_stopped_for_want_of_a_token_is_resumed(sqlite_url, monkeypatch):
    """The token is parked (captcha on comment reads) longer than VK_TOKEN_MAX_WAIT: the crawl
    stops with the task resumable; the next run crawls only the groups not done, and the
    stop's error goes with the run it stopped."""
    monkeypatch.setenv("VK_ACCESS_TOKEN", A)
    data = small_dataset()
    settings = {"VK_EXECUTE": False, "VK_TOKEN_MAX_WAIT": 0.2, "CONCURRENT_REQUESTS": 1}
    with FakeVk(data, tokens=[A], token_errors={A: (14, "wall.getComments")}) as vk:
        crawler = await run_crawl(vk.url, sqlite_url, settings=settings,
                                  groups="pinnedold,threeposts")  # fmt: skip
    assert crawler.stats.get_value("finish_reason") == "vk_no_token"
    assert crawler.get_extension(VkTaskExtension).exit_code == exitcodes.NOT_DONE
    task = last_task(sqlite_url)
    assert task.status == "in_progress"
    (error,) = task.metrics["errors"]
    assert error.startswith(f"no usable access token left: token {token_tag(A)}: parked")
    groups = task.metrics["groups"]
    assert groups["12"]["status"] == "done"  # no comments to read: done before the stop
    assert groups["11"]["status"] != "done"

    with FakeVk(data, tokens=[A]) as vk:
        await run_crawl(vk.url, sqlite_url, settings=settings, task_id=str(task.id))
        walls = [-int(r["params"]["owner_id"]) for r in vk.requests() if r["method"] == "wall.get"]
    assert walls == [11]  # the done group is not crawled again
    task = last_task(sqlite_url)
    assert task.status == "completed", task.metrics["errors"]
    assert task.metrics["run"] == 1 and "history" not in task.metrics
    assert_stored_equals(sqlite_url, task.id, data, only={11, 12})


@deferred_f_from_coro_f
async def test_a_captcha_parks_the_token_then_a_second_one_drops_it(sqlite_url, monkeypatch):
    settings = {"VK_EXECUTE": False, "VK_TOKEN_PARK_SECONDS": 0.5, "VK_TOKEN_MAX_WAIT": 5}
    _, task, log = await crawl(
        monkeypatch, sqlite_url, [A], settings, token_errors={A: (14, None)}
    )
    assert task.status == "in_progress"  # resumable with another token
    (error,) = task.metrics["errors"]
    assert "dropped (VK error 14 in groups.getById: Captcha needed, again after waiting)" in error
    first, second = log
    assert second["t"] - first["t"] >= 0.5  # the request waited for the park to end


@pytest.mark.parametrize("mode", MODES)
@deferred_f_from_coro_f
async def test_a_spent_quota_parks_the_token_for_that_method_only(
    sqlite_url, monkeypatch, caplog, mode
):
    caplog.set_level(logging.WARNING)
    _, task, log = await crawl(
        monkeypatch, sqlite_url, [A, B], MODES[mode],
        token_errors={A: (29, "wall.getComments")},
    )  # fmt: skip
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(sqlite_url, task.id, DATA)
    parked = [
        r.getMessage() for r in caplog.records if "parked for wall.getComments" in r.getMessage()
    ]
    assert len(parked) == 1 and parked[0].startswith(f"Token {token_tag(A)} parked")
    # A still served what it may call; comment reads went to it only while the first 29 was
    # on its way back (at most the requests in flight on its slot), each answered 29.
    mine = [r for r in log if r["token"] == token_tag(A)]
    assert any(r["outcome"] == "ok" and "wall.getComments" not in r.get("calls", []) for r in mine)
    reads = [r for r in mine if "wall.getComments" in r.get("calls", [r["method"]])]
    assert 1 <= len(reads) <= 4
    assert all(r["outcome"] == "error:29" or r.get("execute_errors") for r in reads)


@deferred_f_from_coro_f
async def test_error_6_slows_the_token_down_and_loses_nothing(sqlite_url, monkeypatch):
    # Paced at 10/s against VK's 3/s: VK answers error 6, the token's delay grows.
    settings = {"VK_EXECUTE": False, "VK_REQUESTS_PER_SECOND": 10, "AUTOTHROTTLE_ENABLED": False}
    crawler, task, log = await crawl(
        monkeypatch, sqlite_url, [A], settings, data=small_dataset(), rate_limit=3
    )
    assert task.status == "completed", task.metrics["errors"]
    assert crawler.stats.get_value("vk/token_slowed") > 0
    sixes = [r["t"] for r in log if r["outcome"] == "error:6"]
    assert sixes and len(sixes) < len(log) / 2


def test_the_pool_picks_the_least_loaded_usable_token():
    now = [0.0]
    pool = TokenPool([A, B], park_seconds=10, quota_seconds=100, clock=lambda: now[0])
    load = {token_tag(A): 3, token_tag(B): 1}
    assert pool.pick(["wall.get"], load.get) == B
    assert pool.report(token_tag(B), 29, "wall.get", "Rate limit reached").startswith(
        "parked for wall.get"
    )
    assert pool.pick(["wall.get"], load.get) == A
    assert pool.pick(["groups.getById"], load.get) == B
    assert pool.report(token_tag(A), 15, "wall.get", "Access denied") is None  # the target's
    assert pool.report(token_tag(A), 28, "execute", "service token") is None  # the spider's
    pool.report(token_tag(A), 14, "wall.get", "Captcha needed")
    assert pool.pick(["wall.get"], load.get) is None
    assert pool.next_ready(["wall.get"]) == 10
    now[0] = 10
    assert pool.pick(["wall.get"], load.get) == A


@deferred_f_from_coro_f
async def test_a_close_does_not_wait_for_a_parked_token(sqlite_url, monkeypatch):
    import time

    settings = {"VK_EXECUTE": False, "VK_TOKEN_PARK_SECONDS": 30, "VK_TOKEN_MAX_WAIT": 60,
                "CLOSESPIDER_TIMEOUT": 2}  # fmt: skip
    started = time.monotonic()
    crawler, task, log = await crawl(
        monkeypatch, sqlite_url, [A], settings, token_errors={A: (14, "wall.getComments")}
    )
    assert time.monotonic() - started < 10  # not the 30 s park
    assert crawler.stats.get_value("finish_reason") == "closespider_timeout"
    # The close reason is the task's error; the requests that waited went unsent, no error.
    assert task.status == "failed"
    assert all("closespider_timeout" in e for e in task.metrics["errors"]), task.metrics
    assert all(r["outcome"] == "error:14" for r in log if "comment" in r["method"])


@deferred_f_from_coro_f
async def test_a_spent_execute_quota_goes_on_with_plain_calls(sqlite_url, monkeypatch):
    _, task, log = await crawl(
        monkeypatch, sqlite_url, [A], {"VK_EXECUTE": True}, token_errors={A: (29, "execute")}
    )
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(sqlite_url, task.id, DATA)
    assert {"wall.get", "wall.getComments"} <= {r["method"] for r in log}


def test_error_6_never_speeds_a_token_up(monkeypatch):
    from types import SimpleNamespace

    from scrapy import Request
    from scrapy.utils.test import get_crawler

    import vkscraper.downloadermiddlewares.retry as retry

    slot = SimpleNamespace(delay=0.35)
    monkeypatch.setattr(retry, "downloader_slots", lambda crawler: {"vk-x": slot})
    for cap, expected in ((30.0, 0.525), (0.05, 0.35)):
        slot.delay = 0.35
        crawler = get_crawler(settings_dict={"VK_BACKOFF_MAX": cap, "VK_BACKOFF_BASE": 1})
        mw = retry.VkRetryMiddleware.from_crawler(crawler)
        mw._slow_down(Request("http://x/", meta={"download_slot": "vk-x"}))
        assert slot.delay == pytest.approx(expected)
