"""Schedules in the store (both backends): add, list, pause/resume, remove, run history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vkscraper.exceptions import StoreError
from vkscraper.schedules import parse_spec
from vkscraper.store import Schedule


def test_add_get_list(store):
    before = datetime.now(UTC)
    sid = store.add_schedule(
        parse_spec(
            name="hourly", groups="apiclub,5", every="1h", settings={"VK_POSTS_PER_GROUP": "3"}
        )
    )
    first = datetime(2030, 1, 1, 3, tzinfo=UTC)
    cid = store.add_schedule(
        parse_spec(cron="0 3 * * *", timezone="Europe/Moscow"), first_run_at=first
    )
    s = store.get_schedule(sid)
    assert isinstance(s, Schedule)
    assert (s.name, s.groups, s.every_s, s.cron, s.timezone) == (
        "hourly",
        ["apiclub", 5],
        3600,
        None,
        "UTC",
    )
    assert s.settings == {"VK_POSTS_PER_GROUP": "3"}
    assert not s.paused and s.last_task_id is None and s.skipped_in_a_row == 0
    assert before + timedelta(hours=1) - timedelta(seconds=1) <= s.next_run_at
    assert s.next_run_at <= datetime.now(UTC) + timedelta(hours=1)
    assert s.next_run_at.tzinfo is not None and s.created_at.tzinfo is not None
    c = store.get_schedule(cid)
    assert c.groups is None and c.cron == "0 3 * * *" and c.every_s is None
    assert c.next_run_at == first
    assert [x.id for x in store.list_schedules()] == [sid, cid]
    assert store.get_schedule(cid + 100) is None


def test_pause_resume_remove(store):
    sid = store.add_schedule(parse_spec(every=60), first_run_at=datetime(2020, 1, 1, tzinfo=UTC))
    paused = store.pause_schedule(sid)
    assert paused.paused and paused.updated_at >= paused.created_at
    resumed = store.resume_schedule(sid)
    assert not resumed.paused and resumed.skipped_in_a_row == 0
    # The runs missed while paused are not made up: the next one is a minute from now.
    assert resumed.next_run_at > datetime.now(UTC) + timedelta(seconds=50)
    assert store.pause_schedule(sid + 1) is None and store.resume_schedule(sid + 1) is None
    assert store.remove_schedule(sid) is True
    assert store.remove_schedule(sid) is False
    assert store.get_schedule(sid) is None


def test_runs_newest_first_and_removed_with_their_schedule(store):
    sid = store.add_schedule(parse_spec(every=60))
    task_id = store.create_task([5])

    def insert(cur, due, outcome, tid=None):
        cur.execute(
            store._db.sql(
                "INSERT INTO schedule_runs (schedule_id, due_at, outcome, task_id, message) "
                "VALUES (%s, %s, %s, %s, %s)"
            ),
            (sid, store._db.ts(due), outcome, tid, f"{outcome} run"),
        )

    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    store._run("t", lambda cur: insert(cur, t0, "started", task_id))
    store._run("t", lambda cur: insert(cur, t0 + timedelta(minutes=1), "skipped"))
    runs = store.schedule_runs(sid)
    assert [(r.outcome, r.task_id, r.due_at) for r in runs] == [
        ("skipped", None, t0 + timedelta(minutes=1)),
        ("started", task_id, t0),
    ]
    assert runs[0].message == "skipped run" and runs[0].ran_at.tzinfo is not None
    assert len(store.schedule_runs(sid, limit=1)) == 1
    with pytest.raises(StoreError):  # one run per due time, whoever claims it
        store._run("t", lambda cur: insert(cur, t0, "started"))
    store.remove_schedule(sid)
    assert store.schedule_runs(sid) == []
    assert store.get_task(task_id) is not None
