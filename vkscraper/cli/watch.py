"""``python -m vkscraper task watch N``: follow a task's progress, whoever runs it.

The watcher reads only the task's row (status and ``metrics``, one primary-key read per
refresh), so it follows a crawl run by any process — ``scrapy crawl vk`` here, a scrapyd job,
scrapy-redis workers on other machines — and never changes the task. It shows:

* groups done / total;
* comments stored / expected (``metrics.comments`` / ``metrics.comments_expected``; the expected
  count grows as the crawl reads the walls), and posts the same way;
* the **rate**: comments *stored* per second over the last :data:`RATE_WINDOW` seconds of
  refreshes. The metrics hold stored rows, not requests, so this is not a request rate; a
  crawl refreshes its counts every ``VK_METRICS_INTERVAL`` seconds (2) and when a group is
  done, so the rate moves in steps;
* errors (how many, and the newest);
* time left: comments still expected / the rate — an estimate for the comments known so far.

On a terminal (stdout a TTY and ``TERM`` not ``dumb``) it draws a live rich display; anywhere
else (a pipe, a file, a log) it prints one plain line per refresh. It returns when the task
ends: :data:`~vkscraper.cli.exitcodes.OK` (0) or :data:`~vkscraper.cli.exitcodes.TASK_FAILED`
(1). A task that has already ended gets one refresh and the same exit status; one that has not
started yet is waited for. While the database is unavailable it says so and retries, for up to
:data:`OUTAGE_LIMIT` seconds.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from vkscraper.cli import exitcodes
from vkscraper.exceptions import StoreError
from vkscraper.store import Store, Task

FINISHED = ("completed", "failed")
# The rate is measured over this many seconds of refreshes: long enough to span several of a
# crawl's metrics refreshes (every 5 s), short enough to follow a slowing crawl.
RATE_WINDOW = 30.0
# How long the watcher keeps retrying while the database is unavailable.
OUTAGE_LIMIT = 60.0
# The bars' width at most (on a wide terminal); they shrink on a narrow one.
BAR_WIDTH = 40
# Errors listed after a failed task (the rest are counted; `task show N` has them all).
MAX_ERRORS_LISTED = 20


class TaskGone(Exception):
    """The task's row disappeared while it was watched."""


