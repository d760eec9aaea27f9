"""The per-token limit at the moment a request leaves (``vkscraper.ratelimit``): the log in
memory and in Redis, and a request that opened a connection logged again."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from scrapy import Request
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler
from twisted.internet.defer import succeed
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol

from vkscraper.middlewares.auth import CrawlStopping
from vkscraper.ratelimit import (
    LocalRateLimit,
    SharedRateLimit,
    VkDownloadHandler,
    _Opening,
    _WatchedEndpoint,
)
from vkscraper.testing.fakevk import FakeVk, generate_dataset

REDIS_URL = os.environ.get("VK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def never() -> bool:
    return False


@deferred_f_from_coro_f
async def test_the_log_lets_limit_requests_of_a_token_into_any_window():
    limit = LocalRateLimit(3, 0.3)
    start = time.monotonic()
    for _ in range(3):
        waited, _ = await limit.acquire("a", give_up=1, stopping=never)
        assert waited == 0
    await limit.acquire("b", give_up=1, stopping=never)  # another token: its own log
    assert time.monotonic() - start < 0.1
    waited, _ = await limit.acquire("a", give_up=1, stopping=never)
    assert time.monotonic() - start >= 0.3
    assert waited >= 0.25


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
@deferred_f_from_coro_f
async def test_a_restamped_request_counts_once_from_its_new_time(shared):
    limit = SharedRateLimit(REDIS_URL, 2, 0.6) if shared else LocalRateLimit(2, 0.6)
    tag = uuid.uuid4().hex[:8]
    try:
        _, member = await limit.acquire(tag, give_up=1, stopping=never)
        await sleep(0.2)
        limit.restamp(tag, member)
        await sleep(0.05)  # Redis's restamp runs in the background
        start = time.monotonic()
        await limit.acquire(tag, give_up=1, stopping=never)
        assert time.monotonic() - start < 0.1  # moved, not added: one entry in the log
        await limit.acquire(tag, give_up=1, stopping=never)
        # 0.6 after the restamp (0.2), not after the first time (0): 0.55 after `start`
        assert time.monotonic() - start >= 0.45
    finally:
        await limit.close()


def test_a_new_connection_logs_its_request_again_when_up_and_when_tls_is():
    stamps: list[str] = []
    opening = _Opening(lambda: stamps.append("stamp"))
    protocol = Protocol()

    class Endpoint:
        def connect(self, factory):
            stamps.append("connect")
            return succeed(protocol)

    connected = []
    _WatchedEndpoint(Endpoint(), opening).connect(object()).addCallback(connected.append)
    assert connected == [protocol]
    assert opening.opened
    assert stamps == ["connect", "stamp"]
    assert IHandshakeListener.providedBy(protocol)  # what TLS checks before calling it
    protocol.handshakeCompleted()
    assert stamps == ["connect", "stamp", "stamp"]


@deferred_f_from_coro_f
async def test_a_wait_ends_when_the_crawl_stops():
    limit = LocalRateLimit(1, 60)
    await limit.acquire("a", give_up=1, stopping=never)
    stop_at = time.monotonic() + 0.2
    with pytest.raises(CrawlStopping):
        await limit.acquire("a", give_up=1, stopping=lambda: time.monotonic() > stop_at)
    assert time.monotonic() < stop_at + 1


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
@deferred_f_from_coro_f
async def test_a_request_that_opened_a_connection_is_logged_when_answered(shared):
    """In memory and in Redis: 1 request per 1.0 s, every answer 0.5 s late. The first request
    opens the connection: it counts from its answer, so the second leaves 1.5 s after it. The
    second reuses the connection: the third leaves 1.0 s after it."""
    data = generate_dataset(seed=3, groups=1, posts_per_group=3)
    owner = -data["groups"][0]["id"]
    tag = uuid.uuid4().hex[:8]  # a fresh log in Redis
    with FakeVk(data, faults={"slow": 1.0}, slow_seconds=0.5) as vk:
        settings = {"VK_REQUESTS_PER_SECOND": 1, "VK_RATE_MARGIN": 1,
                    "VK_SHARED_RATE_LIMIT": shared, "REDIS_URL": REDIS_URL}  # fmt: skip
        crawler = get_crawler(settings_dict=settings)
        handler = VkDownloadHandler.from_crawler(crawler)
        try:
            for count in (1, 2, 3):
                request = Request(
                    f"{vk.url}wall.get?owner_id={owner}&count={count}&v=5.199",
                    headers={"Authorization": "Bearer test-token"},
                    meta={"vk_token_tag": tag},
                )
                response = await handler.download_request(request)
                assert response.status == 200
        finally:
            await handler.close()
        arrivals = [e["t"] for e in vk.requests()]
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 1.45, arrivals
    assert arrivals[2] - arrivals[1] < 1.3, arrivals
