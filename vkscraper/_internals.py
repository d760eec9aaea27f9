"""Every place vkscraper reaches into Scrapy's, Twisted's, scrapy-redis's or scrapyd's internals,
behind one small function, so that an upgrade has one module to check (and
``tests/test_internals.py`` fails loudly when one of them changes).

Checked against the versions pinned in ``requirements.txt``: Scrapy 2.19.0, Twisted 26.10.0,
scrapy-redis 0.9.1, scrapyd 1.6.0. Nothing public does what these do in those versions.

Private names used, and why:

- ``ExecutionEngine._slot`` (Scrapy), its ``closing`` Deferred: set the moment the engine
  starts closing the spider (:func:`crawl_stopping`). A request waiting for a token or for
  the rate limit must give up then, or the close waits for it; ``engine.running`` turns
  false only when the whole engine stops, and ``needs_backout()`` also answers true when
  the downloader is merely full.
- ``HTTP11DownloadHandler._pool`` (Scrapy): the handler's Twisted connection pool, whose
  class :func:`watch_pool` swaps for a subclass that tells each connection which download
  it carries (the pool keeps the settings and the lenient client factory Scrapy gave it).
- ``_RetryingHTTP11ClientProtocol._clientProtocol`` (Twisted): the connection under the
  wrapper the pool puts around a reused connection when it retries automatically
  (:func:`socket_transport`).
- ``FileDescriptor.writeSomeData`` (Twisted; a public method, patched on one transport):
  called by ``doWrite`` each time buffered bytes go to the socket, the moment a request is
  really sent (:func:`on_socket_write`).
- ``BaseRunSpiderCommand._create_crawler`` (Scrapy): the crawler the ``crawl`` command runs,
  with Scrapy's warning about unused ``FEEDS`` connected (:func:`create_crawler`); the command
  needs the crawler afterwards for its exit status.
- ``CrawlerProcessBase._signal_shutdown`` (Scrapy): the handler of the first SIGINT/SIGTERM,
  installed when the reactor starts (:func:`on_shutdown_signal`). There is no signal for
  "a shutdown was asked"; the crawl command and the worker must know.
- ``RetryMiddleware._retry`` (Scrapy): the retry of a request with the middleware's own
  ``RETRY_*`` settings and the request's ``max_retry_times`` / ``priority_adjust`` /
  ``give_up_log_level`` meta, logged and counted in the stats as Scrapy's retries are
  (:func:`retry_request`); :class:`~vkscraper.downloadermiddlewares.retry.VkRetryMiddleware`
  retries VK answers that are not HTTP errors, after its own backoff.
- ``scrapy_redis.queue.Base._encode_request`` / ``_decode_request`` (scrapy-redis): a request
  to and from the bytes scrapy-redis stores, with the scheduler's serializer
  (:func:`encode_request`, :func:`decode_request`).

- ``Launcher.processes`` (scrapyd): its running jobs, each a ``ScrapyProcessProtocol`` with
  ``job`` and the process ``transport`` (:func:`scrapyd_running`, :func:`scrapyd_interrupt`).
  Not in scrapyd's interfaces, but what its own ``listjobs.json`` and ``cancel.json`` read; the
  task service needs a job's state and a way to stop it. The rest it uses of scrapyd is
  declared in ``scrapyd.interfaces`` (``IPoller.queues``, ``ISpiderQueue.list``/``remove``,
  ``ISpiderScheduler.schedule``, ``IJobStorage``) and is used directly.

Public names relied on in their current shape (also tested): ``Downloader.slots`` and a
slot's ``active`` and ``delay`` (:func:`downloader_slots`), ``HTTPConnectionPool``'s
``getConnection`` and ``retryAutomatically``, scrapy-redis's ``Scheduler.queue`` and
``Scheduler.stats``, ``FeedExporter.item_scraped`` (the signal handler
:class:`~vkscraper.extensions.feedexport.VkFeedExporter` overrides).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.abstract import FileDescriptor

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.commands import BaseRunSpiderCommand
    from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
    from scrapy.crawler import Crawler, CrawlerProcessBase
    from scrapy.downloadermiddlewares.retry import RetryMiddleware
    from scrapy_redis.queue import Base
    from twisted.web.client import HTTPConnectionPool


# Scrapy: the engine and the downloader


def crawl_stopping(crawler: Crawler) -> bool:
    """The engine is closing the spider (Ctrl-C, cancel, CLOSESPIDER_*, a fatal error): a wait
    before a download must end now, or the close waits for it."""
    try:
        engine = crawler.engine
    except RuntimeError:  # Crawler.engine before the crawl starts
        return False
    if engine is None:
        return False
    slot = engine._slot  # None before the spider opens and after it closed
    return not engine.running or (slot is not None and slot.closing is not None)


def downloader_slots(crawler: Crawler) -> dict[str, Any]:
    """The downloader's slots by key (each with ``active`` requests and a ``delay``); none
    before the engine exists (unit tests)."""
    try:
        return crawler.engine.downloader.slots if crawler.engine is not None else {}
    except RuntimeError:  # Crawler.engine before the crawl starts
        return {}


# Scrapy: the crawl command and the process


def create_crawler(command: BaseRunSpiderCommand, spider: str) -> Crawler:
    """The crawler ``scrapy crawl`` would run for ``spider``, as Scrapy's command builds it."""
    return command._create_crawler(spider)