class RateMeter:
    """Increase per second of a growing count, over a sliding window of observations.

    The base is the newest observation at least ``window`` seconds old (or the oldest one), so
    a stalled count reads 0 once a window has passed. A count that goes down (a fresh run of
    the task, a group crawled again) starts the measure afresh.
    """

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        self._samples.clear()

    def observe(self, at: float, value: int) -> None:
        if self._samples and value < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((at, value))
        while len(self._samples) > 2 and self._samples[1][0] <= at - self.window:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Per second; None until two observations some time apart exist."""
        if len(self._samples) < 2:
            return None
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        return None if t1 <= t0 else (v1 - v0) / (t1 - t0)


@dataclass(frozen=True)
class Figures:
    """One refresh: what the task's metrics say, the measured rate and the time left."""

    task_id: int
    status: str
    run: int
    groups_done: int
    groups_total: int
    posts: int
    posts_expected: int
    comments: int
    comments_expected: int
    errors: tuple[str, ...]
    rate: float | None  # comments stored per second
    seconds_left: float | None

    @classmethod
    def of(cls, task: Task, rate: float | None) -> Figures:
        m = task.metrics

        def num(key: str) -> int:
            value = m.get(key)
            return int(value) if isinstance(value, int | float) else 0

        comments, expected = num("comments"), num("comments_expected")
        left: float | None = None
        if task.status not in FINISHED and rate is not None and rate > 0:
            left = max(expected - comments, 0) / rate
        return cls(
            task_id=task.id,
            status=task.status,
            run=num("run") or 1,
            groups_done=num("groups_done"),
            groups_total=num("groups_total"),
            posts=num("posts"),
            posts_expected=num("posts_expected"),
            comments=comments,
            comments_expected=expected,
            errors=tuple(str(e) for e in m.get("errors") or ()),
            rate=rate,
            seconds_left=left,
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def rate_text(self) -> str:
        return "-" if self.rate is None else f"{self.rate:.1f} comments/s"

    def left_text(self) -> str:
        if self.finished:
            return "0:00:00"
        return "?" if self.seconds_left is None else format_duration(self.seconds_left)

    def line(self) -> str:
        """The plain line printed per refresh when stdout is not a terminal."""
        return (
            f"{_stamp()} task {self.task_id} "
            f"{self.status} run {self.run}  groups {self.groups_done}/{self.groups_total}  "
            f"posts {self.posts}/{self.posts_expected}  "
            f"comments {self.comments}/{self.comments_expected}  rate {self.rate_text()}  "
            f"errors {len(self.errors)}  left {self.left_text()}"
        )

    def render(self) -> RenderableType:
        """The live display on a terminal: fits 80 columns without cutting a label or a
        count (the bars shrink; the rate and time left have their own line)."""
        head = Text.assemble(
            (f"task {self.task_id}", "bold"),
            "  ",
            (self.status, _STATUS_STYLE.get(self.status, "")),
            f"  run {self.run}  ",
            (f"errors {len(self.errors)}", "red" if self.errors else "green"),
        )
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(min_width=10, max_width=BAR_WIDTH)  # what gives way on a narrow screen
        grid.add_column(justify="right", no_wrap=True)
        for label, done, total in (
            ("groups", self.groups_done, self.groups_total),
            ("posts", self.posts, self.posts_expected),
            ("comments", self.comments, self.comments_expected),
        ):
            grid.add_row(label, _bar(done, total), f"{done}/{total}")
        pace = Text(f"rate {self.rate_text()}  left {self.left_text()}", no_wrap=True)
        parts: list[RenderableType] = [head, grid, pace]
        if self.errors:
            last = " ".join(self.errors[-1].splitlines())
            parts.append(
                Text(f"last error: {last}", style="red", no_wrap=True, overflow="ellipsis")
            )
        return Group(*parts)


_STATUS_STYLE = {"completed": "bold green", "failed": "bold red", "in_progress": "cyan"}


def _bar(done: int, total: int) -> ProgressBar:
    # total None draws an indeterminate bar (nothing expected yet); rich divides by total.
    return ProgressBar(total=float(total) if total > 0 else None, completed=float(done))


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (hours unbounded)."""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class _Display:
    """A live rich display on a terminal, else one plain line per refresh."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.console = Console(file=out, force_terminal=out.isatty(), highlight=False)
        self.live: Live | None = None
        self.shown: Figures | None = None

    def show(self, figures: Figures) -> None:
        self.shown = figures
        if not self.console.is_interactive:  # not a terminal, or TERM=dumb
            self.out.write(figures.line() + "\n")
            self.out.flush()
        elif self.live is None:
            self.live = Live(figures.render(), console=self.console, auto_refresh=False)
            self.live.start(refresh=True)
        else:
            self.live.update(figures.render(), refresh=True)

    def notice(self, message: str) -> None:
        """A passing condition (the database unavailable), under the last figures."""
        assert self.shown is not None
        if self.live is None:
            self.out.write(f"{_stamp()} task {self.shown.task_id} {message}\n")
            self.out.flush()
        else:
            note = Text(message, style="yellow")
            self.live.update(Group(self.shown.render(), note), refresh=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def watch(
    store: Store,
    task: Task,
    *,
    interval: float,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] = time.sleep,
) -> int:
    """Follow ``task`` until it ends, refreshing every ``interval`` seconds; return
    :data:`~vkscraper.cli.exitcodes.OK` or :data:`~vkscraper.cli.exitcodes.TASK_FAILED`.
    Raises :class:`TaskGone` if its row is deleted meanwhile, :class:`StoreError` if the
    database stays unavailable."""
    out = out or sys.stdout
    display = _Display(out)
    meter = RateMeter()
    run = task.metrics.get("run")
    try:
        while True:
            if task.metrics.get("run") != run:  # a fresh run: its counts start from 0
                run = task.metrics.get("run")
                meter.reset()
            meter.observe(clock(), int(task.metrics.get("comments") or 0))
            figures = Figures.of(task, meter.rate())
            display.show(figures)
            if figures.finished:
                break
            task = _poll(
                store, task.id, interval=interval, clock=clock, sleep=sleep, notify=display.notice
            )
    finally:
        display.close()
    _report_end(figures, out)
    return exitcodes.OK if figures.status == "completed" else exitcodes.TASK_FAILED


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _poll(
    store: Store,
    task_id: int,
    *,
    interval: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Any],
    notify: Callable[[str], None],
) -> Task:
    """Wait one interval and read the task again. While the database is unavailable (a
    restart, a network blip: the crawl buffers through those too), say so at every interval
    and retry, for up to :data:`OUTAGE_LIMIT` seconds; then the :class:`StoreError` goes up."""
    down_since: float | None = None
    while True:
        sleep(interval)
        try:
            task = store.get_task(task_id)
        except StoreError as exc:
            now = clock()
            down_since = now if down_since is None else down_since
            if now - down_since >= OUTAGE_LIMIT:
                raise
            notify(f"database unavailable ({exc}); retrying")
            continue
        if task is None:
            raise TaskGone(f"task {task_id} no longer exists")
        return task


def _report_end(figures: Figures, out: TextIO) -> None:
    """After the last refresh: the errors of a failed task, one line each."""
    for message in figures.errors[:MAX_ERRORS_LISTED]:
        out.write(f"error: {' '.join(message.splitlines())}\n")
    more = len(figures.errors) - MAX_ERRORS_LISTED
    if more > 0:
        out.write(f"… and {more} more error(s): python -m vkscraper task show {figures.task_id}\n")
    out.flush()
