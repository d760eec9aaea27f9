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


# ---------------------------------------------------------------- claiming

PAST = datetime(2020, 1, 1, tzinfo=UTC)


def jobs(states=None, stale_after=600.0):
    from vkscraper.store.schedules import JobStates

    return JobStates(states or {}, stale_after)


def test_claim_due_once_and_missed_runs_run_once(store):
    sid = store.add_schedule(parse_spec(groups="5,apiclub", every=60), first_run_at=PAST)
    later = store.add_schedule(parse_spec(groups="6", every=60))  # not due yet
    paused = store.add_schedule(parse_spec(groups="7", every=60), first_run_at=PAST)
    store.pause_schedule(paused)
    claimed = store.claim_due_schedules(jobs())
    assert [(c.schedule_id, c.due_at) for c in claimed] == [(sid, PAST)]
    task = store.get_task(claimed[0].task_id)
    assert task.status == "created" and task.groups == [5, "apiclub"]
    s = store.get_schedule(sid)
    assert s.last_task_id == task.id and s.skipped_in_a_row == 0
    # Years of missed minutes: one run, and the next due time is counted from now.
    assert datetime.now(UTC) < s.next_run_at <= datetime.now(UTC) + timedelta(seconds=61)
    assert store.claim_due_schedules(jobs()) == []
    [run] = store.schedule_runs(sid)
    assert (run.outcome, run.task_id, run.due_at) == ("claimed", task.id, PAST)
    assert store.set_run_outcome(run.id, "started", "job x") is True
    assert store.set_run_outcome(run.id, "failed", "late") is False
    assert store.schedule_runs(sid)[0].outcome == "started"
    assert store.schedule_runs(later) == [] and store.schedule_runs(paused) == []
    assert _scalar(store, "SELECT schedule_id FROM tasks WHERE id = %s", task.id) == sid


def _scalar(store, sql, *params):
    def one(cur):
        cur.execute(store._db.sql(sql), params)
        return cur.fetchone()[0]

    return store._run("t", one)


def _make_due(store, sid):
    store._run(
        "due",
        lambda cur: cur.execute(
            store._db.sql("UPDATE schedules SET next_run_at = %s WHERE id = %s"),
            (store._db.ts(datetime.now(UTC) - timedelta(seconds=1)), sid),
        ),
    )


def test_skipped_while_the_last_task_runs(store):
    sid = store.add_schedule(parse_spec(groups="5", every=60), first_run_at=PAST)
    [first] = store.claim_due_schedules(jobs())
    store.set_job(first.task_id, "job-1")
    _make_due(store, sid)
    # Its job is pending in the launcher: skipped, not doubled.
    assert store.claim_due_schedules(jobs({"job-1": "pending"})) == []
    s = store.get_schedule(sid)
    assert s.skipped_in_a_row == 1 and s.last_task_id == first.task_id
    assert store.schedule_runs(sid)[0].outcome == "skipped"
    assert store.schedule_runs(sid)[0].message == f"skipped, still running: task {first.task_id}"
    # A job the launcher does not know (another process's) counts while the task is fresh.
    store.start_task(first.task_id)
    _make_due(store, sid)
    assert store.claim_due_schedules(jobs()) == []
    assert store.get_schedule(sid).skipped_in_a_row == 2
    # ...and no longer once it has not moved for stale_after seconds.
    _make_due(store, sid)
    [second] = store.claim_due_schedules(jobs(stale_after=0.0))
    assert store.get_schedule(sid).skipped_in_a_row == 0
    # A finished job, or a finished task, does not hold the schedule back either.
    store.set_job(second.task_id, "job-2")
    _make_due(store, sid)
    assert len(store.claim_due_schedules(jobs({"job-2": "finished"}))) == 1
    outcomes = [r.outcome for r in store.schedule_runs(sid)]
    assert outcomes == ["claimed", "claimed", "skipped", "skipped", "claimed"]


def test_no_active_groups_is_a_failed_run(store):
    from vkscraper.vk.grouprefs import parse_group_refs

    sid = store.add_schedule(parse_spec(every=60), first_run_at=PAST)
    assert store.claim_due_schedules(jobs()) == []
    [run] = store.schedule_runs(sid)
    assert run.outcome == "failed" and "no active group" in run.message
    store.add_groups(parse_group_refs("5,apiclub"))
    _make_due(store, sid)
    [claimed] = store.claim_due_schedules(jobs())
    assert store.get_task(claimed.task_id).groups == [5, "apiclub"]


def test_a_run_left_claimed_is_launched_by_the_next_runner_once(store):
    sid = store.add_schedule(
        parse_spec(groups="5", every=60, settings={"VK_POSTS_PER_GROUP": "2"}),
        first_run_at=PAST,
    )
    [claimed] = store.claim_due_schedules(jobs())  # ... and the process died here
    assert store.reclaim_stale_runs(grace=60) == []  # within the grace period: left alone
    [again] = store.reclaim_stale_runs(grace=0)
    assert (again.run_id, again.task_id) == (claimed.run_id, claimed.task_id)
    assert again.settings == {"VK_POSTS_PER_GROUP": "2"}
    assert store.reclaim_stale_runs(grace=0.5) == []  # claimed afresh by the first
    # A task that started meanwhile was launched: recorded, not launched again.
    sid2 = store.add_schedule(parse_spec(groups="6", every=60), first_run_at=PAST)
    [other] = store.claim_due_schedules(jobs())
    store.start_task(other.task_id)
    assert [c.run_id for c in store.reclaim_stale_runs(grace=0)] == [again.run_id]
    assert store.schedule_runs(sid2)[0].outcome == "started"
    assert store.schedule_runs(sid)[0].outcome == "claimed"
