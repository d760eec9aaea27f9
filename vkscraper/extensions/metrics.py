"""VkMetricsExtension: the crawl's Prometheus counters (:mod:`vkscraper.metrics`), live in this
process's registry and added up in the database.

The counts come from the crawl's stats, which the components keep anyway (the hot path gains
no call of ours): every ``VK_METRICS_INTERVAL`` seconds, and at close, what each stat grew by
since the last look goes into the process's :data:`~vkscraper.metrics.REGISTRY` (a worker
serves it on its metrics port) and into the deltas this crawl owes the database. Those are
added to ``metric_counters`` on the same tick and at close (one upsert per changed series),
so the totals the service serves outlive the crawl's process; a failed write keeps them for
the next one.

======================================  ==========================================
stat                                    counter
======================================  ==========================================
``vk/responses/<tag>/<method>/<out>``   ``vkscraper_vk_requests_total``
``vk/api_error/<code>``                 ``vkscraper_vk_errors_total``
``vk/rate_limit/wait_seconds/<tag>``    ``vkscraper_rate_limit_wait_seconds_total``
``vk/store/{posts,comments}_<result>``  ``vkscraper_{posts,comments}_stored_total``
======================================  ==========================================

Runs are counted from the task extension's signals: a run begun
(:data:`~vkscraper.signals.task_opened` with ``run_began``) and ended
(:data:`~vkscraper.signals.task_closing` with its ``outcome``; a worker's part of a task that
another worker finalizes ends no run).

Settings: ``VK_METRICS_INTERVAL``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.utils.asyncio import run_in_thread

from vkscraper import metrics
from vkscraper import signals as vk_signals
from vkscraper._periodic import Periodic
from vkscraper.exceptions import StoreError

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Spider
    from scrapy.crawler import Crawler

    from vkscraper.store import Store

logger = logging.getLogger(__name__)

_STORED = {
    "vk/store/posts_inserted": ("vkscraper_posts_stored_total", "inserted"),
    "vk/store/posts_updated": ("vkscraper_posts_stored_total", "updated"),
    "vk/store/comments_inserted": ("vkscraper_comments_stored_total", "inserted"),
    "vk/store/comments_updated": ("vkscraper_comments_stored_total", "updated"),
}


def series_of(key: str) -> tuple[str, dict[str, str]] | None:
    """The counter and labels a stat feeds, or None."""
    if key in _STORED:
        name, result = _STORED[key]
        return name, {"result": result}
    parts = key.split("/")
    if key.startswith("vk/responses/") and len(parts) == 5:
        return "vkscraper_vk_requests_total", {
            "token": parts[2], "method": parts[3], "outcome": parts[4],
        }  # fmt: skip
    if key.startswith("vk/api_error/") and len(parts) == 3:
        return "vkscraper_vk_errors_total", {"code": parts[2]}
    if key.startswith("vk/rate_limit/wait_seconds/") and len(parts) == 4:
        return "vkscraper_rate_limit_wait_seconds_total", {"token": parts[3]}
    return None


class VkMetricsExtension:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.store: Store | None = None
        self._seen: dict[str, float] = {}  # stat → its value at the last look
        self._unsent: defaultdict[metrics.Series, float] = defaultdict(float)
        self._periodic = Periodic(self._tick, crawler.settings.getfloat("VK_METRICS_INTERVAL"))
        connect = crawler.signals.connect
        connect(self._task_opened, signal=vk_signals.task_opened)
        connect(self._task_closing, signal=vk_signals.task_closing)
        connect(self._spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def _task_opened(self, store: Store, task_id: int, run_began: bool = False) -> None:
        self.store = store
        if run_began:
            self._count("vkscraper_runs_started_total", {})
        self._periodic.start()

    async def _task_closing(self, store: Store, outcome: str | None = None) -> None:
        """The task extension is done with the store, which it closes once this returns."""
        await self._periodic.stop()
        self.sync()
        if outcome is not None:
            self._count("vkscraper_runs_ended_total", {"outcome": outcome})
        await self.flush(store)
        self.store = None
        if self._unsent:
            logger.warning(
                "Metrics not added to the database (it is unavailable): %(n)d series",
                {"n": len(self._unsent)},
            )

    async def _spider_closed(self, spider: Spider) -> None:
        await self._periodic.stop()
        self.sync()  # the live registry, also of a crawl that never opened its task

    async def _tick(self) -> None:
        self.sync()
        if self.store is not None:
            await self.flush(self.store)

    def _count(self, name: str, labels: dict[str, str], amount: float = 1.0) -> None:
        self._unsent[metrics.count(name, labels, amount)] += amount

    def sync(self) -> None:
        """Move what the stats grew by since the last look into the counters."""
        assert self.crawler.stats is not None
        for key, value in self.crawler.stats.get_stats().items():
            if not key.startswith("vk/") or not isinstance(value, (int, float)):
                continue
            delta = value - self._seen.get(key, 0)
            if delta <= 0 or (series := series_of(key)) is None:
                continue
            self._seen[key] = value
            self._count(*series, delta)

    async def flush(self, store: Store) -> None:
        """Add the deltas not yet written to the database; kept for the next try if it fails."""
        if not self._unsent:
            return
        deltas, self._unsent = dict(self._unsent), defaultdict(float)
        try:
            await run_in_thread(store.add_metric_counters, deltas)
        except StoreError as exc:
            logger.debug("Could not add metrics to the database yet: %(error)s", {"error": exc})
            for series, delta in deltas.items():
                self._unsent[series] += delta

    @property
    def unsent(self) -> dict[metrics.Series, float]:
        return dict(self._unsent)
