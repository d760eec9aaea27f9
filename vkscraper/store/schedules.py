"""Schedules and their run history (tables ``schedules`` and ``schedule_runs``).

What a schedule is and when it is due: :mod:`vkscraper.schedules.spec`. Claiming the due ones
(exactly once across processes): :func:`claim_due`, used by :mod:`vkscraper.schedules.runner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from vkscraper.schedules.spec import ScheduleSpec, following_due, next_due
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


# ---------------------------------------------------------------- claiming (the runner)
@dataclass(frozen=True)
class Claimed:
    """A run whose task was created and is to be launched: ``settings`` are the schedule's."""

    run_id: int
    schedule_id: int
    task_id: int
    due_at: datetime
    settings: dict[str, str]


@dataclass(frozen=True)
class JobStates:
    """What a launcher knows of the jobs: job id → ``pending``/``running``/``stopping``/
    ``finished``. A job it does not know was started by another process."""

    states: dict[str, str]
    stale_after: float  # seconds: an unknown job counts as running while its task is fresher

    def task_running(self, status: str, job_id: str | None, updated_at: datetime, now: datetime):
        """Whether a task is still queued or running (the rule is in docs/usage/schedules.md)."""
        if status not in ("created", "in_progress"):
            return False
        state = self.states.get(job_id or "")
        if state is not None:
            return state in ("pending", "running", "stopping")
        return (now - updated_at).total_seconds() < self.stale_after


def _db_now(db: Backend, cur: Any) -> datetime:
    cur.execute(db.sql("SELECT {now}"))
    return db.from_ts(cur.fetchone()[0])  # type: ignore[return-value]


def _insert_run(
    db: Backend,
    cur: Any,
    schedule_id: int,
    due_at: datetime,
    outcome: str,
    task_id: int | None,
    message: str | None,
) -> int | None:
    """The run of one due time; None when a run of that due time exists already."""
    sql = db.sql(
        "INSERT INTO schedule_runs (schedule_id, due_at, ran_at, outcome, task_id, message) "
        "VALUES (%s, %s, {now}, %s, %s, %s) ON CONFLICT (schedule_id, due_at) DO NOTHING"
    )
    params = (schedule_id, db.ts(due_at), outcome, task_id, message)
    if db.name == "postgresql":
        cur.execute(sql + " RETURNING id", params)
        row = cur.fetchone()
        return None if row is None else int(row[0])
    cur.execute(sql, params)
    return int(cur.lastrowid) if cur.rowcount else None


def _last_task_running(
    db: Backend, cur: Any, task_id: int, jobs: JobStates, now: datetime
) -> bool:
    cur.execute(
        db.sql(
            "SELECT t.status, t.job_id, t.updated_at, "
            "(SELECT r.outcome FROM schedule_runs r WHERE r.task_id = t.id "
            " ORDER BY r.id DESC LIMIT 1) "
            "FROM tasks t WHERE t.id = %s"
        ),
        (task_id,),
    )
    row = cur.fetchone()
    if row is None or row[3] == "failed":  # gone, or it was never queued
        return False
    return jobs.task_running(row[0], row[1], db.from_ts(row[2]), now)  # type: ignore[arg-type]


