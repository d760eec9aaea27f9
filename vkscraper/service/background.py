"""Loops the scrapyd process runs beside its routes, started once per scrapyd root.

The schedules loop (:class:`vkscraper.schedules.runner.ScheduleRunner` with the task service
as launcher) ticks every ``VK_SCHEDULE_TICK`` seconds (environment of the scrapyd process);
``VKSCRAPER_SCHEDULES=0`` turns it off. Each tick runs in a pool thread (database and Redis
calls never block the reactor), ticks never overlap, and a failed tick is logged and the next
one tried: a database outage must not end the loop.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from twisted.internet import reactor, task, threads

from vkscraper.schedules.runner import ScheduleRunner, ServiceLauncher, env_seconds
from vkscraper.store import open_store

logger = logging.getLogger(__name__)

SCHEDULES_ENV = "VKSCRAPER_SCHEDULES"  # "0": this scrapyd process runs no schedules


def start(root: Any) -> None:
    """Start this root's loops once, when the reactor runs."""
    if getattr(root, "_vkscraper_background", False):
        return
    root._vkscraper_background = True
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
