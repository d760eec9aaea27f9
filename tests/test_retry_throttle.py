"""Retries are Scrapy's RetryMiddleware (its settings and meta keys) plus VK's classification
and backoff; AutoThrottle is on, slows a token down on slow answers and never speeds it past
the limit."""

from __future__ import annotations

import pytest
from scrapy import Request
from scrapy.http import TextResponse
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler

from fakevk import FakeVk
from tests.helpers.crawl import TOKEN, last_task, run_crawl, small_dataset
from vkscraper.addon import VkAddon
from vkscraper.downloadermiddlewares.retry import VkRetryMiddleware

pytestmark = pytest.mark.integration

URL = "http://127.0.0.1:1/method/wall.get"


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)


def middleware(**settings):
    crawler = get_crawler(settings_dict={"ADDONS": {VkAddon: 0}, "VK_BACKOFF_BASE": 0,
                                         **settings})  # fmt: skip
    crawler.spider = crawler._create_spider("t")
    return build_from_crawler(VkRetryMiddleware, crawler)


def answer(request, status=200, body=b'{"response": {"items": []}}'):
    return TextResponse(URL, status=status, body=body, request=request, encoding="utf-8")


def vk(**meta):
    return Request(URL, method="POST", meta={"vk_method": "wall.get", **meta})


async def attempts(mw, request, status=503, body=b""):
    """How many times the middleware lets ``request`` go out for a server that always fails."""
    n = 1
    while isinstance(out := await mw.process_response(request, answer(request, status, body)),
                     Request):  # fmt: skip
        request, n = out, n + 1
    return n


@deferred_f_from_coro_f
async def test_retry_times_and_meta_keys_are_scrapys():
    assert await attempts(middleware(), vk()) == 1 + 3  # our default RETRY_TIMES
    assert await attempts(middleware(RETRY_TIMES=5), vk()) == 6
    assert await attempts(middleware(), vk(max_retry_times=1)) == 2
    assert await attempts(middleware(), vk(dont_retry=True)) == 1
    assert await attempts(middleware(), vk(), 200, b'{"error": {"error_code": 10}}') == 4
    assert await attempts(middleware(RETRY_ENABLED=False), vk(), 200, b"<html>") == 1


@deferred_f_from_coro_f
async def test_retry_http_codes_and_priority_adjust_are_scrapys():
    mw = middleware(RETRY_HTTP_CODES=[502], RETRY_PRIORITY_ADJUST=-7)
    assert await attempts(mw, vk(), 503) == 1
    request = vk()
    retried = await mw.process_response(request, answer(request, 502))
    assert isinstance(retried, Request) and retried.priority == -7


@deferred_f_from_coro_f
async def test_vk_answers_are_parsed_with_retries_off():
    mw = middleware(RETRY_ENABLED=False)
    request = vk()
    await mw.process_response(request, answer(request))
    assert request.meta["vk_response"] == {"items": []}


@pytest.mark.parametrize(
    "old", ["VK_RETRY_TIMES", "VK_RETRY_HTTP_CODES", "VK_CONCURRENCY_PER_TOKEN"]
)
def test_our_old_names_are_refused_with_scrapys(old):
    with pytest.raises(ValueError, match=f"{old} is no longer a setting: use Scrapy's"):
        get_crawler(settings_dict={"ADDONS": {VkAddon: 0}, old: 1})


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_retry_times_from_the_command_line_reach_the_crawl(store_url):
    with FakeVk(small_dataset(), tokens=[TOKEN], faults={"502": 1.0},
                max_faults_per_request=100) as vk_:  # fmt: skip
        await run_crawl(vk_.url, store_url, groups="threeposts", settings={"RETRY_TIMES": 5})
        assert len(vk_.requests()) == 6
    assert last_task(store_url).status == "failed"


def gaps(log):
    times = sorted(r["t"] for r in log)
    return [b - a for a, b in zip(times, times[1:], strict=False)], times


@pytest.mark.rate
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_autothrottle_slows_down_on_slow_answers_and_never_passes_the_limit(store_url):
    data = small_dataset()
    refs = "pinnedrecent,threeposts,pinnedold"
    with FakeVk(data, tokens=[TOKEN], rate_limit=3, faults={"slow": 1.0}, slow_seconds=1.5,
                max_faults_per_request=100) as vk_:  # fmt: skip
        await run_crawl(vk_.url, store_url, groups=refs, settings={"VK_REQUESTS_PER_SECOND": 3})
        slow = vk_.requests()
    assert last_task(store_url).status == "completed"
    slow_gaps, times = gaps(slow)
    # 1.5 s answers, target concurrency 2: about one request per 0.75 s instead of 0.35 s.
    assert sum(slow_gaps[2:]) / len(slow_gaps[2:]) > 0.6, slow_gaps
    assert max(sum(1 for t in times if s <= t < s + 1) for s in times) <= 3
    assert not [r for r in slow if r["outcome"] == "error:6"]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_the_http_cache_never_keeps_a_vk_error(store_url, tmp_path):
    """Scrapy's cache would store VK's HTTP-200 error answers and serve every retry (and
    every later run) the same error; the add-on's policy caches only good answers."""
    cache = {"HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(tmp_path / "cache")}
    with FakeVk(small_dataset(), tokens=[TOKEN], faults={"error10": 1.0},
                max_faults_per_request=1) as vk_:  # fmt: skip
        url = vk_.url
        await run_crawl(url, store_url, groups="threeposts", settings=cache)
        assert {r["outcome"] for r in vk_.requests()} >= {"fault:error10"}
    assert last_task(store_url).status == "completed", last_task(store_url).metrics["errors"]
    # The emulator is gone: a second run is answered from the cache alone, and completes.
    await run_crawl(url, store_url, groups="threeposts", settings=cache)
    assert last_task(store_url).status == "completed", last_task(store_url).metrics["errors"]
