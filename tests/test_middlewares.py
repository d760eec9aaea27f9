"""VkAuthMiddleware and VkRetryMiddleware with hand-made requests and responses, and through
the real downloader middleware stack against local HTTP servers (redirects)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import scrapy
from scrapy import Request
from scrapy.crawler import AsyncCrawlerRunner
from scrapy.http import HtmlResponse, TextResponse
from scrapy.settings import Settings
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler
from twisted.internet.error import ConnectionLost, TimeoutError
from twisted.python.failure import Failure

from vkscraper.addon import VkAddon, request_interval
from vkscraper.downloadermiddlewares.auth import VkAuthMiddleware
from vkscraper.downloadermiddlewares.retry import VkRetryMiddleware
from vkscraper.exceptions import VkApiTransientError, VkMalformedResponse, VkTargetError
from vkscraper.tokens.access import token_tag

TOKEN = "tok-secret-123"
API_URL = "http://127.0.0.1:1/method/"
URL = f"{API_URL}wall.get"


@pytest.fixture
def crawler(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", f"{TOKEN}, other")
    c = get_crawler(
        settings_dict={
            "VK_BACKOFF_BASE": 0,
            "VK_BACKOFF_MAX": 30,
            "RETRY_TIMES": 2,
            "VK_API_URL": API_URL,
        }
    )
    c.spider = c._create_spider("t")  # get_retry_request logs against a spider
    return c


def vk_request(**meta):
    return Request(URL, method="POST", body=b"owner_id=-1", meta={"vk_method": "wall.get", **meta})


def resp(request, body, status=200, headers=None):
    return TextResponse(
        URL, status=status, body=body, headers=headers or {}, request=request, encoding="utf-8"
    )


def test_auth_adds_header_slot_and_strips_after(crawler):
    mw = build_from_crawler(VkAuthMiddleware, crawler)
    req = vk_request()
    assert mw.process_request(req) is None
    assert req.headers[b"Authorization"] == f"Bearer {TOKEN}".encode()
    assert req.meta["download_slot"] == f"vk-{token_tag(TOKEN)}"
    assert TOKEN not in req.url and TOKEN.encode() not in req.body
    mw.process_response(req, resp(req, b"{}"))
    assert b"Authorization" not in req.headers
    assert crawler.stats.get_value("vk/requests/wall.get") == 1


def test_auth_leaves_other_requests_alone(crawler):
    mw = build_from_crawler(VkAuthMiddleware, crawler)
    req = Request("http://example.invalid/")
    mw.process_request(req)
    assert b"Authorization" not in req.headers and "download_slot" not in req.meta


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/x",
        "http://localhost:1/method/wall.get",  # same machine, another host name
        "https://127.0.0.1:1/method/wall.get",  # another scheme
        "http://127.0.0.1:2/method/wall.get",  # another port
        "http://127.0.0.1/method/wall.get",  # the default port, 80
        "http://127.0.0.1:1@evil.example/method/wall.get",  # user-info: the host is evil
        "http://127.0.0.1:1:@evil.example/method/wall.get",
    ],
)
def test_auth_sends_the_token_only_to_the_api_origin(crawler, url):
    mw = build_from_crawler(VkAuthMiddleware, crawler)
    req = Request(url, meta={"vk_method": "wall.get"})  # as a followed redirect would be
    mw.process_request(req)
    assert b"Authorization" not in req.headers and "download_slot" not in req.meta
    same = Request("HTTP://127.0.0.1:1/method/wall.getComments", meta={"vk_method": "wall.get"})
    mw.process_request(same)
    assert same.headers[b"Authorization"] == f"Bearer {TOKEN}".encode()


def test_default_ports_count_as_the_same_origin(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)
    crawler = get_crawler(settings_dict={"VK_API_URL": "https://api.vk.ru/method/"})
    mw = build_from_crawler(VkAuthMiddleware, crawler)
    req = Request("https://API.vk.ru:443/method/wall.get", meta={"vk_method": "wall.get"})
    mw.process_request(req)
    assert b"Authorization" in req.headers


@deferred_f_from_coro_f
async def test_ok_response_is_parsed_once(crawler):
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = vk_request()
    out = await mw.process_response(req, resp(req, b'{"response": {"count": 0, "items": []}}'))
    assert isinstance(out, TextResponse)
    assert req.meta["vk_response"] == {"count": 0, "items": []}
    assert "vk_error" not in req.meta


@deferred_f_from_coro_f
async def test_target_error_is_not_retried(crawler):
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = vk_request()
    body = json.dumps(
        {"error": {"error_code": 15, "error_msg": "Access denied: wall is disabled"}}
    )
    out = await mw.process_response(req, resp(req, body.encode()))
    assert isinstance(out, TextResponse)
    assert isinstance(req.meta["vk_error"], VkTargetError)
    assert crawler.stats.get_value("vk/api_error/15") == 1
    assert crawler.stats.get_value("retry/count") is None


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (
            200,
            b'{"error": {"error_code": 6, "error_msg": "Too many requests per second"}}',
            "vk_error_6",
        ),
        (
            200,
            b'{"error": {"error_code": 10, "error_msg": "Internal server error"}}',
            "vk_error_10",
        ),
        (200, b'{"response": {"items": [', "vk_malformed"),
        (500, b"<html>oops</html>", "HTTP 500"),
        (503, b"", "HTTP 503"),
        (429, b"", "HTTP 429"),
    ],
)
@deferred_f_from_coro_f
async def test_transient_answers_are_retried_without_the_token(crawler, status, body, reason):
    auth = build_from_crawler(VkAuthMiddleware, crawler)
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = vk_request()
    auth.process_request(req)
    out = await mw.process_response(req, resp(req, body, status))
    assert isinstance(out, Request)
    assert out.meta["retry_times"] == 1
    assert b"Authorization" not in out.headers  # it goes back to the scheduler (or Redis)
    assert "download_slot" not in out.meta and "vk_response" not in out.meta
    assert crawler.stats.get_value(f"retry/reason_count/{reason}") == 1


@deferred_f_from_coro_f
async def test_retries_run_out_and_the_error_reaches_the_spider(crawler):
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = vk_request()
    body = b'{"error": {"error_code": 10, "error_msg": "Internal server error"}}'
    for _ in range(2):
        req = await mw.process_response(req, resp(req, body))
        assert isinstance(req, Request)
    final = await mw.process_response(req, resp(req, body))
    assert isinstance(final, TextResponse)
    assert isinstance(req.meta["vk_error"], VkApiTransientError)
    assert crawler.stats.get_value("retry/max_reached") == 1

    req = vk_request(retry_times=2)
    await mw.process_response(req, resp(req, b"not json"))
    assert isinstance(req.meta["vk_error"], VkMalformedResponse)


@deferred_f_from_coro_f
async def test_exhausted_http_error_passes_the_response(crawler):
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = vk_request(retry_times=2)
    out = await mw.process_response(req, resp(req, b"", 502))
    assert isinstance(out, TextResponse) and out.status == 502


@deferred_f_from_coro_f
async def test_connection_errors_are_retried(crawler):
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = vk_request()
    for exc in (TimeoutError(), ConnectionLost()):
        out = await mw.process_exception(req, exc)
        assert isinstance(out, Request)
    assert await mw.process_exception(vk_request(retry_times=2), TimeoutError()) is None
    # Other requests are retried as Scrapy's RetryMiddleware would (this one replaces it).
    assert isinstance(await mw.process_exception(Request(URL), TimeoutError()), Request)


def backing_off(crawler, monkeypatch):
    """A retry middleware with a 0.01 s backoff base whose waits are recorded, not slept."""
    crawler.settings.frozen = False
    crawler.settings.set("VK_BACKOFF_BASE", 0.01)
    slept: list[float] = []

    async def fake_sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr("vkscraper.downloadermiddlewares.retry.sleep", fake_sleep)
    return build_from_crawler(VkRetryMiddleware, crawler), slept


@deferred_f_from_coro_f
async def test_retry_after_is_honoured(crawler, monkeypatch):
    mw, slept = backing_off(crawler, monkeypatch)
    req = vk_request()
    await mw.process_response(req, resp(req, b"", 429, {"Retry-After": "3"}))
    await mw.process_response(req, resp(req, b"", 503))
    assert slept[0] == 3.0
    assert 0.005 <= slept[1] <= 0.01


@deferred_f_from_coro_f
async def test_other_responses_get_scrapys_retries_and_no_parsing(crawler):
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = Request("http://example.invalid/")
    r = HtmlResponse(req.url, status=503, body=b"<html></html>", request=req)
    retried = await mw.process_response(req, r)
    assert isinstance(retried, Request) and retried.meta["retry_times"] == 1
    ok = HtmlResponse(req.url, status=200, body=b"<html></html>", request=req)
    assert await mw.process_response(req, ok) is ok
    assert "vk_response" not in req.meta and "vk_error" not in req.meta


def test_rate_margin_below_one_is_refused():
    with pytest.raises(ValueError, match="VK_RATE_MARGIN"):
        get_crawler(settings_dict={"ADDONS": {VkAddon: 0}, "VK_RATE_MARGIN": 0.5})


@pytest.mark.parametrize(
    ("settings", "delay"),
    [
        ({}, 0.35),
        ({"VK_REQUESTS_PER_SECOND": "2"}, 0.525),
        ({"DOWNLOAD_DELAY": 0.1}, 0.35),  # never faster than the limit
        ({"DOWNLOAD_DELAY": 2.0}, 2.0),  # slower is fine
    ],
)
def test_addon_sets_the_pace(settings, delay):
    crawler = get_crawler(settings_dict={"ADDONS": {VkAddon: 0}, **settings})
    s = crawler.settings
    assert s.getfloat("DOWNLOAD_DELAY") == pytest.approx(delay)
    assert s.getfloat("DOWNLOAD_DELAY_JITTER") == 0
    assert (
        s.getdict("DOWNLOADER_MIDDLEWARES")["scrapy.downloadermiddlewares.retry.RetryMiddleware"]
        is None
    )
    assert request_interval(s) == pytest.approx(1.05 / s.getfloat("VK_REQUESTS_PER_SECOND", 3))


def test_addon_keeps_autothrottle_above_the_floor():
    crawler = get_crawler(
        settings_dict={
            "ADDONS": {VkAddon: 0},
            "AUTOTHROTTLE_ENABLED": True,
            "AUTOTHROTTLE_START_DELAY": 0.01,
        }
    )
    assert crawler.settings.getfloat("AUTOTHROTTLE_START_DELAY") == pytest.approx(0.35)


# --------------------------------------------------------------------- redirects, end to end


class RecordingServer(ThreadingHTTPServer):
    """Records the headers of every request; answers 302 to ``redirect_to`` if set, else
    with an empty VK answer."""

    daemon_threads = True

    def __init__(self, redirect_to: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.redirect_to = redirect_to
        self.seen: list[dict[str, str]] = []

    @property
    def port(self) -> int:
        return self.server_address[1]


class _RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def do_GET(self) -> None:
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.server.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
            body = b""
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            body = b'{"response": {"count": 0, "items": []}}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def serving(server: RecordingServer) -> Iterator[RecordingServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class OneRequestSpider(scrapy.Spider):
    """Sends one VK-like request with the given meta; records what came back."""

    name = "one_request"

    def __init__(self, url: str, request_meta: dict, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.request_meta = request_meta
        self.outcomes: list[object] = []

    async def start(self):
        yield scrapy.Request(
            self.url,
            method="POST",
            body=b"owner_id=-1",
            meta=self.request_meta,
            callback=self.parse,
            errback=self.outcomes.append,
            dont_filter=True,
        )

    def parse(self, response):
        self.outcomes.append(response)


async def crawl_one(api_url: str, url: str, meta: dict) -> OneRequestSpider:
    """One request through the add-on's real downloader middleware stack."""
    settings = Settings(
        {
            "ADDONS": {VkAddon: 0},
            "VK_API_URL": api_url,
            "VK_REQUESTS_PER_SECOND": 1000,
            "VK_BACKOFF_BASE": 0,
            # No database: only the downloader side of the add-on is under test.
            "EXTENSIONS": {"vkscraper.extensions.task.VkTaskExtension": None},
            "ITEM_PIPELINES": {"vkscraper.pipelines.store.VkStorePipeline": None},
            "TELNETCONSOLE_ENABLED": False,
        }
    )
    crawler = AsyncCrawlerRunner(settings).create_crawler(OneRequestSpider)
    record_factory = logging.getLogRecordFactory()  # the add-on wraps it; put it back
    try:
        await crawler.crawl_async(url=url, request_meta=meta)
    finally:
        logging.setLogRecordFactory(record_factory)
    assert isinstance(crawler.spider, OneRequestSpider)
    return crawler.spider


