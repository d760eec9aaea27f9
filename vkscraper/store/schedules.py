"""Schedules and their run history (tables ``schedules`` and ``schedule_runs``).

What a schedule is and when it is due: :mod:`vkscraper.schedules.spec`. Claiming the due ones
(exactly once across processes): :func:`claim_due`, used by :mod:`vkscraper.schedules.runner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vkscraper.schedules.spec import ScheduleSpec, next_due
from vkscraper.store.backends import Backend

OUTCOMES = ("claimed", "started", "skipped", "failed")


@dataclass(frozen=True)
class Schedule:
    id: int
    name: str
    groups: list[int | str] | None  # None: the active groups of the groups table at each run
    every_s: int | None
    cron: str | None
    timezone: str
    settings: dict[str, str]
    paused: bool
    next_run_at: datetime
    last_task_id: int | None
    skipped_in_a_row: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ScheduleRun:
    id: int
    schedule_id: int
    due_at: datetime
    ran_at: datetime
    outcome: str  # one of OUTCOMES
    task_id: int | None
    message: str | None


_COLUMNS = (
    "id, name, groups, every_s, cron, timezone, settings, paused, next_run_at, last_task_id, "
    "skipped_in_a_row, created_at, updated_at"
)
_RUN_COLUMNS = "id, schedule_id, due_at, ran_at, outcome, task_id, message"


def _schedule_of_row(db: Backend, row: Sequence[Any]) -> Schedule:
    return Schedule(
        id=int(row[0]),
        name=row[1],
        groups=db.from_json(row[2]),
        every_s=row[3],
        cron=row[4],
        timezone=row[5],
        settings=db.from_json(row[6]) or {},
        paused=bool(row[7]),
        next_run_at=db.from_ts(row[8]),  # type: ignore[arg-type]
        last_task_id=row[9],
        skipped_in_a_row=int(row[10]),
        created_at=db.from_ts(row[11]),  # type: ignore[arg-type]
        updated_at=db.from_ts(row[12]),  # type: ignore[arg-type]
    )


def _run_of_row(db: Backend, row: Sequence[Any]) -> ScheduleRun:
    return ScheduleRun(
        id=int(row[0]),
        schedule_id=int(row[1]),
        due_at=db.from_ts(row[2]),  # type: ignore[arg-type]
        ran_at=db.from_ts(row[3]),  # type: ignore[arg-type]
        outcome=row[4],
        task_id=row[5],
        message=row[6],
    )


def _insert_returning_id(db: Backend, cur: Any, sql: str, params: Sequence[Any]) -> int:
    if db.name == "postgresql":
        cur.execute(sql + " RETURNING id", params)
        return int(cur.fetchone()[0])
    cur.execute(sql, params)
    return int(cur.lastrowid)


def add_schedule(
    db: Backend, cur: Any, spec: ScheduleSpec, first_run_at: datetime | None = None
) -> int:
    first = first_run_at or next_due(spec.every_s, spec.cron, spec.timezone, datetime.now(UTC))
    return _insert_returning_id(
        db,
        cur,
        db.sql(
            "INSERT INTO schedules (name, groups, every_s, cron, timezone, settings, "
            "next_run_at, created_at, updated_at) "
            "VALUES (%s, {json}, %s, %s, %s, {json}, %s, {now}, {now})"
        ),
        (
            spec.name,
            None if spec.groups is None else db.json(spec.groups),
            spec.every_s,
            spec.cron,
            spec.timezone,
            db.json(spec.settings),
            db.ts(first),
        ),
    )


def get_schedule(
    db: Backend, cur: Any, schedule_id: int, *, lock: bool = False
) -> Schedule | None:
    suffix = " FOR UPDATE" if lock and db.name == "postgresql" else ""
    cur.execute(db.sql(f"SELECT {_COLUMNS} FROM schedules WHERE id = %s{suffix}"), (schedule_id,))
    row = cur.fetchone()
    return None if row is None else _schedule_of_row(db, row)


def list_schedules(db: Backend, cur: Any) -> list[Schedule]:
    cur.execute(db.sql(f"SELECT {_COLUMNS} FROM schedules ORDER BY id"))
    return [_schedule_of_row(db, row) for row in cur.fetchall()]


def pause_schedule(db: Backend, cur: Any, schedule_id: int) -> Schedule | None:
    cur.execute(
        db.sql("UPDATE schedules SET paused = true, updated_at = {now} WHERE id = %s"),
        (schedule_id,),
    )
    return get_schedule(db, cur, schedule_id)


def resume_schedule(db: Backend, cur: Any, schedule_id: int) -> Schedule | None:
    """Unpause; the next run is the next due time from now (the paused ones are not made up)."""
    schedule = get_schedule(db, cur, schedule_id, lock=True)
    if schedule is None:
        return None
    due = next_due(schedule.every_s, schedule.cron, schedule.timezone, datetime.now(UTC))
    cur.execute(
        db.sql(
            "UPDATE schedules SET paused = false, next_run_at = %s, skipped_in_a_row = 0, "
            "updated_at = {now} WHERE id = %s"
        ),
        (db.ts(due), schedule_id),
    )
    return get_schedule(db, cur, schedule_id)


def remove_schedule(db: Backend, cur: Any, schedule_id: int) -> bool:
    """Delete the schedule and its history; its tasks stay (their schedule_id becomes NULL)."""
    cur.execute(db.sql("DELETE FROM schedules WHERE id = %s"), (schedule_id,))
    return bool(cur.rowcount)


def schedule_runs(db: Backend, cur: Any, schedule_id: int, limit: int = 20) -> list[ScheduleRun]:
    cur.execute(
        db.sql(
            f"SELECT {_RUN_COLUMNS} FROM schedule_runs WHERE schedule_id = %s "
            "ORDER BY due_at DESC, id DESC LIMIT %s"
        ),
        (schedule_id, limit),
    )
    return [_run_of_row(db, row) for row in cur.fetchall()]
