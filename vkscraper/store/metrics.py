"""What Prometheus reads from the database: the crawls' counters and the state of the tasks and
schedules (for the service's ``/metrics``, :mod:`vkscraper.service.metrics`).

Counters arrive as deltas, one upsert per series (``value = value + delta``), so any number of
processes add to one total without reading it first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vkscraper.store.backends import Backend

_ADD = """
    INSERT INTO metric_counters (name, labels, value) VALUES (%s, %s, %s)
    ON CONFLICT (name, labels) DO UPDATE SET value = metric_counters.value + excluded.value
"""

# Per schedule: its interval, its last run's due and start times, and when its newest task
# that stored comments ended.
_SCHEDULES = """
    SELECT s.id, s.every_s, s.cron, s.timezone,
           (SELECT r.due_at FROM schedule_runs r WHERE r.schedule_id = s.id
             ORDER BY r.due_at DESC LIMIT 1),
           (SELECT r.ran_at FROM schedule_runs r WHERE r.schedule_id = s.id
             ORDER BY r.due_at DESC LIMIT 1),
           (SELECT max(t.finished_at) FROM tasks t WHERE t.schedule_id = s.id
               AND COALESCE({comments}, 0) > 0),
           s.paused, s.created_at
    FROM schedules s ORDER BY s.id
"""
# A task's stored comments (tasks.metrics), in each backend's JSON.
_COMMENTS = {
    "postgresql": "(t.metrics->>'comments')::bigint",
    "sqlite": "json_extract(t.metrics, '$.comments')",
}


@dataclass(frozen=True)
class ScheduleState:
    id: int
    every_s: int | None
    cron: str | None
    timezone: str
    last_due_at: datetime | None
    last_ran_at: datetime | None
    last_comments_at: datetime | None  # end of its newest task that stored a comment
    paused: bool = False
    created_at: datetime | None = None


@dataclass
class Snapshot:
    counters: list[tuple[str, str, float]] = field(default_factory=list)  # name, labels, value
    tasks: dict[str, int] = field(default_factory=dict)  # status → count
    schedules: list[ScheduleState] = field(default_factory=list)


def add_counters(db: Backend, cur: Any, deltas: Mapping[tuple[str, str], float]) -> None:
    sql = db.sql(_ADD)
    for (name, labels), delta in sorted(deltas.items()):
        if delta > 0:
            cur.execute(sql, (name, labels, float(delta)))


def snapshot(db: Backend, cur: Any) -> Snapshot:
    out = Snapshot()
    cur.execute("SELECT name, labels, value FROM metric_counters ORDER BY name, labels")
    out.counters = [(str(n), str(labels), float(v)) for n, labels, v in cur.fetchall()]
    cur.execute("SELECT status, count(*) FROM tasks GROUP BY status")
    out.tasks = {str(status): int(n) for status, n in cur.fetchall()}
    cur.execute(_SCHEDULES.format(comments=_COMMENTS[db.name]))
    out.schedules = [
        ScheduleState(
            id=int(row[0]),
            every_s=row[1],
            cron=row[2],
            timezone=row[3] or "UTC",
            last_due_at=db.from_ts(row[4]),
            last_ran_at=db.from_ts(row[5]),
            last_comments_at=db.from_ts(row[6]),
            paused=bool(row[7]),
            created_at=db.from_ts(row[8]),
        )
        for row in cur.fetchall()
    ]
    return out