@deferred_f_from_coro_f
async def test_a_redirect_to_another_host_does_not_get_the_token(monkeypatch, caplog):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)
    with (
        serving(RecordingServer()) as elsewhere,
        serving(RecordingServer(f"http://localhost:{elsewhere.port}/landing")) as api,
    ):
        api_url = f"http://127.0.0.1:{api.port}/method/"
        # No dont_redirect: RedirectMiddleware follows and copies the meta, vk_method included.
        spider = await crawl_one(api_url, f"{api_url}wall.get", {"vk_method": "wall.get"})
    assert [h.get("authorization") for h in api.seen] == [f"Bearer {TOKEN}"]
    assert len(elsewhere.seen) == 1  # the redirect was followed
    assert "authorization" not in elsewhere.seen[0]
    (response,) = spider.outcomes
    assert response.status == 200 and response.url.startswith("http://localhost:")
    assert "Not sending the token" in caplog.text


@deferred_f_from_coro_f
async def test_the_spiders_api_requests_do_not_follow_redirects(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)
    with (
        serving(RecordingServer()) as elsewhere,
        serving(RecordingServer(f"http://localhost:{elsewhere.port}/landing")) as api,
    ):
        api_url = f"http://127.0.0.1:{api.port}/method/"
        meta = {"vk_method": "wall.get", "dont_redirect": True}  # as the vk spider sends them
        spider = await crawl_one(api_url, f"{api_url}wall.get", meta)
    assert len(api.seen) == 1 and elsewhere.seen == []
    (failure,) = spider.outcomes
    assert isinstance(failure, Failure) and failure.check(HttpError)
    assert failure.value.response.status == 302


