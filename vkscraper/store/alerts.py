"""The alerts outbox: ``alert_events`` (what happened, a token-free snapshot) and
``alert_deliveries`` (one row per event and webhook: attempts, the next one, the outcome).

A task's event is written by :func:`record_task_end` inside the transaction that ends the task,
keyed ``task:N:run:R`` so that one end of one run is one event whichever process ends it; a
run that stops for want of a usable token (left resumable) writes ``task:N:run:R:stopped``
(:func:`record_task_stopped`). A
schedule's event is written by a dispatcher (:func:`record_skip_events`) when the schedule has
been skipped N times in a row, keyed by the first skipped due time of the streak.

Deliveries are claimed one at a time (:func:`claim_delivery`): the claim counts the attempt and
holds the row for a lease (``claimed_until``), in a transaction of its own; on PostgreSQL the
candidate row is picked with ``FOR UPDATE SKIP LOCKED``, so two dispatchers never hold one
delivery at once; SQLite's ``BEGIN IMMEDIATE`` serialises the claims.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from vkscraper.store.backends import Backend
from vkscraper.tokens.access import load_tokens, scrub

if TYPE_CHECKING:
    from vkscraper.store.tasks import Task

SNAPSHOT_GROUPS = 100  # groups listed in an event (the total is always there)
SNAPSHOT_ERRORS = 20  # errors listed in an event (the total is always there)


@dataclass
class Delivery:
    id: int
    event_id: int
    webhook: str
    attempts: int
    kind: str
    payload: dict[str, Any]
    created_at: datetime


def scrub_value(value: Any, tokens: Sequence[str]) -> Any:
    """Every string in ``value`` (nested dicts and lists) with the tokens replaced."""
    if not tokens:
        return value
    if isinstance(value, str):
        return scrub(value, tokens)
    if isinstance(value, dict):
        return {scrub_value(k, tokens): scrub_value(v, tokens) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(v, tokens) for v in value]
    return value


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


def task_snapshot(task: Task) -> dict[str, Any]:
    """What an alert says about a task that ended: read from the task row only."""
    m = task.metrics
    errors = list(m.get("errors") or [])
    return {
        "task_id": task.id,
        "run": m.get("run", 1),
        "status": task.status,
        "groups": task.groups[:SNAPSHOT_GROUPS],
        "groups_total": m.get("groups_total", len(task.groups)),
        "groups_done": m.get("groups_done", 0),
        "posts": m.get("posts", 0),
        "comments": m.get("comments", 0),
        "posts_expected": m.get("posts_expected", 0),
        "comments_expected": m.get("comments_expected", 0),
        "errors": errors[:SNAPSHOT_ERRORS],
        "errors_total": len(errors),
        "started_at": _iso(task.started_at),
        "finished_at": _iso(task.finished_at),
    }


def _insert_event(
    db: Backend,
    cur: Any,
    key: str,
    kind: str,
    payload: dict[str, Any],
    task_id: int | None = None,
    schedule_id: int | None = None,
) -> bool:
    cur.execute(
        db.sql(
            "INSERT INTO alert_events (key, kind, task_id, schedule_id, payload, created_at) "
            "VALUES (%s, %s, %s, %s, {json}, {now}) ON CONFLICT (key) DO NOTHING"
        ),
        (key, kind, task_id, schedule_id, db.json(scrub_value(payload, load_tokens()))),
    )
    return bool(cur.rowcount)


def record_task_end(db: Backend, cur: Any, task_id: int) -> None:
    """The event of a task that just ended (``completed`` or ``failed``), written whatever the
    alert settings; a second end of the same run adds nothing."""
    from vkscraper.store.tasks import get_task  # tasks calls this module

    task = get_task(db, cur, task_id)
    if task is None or task.status not in ("completed", "failed"):
        return
    snapshot = task_snapshot(task)
    cur.execute(db.sql("SELECT schedule_id FROM tasks WHERE id = %s"), (task_id,))
    snapshot["schedule_id"] = cur.fetchone()[0]
    key = f"task:{task_id}:run:{snapshot['run']}"
    _insert_event(db, cur, key, task.status, snapshot, task_id=task_id)


def record_task_stopped(db: Backend, cur: Any, task_id: int, reason: str) -> None:
    """The event of a run that stopped before finishing for a reason only the operator can
    fix (no usable access token): the task stays resumable, so no end is ever recorded."""
    from vkscraper.store.tasks import get_task

    task = get_task(db, cur, task_id)
    if task is None or task.status != "in_progress":
        return
    snapshot = task_snapshot(task)
    snapshot["reason"] = reason
    cur.execute(db.sql("SELECT schedule_id FROM tasks WHERE id = %s"), (task_id,))
    snapshot["schedule_id"] = cur.fetchone()[0]
    _insert_event(db, cur, f"task:{task_id}:run:{snapshot['run']}:stopped", "stopped", snapshot,
                  task_id=task_id)  # fmt: skip


# Per schedule skipped at least :n times in a row (its counter, kept by the schedule runner):
# the first due time of the current streak, the streak's length and the last task. The streak
# is the newest `skipped_in_a_row` skipped runs: the counter is what a start or a resume resets
# (a failed run in between does not), so a new streak after a resume gets a key of its own.
_SKIP_STREAKS = """
    SELECT s.id, s.name, s.last_task_id, s.skipped_in_a_row,
        (SELECT min(k.due_at) FROM (
            SELECT r.due_at, row_number() OVER (ORDER BY r.id DESC) AS n
            FROM schedule_runs r WHERE r.schedule_id = s.id AND r.outcome = 'skipped') k
         WHERE k.n <= s.skipped_in_a_row),
        (SELECT max(r.due_at) FROM schedule_runs r WHERE r.schedule_id = s.id)
    FROM schedules s
    WHERE s.skipped_in_a_row >= %s"""


def record_skip_events(db: Backend, cur: Any, skipped_after: int) -> int:
    """An event for each schedule skipped ``skipped_after`` times in a row or more, once per
    streak; returns how many were new."""
    cur.execute(db.sql(_SKIP_STREAKS), (skipped_after,))
    new = 0
    for sid, name, last_task, in_a_row, first_due, last_due in cur.fetchall():
        if first_due is None:  # the counter without its runs: nothing to key the streak by
            continue
        first = db.from_ts(first_due)
        payload = {
            "schedule_id": sid,
            "name": name,
            "skipped_in_a_row": in_a_row,
            "first_skipped_due_at": _iso(first),
            "last_due_at": _iso(db.from_ts(last_due)),
            "task_id": last_task,
        }
        key = f"schedule:{sid}:skipped:{_iso(first)}"
        new += _insert_event(db, cur, key, "skipped", payload, schedule_id=sid)
    return new


def plan_deliveries(
    db: Backend, cur: Any, webhooks: Iterable[str], kinds: Iterable[str], since: datetime
) -> int:
    """A delivery row for each webhook tag and each event of ``kinds`` created since
    ``since`` that has none for it yet; returns how many were added."""
    kinds = sorted(kinds)
    if not kinds:
        return 0
    marks = ", ".join(["%s"] * len(kinds))
    sql = db.sql(
        "INSERT INTO alert_deliveries (event_id, webhook, next_attempt_at) "
        "SELECT e.id, %s, {now} FROM alert_events e "
        f"WHERE e.kind IN ({marks}) AND e.created_at >= %s "
        "ON CONFLICT (event_id, webhook) DO NOTHING"
    )
    added = 0
    for tag in webhooks:
        cur.execute(sql, (tag, *kinds, db.ts(since)))
        added += max(cur.rowcount, 0)
    return added


def claim_delivery(
    db: Backend, cur: Any, webhooks: Sequence[str], now: datetime, lease_until: datetime
) -> Delivery | None:
    """The oldest due delivery to one of ``webhooks`` that nobody holds, held until
    ``lease_until`` with its attempt counted; None when there is none."""
    if not webhooks:
        return None
    marks = ", ".join(["%s"] * len(webhooks))
    lock = " FOR UPDATE SKIP LOCKED" if db.name == "postgresql" else ""
    cur.execute(
        db.sql(
            "SELECT id FROM alert_deliveries "
            f"WHERE delivered_at IS NULL AND next_attempt_at <= %s AND webhook IN ({marks}) "
            "AND (claimed_until IS NULL OR claimed_until < %s) "
            f"ORDER BY next_attempt_at, id LIMIT 1{lock}"
        ),
        (db.ts(now), *webhooks, db.ts(now)),
    )
    row = cur.fetchone()
    if row is None:
        return None
    cur.execute(
        db.sql(
            "UPDATE alert_deliveries SET attempts = attempts + 1, claimed_until = %s WHERE id = %s"
        ),
        (db.ts(lease_until), row[0]),
    )
    cur.execute(
        db.sql(
            "SELECT d.id, d.event_id, d.webhook, d.attempts, e.kind, e.payload, e.created_at "
            "FROM alert_deliveries d JOIN alert_events e ON e.id = d.event_id WHERE d.id = %s"
        ),
        (row[0],),
    )
    r = cur.fetchone()
    return Delivery(
        id=r[0],
        event_id=r[1],
        webhook=r[2],
        attempts=r[3],
        kind=r[4],
        payload=db.from_json(r[5]),
        created_at=db.from_ts(r[6]),  # type: ignore[arg-type]
    )


def settle_delivery(
    db: Backend, cur: Any, delivery_id: int, error: str | None, next_attempt_at: datetime | None
) -> None:
    """The outcome of an attempt: delivered (``error`` None), or the error (an HTTP status or
    an error class) and when to try again (None: given up)."""
    if error is None:
        cur.execute(
            db.sql(
                "UPDATE alert_deliveries SET delivered_at = {now}, claimed_until = NULL, "
                "next_attempt_at = NULL, last_error = NULL WHERE id = %s"
            ),
            (delivery_id,),
        )
    else:
        cur.execute(
            db.sql(
                "UPDATE alert_deliveries SET claimed_until = NULL, last_error = %s, "
                "next_attempt_at = %s WHERE id = %s"
            ),
            (error, db.ts(next_attempt_at), delivery_id),
        )


def list_events(db: Backend, cur: Any, limit: int) -> list[dict[str, Any]]:
    """The newest events first, each with its deliveries."""
    cur.execute(
        db.sql(
            "SELECT id, kind, task_id, schedule_id, created_at FROM alert_events "
            "ORDER BY id DESC LIMIT %s"
        ),
        (limit,),
    )
    events = [
        {
            "id": r[0],
            "kind": r[1],
            "task_id": r[2],
            "schedule_id": r[3],
            "created_at": db.from_ts(r[4]),
            "deliveries": [],
        }
        for r in cur.fetchall()
    ]
    if not events:
        return events
    by_id = {e["id"]: e for e in events}
    marks = ", ".join(["%s"] * len(by_id))
    cur.execute(
        db.sql(
            "SELECT event_id, webhook, attempts, next_attempt_at, delivered_at, last_error "
            f"FROM alert_deliveries WHERE event_id IN ({marks}) ORDER BY id"
        ),
        tuple(by_id),
    )
    for r in cur.fetchall():
        by_id[r[0]]["deliveries"].append(
            {
                "webhook": r[1],
                "attempts": r[2],
                "next_attempt_at": db.from_ts(r[3]),
                "delivered_at": db.from_ts(r[4]),
                "last_error": r[5],
            }
        )
    return events
