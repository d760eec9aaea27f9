"""Command line: ``python -m vkscraper migrate | groups … | task … | export …``.

Every command applies pending migrations first (a no-op when the schema is current), so a
first run works on an empty database. Exit statuses (:mod:`vkscraper.cli.exitcodes`): 0
success, 1 database error (one line on stderr, never a traceback), 2 bad input, a task id that
names no task included (one line on stderr: ``vkscraper: error: task N does not exist`` for
every command taking an id). ``task watch`` differs, see its help: it exits with the task's
outcome (0 completed, 1 failed), 3 on a database error and 130 on Ctrl-C.

Logging goes to stderr: warnings by default, ``-v`` adds INFO (which store is used, migrations
applied), ``-q`` leaves errors only. Command output goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from vkscraper.cli import exitcodes, watch
from vkscraper.connections import redis_url
from vkscraper.distributed import pids as workerpids
from vkscraper.distributed import workqueue
from vkscraper.exceptions import StoreError
from vkscraper.store import Store, Task, export, open_store
from vkscraper.store.tasks import dumps_metrics
from vkscraper.vk.grouprefs import GroupRefError, parse_group_refs

PROG = "vkscraper"


class UsageError(Exception):
    """Bad input from the user: :data:`~vkscraper.cli.exitcodes.BAD_ARGUMENTS`."""


class _Failed(Exception):
    """The command could not do its job (an export file not written, a worker still running
    after `worker stop`): :data:`~vkscraper.cli.exitcodes.FAILED`."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block: the message names what is wrong.
        self.exit(exitcodes.BAD_ARGUMENTS, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Collect posts and comments of VK communities.")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://user@host:5432/db or sqlite:///file "
        "(default: $DATABASE_URL, else sqlite:///vkscraper.sqlite3)",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="log INFO too: which store, migrations"
    )
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("migrate", help="create or update the database schema")

    groups = commands.add_parser("groups", help="manage the communities to crawl")
    group_cmds = groups.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = group_cmds.add_parser("add", help="add communities (id, club123, name or vk.com URL)")
    add.add_argument("refs", nargs="+", metavar="REF")
    group_cmds.add_parser("list", help="list communities, pending names flagged")
    remove = group_cmds.add_parser(
        "remove",
        help="remove communities",
        description="Remove communities from the list. Prints how many rows went; each "
        "reference that names no listed community gets a warning line on stderr "
        "('not found: REF') and the exit status stays 0: the list ends up without it either way.",
    )
    remove.add_argument("refs", nargs="+", metavar="REF")

    task = commands.add_parser("task", help="create and inspect crawl tasks")
    task_cmds = task.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = task_cmds.add_parser("create", help="create a task; prints its id")
    create.add_argument(
        "--groups", required=True, metavar="REF[,REF…]", help="communities, comma-separated"
    )
    create.add_argument(
        "--enqueue",
        action="store_true",
        help="put it in the Redis feed ($REDIS_URL) for `worker` processes (PostgreSQL only)",
    )
    show = task_cmds.add_parser(
        "show",
        help="status, timestamps and metrics of a task",
        description="Print task N: status, groups, timestamps and metrics. Exit status: 0 "
        "shown, 1 database error, 2 no task N.",
    )
    show.add_argument("task_id", type=int, metavar="N")
    listing = task_cmds.add_parser(
        "list",
        help="the newest tasks",
        description="The newest tasks, one row each under a header: id, status, when the "
        "latest run started (UTC; 'never' before the first) and how long it took, groups "
        "done/total, posts, comments and errors of that run.",
    )
    listing.add_argument("--limit", type=int, default=50)
    follow = task_cmds.add_parser(
        "watch",
        help="follow a task's progress until it ends",
        description="Follow task N, run by any process, from the database until it ends: "
        "groups done/total, posts and comments stored/expected, the rate, errors and the "
        "time left. The rate is comments STORED per second over the last "
        f"{watch.RATE_WINDOW:.0f} s (the metrics hold stored rows, not requests; they are "
        "refreshed every VK_METRICS_INTERVAL seconds, so the rate moves in steps); time left "
        "is the comments still expected divided by it. A live bar on a terminal, one plain "
        "line per refresh otherwise (pipes, logs). Exit status: 0 the task ended completed, "
        "1 it ended failed (its errors are listed), 2 no task N, 3 database error (at start, or "
        f"unavailable for {watch.OUTAGE_LIMIT:.0f} s), 130 Ctrl-C (the task goes on).",
    )
    follow.add_argument("task_id", type=int, metavar="N")
    follow.add_argument(
        "--interval",
        type=_positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="time between refreshes (default 2)",
    )

    dump = commands.add_parser(
        "export",
        help="write a task's posts and comments as JSON lines or CSV",
        description="Stream the posts of task N and the comments its run saw, in pages, "
        "to --out or stdout, UTF-8. jsonl: one object per line with a 'kind' field (post or "
        "comment), posts first. csv: one kind per file with a header row, so --kind posts or "
        "--kind comments is required. Times are ISO 8601 UTC. Exit status: 0 written, 1 "
        "database or file error, 2 bad options or no task N.",
    )
    dump.add_argument("task_id", type=int, metavar="N")
    dump.add_argument("--format", choices=export.FORMATS, default="jsonl", dest="fmt")
    dump.add_argument(
        "--kind", choices=export.KINDS, help="what to write (default: all; csv: required)"
    )
    dump.add_argument(
        "--out", metavar="FILE", help="write here (replaced when complete); default stdout"
    )

    add_crawl_commands(commands)
    add_schedule_commands(commands)
    add_alert_commands(commands)
    return parser