def test_auth_without_a_token_leaves_vk_requests_alone(monkeypatch):
    monkeypatch.delenv("VK_ACCESS_TOKEN", raising=False)
    c = get_crawler(settings_dict={"VK_API_URL": API_URL})
    mw = build_from_crawler(VkAuthMiddleware, c)
    req = vk_request()
    assert mw.process_request(req) is None
    assert b"Authorization" not in req.headers and "download_slot" not in req.meta


def test_auth_strips_the_token_after_a_download_error(crawler):
    mw = build_from_crawler(VkAuthMiddleware, crawler)
    req = vk_request()
    mw.process_request(req)
    assert req.meta["vk_token_tag"] == token_tag(TOKEN)
    assert mw.process_exception(req, TimeoutError()) is None
    assert b"Authorization" not in req.headers


@deferred_f_from_coro_f
async def test_a_vk_request_after_a_connection_error_loses_the_token(crawler):
    auth = build_from_crawler(VkAuthMiddleware, crawler)
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = vk_request()
    auth.process_request(req)
    out = await mw.process_exception(req, TimeoutError())
    assert isinstance(out, Request)
    assert b"Authorization" not in out.headers and "download_slot" not in out.meta
    reason = "retry/reason_count/twisted.internet.error.TimeoutError"
    assert crawler.stats.get_value(reason) == 1