def on_shutdown_signal(process: CrawlerProcessBase, callback: Callable[[int], None]) -> None:
    """Call ``callback(signum)`` on the first SIGINT/SIGTERM, before Scrapy's graceful
    shutdown begins. Call before ``process.start()``, which installs the handler."""
    handler = process._signal_shutdown

    def shutdown(signum: int, frame: Any) -> None:
        callback(signum)
        handler(signum, frame)

    process._signal_shutdown = shutdown  # type: ignore[method-assign,assignment]


# Scrapy's retry middleware


def retry_request(
    middleware: RetryMiddleware, request: Request, reason: str | Exception
) -> Request | None:
    """The retry of ``request`` as ``middleware`` (a Scrapy ``RetryMiddleware``) makes it, or
    None once its retries are spent."""
    return middleware._retry(request, reason)


# Scrapy's HTTP/1.1 handler and Twisted's connections


def watch_pool(handler: HTTP11DownloadHandler, pool_class: type[HTTPConnectionPool]) -> Any:
    """Make the handler's connection pool a ``pool_class`` (a subclass of Twisted's
    ``HTTPConnectionPool`` that adds no state), keeping everything Scrapy set on it; returns
    the pool."""
    pool = handler._pool
    if not issubclass(pool_class, type(pool)):
        raise TypeError(f"{pool_class.__name__} must extend the pool's class {type(pool)}")
    pool.__class__ = pool_class
    return pool


def socket_transport(connection: Any) -> FileDescriptor | None:
    """The transport that writes ``connection``'s bytes to the socket (under TLS's, if any),
    or None if there is none to be found. ``connection`` is what the pool handed out."""
    # A reused connection comes wrapped in the pool's retrying protocol.
    protocol = getattr(connection, "_clientProtocol", connection)
    # By type: TLS's wrapper answers for its transport's attributes (ProtocolWrapper.__getattr__).
    transport = getattr(protocol, "transport", None)
    while transport is not None and not isinstance(transport, FileDescriptor):
        transport = getattr(transport, "transport", None)
    return transport


def on_socket_write(transport: FileDescriptor, callback: Callable[[], None]) -> None:
    """Call ``callback()`` each time ``transport`` has written bytes to its socket (Twisted
    buffers a write and sends it on a later turn of the loop: this is the moment the bytes
    go). Exceptions from ``callback`` propagate to the caller of ``writeSomeData``."""
    send = transport.writeSomeData

    def write_some_data(data: bytes) -> Any:
        result = send(data)
        callback()
        return result

    transport.writeSomeData = write_some_data  # type: ignore[method-assign]


# scrapy-redis


def encode_request(queue: Base, request: Request) -> bytes:
    """The bytes scrapy-redis stores for ``request`` in ``queue``."""
    data: bytes = queue._encode_request(request)
    return data


def decode_request(queue: Base, data: bytes) -> Request:
    """The request ``data`` (from :func:`encode_request`) stands for."""
    request: Request = queue._decode_request(data)
    return request


# scrapyd


def scrapyd_running(root: Any) -> dict[str, Any]:
    """scrapyd's running jobs by id (``root``: its web root), each a process protocol."""
    return {process.job: process for process in root.launcher.processes.values()}


def scrapyd_interrupt(process: Any) -> None:
    """Ctrl-C to a running job's process (scrapyd's ``cancel.json`` does the same)."""
    process.transport.signalProcess("INT")
