"""Loops the scrapyd process runs beside its routes, started once per scrapyd root: the
schedules and the alerts.

The schedules loop (:class:`vkscraper.schedules.runner.ScheduleRunner` with the task service
as launcher) ticks every ``VK_SCHEDULE_TICK`` seconds (environment of the scrapyd process);
``VKSCRAPER_SCHEDULES=0`` turns it off. Each tick runs in a pool thread (database and Redis
calls never block the reactor), ticks never overlap, and a failed tick is logged and the next
one tried: a database outage must not end the loop.

The alert dispatcher (:class:`vkscraper.alerts.dispatch.DispatchLoop`) sends the outbox of the
service's database — the alerts of its crawls, of the workers it feeds and of the schedules —
when webhooks are configured: the scrapyd process's environment or the project's settings
module, never a request (:data:`~vkscraper.service.core.OPERATOR_ONLY`). It is a daemon thread:
a delivery it held when the process ends is retried once its claim lapses.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from twisted.internet import reactor, task, threads

from vkscraper.alerts.config import alert_config
from vkscraper.alerts.dispatch import start_loop
from vkscraper.schedules.runner import ScheduleRunner, ServiceLauncher, env_seconds
from vkscraper.store import open_store

logger = logging.getLogger(__name__)

SCHEDULES_ENV = "VKSCRAPER_SCHEDULES"  # "0": this scrapyd process runs no schedules


def start(root: Any) -> None:
    """Start this root's loops once, when the reactor runs."""
    if getattr(root, "_vkscraper_background", False):
        return
    root._vkscraper_background = True
    root.alerts = _start_alerts()
    if os.environ.get(SCHEDULES_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        logger.info("schedules: not run by this process (%s=0)", SCHEDULES_ENV)
        return
    reactor.callWhenRunning(_start_schedules, root)


def _start_schedules(root: Any) -> task.LoopingCall:
    from vkscraper.service.core import TaskService

    tick = env_seconds("VK_SCHEDULE_TICK")
    runner = ScheduleRunner(open_store, ServiceLauncher(TaskService.of(root)))
    failing = [False]  # log an outage once, not every tick

    def one_tick() -> Any:
        d = threads.deferToThread(runner.tick)

        def done(report: Any) -> None:
            if failing[0]:
                logger.info("schedules: ticking again")
                failing[0] = False
            if report.claimed:
                logger.info(
                    "schedules: %d run(s) claimed, %d started, %d failed",
                    report.claimed, report.started, report.failed,
                )  # fmt: skip

        def failed(failure: Any) -> None:
            level = logging.DEBUG if failing[0] else logging.WARNING
            failing[0] = True
            logger.log(level, "schedules: tick failed: %s", failure.getErrorMessage())

        d.addCallbacks(done, failed)
        return d

    loop = task.LoopingCall(one_tick)
    loop.start(tick, now=True).addErrback(
        lambda f: logger.error("schedules: the loop stopped: %s", f.getErrorMessage())
    )
    reactor.addSystemEventTrigger("before", "shutdown", runner.close)  # type: ignore[arg-type]
    logger.info("schedules: checked every %g s", tick)
    return loop


def _start_alerts() -> Any:
    """The alert loop, when webhooks are configured (else None)."""
    from scrapy.utils.project import ENVVAR, get_project_settings

    before = os.environ.get(ENVVAR)
    settings = None  # the environment alone, when the project's settings cannot be read
    try:
        settings = get_project_settings()
    except Exception as exc:  # an unimportable settings module must not stop scrapyd
        logger.warning("Alerts read from the environment only: %(error)s", {"error": exc})
    finally:  # it names the project's module in the environment: scrapyd's jobs set their own
        if before is None:
            os.environ.pop(ENVVAR, None)
    try:
        config = alert_config(settings)
    except ValueError as exc:
        logger.error("Alerts off: %(error)s", {"error": exc})
        return None
    return start_loop(config)
