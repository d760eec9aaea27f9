"""``vkscraper schedule add | list | show | pause | resume | remove | run``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from vkscraper.cli import exitcodes
from vkscraper.connections import database_url
from vkscraper.exceptions import StoreError, VkscraperError
from vkscraper.schedules import ScheduleError, parse_spec
from vkscraper.schedules.runner import (
    Launcher,
    LocalLauncher,
    ScheduleRunner,
    WorkersLauncher,
    env_seconds,
)
from vkscraper.schedules.spec import describe_every
from vkscraper.store import Schedule, Store

logger = logging.getLogger("vkscraper.schedules")


class ScheduleUsageError(Exception):
    """Bad input: exit 2."""


class ScheduleFailed(Exception):
    """The command could not do its job: exit 1."""


def run(args: argparse.Namespace, store: Store) -> int:
    if args.action == "add":
        return _add(args, store)
    if args.action == "list":
        _list(store)
        return exitcodes.OK
    if args.action == "run":
        return _run(args, store)
    sid = args.schedule_id
    if args.action == "show":
        schedule = _existing(store.get_schedule(sid), sid)
        _show(store, schedule)
    elif args.action == "pause":
        _existing(store.pause_schedule(sid), sid)
        print(f"paused schedule {sid}")
    elif args.action == "resume":
        schedule = _existing(store.resume_schedule(sid), sid)
        print(f"resumed schedule {sid}: next run {_fmt(schedule.next_run_at)}")
    elif args.action == "remove":
        if not store.remove_schedule(sid):
            raise ScheduleUsageError(f"schedule {sid} does not exist")
        print(f"removed schedule {sid}")
    return exitcodes.OK


def _existing(schedule: Schedule | None, sid: int) -> Schedule:
    if schedule is None:
        raise ScheduleUsageError(f"schedule {sid} does not exist")
    return schedule


def _fmt(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if dt else "-"


def _add(args: argparse.Namespace, store: Store) -> int:
    from vkscraper.service.core import RequestError, check_task_settings

    try:
        settings = check_task_settings(list(args.set))
        spec = parse_spec(
            name=args.name,
            groups=args.groups,
            every=args.every,
            cron=args.cron,
            timezone=args.timezone,
            settings=settings,
        )
    except RequestError as exc:
        raise ScheduleUsageError(exc.message) from None
    except ScheduleError as exc:
        raise ScheduleUsageError(str(exc)) from None
    sid = store.add_schedule(spec)
    if args.paused:
        store.pause_schedule(sid)
    print(sid)
    return exitcodes.OK


def when(schedule: Schedule) -> str:
    """``every 15 min`` or ``cron 0 3 * * * (Europe/Moscow)``."""
    if schedule.every_s is not None:
        return describe_every(schedule.every_s)
    return f"cron {schedule.cron} ({schedule.timezone})"


_COLUMNS = ["ID", "NAME", "WHEN", "GROUPS", "NEXT RUN (UTC)", "STATE", "LAST TASK", "SKIPPED"]


def _list(store: Store) -> None:
    schedules = store.list_schedules()
    if not schedules:
        print("no schedules")
        return
    rows = [
        [
            str(s.id),
            s.name or "-",
            when(s),
            "active groups" if s.groups is None else str(len(s.groups)),
            _fmt(s.next_run_at),
            "paused" if s.paused else "active",
            str(s.last_task_id or "-"),
            str(s.skipped_in_a_row),
        ]
        for s in schedules
    ]
    widths = [max(len(r[i]) for r in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    for row in [_COLUMNS, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _show(store: Store, s: Schedule) -> None:
    groups = "the active groups" if s.groups is None else ", ".join(map(str, s.groups))
    print(f"schedule {s.id}: {s.name or '-'} ({'paused' if s.paused else 'active'})")
    print(f"when:        {when(s)}")
    print(f"groups:      {groups}")
    print(f"settings:    {' '.join(f'{k}={v}' for k, v in s.settings.items()) or '-'}")
    print(f"next run:    {_fmt(s.next_run_at)} UTC")
    print(f"last task:   {s.last_task_id or '-'}")
    print(f"skipped:     {s.skipped_in_a_row} in a row")
    runs = store.schedule_runs(s.id)
    print("runs (newest first):" if runs else "runs: none yet")
    for r in runs:
        task = f"task {r.task_id}" if r.task_id else "-"
        print(f"  {_fmt(r.due_at)}  {r.outcome:<8}  {task:<12}  {r.message or ''}".rstrip())


def _run(args: argparse.Namespace, store: Store) -> int:
    try:
        tick = args.tick or env_seconds("VK_SCHEDULE_TICK")
        launcher: Launcher
        if args.launch == "workers":
            from vkscraper.cli.main import _redis

            store.require_multiprocess("--launch workers")
            launcher = WorkersLauncher(store, _redis())
        else:
            launcher = LocalLauncher(store, database_url(args.database_url))
        runner = ScheduleRunner(store, launcher)
    except VkscraperError as exc:
        if isinstance(exc, StoreError):
            raise
        raise ScheduleUsageError(str(exc)) from None
    if args.once:
        return _once(runner, launcher)
    from vkscraper.alerts.dispatch import start_loop
    from vkscraper.cli.main import project_alert_config

    # A long-running runner also sends (and retries) the alerts of its tasks and schedules.
    alerts = start_loop(project_alert_config(), database_url(args.database_url))
    try:
        return _loop(runner, launcher, tick)
    finally:
        if alerts is not None:
            alerts.stop(timeout=0)


def _once(runner: ScheduleRunner, launcher: Any) -> int:
    try:
        report = runner.tick()
    except (StoreError, OSError) as exc:
        raise ScheduleFailed(str(exc)) from None
    except Exception as exc:  # redis.RedisError
        raise ScheduleFailed(f"{type(exc).__name__}: {exc}") from None
    print(f"claimed {report.claimed}, started {report.started}, failed {report.failed}")
    if isinstance(launcher, LocalLauncher):
        try:
            while launcher.busy:
                threading.Event().wait(0.5)
        except KeyboardInterrupt:
            launcher.stop()
            raise
    return exitcodes.OK


def _loop(runner: ScheduleRunner, launcher: Any, tick: float) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    logger.warning("schedules: running (%s launches), every %g s", launcher.name, tick)
    failing = False
    try:
        while not stop.is_set():
            try:
                report = runner.tick()
                if failing:
                    logger.warning("schedules: ticking again")
                failing = False
                if report.claimed:
                    logger.info(
                        "schedules: %d claimed, %d started, %d failed",
                        report.claimed, report.started, report.failed,
                    )  # fmt: skip
            except Exception as exc:  # a database or Redis outage: logged once, go on
                if not failing:
                    logger.warning("schedules: tick failed: %s", exc)
                failing = True
            stop.wait(tick)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if isinstance(launcher, LocalLauncher):
            launcher.stop()
    print("schedules: stopped", file=sys.stderr)
    return exitcodes.OK