def add_schedule_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """``schedule …``: recurring collection (docs/usage/schedules.md)."""
    sched = commands.add_parser("schedule", help="collect again and again: schedules")
    cmds = sched.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = cmds.add_parser(
        "add",
        help="add a schedule; prints its id",
        description="Add a schedule: a task of its groups (or, without --groups, of the active "
        "groups of the groups table at each run) every --every or at each --cron time. The "
        "first run is the first due time from now. Exit status: 0 added, 1 database error, 2 "
        "bad options (a bad cron, time zone, group or setting).",
    )
    add.add_argument("--groups", metavar="REF[,REF…]", help="communities, comma-separated")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", metavar="INTERVAL", help="90, 90s, 15m, 2h or 1d")
    when.add_argument("--cron", metavar="EXPR", help="five fields, e.g. '0 */6 * * *'")
    add.add_argument(
        "--timezone", default="UTC", metavar="ZONE", help="the cron's zone (default UTC)"
    )
    add.add_argument("--name", default="", help="a name to recognise it by")
    add.add_argument(
        "-s",
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a crawl setting of its tasks, those collect.json takes (repeatable)",
    )
    add.add_argument("--paused", action="store_true", help="add it paused (see resume)")
    cmds.add_parser("list", help="every schedule: when, next run, last task")
    for action, text in (
        ("show", "a schedule and its run history"),
        ("pause", "no runs until resumed"),
        ("resume", "run again, from the next due time from now"),
        ("remove", "delete a schedule and its history (its tasks stay)"),
    ):
        one = cmds.add_parser(
            action,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. Exit status: 0 done, 1 database "
            "error, 2 no schedule N.",
        )
        one.add_argument("schedule_id", type=int, metavar="N")
    runner = cmds.add_parser(
        "run",
        help="run the schedules in the foreground (or once, from cron)",
        description="Claim the due schedules and launch their tasks, every --tick seconds "
        "until stopped (Ctrl-C or SIGTERM: a running crawl is interrupted and stays "
        "resumable). --launch local runs each task as `scrapy crawl vk -a task_id=N` here, "
        "one at a time; --launch workers puts it in the workers' Redis feed ($REDIS_URL; "
        "PostgreSQL only). --once claims and launches once and, with local, waits for those "
        "crawls to end: for cron. Several runners may share a PostgreSQL database (each due "
        "run starts once); an SQLite database takes one runner only. Exit status: 0, 1 "
        "database or Redis error (--once; the loop logs it and goes on), 2 bad options.",
    )
    runner.add_argument("--launch", choices=("local", "workers"), default="local")
    runner.add_argument("--once", action="store_true", help="one round, then exit")
    runner.add_argument(
        "--tick",
        type=_positive_seconds,
        metavar="SECONDS",
        help="time between rounds (default: $VK_SCHEDULE_TICK, else 10)",
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _port(text: str) -> int:
    if text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    raise argparse.ArgumentTypeError(f"not a port number (1-65535): {text!r}")


def add_crawl_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Crawl-related commands: ``worker`` (the crawl itself is ``scrapy crawl vk``)."""
    work = commands.add_parser(
        "worker",
        help="crawl the tasks queued in Redis, with any number of other workers",
        description="Run until stopped (SIGTERM or Ctrl-C: the groups not finished here go "
        "back to the queue), crawling every task in the Redis feed ($REDIS_URL) together "
        "with the other workers; tasks enter the feed with `task create --enqueue`. Needs "
        "PostgreSQL ($DATABASE_URL) and VK_ACCESS_TOKEN (one token or several, comma-"
        "separated), shared with the other workers under one rate limit per token. "
        "`worker stop` stops workers (see `worker stop --help`).",
    )
    work.add_argument(
        "-s",
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Scrapy or VK_* setting, as with `scrapy crawl -s` (repeatable)",
    )
    work.add_argument(
        "--pidfile",
        type=Path,
        metavar="PATH",
        help="write the worker's pid here while it runs (refused while a running worker "
        "holds PATH): `worker stop --pidfile PATH` stops this worker and no other",
    )
    work.add_argument(
        "--metrics-port",
        type=_port,
        metavar="N",
        help="serve this worker's live Prometheus metrics on http://HOST:N/metrics "
        "(VK_WORKER_METRICS_PORT; default: not served)",
    )
    work.add_argument(
        "--metrics-host",
        metavar="HOST",
        help="the address the metrics port listens on (VK_WORKER_METRICS_HOST, default "
        "127.0.0.1: this machine only)",
    )
    worker_cmds = work.add_subparsers(dest="action", metavar="ACTION")
    stop = worker_cmds.add_parser(
        "stop",
        help="stop workers of this machine precisely: by pidfile, or those of this Redis",
        description="Send SIGTERM to the worker that holds --pidfile PATH (repeatable), or "
        "with --all to every worker of this machine registered in this Redis ($REDIS_URL: "
        "its heartbeat), and wait until they have exited (each puts its unfinished groups "
        "back). Only processes running `vkscraper worker` (or `python -m vkscraper worker`) "
        "are signalled. Exit status: 0 stopped, or none was running (a warning says so); 1 "
        "one still runs after --timeout or Redis is unreachable; 2 bad options.",
    )
    which = stop.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--pidfile", type=Path, action="append", metavar="PATH", dest="stop_pidfiles"
    )
    which.add_argument("--all", action="store_true", dest="stop_all")
    stop.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for them to exit (default 60)",
    )


def add_alert_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """``alerts deliver`` (one dispatcher pass, for cron) and ``alerts list``."""
    alerts = commands.add_parser("alerts", help="send and inspect webhook alerts")
    alert_cmds = alerts.add_subparsers(dest="action", required=True, metavar="ACTION")
    alert_cmds.add_parser(
        "deliver",
        help="send the alerts that are due, once (for cron)",
        description="One pass of the alert dispatcher: the due deliveries to the webhooks of "
        "VK_ALERT_WEBHOOKS and VK_ALERT_SLACK_WEBHOOKS (the environment, or the project's "
        "settings module) are sent; a failed one is retried by a later pass. Exit status: 0 "
        "none failed, 1 a delivery failed or database error, 2 no webhook configured or a "
        "malformed alert setting.",
    )
    recent = alert_cmds.add_parser(
        "list",
        help="recent alert events and the state of their deliveries",
        description="The newest alert events (what happened, its task or schedule), each "
        "followed by its deliveries: the webhook's tag (never its URL), attempts, and "
        "delivered, retrying (when, after which error) or given up.",
    )
    recent.add_argument("--limit", type=int, default=20)


def project_alert_config() -> Any:
    """VK_ALERT_* from the project's settings module and the environment (a malformed value
    is a usage error)."""
    from vkscraper.alerts.config import alert_config

    os.environ.setdefault("SCRAPY_SETTINGS_MODULE", "vkscraper.settings")
    from scrapy.utils.project import get_project_settings

    try:
        return alert_config(get_project_settings())
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _alerts(args: argparse.Namespace, store: Store) -> int:
    from vkscraper.alerts.dispatch import Dispatcher

    if args.action == "list":
        for event in store.list_alert_events(max(1, args.limit)):
            subject = (
                f"task {event['task_id']}"
                if event["task_id"] is not None
                else f"schedule {event['schedule_id']}"
            )
            print(f"{event['id']:>6}  {_fmt(event['created_at'])}  {event['kind']:<9}  {subject}")
            for d in event["deliveries"]:
                if d["delivered_at"] is not None:
                    state = f"delivered {_fmt(d['delivered_at'])}"
                elif d["next_attempt_at"] is None:
                    state = f"given up ({d['last_error']})"
                elif d["last_error"]:
                    state = f"retry at {_fmt(d['next_attempt_at'])} ({d['last_error']})"
                else:
                    state = "pending"
                print(f"        {d['webhook']:<21}  attempts {d['attempts']}  {state}")
        return exitcodes.OK
    config = project_alert_config()
    if not config.enabled:
        raise UsageError(
            "no alert webhook configured: set VK_ALERT_WEBHOOKS or VK_ALERT_SLACK_WEBHOOKS "
            "(and VK_ALERT_ON not empty)"
        )
    result = Dispatcher(config, store_factory=lambda _url: store).run_pass()
    print(f"delivered {result.delivered}, failed {result.failed}")
    return exitcodes.FAILED if result.failed else exitcodes.OK


def run(args: argparse.Namespace, store: Store) -> int:
    if args.command == "migrate":
        # main() already migrated; report what that did.
        applied = args.applied
        print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
        return exitcodes.OK
    if args.command == "groups":
        return _groups(args, store)
    if args.command == "task":
        return _task(args, store)
    if args.command == "export":
        return _export(args, store)
    if args.command == "worker":
        return _worker(args, store)
    if args.command == "schedule":
        from vkscraper.cli import schedules

        try:
            return schedules.run(args, store)
        except schedules.ScheduleUsageError as exc:
            raise UsageError(str(exc)) from None
        except schedules.ScheduleFailed as exc:
            raise _Failed(str(exc)) from None
    if args.command == "alerts":
        return _alerts(args, store)
    raise UsageError(f"unknown command {args.command!r}")  # pragma: no cover


def _refs(raw: Sequence[str]) -> list:
    try:
        return parse_group_refs(",".join(raw))
    except GroupRefError as exc:
        raise UsageError(str(exc)) from None


def _groups(args: argparse.Namespace, store: Store) -> int:
    if args.action == "add":
        refs = args.parsed_refs
        store.add_groups(refs)
        for ref in refs:
            print(f"added {ref}" + ("" if ref.group_id is not None else " (pending resolution)"))
    elif args.action == "remove":
        removed = store.remove_groups(args.parsed_refs)
        print(f"removed {int(removed)}")
        for ref in removed.not_found:
            print(f"{PROG}: warning: not found: {ref}", file=sys.stderr)
    else:
        rows = store.list_groups()
        if not rows:
            print("no groups")
        for g in rows:
            ident = "pending" if g["pending"] else str(g["id"])
            state = "active" if g["is_active"] else "inactive"
            print(f"{ident:>12}  {g['screen_name'] or '-':<32}  {state:<8}  {g['name'] or ''}")
    return exitcodes.OK


def _fmt(dt: datetime | None) -> str:
    return dt.isoformat(timespec="seconds") if dt else "-"


def _task(args: argparse.Namespace, store: Store) -> int:
    if args.action == "create":
        refs = args.parsed_refs
        values = [r.group_id if r.group_id is not None else str(r.screen_name) for r in refs]
        if args.enqueue:
            store.require_multiprocess("--enqueue (worker mode)")
            server = _redis()
        task_id = store.create_task(values)
        if args.enqueue:
            workqueue.enqueue(server, task_id)
        print(task_id)
        return exitcodes.OK
    if args.action == "watch":
        try:
            return watch.watch(store, _existing_task(store, args.task_id), interval=args.interval)
        except watch.TaskGone as exc:
            raise UsageError(str(exc)) from None
    if args.action == "show":
        _print_task(_existing_task(store, args.task_id))
        return exitcodes.OK
    tasks = store.list_tasks(limit=args.limit)
    if not tasks:
        print("no tasks")
        return exitcodes.OK
    _print_table(_TASK_COLUMNS, [_task_row(t) for t in tasks])
    return exitcodes.OK


# `task list`: (header, right-aligned). LAST RUN is when the latest run started (a task run
# again months after it was created is listed by that run), TOOK how long it lasted.
_TASK_COLUMNS = [
    ("ID", True),
    ("STATUS", False),
    ("LAST RUN (UTC)", False),
    ("TOOK", True),
    ("GROUPS", True),
    ("POSTS", True),
    ("COMMENTS", True),
    ("ERRORS", True),
]


def _task_row(task: Task) -> list[str]:
    m = task.metrics
    started, finished = task.started_at, task.finished_at
    if started is None:
        took = "-"  # never run
    elif finished is None:
        took = "running" if task.status == "in_progress" else "-"
    else:
        took = watch.format_duration(max((finished - started).total_seconds(), 0))
    return [
        str(task.id),
        task.status,
        started.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if started else "never",
        took,
        f"{m.get('groups_done', 0)}/{m.get('groups_total', 0)}",
        str(m.get("posts", 0)),
        str(m.get("comments", 0)),
        str(len(m.get("errors", []))),
    ]


def _print_table(columns: list[tuple[str, bool]], rows: list[list[str]]) -> None:
    widths = [
        max(len(r[i]) for r in [[c for c, _ in columns], *rows]) for i in range(len(columns))
    ]
    for row in [[c for c, _ in columns], *rows]:
        cells = [
            cell.rjust(w) if right else cell.ljust(w)
            for cell, w, (_, right) in zip(row, widths, columns, strict=True)
        ]
        print("  ".join(cells).rstrip())


def _redis(given: str | None = None) -> Any:
    """The workers' Redis, reachable: ``given`` (a worker's ``-s REDIS_URL``), else the
    environment's (:func:`~vkscraper.connections.redis_url`)."""
    url = redis_url(given)
    if not url:
        raise UsageError("worker mode needs Redis: export REDIS_URL=redis://host:6379/0")
    import redis

    server = redis.Redis.from_url(url)
    try:
        server.ping()
    except (redis.RedisError, OSError) as exc:
        where = workqueue.redis_location(url)
        raise StoreError(f"Redis at {where} is unreachable: {exc}") from None
    return server


