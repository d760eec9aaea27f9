"""Schedules run by real processes against one PostgreSQL database: `vkscraper schedule run`
runners (local launches: `scrapy crawl vk` children; workers launches: the Redis feed of real
worker processes) and a scrapyd service, crawling the emulator. Each due run starts once, a
slow task is skipped rather than doubled, missed runs run once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from fakevk import FakeVk
from tests.helpers.crawl import TOKEN, small_dataset
from tests.helpers.scrapyd import Scrapyd
from tests.helpers.webhooks import Receiver
from vkscraper.cli.main import main
from vkscraper.schedules import parse_spec
from vkscraper.store import open_store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
GROUPS = "pinnedrecent"
FAST = ["-s", "VK_BACKOFF_BASE=0", "-s", "VK_REQUESTS_PER_SECOND=1000"]


@pytest.fixture(scope="module")
def vk():
    with FakeVk(small_dataset(), tokens=[TOKEN]) as server:
        yield server


@pytest.fixture(scope="module")
def slow_vk():
    with FakeVk(small_dataset(), tokens=[TOKEN], faults={"slow": 1.0}, slow_seconds=3) as server:
        yield server


def add(url, *args):
    assert main(["-q", "--database-url", url, "schedule", "add", *args]) == 0


def runner(url, tmp_path, name, *args, env=None):
    env = dict(
        os.environ, VK_ACCESS_TOKEN=TOKEN, DATABASE_URL=url, PYTHONUNBUFFERED="1", **(env or {})
    )
    with open(tmp_path / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "vkscraper", "-v", "schedule", "run", *args],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    proc.log_path = tmp_path / f"{name}.log"  # type: ignore[attr-defined]
    return proc


def stop(*procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_idle(store, sid, timeout=60.0):
    """Until no task of the schedule is created or in progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = tasks_of(store, sid)
        if all(t.status in ("completed", "failed") for t in tasks):
            return tasks
        time.sleep(0.3)
    raise AssertionError(f"tasks still running: {[(t.id, t.status) for t in tasks]}")


def tasks_of(store, sid):
    def ids(cur):
        cur.execute("SELECT id FROM tasks WHERE schedule_id = %s ORDER BY id", (sid,))
        return [r[0] for r in cur.fetchall()]

    return [store.get_task(i) for i in store._run("ids", ids, write=False)]


def test_two_runners_start_each_due_run_once(pg_url, vk, tmp_path):
    add(pg_url, "--groups", GROUPS, "--every", "2", "-s", f"VK_API_URL={vk.url}", *FAST)
    # Different ticks, so that neither runner is always the first to see a due time.
    a = runner(pg_url, tmp_path, "a", "--tick", "0.3")
    b = runner(pg_url, tmp_path, "b", "--tick", "0.7")
    try:
        time.sleep(60)
        assert main(["-q", "--database-url", pg_url, "schedule", "pause", "1"]) == 0
        with open_store(pg_url) as store:
            tasks = wait_idle(store, 1)  # the last crawl ends; no new one starts
            runs = store.schedule_runs(1, limit=1000)
    finally:
        stop(a, b)
    logs = a.log_path.read_text() + b.log_path.read_text()  # type: ignore[attr-defined]
    started = [r for r in runs if r.outcome == "started"]
    assert len(started) >= 5, (runs, logs[-3000:])
    assert not [r for r in runs if r.outcome in ("claimed", "failed")], runs
    # One run per due time (the database's key), due times at least the interval apart.
    dues = sorted(r.due_at for r in runs)
    assert all(later - earlier >= timedelta(seconds=2) for earlier, later in pairwise(dues))
    # Each started run has its own task, and no task exists without a run: nothing doubled.
    assert sorted(r.task_id for r in started) == [t.id for t in tasks]
    for t in tasks:  # each crawled once, completely
        assert t.status == "completed" and t.metrics["run"] == 1 and "history" not in t.metrics
        assert t.metrics["posts"] > 0
    # Both runners launched some.
    pids = {r.message.split(":")[1] for r in started}
    assert pids == {str(a.pid), str(b.pid)}, (pids, a.pid, b.pid)
    # Runs are skipped only while a task runs (the local launcher runs a crawl at a time).
    for r in runs:
        if r.outcome == "skipped":
            assert r.message.startswith("skipped, still running: task ")
    assert "Traceback" not in logs and TOKEN not in logs


