"""``/metrics``: the service's Prometheus endpoint (``scrapyd.conf``: ``metrics =
vkscraper.service.metrics.Metrics``), in prometheus_client's text format.

Each scrape reads the database (and, in distributed mode, the workers' Redis) in a thread of
the reactor's pool, through :class:`ServiceCollector`:

- the crawls' counters as every crawl process added them to ``metric_counters``
  (:mod:`vkscraper.extensions.metrics`; names and labels: :mod:`vkscraper.metrics`);
- ``vkscraper_tasks{status}``: tasks by status;
- per schedule: ``vkscraper_schedule_lag_seconds`` (its last run started this long after it
  was due), ``vkscraper_schedule_interval_seconds`` (its interval, or its cron's current
  gap) and ``vkscraper_schedule_last_comments_timestamp_seconds`` (when its newest task that
  stored a comment ended);
- distributed mode: the workers' queue and the live workers.

A database (or Redis) that does not answer still gets a scrape answered: ``vkscraper_up{…}``
says 0 for it, its metrics are left out, and the log says why. The route sits behind the
service's guards like every other (:mod:`vkscraper.service.guard`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet import threads
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET, Request

from vkscraper import metrics
from vkscraper.service.core import RequestError, TaskService
from vkscraper.store.metrics import ScheduleState, Snapshot

logger = logging.getLogger(__name__)
log = Logger()

TASK_STATUSES = ("created", "in_progress", "completed", "failed")


def cron_gap(expression: str, zone: str, now: datetime) -> float | None:
    """Seconds between the cron's fire times around ``now`` (in its time zone), or None for
    an expression or zone that cannot be read."""
    try:
        local = now.astimezone(ZoneInfo(zone))
        following = croniter(expression, local).get_next(datetime)
        previous = croniter(expression, following).get_prev(datetime)
    except (ValueError, KeyError, LookupError):
        return None
    return float((following - previous).total_seconds())


class ServiceCollector:
    """Reads the state behind ``/metrics`` at every scrape."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        fleet: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.snapshot = snapshot
        self.fleet = fleet
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "vkscraper_up", "1 when the scrape could read the source, else 0", labels=["source"]
        )
        try:
            snap = self.snapshot()
        except RequestError as exc:
            logger.warning("/metrics: %s", exc.message)
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            yield from counter_families(snap.counters)
            tasks = GaugeMetricFamily("vkscraper_tasks", "Tasks by status", labels=["status"])
            for status in TASK_STATUSES:
                tasks.add_metric([status], snap.tasks.get(status, 0))
            yield tasks
            yield from schedule_families(snap.schedules, self.clock())
        if self.fleet is not None:
            try:
                fleet = self.fleet()
            except RequestError as exc:
                logger.warning("/metrics: %s", exc.message)
                up.add_metric(["redis"], 0)
            else:
                up.add_metric(["redis"], 1)
                for name, help_, value in (
                    ("vkscraper_queue_tasks", "Tasks waiting for a worker to open them",
                     fleet.tasks_queued),
                    ("vkscraper_queue_groups", "Groups of open tasks waiting for a worker",
                     fleet.groups_queued),
                    ("vkscraper_workers", "Workers with a live heartbeat", fleet.workers),
                ):  # fmt: skip
                    yield GaugeMetricFamily(name, help_, value=value)
        yield up


# Series that exist from the first scrape, at 0: increase() only sees a series' growth
# once it has a sample before it.
_ALWAYS: dict[str, list[dict[str, str]]] = {
    "vkscraper_runs_started_total": [{}],
    "vkscraper_runs_ended_total": [{"outcome": o} for o in sorted(metrics.RUN_OUTCOMES)],
}


def counter_families(rows: list[tuple[str, str, float]]) -> Iterator[Metric]:
    """The stored counters, re-bounded (rows of unknown names are left out)."""
    totals: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in metrics.COUNTERS}
    for name, labels in ((n, ls) for n, series in _ALWAYS.items() for ls in series):
        totals[name][tuple(labels[k] for k in sorted(labels))] = 0.0
    for name, raw, value in rows:
        if name not in metrics.COUNTERS:
            continue
        try:
            labels = metrics.bounded(name, json.loads(raw))
        except (ValueError, KeyError, TypeError):
            continue
        key = tuple(labels[k] for k in sorted(labels))
        totals[name][key] = totals[name].get(key, 0.0) + value
    for name, (help_, rules) in metrics.COUNTERS.items():
        family = CounterMetricFamily(name, help_, labels=sorted(rules))
        for key, value in sorted(totals[name].items()):
            family.add_metric(list(key), value)
        yield family


def schedule_families(schedules: list[ScheduleState], now: float) -> Iterator[Metric]:
    lag = GaugeMetricFamily(
        "vkscraper_schedule_lag_seconds",
        "How long after its due time the schedule's last run started",
        labels=["schedule"],
    )
    interval = GaugeMetricFamily(
        "vkscraper_schedule_interval_seconds",
        "The schedule's interval (a cron's: the gap between its fire times around now)",
        labels=["schedule"],
    )
    last = GaugeMetricFamily(
        "vkscraper_schedule_last_comments_timestamp_seconds",
        "When the newest task of the schedule that stored at least one comment ended (until "
        "one has: when the schedule was made)",
        labels=["schedule"],
    )
    at = datetime.fromtimestamp(now, UTC)
    for s in schedules:
        label = [str(s.id)]
        if s.last_due_at is not None and s.last_ran_at is not None:
            lag.add_metric(label, max(0.0, (s.last_ran_at - s.last_due_at).total_seconds()))
        gap = float(s.every_s) if s.every_s else cron_gap(s.cron or "", s.timezone, at)
        if gap is not None and not s.paused:  # a paused schedule is expected to store nothing
            interval.add_metric(label, gap)
        # From its creation until a task stores a comment: one that never does is noticed too.
        since = s.last_comments_at or s.created_at
        if since is not None:
            last.add_metric(label, since.timestamp())
    yield from (lag, interval, last)


class Metrics(resource.Resource):
    """``GET /metrics``: the Prometheus text format."""

    isLeaf = True

    def __init__(self, root: Any) -> None:
        super().__init__()
        service = TaskService.of(root)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            ServiceCollector(
                service.metrics_snapshot, service.fleet if service.distributed else None
            )
        )

    def render(self, txrequest: Request) -> bytes | int:
        if txrequest.method not in (b"GET", b"HEAD") or txrequest.postpath:
            code, text = (404, "no such route") if txrequest.postpath else (405, "use GET")
            if code == 405:
                txrequest.setHeader("Allow", "GET, HEAD")
            txrequest.setResponseCode(code)
            txrequest.setHeader("Content-Type", "text/plain; charset=utf-8")
            return text.encode() + b"\n"
        gone: list[bool] = []
        txrequest.notifyFinish().addErrback(lambda _: gone.append(True))

        def send(body: bytes) -> None:
            if not gone:
                txrequest.setHeader("Content-Type", CONTENT_TYPE_LATEST)
                txrequest.setHeader("Cache-Control", "no-store")
                txrequest.write(body)
                txrequest.finish()

        def failed(failure: Any) -> None:
            log.failure("/metrics failed", failure)  # the traceback stays in scrapyd's log
            if not gone:
                txrequest.setResponseCode(500)
                txrequest.setHeader("Content-Type", "text/plain; charset=utf-8")
                txrequest.write(b"internal error (see the scrapyd log)\n")
                txrequest.finish()

        # Read in a pool thread: a slow database must not stall scrapyd.
        threads.deferToThread(generate_latest, self.registry).addCallbacks(send, failed)
        return NOT_DONE_YET