def _worker(args: argparse.Namespace, store: Store) -> int:
    store.require_multiprocess("worker mode")
    os.environ.setdefault("SCRAPY_SETTINGS_MODULE", "vkscraper.settings")
    from scrapy.utils.project import get_project_settings

    from vkscraper.distributed import worker

    settings = get_project_settings()
    for name, value in _cmdline_settings(args.set):
        settings.set(name, value, priority="cmdline")
    _redis(settings.get("REDIS_URL"))  # the one the worker uses
    if args.database_url:
        settings.set("DATABASE_URL", args.database_url, priority="cmdline")
    for name, value in (
        ("VK_WORKER_METRICS_PORT", args.metrics_port),
        ("VK_WORKER_METRICS_HOST", args.metrics_host),
    ):
        if value is not None:
            settings.set(name, value, priority="cmdline")
    if problem := worker.check(settings):
        # Before any task is taken: a crawl refused later would end every task it opens.
        raise UsageError(problem)
    store.close()  # each crawl opens its own
    try:
        if args.pidfile is None:
            return worker.run(settings)
        with workerpids.held(args.pidfile):
            return worker.run(settings)
    except (workerpids.PidfileError, worker.MetricsPortError) as exc:
        raise UsageError(str(exc)) from None


def _worker_stop(args: argparse.Namespace) -> int:
    """``worker stop``: no database needed (nor created)."""
    if args.set or args.pidfile:
        raise UsageError(
            "-s and --pidfile before `stop` are a worker's: `worker stop --pidfile PATH`"
        )
    if args.stop_all:
        pids = [p for p in workerpids.registered(_redis()) if workerpids.is_worker(p)]
        if not pids:
            print(f"{PROG}: warning: no worker of this machine is registered in this Redis",
                  file=sys.stderr)  # fmt: skip
    else:
        pids = []
        for path in args.stop_pidfiles:
            try:
                pid = workerpids.read_pid(path)
            except workerpids.PidfileError as exc:
                raise UsageError(str(exc)) from None
            if pid is not None and workerpids.is_worker(pid):
                pids.append(pid)
            else:
                print(f"{PROG}: warning: no worker holds {path}", file=sys.stderr)
    running = workerpids.stop(pids, args.timeout)
    for pid in pids:
        if pid not in running:
            print(f"stopped worker {pid}")
    if running:
        left = ", ".join(str(p) for p in running)
        raise _Failed(f"worker(s) {left} still running after {args.timeout:g} s")
    return exitcodes.OK