def test_a_slow_task_is_skipped_not_doubled(pg_url, slow_vk, tmp_path):
    add(pg_url, "--groups", GROUPS, "--every", "2", "-s", f"VK_API_URL={slow_vk.url}", *FAST)
    a = runner(pg_url, tmp_path, "a", "--tick", "0.3")
    b = runner(pg_url, tmp_path, "b", "--tick", "0.5")
    try:
        with open_store(pg_url) as store:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = store.schedule_runs(1, limit=1000)
                if sum(r.outcome == "started" for r in runs) >= 2:
                    break
                time.sleep(0.3)
    finally:
        stop(a, b)
    with open_store(pg_url) as store:
        runs = store.schedule_runs(1, limit=1000)
        tasks = tasks_of(store, 1)
    skipped = [r for r in runs if r.outcome == "skipped"]
    assert len(skipped) >= 2, runs
    first = min(t.id for t in tasks)
    assert f"skipped, still running: task {first}" in {r.message for r in skipped}
    # Never two of its tasks at once: each started after the one before had finished.
    done = [t for t in tasks if t.finished_at is not None]
    for earlier, later in pairwise(done):
        assert later.started_at >= earlier.finished_at
    assert main(["-q", "--database-url", pg_url, "schedule", "show", "1"]) == 0


def test_the_runner_sends_the_alerts(pg_url, tmp_path):
    """A long-running runner dispatches the outbox itself: here no crawl ever ends (the last
    task stays in progress), so only the runner can send the skipped-twice alert."""
    with open_store(pg_url) as store:
        store.migrate()
        sid = store.add_schedule(
            parse_spec(groups="1", every=1), first_run_at=datetime.now(UTC) - timedelta(seconds=1)
        )
        busy = store.create_task([1])
        store.start_task(busy)
        store._run(
            "last", lambda cur: cur.execute(
                "UPDATE schedules SET last_task_id = %s WHERE id = %s", (busy, sid)
            ),
        )  # fmt: skip
    alerts = {
        "VK_ALERT_WEBHOOKS": "", "VK_ALERT_SKIPPED_AFTER": "2", "VK_ALERT_INTERVAL": "0.3",
    }  # fmt: skip
    with Receiver() as receiver:
        alerts["VK_ALERT_WEBHOOKS"] = f"{receiver.url}/hook"
        proc = runner(pg_url, tmp_path, "a", "--tick", "0.3", env=alerts)
        try:
            [alert] = receiver.wait_for("/hook", timeout=30)[:1]
        finally:
            stop(proc)
    assert alert["event"] == "schedule_skipped", alert
    assert alert["schedule"]["schedule_id"] == sid and alert["schedule"]["skipped_in_a_row"] >= 2
    assert TOKEN not in proc.log_path.read_text()  # type: ignore[attr-defined]


