"""A schedule as given by a user, checked: what to collect, how often, in which time zone.

No Scrapy and no database here. The crawl settings of a schedule are not checked here: every
caller passes them through :func:`vkscraper.service.core.check_task_settings` first, the check
a client's settings get.

Times are aware UTC datetimes in and out. An interval counts from the time it is given
(``after``) — from a schedule's first due time on, its due times keep that cadence
(:func:`following_due`); a cron expression is read in the schedule's time zone by croniter. On
the night a clock goes back, a wall time happens twice: a cron with a fixed hour (``30 2 * * *``)
runs at the first of them only, as cron itself does; one whose hour field is a wildcard
(``*/15 * * * *``) runs in both hours, which are different hours of real time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from vkscraper.exceptions import VkscraperError
from vkscraper.vk.grouprefs import GroupRefError, parse_group_refs

_EVERY = re.compile(r"([0-9]+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_EVERY_S = 366 * 86400  # a year: anything longer is a typo
MAX_NAME = 200


class ScheduleError(VkscraperError):
    """A schedule that cannot be: the message names the problem."""


@dataclass(frozen=True)
class ScheduleSpec:
    """A checked schedule: ``groups`` None means the active groups of the groups table at each
    run; exactly one of ``every_s`` and ``cron`` is set."""

    name: str
    groups: list[int | str] | None
    every_s: int | None
    cron: str | None
    timezone: str = "UTC"
    settings: dict[str, str] = field(default_factory=dict)


def parse_every(every: int | str) -> int:
    """Seconds of an interval: ``90``, ``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``."""
    if isinstance(every, bool):
        raise ScheduleError(f"every: {every!r} is not an interval")
    if isinstance(every, int):
        seconds = every
    else:
        m = _EVERY.fullmatch(str(every).strip().lower())
        if m is None:
            raise ScheduleError(
                f"every: {str(every)[:40]!r} is not an interval: use seconds or a number with "
                "s, m, h or d (90, 90s, 15m, 2h, 1d)"
            )
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if not 1 <= seconds <= MAX_EVERY_S:
        raise ScheduleError(f"every: {seconds} s is out of range (1 s to {MAX_EVERY_S} s)")
    return seconds


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe", a name too long
        raise ScheduleError(
            f"timezone: {str(timezone)[:60]!r} is not a time zone (e.g. UTC, Europe/Moscow)"
        ) from None


def _check_cron(cron: str) -> str:
    text = " ".join(str(cron).split())
    # Five fields only: croniter's sixth (seconds) and seventh (year) fields are not cron's.
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise ScheduleError(
            f"cron: {text[:80]!r} is not a cron expression of five fields "
            "(minute hour day-of-month month day-of-week, e.g. '0 */6 * * *')"
        )
    return text


def _groups(groups: str | Sequence[int | str] | None) -> list[int | str] | None:
    if groups is None:
        return None
    items = groups if isinstance(groups, str) else [str(g) for g in groups]
    try:
        refs = parse_group_refs(items)
    except GroupRefError as exc:
        raise ScheduleError(f"groups: {exc}") from None
    if not refs:
        raise ScheduleError("groups: the list is empty (leave it out for the active groups)")
    return [r.group_id if r.group_id is not None else str(r.screen_name) for r in refs]


def parse_spec(
    *,
    name: str = "",
    groups: str | Sequence[int | str] | None = None,
    every: int | str | None = None,
    cron: str | None = None,
    timezone: str = "UTC",
    settings: dict[str, str] | None = None,
) -> ScheduleSpec:
    """Check a schedule as a user gives it; raise :class:`ScheduleError` naming the problem."""
    if (every is None) == (cron is None):
        raise ScheduleError("give exactly one of every (an interval) and cron (an expression)")
    name = str(name or "").strip()
    if len(name) > MAX_NAME:
        raise ScheduleError(f"name: longer than {MAX_NAME} characters")
    timezone = str(timezone or "UTC").strip()
    _zone(timezone)
    spec = ScheduleSpec(
        name=name,
        groups=_groups(groups),
        every_s=None if every is None else parse_every(every),
        cron=None if cron is None else _check_cron(cron),
        timezone=timezone,
        settings=dict(settings or {}),
    )
    if spec.cron is not None and spec.every_s is None:
        # A cron that never matches (31 February) would leave the schedule without a next run.
        next_due(None, spec.cron, spec.timezone, datetime.now(UTC))
    return spec


def describe_every(every_s: int) -> str:
    """``every 2 h``: the largest unit that divides the interval."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if every_s % size == 0:
            return f"every {every_s // size} {unit}"
    return f"every {every_s} s"


def following_due(
    every_s: int | None, cron: str | None, timezone: str, due_at: datetime, now: datetime
) -> datetime:
    """The due time after the run of ``due_at`` claimed at ``now``: the first one after now,
    so that missed ones are not made up. An interval keeps its cadence (``due_at`` plus whole
    intervals: an hourly schedule stays on its minute however late each claim is)."""
    if every_s is not None:
        late = max((now - due_at).total_seconds(), 0.0)
        return (due_at + timedelta(seconds=every_s * (int(late // every_s) + 1))).astimezone(UTC)
    return next_due(every_s, cron, timezone, max(now, due_at))


def next_due(every_s: int | None, cron: str | None, timezone: str, after: datetime) -> datetime:
    """The first due time after ``after`` (aware; UTC out): ``after + every_s``, or the
    cron's next match in ``timezone``."""
    if after.tzinfo is None:
        raise ValueError("next_due needs an aware datetime")
    if every_s is not None:
        return (after + timedelta(seconds=every_s)).astimezone(UTC)
    if cron is None:
        raise ScheduleError("a schedule needs every or cron")
    fixed_hour = not cron.split()[1].startswith("*")
    try:
        it = croniter(cron, after.astimezone(_zone(timezone)))
        candidate: datetime = it.get_next(datetime)
        # The repeated hour of a night the clock goes back: a fixed-hour cron ran in the first.
        while fixed_hour and candidate.fold == 1:
            candidate = it.get_next(datetime)
    except (ValueError, KeyError) as exc:  # croniter: CroniterBadDateError & co.
        raise ScheduleError(f"cron: {cron!r} has no next time: {exc}") from None
    return candidate.astimezone(UTC)