def _existing_task(store: Store, task_id: int) -> Task:
    task = store.get_task(task_id)
    if task is None:
        raise UsageError(f"task {task_id} does not exist")
    return task


def _export(args: argparse.Namespace, store: Store) -> int:
    task = _existing_task(store, args.task_id)
    if task.status == "in_progress":
        print(
            f"{PROG}: warning: task {task.id} is in progress: exporting the rows stored so far",
            file=sys.stderr,
        )
    try:
        counts = export.export_to(store, task.id, fmt=args.fmt, kind=args.kind, path=args.out)
    except OSError as exc:
        if args.out is None:
            raise  # stdout: handled by main (a closed pipe)
        raise _Failed(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if args.out is not None:
        print(f"wrote {counts.posts} posts and {counts.comments} comments to {args.out}")
    return exitcodes.OK


def _print_task(task: Task) -> None:
    print(f"task {task.id}: {task.status}")
    print(f"groups:      {', '.join(str(g) for g in task.groups) or '-'}")
    print(f"created_at:  {_fmt(task.created_at)}")
    print(f"started_at:  {_fmt(task.started_at)}")
    print(f"finished_at: {_fmt(task.finished_at)}")
    print(f"updated_at:  {_fmt(task.updated_at)}")
    print("metrics:")
    print(dumps_metrics(task.metrics))


def _parse_input(args: argparse.Namespace) -> None:
    """Validate group references before touching the database (bad input is exit 2)."""
    args.parsed_refs = []
    if getattr(args, "refs", None):
        args.parsed_refs = _refs(args.refs)
    elif args.command == "task" and args.action == "create":
        args.parsed_refs = _refs([args.groups])
        if not args.parsed_refs:
            raise UsageError("--groups names no community")
    elif args.command == "task" and args.action == "list" and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    elif args.command == "export":
        try:
            args.kind = export.check_options(args.fmt, args.kind)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def _cmdline_settings(items: Sequence[str]) -> list[tuple[str, str]]:
    """``-s NAME=VALUE`` options as (name, value), in order (the last of a name wins)."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"-s takes NAME=VALUE, got {item!r}")
        pairs.append((name, value))
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    if args.command != "worker":  # a worker logs as Scrapy does (LOG_LEVEL, LOG_FILE)
        logging.basicConfig(
            level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    watching = args.command == "task" and args.action == "watch"
    try:
        if args.command == "worker" and args.action == "stop":
            return _worker_stop(args)
        _parse_input(args)
        if args.command == "worker" and not args.database_url:
            # A worker's crawls read -s DATABASE_URL=…: its own checks use that one too.
            args.database_url = dict(_cmdline_settings(args.set)).get("DATABASE_URL")
        with open_store(args.database_url) as store:
            args.applied = store.migrate()
            return run(args, store)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exitcodes.BAD_ARGUMENTS
    except StoreError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exitcodes.WATCH_DATABASE_ERROR if watching else exitcodes.FAILED
    except _Failed as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exitcodes.FAILED
    except BrokenPipeError:
        # The reader went away (`export N | head`): stop quietly, and keep Python from
        # complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exitcodes.FAILED
    except KeyboardInterrupt:
        if not watching:
            raise
        return exitcodes.WATCH_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