@deferred_f_from_coro_f
async def test_a_final_answer_drops_what_an_earlier_attempt_left_in_meta(crawler):
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = vk_request(retry_times=2, vk_response={"stale": 1}, vk_error=VkTargetError(15, "old"))
    out = await mw.process_response(req, resp(req, b"", 502))
    assert isinstance(out, TextResponse) and out.status == 502
    assert "vk_response" not in req.meta and "vk_error" not in req.meta


@deferred_f_from_coro_f
async def test_malformed_answers_are_counted(crawler):
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = vk_request(retry_times=2)
    await mw.process_response(req, resp(req, b"not json"))
    assert crawler.stats.get_value("vk/malformed") == 1


@deferred_f_from_coro_f
async def test_backoff_grows_with_the_attempt(crawler, monkeypatch):
    mw, slept = backing_off(crawler, monkeypatch)
    req = vk_request(retry_times=1)  # the second retry: base * 2, half of it fixed
    await mw.process_response(req, resp(req, b"", 503))
    assert 0.01 <= slept[0] <= 0.02


@deferred_f_from_coro_f
async def test_retry_disabled_also_leaves_other_requests_alone(crawler):
    crawler.settings.frozen = False
    crawler.settings.set("RETRY_ENABLED", False)
    mw = build_from_crawler(VkRetryMiddleware, crawler)
    req = Request("http://example.invalid/")
    r = HtmlResponse(req.url, status=503, body=b"<html></html>", request=req)
    assert await mw.process_response(req, r) is r
    assert await mw.process_exception(req, TimeoutError()) is None


def test_auth_refuses_an_api_url_the_operator_did_not_allow(crawler, monkeypatch):
    """Also without the add-on (whose settings check says the same): the middleware never
    starts with a VK_API_URL outside VK's API and VKSCRAPER_API_URLS."""
    monkeypatch.setenv("VKSCRAPER_API_URLS", "http://127.0.0.1:2")
    with pytest.raises(ValueError, match="VKSCRAPER_API_URLS environment variable"):
        build_from_crawler(VkAuthMiddleware, crawler)
    monkeypatch.setenv("VKSCRAPER_API_URLS", "http://127.0.0.1:1")
    assert build_from_crawler(VkAuthMiddleware, crawler).api_origin == ("http", "127.0.0.1", 1)
