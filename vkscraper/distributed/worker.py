"""Worker mode: ``python -m vkscraper worker`` runs until stopped, crawling the tasks in Redis.

Any number of workers, on any machines that reach the same Redis (``REDIS_URL``) and
PostgreSQL (``DATABASE_URL``), share every task: one Scrapy crawl of the ``vk`` spider per
task per worker, with scrapy-redis's scheduler (:mod:`vkscraper.distributed.scheduler`) and the
shared per-token rate limit (``VK_SHARED_RATE_LIMIT``, forced on). How the work is shared, replayed
after a dead worker and finalized exactly once: :mod:`vkscraper.distributed.workqueue`.

The loop: beat the heartbeat; put back the work of dead workers; join every open task it does
not run yet; wait up to 2 s on the feed for a new task (a blocking Redis call in a thread: an
idle worker logs nothing and sends Redis a few commands per wait). SIGTERM or Ctrl-C: take no
more tasks, close every crawl (each puts back the groups it had not finished, after writing
what it holds) and exit; a second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from scrapy.crawler import Crawler, CrawlerProcess
from scrapy.utils.asyncio import run_in_thread
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.reactor import install_reactor
from twisted.python.failure import Failure

from vkscraper._internals import on_shutdown_signal
from vkscraper.addon import VkAddon, register_defaults
from vkscraper.alerts.config import alert_config
from vkscraper.alerts.dispatch import DispatchLoop, start_loop
from vkscraper.cli import exitcodes
from vkscraper.connections import redis_url
from vkscraper.distributed import workqueue
from vkscraper.spiders.vk import VkSpider

if TYPE_CHECKING:
    import redis
    from scrapy.settings import Settings

logger = logging.getLogger(__name__)

FEED_WAIT = 2  # seconds one blocking wait on the feed lasts


class MetricsPortError(ValueError):
    """The worker's metrics port cannot be opened (in use, an address not of this machine)."""


def worker_settings(
    settings: Settings, task_id: int, worker: str, role: str, run: str = ""
) -> Settings:
    """The settings of one task's crawl in this worker (``run``: the run it takes part in)."""
    crawl_settings = settings.copy()
    prefix = workqueue.task_prefix(task_id)
    for name, value in {
        "VK_DISTRIBUTED": True,
        "VK_WORKER_ID": worker,
        "VK_WORKER_ROLE": role,
        "VK_WORKER_RUN": run,
        "VK_SHARED_RATE_LIMIT": True,
        "SCHEDULER": "vkscraper.distributed.scheduler.VkScheduler",
        "SCHEDULER_QUEUE_CLASS": "vkscraper.distributed.workqueue.EntryQueue",
        "SCHEDULER_QUEUE_KEY": f"{prefix}:queue",
        "SCHEDULER_PERSIST": True,  # never delete the queue every worker shares
        "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
        "SCHEDULER_DUPEFILTER_KEY": f"{prefix}:dupefilter",  # entries are dont_filter
        "DOWNLOAD_SLOTS": {
            **settings.getdict("DOWNLOAD_SLOTS"),
            workqueue.ENTRY_SLOT: {"delay": 0, "concurrency": 16},
        },
    }.items():
        crawl_settings.set(name, value, priority="cmdline")
    return crawl_settings