def test_missed_runs_run_once(pg_url, vk, capsys):
    with open_store(pg_url) as store:
        store.migrate()
        spec = parse_spec(groups=GROUPS, every=2, settings={"VK_API_URL": vk.url})
        sid = store.add_schedule(spec, first_run_at=datetime.now(UTC) - timedelta(days=3))
    env = dict(os.environ, VK_ACCESS_TOKEN=TOKEN, DATABASE_URL=pg_url)
    once = [sys.executable, "-m", "vkscraper", "schedule", "run", "--once"]
    result = subprocess.run(once, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "claimed 1, started 1, failed 0" in result.stdout
    with open_store(pg_url) as store:
        [run] = store.schedule_runs(sid)
        [task] = tasks_of(store, sid)
        assert run.outcome == "started" and task.status == "completed"  # --once waited
        assert store.get_schedule(sid).next_run_at > datetime.now(UTC) - timedelta(seconds=5)


def test_the_service_runs_schedules(pg_url, vk, tmp_path):
    with open_store(pg_url) as store:
        store.migrate()
        spec = parse_spec(
            groups=GROUPS, every=2, settings={"VK_API_URL": vk.url, "VK_BACKOFF_BASE": "0"}
        )
        sid = store.add_schedule(spec, first_run_at=datetime.now(UTC))
    with (
        Scrapyd(
            tmp_path / "scrapyd", database_url=pg_url, token=TOKEN, env={"VK_SCHEDULE_TICK": "0.3"}
        ) as service,
        open_store(pg_url) as store,
    ):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tasks = tasks_of(store, sid)
            if sum(t.status == "completed" for t in tasks) >= 2:
                break
            time.sleep(0.3)
        else:
            raise AssertionError(service.output()[-3000:])
        runs = store.schedule_runs(sid, limit=100)
        started = [r for r in runs if r.outcome == "started"]
        assert len(started) >= 2 and all(r.message.startswith("job ") for r in started)
        assert TOKEN not in service.output()


def test_two_runners_feed_the_workers_each_due_run_once(pg_url, vk, tmp_path, workers):
    """`schedule run --launch workers` ×2 on one PostgreSQL and Redis: the workers crawl each
    due run's task once; a run whose task is still in the feed or crawled is skipped."""
    from tests.helpers.workers import REDIS_URL

    add(pg_url, "--groups", GROUPS, "--every", "2")  # workers apply their own settings
    w = workers([TOKEN], vk.url)
    w.start(1, "-s", f"VK_API_URL={vk.url}", *FAST)
    w.wait_started()
    env = {"REDIS_URL": REDIS_URL}
    a = runner(pg_url, tmp_path, "a", "--launch", "workers", "--tick", "0.3", env=env)
    b = runner(pg_url, tmp_path, "b", "--launch", "workers", "--tick", "0.7", env=env)
    try:
        with open_store(pg_url) as store:
            w.wait_until(lambda: sum(t.status == "completed" for t in tasks_of(store, 1)) >= 3, 60)
            assert main(["-q", "--database-url", pg_url, "schedule", "pause", "1"]) == 0
            tasks = wait_idle(store, 1)
            runs = store.schedule_runs(1, limit=1000)
    finally:
        stop(a, b)
    started = [r for r in runs if r.outcome == "started"]
    assert not [r for r in runs if r.outcome in ("claimed", "failed")], runs
    assert sorted(r.task_id for r in started) == [t.id for t in tasks]
    for r in started:
        assert r.message == f"job workers:{r.task_id}"
    for t in tasks:  # each crawled once, completely, by the workers
        assert t.status == "completed" and t.metrics["run"] == 1, t.metrics
        assert t.job_id == f"workers:{t.id}" and t.metrics["posts"] > 0
    logs = a.log_path.read_text() + b.log_path.read_text()  # type: ignore[attr-defined]
    assert "Traceback" not in logs and TOKEN not in logs + w.logs()


def test_two_services_start_each_due_run_once(pg_url, vk, tmp_path):
    """Two scrapyd services on one PostgreSQL database, each with its schedules loop: a due
    run is one task, queued by one of them, crawled once."""
    with open_store(pg_url) as store:
        store.migrate()
        spec = parse_spec(groups=GROUPS, every=2, settings={"VK_API_URL": vk.url,
                                                            "VK_BACKOFF_BASE": "0"})  # fmt: skip
        sid = store.add_schedule(spec, first_run_at=datetime.now(UTC))
    # Different ticks, so that neither service is always the first to see a due time.
    with (
        Scrapyd(
            tmp_path / "a", database_url=pg_url, token=TOKEN, env={"VK_SCHEDULE_TICK": "0.3"}
        ) as a,
        Scrapyd(
            tmp_path / "b", database_url=pg_url, token=TOKEN, env={"VK_SCHEDULE_TICK": "0.7"}
        ) as b,
        open_store(pg_url) as store,
    ):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
        store.pause_schedule(sid)
        tasks = wait_idle(store, sid)
        runs = store.schedule_runs(sid, limit=1000)
        output = a.output() + b.output()
    started = [r for r in runs if r.outcome == "started"]
    assert len(started) >= 3, (runs, output[-3000:])
    assert not [r for r in runs if r.outcome in ("claimed", "failed")], runs
    # One run per due time, due times at least the interval apart: nothing doubled.
    dues = sorted(r.due_at for r in runs)
    assert all(later - earlier >= timedelta(seconds=2) for earlier, later in pairwise(dues))
    assert sorted(r.task_id for r in started) == [t.id for t in tasks]
    for t in tasks:
        assert t.status == "completed" and t.metrics["run"] == 1, t.metrics
    # Each job was queued by one service (its id is in that service's log only), and both
    # services queued some.
    queued_by = {t.job_id: (t.job_id in a.output(), t.job_id in b.output()) for t in tasks}
    assert all(sum(where) == 1 for where in queued_by.values()), queued_by
    assert {where.index(True) for where in queued_by.values()} == {0, 1}, queued_by
    assert TOKEN not in output