def claim_due(db: Backend, cur: Any, jobs: JobStates, limit: int = 100) -> list[Claimed]:
    """Take the due, unpaused schedules (locked: SKIP LOCKED on PostgreSQL, the write lock on
    SQLite), move each to its first due time after now — a schedule that missed several
    due times runs once — and record one run per due time: ``skipped`` while its previous task
    is queued or running, ``failed`` without groups to collect, else ``claimed`` with a new task
    (returned, to be launched after the commit)."""
    from vkscraper.store import groups as groups_table
    from vkscraper.store import tasks as tasks_table

    now = _db_now(db, cur)
    lock = " FOR UPDATE SKIP LOCKED" if db.name == "postgresql" else ""
    cur.execute(
        db.sql(
            f"SELECT {_COLUMNS} FROM schedules WHERE NOT paused AND next_run_at <= %s "
            f"ORDER BY next_run_at, id LIMIT %s{lock}"
        ),
        (db.ts(now), limit),
    )
    due = [_schedule_of_row(db, row) for row in cur.fetchall()]
    claimed: list[Claimed] = []
    for s in due:
        due_at = s.next_run_at
        following = following_due(s.every_s, s.cron, s.timezone, due_at, now)
        last, skipped = s.last_task_id, s.skipped_in_a_row
        if last is not None and _last_task_running(db, cur, last, jobs, now):
            _insert_run(
                db, cur, s.id, due_at, "skipped", None, f"skipped, still running: task {last}"
            )
            skipped += 1
        else:
            values: list[Any] = (
                list(s.groups)
                if s.groups is not None
                else [
                    r.group_id if r.group_id is not None else str(r.screen_name)
                    for r in groups_table.active_group_refs(db, cur)
                ]
            )
            if not values:
                _insert_run(
                    db, cur, s.id, due_at, "failed", None,
                    "no groups to collect: the groups table has no active group",
                )  # fmt: skip
            else:
                task_id = tasks_table.create_task(db, cur, values)
                cur.execute(
                    db.sql("UPDATE tasks SET schedule_id = %s WHERE id = %s"), (s.id, task_id)
                )
                run_id = _insert_run(db, cur, s.id, due_at, "claimed", task_id, None)
                if run_id is None:  # a run of this due time exists: never a second task
                    cur.execute(db.sql("DELETE FROM tasks WHERE id = %s"), (task_id,))
                else:
                    last, skipped = task_id, 0
                    claimed.append(Claimed(run_id, s.id, task_id, due_at, s.settings))
        cur.execute(
            db.sql(
                "UPDATE schedules SET next_run_at = %s, last_task_id = %s, "
                "skipped_in_a_row = %s, updated_at = {now} WHERE id = %s"
            ),
            (db.ts(following), last, skipped, s.id),
        )
    return claimed


def reclaim_stale(db: Backend, cur: Any, grace: float, limit: int = 100) -> list[Claimed]:
    """Runs left ``claimed`` for more than ``grace`` seconds (their process died between the
    claim and the launch) whose task never started: claimed again by this caller (ran_at moves
    to now, so no other runner takes them meanwhile) to be launched."""
    now = _db_now(db, cur)
    lock = " FOR UPDATE OF r SKIP LOCKED" if db.name == "postgresql" else ""
    cur.execute(
        db.sql(
            "SELECT r.id, r.schedule_id, r.task_id, r.due_at, s.settings, t.status, t.job_id "
            "FROM schedule_runs r JOIN schedules s ON s.id = r.schedule_id "
            "JOIN tasks t ON t.id = r.task_id "
            f"WHERE r.outcome = 'claimed' AND r.ran_at < %s ORDER BY r.id LIMIT %s{lock}"
        ),
        (db.ts(now - timedelta(seconds=grace)), limit),
    )
    out: list[Claimed] = []
    for run_id, schedule_id, task_id, due_at, settings, status, job_id in cur.fetchall():
        if status != "created" or job_id is not None:  # launched; the launcher died after
            set_run_outcome(db, cur, run_id, "started", "launched (recorded late)")
            continue
        cur.execute(db.sql("UPDATE schedule_runs SET ran_at = {now} WHERE id = %s"), (run_id,))
        out.append(
            Claimed(
                int(run_id), int(schedule_id), int(task_id), db.from_ts(due_at),  # type: ignore[arg-type]
                db.from_json(settings) or {},
            )
        )  # fmt: skip
    return out


def set_run_outcome(
    db: Backend, cur: Any, run_id: int, outcome: str, message: str | None = None
) -> bool:
    """A claimed run becomes ``started`` or ``failed``; False when it was not claimed."""
    cur.execute(
        db.sql(
            "UPDATE schedule_runs SET outcome = %s, message = %s, ran_at = {now} "
            "WHERE id = %s AND outcome = 'claimed'"
        ),
        (outcome, message, run_id),
    )
    return bool(cur.rowcount)
