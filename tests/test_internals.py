"""What :mod:`vkscraper._internals` relies on in Scrapy, Twisted and scrapy-redis, checked
against the installed versions: an upgrade that changes one of them fails here, by name,
rather than silently in a crawl. Fast: no server, no emulator."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from scrapy import Request, Spider, signals
from scrapy.commands import BaseRunSpiderCommand
from scrapy.core.downloader import Slot
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.crawler import Crawler, CrawlerProcessBase, CrawlerRunner
from scrapy.utils.defer import deferred_f_from_coro_f, maybe_deferred_to_future
from scrapy.utils.test import get_crawler
from scrapy_redis.queue import Base
from scrapy_redis.scheduler import Scheduler
from twisted.internet.abstract import FileDescriptor
from twisted.web.client import HTTPConnectionPool, _RetryingHTTP11ClientProtocol

from vkscraper import _internals
from vkscraper.commands.crawl import Command as CrawlCommand
from vkscraper.downloadhandlers.ratelimit import _WatchedPool


class _Idle(Spider):
    name = "idle"

    async def start(self):  # nothing to crawl: opens, idles once, closes
        return
        yield


# ----------------------------------------------------------------------------- one place

REACHED = {
    "_slot", "_pool", "_factory", "_clientProtocol", "_create_crawler", "_signal_shutdown",
    "_encode_request", "_decode_request", "writeSomeData", "frozen", "_retry",
    "processes", "signalProcess",
}  # fmt: skip
THIRD_PARTY = ("scrapy", "twisted", "scrapy_redis", "scrapyd")


def test_only_the_internals_module_reaches_them():
    import ast
    from pathlib import Path

    package = Path(_internals.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "_internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in REACHED:
                found.append(f"{path.relative_to(package)}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Attribute) and node.attr == "__class__":
                found.append(f"{path.relative_to(package)}:{node.lineno} .__class__")
            elif isinstance(node, ast.FunctionDef) and node.name in REACHED:
                found.append(f"{path.relative_to(package)}:{node.lineno} def {node.name}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in REACHED
            ):
                found.append(f"{path.relative_to(package)}:{node.lineno} {node.func.id} "
                             f"{node.args[1].value!r}")  # fmt: skip
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                THIRD_PARTY
            ):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private or any(p.startswith("_") for p in (node.module or "").split(".")):
                    found.append(f"{path.relative_to(package)}:{node.lineno} from "
                                 f"{node.module} import {', '.join(private) or '…'}")  # fmt: skip
    assert found == []


# ----------------------------------------------------------------------------- the engine


@deferred_f_from_coro_f
async def test_crawl_stopping_follows_the_engine_slot():
    """``ExecutionEngine._slot.closing`` is None while the spider runs and set as soon as
    the engine closes it (its spider_closed handlers run while it is set)."""
    crawler = get_crawler(_Idle)
    seen: dict[str, bool] = {}

    def idle() -> None:
        seen.setdefault("idle", _internals.crawl_stopping(crawler))

    def closed() -> None:
        seen["closed"] = _internals.crawl_stopping(crawler)
        seen["slot"] = crawler.engine._slot is not None

    crawler.signals.connect(idle, signal=signals.spider_idle)
    crawler.signals.connect(closed, signal=signals.spider_closed)
    assert _internals.crawl_stopping(crawler) is False  # no engine yet
    await maybe_deferred_to_future(crawler.crawl())
    assert seen == {"idle": False, "closed": True, "slot": True}


def test_the_engine_has_a_slot_with_closing():
    from scrapy.core.engine import ExecutionEngine, _Slot

    engine = ExecutionEngine(get_crawler(_Idle), lambda _: None)
    assert engine._slot is None  # before open_spider
    slot = _Slot(True, SimpleNamespace(schedule=lambda: None), SimpleNamespace())
    assert slot.closing is None
    assert "self.closing = Deferred()" in inspect.getsource(_Slot.close)


def test_downloader_slots_have_active_requests_and_a_delay():
    slot = Slot(concurrency=4, delay=0.35, jitter=0)
    assert slot.delay == 0.35
    assert isinstance(slot.active, set)
    crawler = get_crawler(_Idle)
    assert _internals.downloader_slots(crawler) == {}  # before the engine exists
    engine = crawler._create_engine()
    crawler.engine = engine
    assert isinstance(engine.downloader.slots, dict)
    assert _internals.downloader_slots(crawler) is engine.downloader.slots


# ----------------------------------------------------------------------------- commands


def test_the_crawl_command_creates_its_crawler_as_scrapy_does():
    params = list(inspect.signature(BaseRunSpiderCommand._create_crawler).parameters)
    assert params == ["self", "spidercls"]
    command = CrawlCommand()
    command.crawler_process = CrawlerRunner({})
    crawler = _internals.create_crawler(command, _Idle)  # type: ignore[arg-type]
    assert isinstance(crawler, Crawler)
    assert crawler.spidercls is _Idle


def test_the_first_shutdown_signal_goes_through_signal_shutdown():
    """Scrapy installs ``self._signal_shutdown`` (looked up when the process starts) for
    SIGINT and SIGTERM: a wrapper set on the instance before that is what runs."""
    assert "self._signal_shutdown" in inspect.getsource(CrawlerProcessBase._setup_reactor)
    params = list(inspect.signature(CrawlerProcessBase._signal_shutdown).parameters)
    assert len(params) == 3  # self, signum, frame
    calls: list[tuple[str, int]] = []
    process = SimpleNamespace(
        _signal_shutdown=lambda signum, frame: calls.append(("scrapy", signum))
    )
    _internals.on_shutdown_signal(process, lambda signum: calls.append(("ours", signum)))  # type: ignore[arg-type]
    process._signal_shutdown(15, None)
    assert calls == [("ours", 15), ("scrapy", 15)]


# ----------------------------------------------------------------------------- connections


def test_the_handler_pool_becomes_the_watched_pool_keeping_its_settings():
    crawler = get_crawler(_Idle, {"CONCURRENT_REQUESTS_PER_DOMAIN": 7})
    handler = HTTP11DownloadHandler(crawler)
    pool = handler._pool
    assert type(pool) is HTTPConnectionPool
    factory, per_host = pool._factory, pool.maxPersistentPerHost
    assert _internals.watch_pool(handler, _WatchedPool) is pool
    assert type(handler._pool) is _WatchedPool
    assert (pool._factory, pool.maxPersistentPerHost) == (factory, per_host)
    assert not set(vars(_WatchedPool)) - {"__module__", "__doc__", "getConnection"}
    params = list(inspect.signature(HTTPConnectionPool.getConnection).parameters)
    assert params == ["self", "key", "endpoint"]
    assert HTTPConnectionPool.retryAutomatically is True  # the handler turns it off
    with pytest.raises(TypeError):
        _internals.watch_pool(handler, type("Other", (HTTPConnectionPool,), {}))


class _Socket(FileDescriptor):
    def __init__(self) -> None:
        reactor = SimpleNamespace(addWriter=lambda _: None, removeWriter=lambda _: None)
        super().__init__(reactor=reactor)
        self.connected = 1
        self.sent = b""

    def writeSomeData(self, data: bytes) -> int:  # noqa: N802
        self.sent += bytes(data)
        return len(data)


def test_the_socket_transport_is_found_under_the_retrying_wrapper_and_tls():
    socket = _Socket()
    protocol = SimpleNamespace(transport=SimpleNamespace(transport=socket))  # TLS over it
    assert _internals.socket_transport(protocol) is socket
    wrapped = _RetryingHTTP11ClientProtocol(protocol, lambda: None)
    assert wrapped._clientProtocol is protocol
    assert _internals.socket_transport(wrapped) is socket
    assert _internals.socket_transport(SimpleNamespace()) is None


def test_each_write_to_the_socket_goes_through_write_some_data():
    """Twisted buffers ``write()`` and sends it in ``doWrite()`` through the instance's
    ``writeSomeData``: the callback runs when the bytes have gone."""
    socket = _Socket()
    stamps: list[bytes] = []
    _internals.on_socket_write(socket, lambda: stamps.append(socket.sent))
    socket.write(b"GET / HTTP/1.1\r\n")
    assert stamps == []  # buffered, not sent yet
    socket.doWrite()
    assert stamps == [b"GET / HTTP/1.1\r\n"]


# ----------------------------------------------------------------------------- scrapy-redis


def test_scrapy_redis_round_trips_a_request():
    spider = _Idle()
    queue = Base(server=None, spider=spider, key="k:%(spider)s")
    request = Request("https://api.vk.ru/method/x", meta={"vk_entry": 3}, priority=2)
    data = _internals.encode_request(queue, request)
    assert isinstance(data, bytes)
    back = _internals.decode_request(queue, data)
    assert (back.url, back.meta, back.priority) == (request.url, request.meta, 2)


def test_scrapy_redis_scheduler_keeps_its_queue_and_stats():
    scheduler = Scheduler(server=None)
    assert scheduler.stats is None  # set by from_crawler
    assert "self.queue = " in inspect.getsource(Scheduler.open)
    assert ".stats = crawler.stats" in inspect.getsource(Scheduler.from_crawler)


# ----------------------------------------------------------------------------- feeds


def test_the_feed_exporter_takes_items_through_item_scraped():
    """:class:`~vkscraper.extensions.feedexport.VkFeedExporter` overrides it to feed rows."""
    from scrapy.extensions.feedexport import FeedExporter

    assert "exporter.item_scraped, signals.item_scraped" in inspect.getsource(
        FeedExporter.from_crawler
    )
    params = list(inspect.signature(FeedExporter.item_scraped).parameters)
    assert params == ["self", "item", "spider"]


# ----------------------------------------------------------------------------- retries


def test_the_retry_middleware_retries_with_its_settings_and_the_request_meta():
    """``RetryMiddleware._retry(request, reason)``: a copy of the request counted in
    ``retry_times`` while retries are left (``RETRY_TIMES``, or the request's
    ``max_retry_times``), then None; each counted in the stats."""
    from scrapy.downloadermiddlewares.retry import RetryMiddleware

    params = list(inspect.signature(RetryMiddleware._retry).parameters)
    assert params == ["self", "request", "reason"]
    crawler = get_crawler(_Idle, {"RETRY_TIMES": 1})
    crawler.spider = crawler._create_spider()
    crawler.stats.open_spider()
    middleware = RetryMiddleware.from_crawler(crawler)
    request = Request("https://api.vk.ru/method/x", meta={"vk_method": "x"})
    again = _internals.retry_request(middleware, request, "VK error 10")
    assert again is not None and again is not request
    assert (again.url, again.meta["retry_times"], again.dont_filter) == (request.url, 1, True)
    assert _internals.retry_request(middleware, again, "VK error 10") is None  # spent
    assert crawler.stats.get_value("retry/count") == 1
    assert crawler.stats.get_value("retry/max_reached") == 1
    more = Request("https://api.vk.ru/method/x", meta={"max_retry_times": 2, "retry_times": 1})
    assert _internals.retry_request(middleware, more, "VK error 10") is not None


# ----------------------------------------------------------------------------- scrapyd


def test_scrapyd_keeps_its_running_jobs_as_process_protocols_by_slot():
    """``Launcher.processes``: slot → ``ScrapyProcessProtocol`` with ``job`` and, once
    started, the process ``transport`` that ``signalProcess`` stops."""
    from scrapyd.config import Config
    from scrapyd.interfaces import IJobStorage
    from scrapyd.jobstorage import MemoryJobStorage
    from scrapyd.launcher import Launcher, ScrapyProcessProtocol
    from twisted.application.service import Application

    app = Application("scrapyd")
    config = Config()
    app.setComponent(IJobStorage, MemoryJobStorage(config))
    launcher = Launcher(config, app)
    assert launcher.processes == {}
    process = ScrapyProcessProtocol("vkscraper", "vk", "job1", {}, [])
    signalled = []
    process.transport = SimpleNamespace(signalProcess=signalled.append)
    launcher.processes[0] = process
    root = SimpleNamespace(launcher=launcher)
    assert _internals.scrapyd_running(root) == {"job1": process}
    _internals.scrapyd_interrupt(process)
    assert signalled == ["INT"]