class Worker(CrawlerProcess):
    def __init__(self, settings: Settings) -> None:
        register_defaults(settings)  # VK_WORKER_*: read here, before any crawl's add-on runs
        super().__init__(settings)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        import redis  # only worker mode needs it here

        url = redis_url(settings.get("REDIS_URL"))
        if url is None:
            raise ValueError("worker mode needs Redis: export REDIS_URL=redis://host:6379/0")
        self.redis: redis.Redis = redis.Redis.from_url(url)
        self.heartbeat_ttl = settings.getfloat("VK_WORKER_HEARTBEAT")
        self.max_tasks = max(1, settings.getint("VK_WORKER_TASKS"))
        self.running: dict[Crawler, int] = {}  # crawl -> its task
        # One crawl per task here: what to start once the crawl of the task closes.
        self._after: dict[int, tuple[str, str]] = {}  # task -> (role, run)
        # Workers seen without a heartbeat, since when (monotonic): dead only after a
        # whole VK_WORKER_HEARTBEAT of it, as this worker sees it. A Redis outage longer
        # than that lets every heartbeat expire; the live workers beat again within a third
        # of it once Redis is back, and none is taken for dead meanwhile.
        self._missing: dict[str, float] = {}
        self.stopping = False
        on_shutdown_signal(self, self._shutdown_asked)

    # the process

    def run(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.task import LoopingCall

        self.redis.ping()  # fails here, before anything starts, when Redis is unreachable
        metrics_server = self._serve_metrics()
        beat = LoopingCall(self._beat)
        beat.start(max(0.5, self.heartbeat_ttl / 3))
        reactor.callWhenRunning(lambda: deferred_from_coro(self._loop()))
        logger.info("Worker %(id)s waiting for tasks in Redis", {"id": self.id})
        alerts = self._alerts()
        self.start(stop_after_crawl=False)
        if alerts is not None:
            alerts.stop(timeout=0)
        # Dead first, then a task it was opening goes back: whoever takes it takes it over.
        self.redis.delete(workqueue.heartbeat_key(self.id))
        self._give_back(self.id)
        if metrics_server is not None:
            metrics_server.shutdown()
        logger.info("Worker %(id)s stopped", {"id": self.id})

    def _alerts(self) -> DispatchLoop | None:
        """The alert dispatcher of this worker's database (VK_ALERT_*): the alerts of the
        tasks it finalizes, and of any other process's, go out even without the service."""
        try:
            config = alert_config(self.settings)
        except ValueError as exc:
            logger.error("Alerts off: %(error)s", {"error": exc})
            return None
        return start_loop(config, self.settings.get("DATABASE_URL") or None)

    def _serve_metrics(self) -> Any:
        """This process's live counters (:data:`vkscraper.metrics.REGISTRY`) on
        ``VK_WORKER_METRICS_HOST``:``VK_WORKER_METRICS_PORT``, in a thread; None when off."""
        port = self.settings.getint("VK_WORKER_METRICS_PORT")
        if not port:
            return None
        from prometheus_client import start_http_server

        from vkscraper.metrics import REGISTRY

        host = self.settings.get("VK_WORKER_METRICS_HOST")
        try:
            server, _ = start_http_server(port, addr=host, registry=REGISTRY)
        except (OSError, OverflowError) as exc:  # in use, not an address of this machine…
            raise MetricsPortError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        where = f"[{host}]" if ":" in host else host
        logger.info("Worker metrics on http://%(where)s:%(port)s/metrics",
                    {"where": where, "port": port})  # fmt: skip
        return server

    def _shutdown_asked(self, signum: int) -> None:
        self.stopping = True  # no new task; the crawls close and put back what they hold

    def _beat(self) -> None:
        try:
            self.redis.set(workqueue.heartbeat_key(self.id), 1, px=int(self.heartbeat_ttl * 1000))
        except Exception as exc:  # redis.RedisError, OSError: the next beat tries again
            logger.warning("Worker heartbeat failed: %(error)s", {"error": exc})

    # the loop

    async def _loop(self) -> None:
        while not self.stopping:
            try:
                for task_id in await run_in_thread(self._reap):
                    self._run(task_id, "finalize")
                for task_id in await run_in_thread(self._active_tasks):
                    if task_id not in self.running.values() and len(self.running) < self.max_tasks:
                        self._start(task_id, begin=False)
                if len(self.running) < self.max_tasks:
                    if (task_id := await run_in_thread(self._next_task)) and not self.stopping:
                        self._start(task_id, begin=True)
                else:
                    await run_in_thread(self._sleep)
            except Exception as exc:  # Redis away: say so, wait, try again
                logger.error("Worker loop: %(error)s", {"error": exc})
                await run_in_thread(self._sleep)

    def _sleep(self) -> None:
        time.sleep(FEED_WAIT)

    def _next_task(self) -> int:
        """A task id from the feed (0: none came), kept under this worker until opened."""
        raw = self.redis.blmove(
            workqueue.FEED, workqueue.opening_key(self.id), FEED_WAIT, "RIGHT", "LEFT"
        )
        return int(raw) if raw is not None else 0

    def _active_tasks(self) -> list[int]:
        return sorted(int(t) for t in self.redis.smembers(workqueue.ACTIVE))

    def _dead(self, worker: str) -> bool:
        """No heartbeat from ``worker`` for ``VK_WORKER_HEARTBEAT`` s, as this worker saw it
        (an expired key alone is not enough: Redis may just have come back)."""
        if worker == self.id or self.redis.exists(workqueue.heartbeat_key(worker)):
            self._missing.pop(worker, None)
            return False
        since = self._missing.setdefault(worker, time.monotonic())
        return time.monotonic() - since >= self.heartbeat_ttl

    def _reap(self) -> list[int]:
        """Put back the work of dead workers; returns the tasks a dead worker was to
        finalize, now this worker's (in a thread: the crawls start in the reactor's)."""
        to_finalize = []
        for task_id in self._active_tasks():
            queue = workqueue.TaskQueue(self.redis, task_id, self.id)
            dead = [w for w in queue.holders() if self._dead(w)]
            if dead and (moved := queue.reap(dead)):
                logger.warning(
                    "Task %(task)s: %(n)d group(s) of a worker that stopped beating went back "
                    "to the queue",
                    {"task": task_id, "n": moved},
                )
            finalizer = queue.finalizing()
            if finalizer is not None and self._dead(finalizer) and queue.take_over(finalizer):
                logger.warning(
                    "Task %(task)s: the worker finalizing it stopped beating; finalizing it here",
                    {"task": task_id},
                )
                to_finalize.append(task_id)
        prefix = workqueue.opening_key("")
        for key in self.redis.scan_iter(prefix + "*"):
            worker = key.decode()[len(prefix) :]
            if self._dead(worker):
                self._give_back(worker)
        return to_finalize

    def _give_back(self, worker: str) -> None:
        while self.redis.lmove(workqueue.opening_key(worker), workqueue.FEED, "LEFT", "RIGHT"):
            logger.warning("A task worker %(w)s was opening went back to the feed", {"w": worker})

    def _start(self, task_id: int, *, begin: bool) -> None:
        queue = workqueue.TaskQueue(self.redis, task_id, self.id)
        if begin:
            opened = queue.begin()
            if opened == 1:
                # A new run, this worker opens it (after its crawl of an earlier run, if one
                # is still closing here: see _run).
                self._run(task_id, "open", queue.run)
                return
            # Another live worker opens it (this one joins), or it was cancelled.
            self.redis.lrem(workqueue.opening_key(self.id), 0, str(task_id))
            if opened < 0 or task_id in self.running.values():
                return
        elif not queue.join():
            return
        self._run(task_id, "join", queue.run)

    def _run(self, task_id: int, role: str, run: str = "") -> None:
        if task_id in self.running.values():
            # Never two crawls of one task in a worker: they would share its owner list and
            # bookkeeping. The one here is of an ended run (it sees so and closes within
            # moments) or is done with the task (a finalizing taken over): this one waits.
            if role != "join" or task_id not in self._after:
                self._after[task_id] = (role, run)
            logger.info(
                "Task %(task)s: %(role)s it once its crawl here has closed",
                {"task": task_id, "role": role},
            )
            return
        crawler = Crawler(VkSpider, worker_settings(self.settings, task_id, self.id, role, run))
        self.running[crawler] = task_id
        what = {"open": "opening it", "join": "joining it", "finalize": "finalizing it"}[role]
        logger.info("Task %(task)s: %(what)s", {"task": task_id, "what": what})
        d = self.crawl(crawler, task_id=str(task_id))
        d.addBoth(self._ended, crawler, role, run)

    def _ended(self, result: Any, crawler: Crawler, role: str, run: str) -> Any:
        task_id = self.running.pop(crawler)
        after = self._after.pop(task_id, None)
        if isinstance(result, Failure):  # said here, not as "Unhandled error" at exit
            logger.error(
                "Task %(task)s: the crawl failed: %(error)s",
                {"task": task_id, "error": result.getErrorMessage()},
            )
            result = None
        if role == "open" and not self.stopping and after is None:
            # An opener that ended before queueing every group (the task does not exist, the
            # database refused…; its log says why) ends the task: joiners stop waiting.
            self.redis.lrem(workqueue.opening_key(self.id), 0, str(task_id))
            queue = workqueue.TaskQueue(self.redis, task_id, self.id, run)
            state = self.redis.get(queue.state)
            if state == f"opening:{self.id}".encode() and queue.claim():  # (of its run)
                queue.finalized()  # off the active tasks: nobody waits for it
                logger.error("Task %(task)s could not be opened (see above)", {"task": task_id})
        if after is not None and not self.stopping:
            self._run(task_id, *after)
        return result


def check(settings: Settings) -> str | None:
    """Why this worker's crawls would be refused (a VK_API_URL the operator does not allow, a
    rate above the ceiling…), or None: checked once at start with the add-on's own rules."""
    probe = worker_settings(settings, 0, "check", "join")
    try:
        VkAddon().update_settings(probe)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def run(settings: Settings) -> int:
    install_reactor(settings["TWISTED_REACTOR"], settings["ASYNCIO_EVENT_LOOP"])
    Worker(settings).run()
    return exitcodes.OK
