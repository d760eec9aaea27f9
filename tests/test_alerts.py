"""Webhook alerts against a real local receiver: the failure alert of a task that really fails
(a crawl against the emulator), in our shape and Slack's; a retry after a 500; nothing for a
completed task unless asked; one delivery with two dispatcher processes on one PostgreSQL; the
alert of a schedule skipped N times in a row; the token in none of it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from fakevk import FakeVk
from tests.helpers.crawl import TOKEN, last_task, run_crawl, small_dataset
from tests.helpers.webhooks import Receiver
from vkscraper.alerts.config import alert_config
from vkscraper.alerts.dispatch import Dispatcher
from vkscraper.extensions.alerts import VkAlertsExtension
from vkscraper.store import open_store

pytestmark = pytest.mark.integration

FAST_RETRY = {"VK_ALERT_RETRY_DELAYS": "0.2", "VK_ALERT_TIMEOUT": "5"}


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)
    for name in ("VK_ALERT_WEBHOOKS", "VK_ALERT_SLACK_WEBHOOKS", "VK_ALERT_ON", "VK_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)


def config(receiver: Receiver, **settings: str):
    env = {"VK_ALERT_WEBHOOKS": f"{receiver.url}/generic", **FAST_RETRY, **settings}
    return alert_config(None, env)


def ended_task(url: str, errors=(), groups=(10, 11)) -> int:
    """A task that ran and ended (failed with ``errors``, else completed)."""
    with open_store(url) as store:
        store.migrate()
        task_id = store.create_task(list(groups))
        store.begin_run(task_id)
        for message in errors:
            store.add_error(task_id, message)
        store.finish_task(task_id)
    return task_id


def deliveries(url: str) -> list[dict]:
    with open_store(url) as store:
        return [d for e in store.list_alert_events(100) for d in e["deliveries"]]


def failing_dataset():
    data = small_dataset()
    data["groups"][1]["wall"] = 0  # "threeposts": its wall is closed, the group fails
    return data


@deferred_f_from_coro_f
async def test_a_crawl_that_fails_sends_its_alert_in_both_shapes(store_url):
    with Receiver() as receiver, FakeVk(failing_dataset(), tokens=[TOKEN]) as vk:
        crawler = await run_crawl(
            vk.url,
            store_url,
            groups="pinnedrecent,threeposts",
            settings={
                "VK_ALERT_WEBHOOKS": f"{receiver.url}/generic",
                "VK_ALERT_SLACK_WEBHOOKS": f"{receiver.url}/slack",
                "VK_PUBLIC_URL": "https://vk.example.org/",
            },
        )
        extension = crawler.extensions.middlewares
        alerts = next(e for e in extension if isinstance(e, VkAlertsExtension))
        assert alerts.thread is not None
        alerts.thread.join(10)  # the crawl's own pass, bounded by VK_ALERT_TIMEOUT
        task = last_task(store_url)
        assert task.status == "failed"
        [generic] = receiver.wait_for("/generic")
        [slack] = receiver.wait_for("/slack")
    assert generic["event"] == "task_failed" and generic["source"] == "vkscraper"
    sent = generic["task"]
    assert sent["task_id"] == task.id and sent["status"] == "failed"
    assert sent["groups"] == task.groups == [10, 11]
    assert sent["groups_done"] == 2 and sent["posts"] == task.metrics["posts"] > 0
    assert sent["errors"] == task.metrics["errors"] and sent["errors_total"] >= 1
    assert sent["url"] == f"https://vk.example.org/tasks/{task.id}"
    assert f"task {task.id} failed" in slack["text"]
    assert slack["blocks"][0]["type"] == "section"
    assert any(b["type"] == "context" and f"/tasks/{task.id}|" in json.dumps(b)
               for b in slack["blocks"])  # fmt: skip
    assert [d["attempts"] for d in deliveries(store_url)] == [1, 1]
    assert all(d["delivered_at"] is not None for d in deliveries(store_url))


def test_a_500_is_retried_and_the_retry_succeeds(store_url):
    task_id = ended_task(store_url, ["VK error 212: access to the comments is denied"])
    with Receiver() as receiver:
        receiver.statuses["/generic"] = [500]
        dispatcher = Dispatcher(config(receiver), store_url)
        try:
            first = dispatcher.run_pass()
            assert (first.delivered, first.failed) == (0, 1)
            [pending] = deliveries(store_url)
            assert pending["last_error"] == "HTTP 500" and pending["delivered_at"] is None
            assert pending["next_attempt_at"] is not None
            deadline = time.monotonic() + 10
            while not dispatcher.run_pass().delivered:  # due again after 0.2 s
                assert time.monotonic() < deadline, deliveries(store_url)
                time.sleep(0.05)
        finally:
            dispatcher.close()
        bodies = receiver.bodies("/generic")
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert bodies[0]["task"]["task_id"] == task_id
    [done] = deliveries(store_url)
    assert done["attempts"] == 2 and done["delivered_at"] is not None


def test_attempts_stop_at_the_maximum(store_url):
    ended_task(store_url, ["boom"])
    with Receiver() as receiver:
        receiver.statuses["/generic"] = [503] * 10
        dispatcher = Dispatcher(config(receiver, VK_ALERT_MAX_ATTEMPTS="2"), store_url)
        try:
            deadline = time.monotonic() + 10
            while len(receiver.bodies("/generic")) < 2:
                assert time.monotonic() < deadline
                dispatcher.run_pass()
                time.sleep(0.05)
            time.sleep(0.3)
            assert dispatcher.run_pass().failed == 0  # given up: nothing due any more
        finally:
            dispatcher.close()
    [gone] = deliveries(store_url)
    assert gone["attempts"] == 2 and gone["next_attempt_at"] is None
    assert gone["last_error"] == "HTTP 503"


def test_a_completed_task_sends_nothing_unless_asked(store_url):
    task_id = ended_task(store_url)
    with Receiver() as receiver:
        quiet = Dispatcher(config(receiver), store_url)
        try:
            assert quiet.run_pass().delivered == 0
        finally:
            quiet.close()
        assert receiver.received == []
        told = Dispatcher(config(receiver, VK_ALERT_ON="failed,completed"), store_url)
        try:
            assert told.run_pass().delivered == 1
        finally:
            told.close()
        [body] = receiver.bodies("/generic")
    assert body["event"] == "task_completed" and body["task"]["task_id"] == task_id
    assert "url" in body["task"] and body["task"]["url"] is None  # no VK_PUBLIC_URL


def test_one_end_of_a_run_is_one_event_and_a_new_run_another(store_url):
    task_id = ended_task(store_url, ["first"])
    with open_store(store_url) as store:
        store.finish_task(task_id)  # a second finalizer of the same run
        assert len(store.list_alert_events()) == 1
        store.begin_run(task_id)
        store.add_error(task_id, "second")
        store.finish_task(task_id)
        events = store.list_alert_events()
    assert [e["kind"] for e in events] == ["failed", "failed"]


def test_two_dispatcher_processes_on_postgresql_deliver_each_alert_once(pg_url, tmp_path):
    ids = [ended_task(pg_url, [f"error {n}"]) for n in range(6)]
    with Receiver(delay=0.1) as receiver:
        env = {
            **os.environ,
            "DATABASE_URL": pg_url,
            "VK_ALERT_WEBHOOKS": f"{receiver.url}/generic",
            "VK_ALERT_SLACK_WEBHOOKS": f"{receiver.url}/slack",
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "vkscraper", "alerts", "deliver"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        generic = [b["task"]["task_id"] for b in receiver.bodies("/generic")]
        slack = receiver.bodies("/slack")
    assert sorted(generic) == ids and len(slack) == len(ids)
    counts = [int(out.split()[1].rstrip(",")) for out, _ in outputs]
    assert sum(counts) == 2 * len(ids) and all(counts), outputs  # both took a share


@deferred_f_from_coro_f
async def test_a_run_stopped_for_want_of_a_token_sends_its_alert(store_url):
    """VK refuses the token: the task is left resumable (in_progress), never ended, so only the
    stopped alert tells anyone."""
    with Receiver() as receiver, FakeVk(small_dataset(), tokens=["another-token"]) as vk:
        crawler = await run_crawl(
            vk.url, store_url, groups="pinnedrecent,threeposts",
            settings={"VK_ALERT_WEBHOOKS": f"{receiver.url}/generic"},
        )  # fmt: skip
        alerts = next(
            e for e in crawler.extensions.middlewares if isinstance(e, VkAlertsExtension)
        )
        assert alerts.thread is not None
        alerts.thread.join(10)
        task = last_task(store_url)
        assert task.status == "in_progress"
        [stopped] = receiver.wait_for("/generic")
    assert stopped["event"] == "task_stopped", stopped
    assert stopped["task"]["task_id"] == task.id and stopped["task"]["status"] == "in_progress"
    assert "no usable access token" in stopped["task"]["reason"]
    assert f"task {task.id} stopped before finishing" in stopped["text"]


def add_schedule(url: str, outcomes: list[str]) -> int:
    """A schedule with these runs (oldest first) and its skipped-in-a-row counter."""
    with open_store(url) as store:
        store.migrate()
        task_id = store.create_task([10])
        in_a_row = len(outcomes) - len(
            "".join("s" if o == "skipped" else "x" for o in outcomes).rstrip("s")
        )

        def insert(cur):
            db = store._db
            sql = db.sql(
                "INSERT INTO schedules (name, every_s, next_run_at, last_task_id, "
                "skipped_in_a_row) VALUES ('hourly', 60, {now}, %s, %s)"
            )
            cur.execute(sql, (task_id, in_a_row))
            cur.execute("SELECT max(id) FROM schedules")
            sid = cur.fetchone()[0]
            add_runs(db, cur, sid, outcomes, 0)
            return sid

        return store._run("test schedule", insert)


def add_runs(db, cur, sid, outcomes, start):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for n, outcome in enumerate(outcomes, start):
        cur.execute(
            db.sql("INSERT INTO schedule_runs (schedule_id, due_at, outcome) VALUES (%s, %s, %s)"),
            (sid, db.ts(t0 + timedelta(minutes=n)), outcome),
        )


def test_a_schedule_skipped_n_times_in_a_row_alerts_once_per_streak(store_url):
    sid = add_schedule(store_url, ["started", "skipped", "skipped", "skipped"])
    with Receiver() as receiver:
        dispatcher = Dispatcher(config(receiver, VK_ALERT_SKIPPED_AFTER="3"), store_url)
        try:
            assert dispatcher.run_pass().delivered == 1
            assert dispatcher.run_pass().delivered == 0  # the same streak: no second alert
            with open_store(store_url) as store:

                def new_streak(cur):
                    db = store._db
                    add_runs(db, cur, sid, ["started", "skipped", "skipped", "skipped"], 10)
                    cur.execute(db.sql("UPDATE schedules SET skipped_in_a_row = 3"))

                store._run("new streak", new_streak)
            assert dispatcher.run_pass().delivered == 1
        finally:
            dispatcher.close()
        first, second = receiver.bodies("/generic")
    assert first["event"] == "schedule_skipped" and first["schedule"]["schedule_id"] == sid
    assert first["schedule"]["skipped_in_a_row"] == 3
    assert first["schedule"]["first_skipped_due_at"].startswith("2026-01-01T00:01")
    assert second["schedule"]["first_skipped_due_at"].startswith("2026-01-01T00:11")


def test_a_new_streak_after_a_resume_alerts_again(store_url):
    """Resuming resets the counter without a run in between: the streak after it is new."""
    sid = add_schedule(store_url, ["started", "skipped", "skipped", "skipped"])
    with Receiver() as receiver:
        dispatcher = Dispatcher(config(receiver, VK_ALERT_SKIPPED_AFTER="3"), store_url)
        try:
            assert dispatcher.run_pass().delivered == 1
            with open_store(store_url) as store:
                store.pause_schedule(sid)
                store.resume_schedule(sid)
                assert dispatcher.run_pass().delivered == 0

                def skip_again(cur, n):
                    add_runs(store._db, cur, sid, ["skipped"], 10 + n)
                    cur.execute("UPDATE schedules SET skipped_in_a_row = skipped_in_a_row + 1")

                for n in range(3):
                    store._run("skip", lambda cur, n=n: skip_again(cur, n))
                    assert dispatcher.run_pass().delivered == (1 if n == 2 else 0)
        finally:
            dispatcher.close()
        first, second = receiver.bodies("/generic")
    assert first["schedule"]["first_skipped_due_at"].startswith("2026-01-01T00:01")
    assert second["schedule"]["first_skipped_due_at"].startswith("2026-01-01T00:10")


def test_a_schedule_skipped_fewer_times_sends_nothing(store_url):
    add_schedule(store_url, ["skipped", "skipped", "started", "skipped", "skipped"])
    with Receiver() as receiver:
        dispatcher = Dispatcher(config(receiver, VK_ALERT_SKIPPED_AFTER="3"), store_url)
        try:
            assert dispatcher.run_pass().delivered == 0
        finally:
            dispatcher.close()


def test_the_token_is_in_no_alert_row_body_or_log_line(store_url, caplog, monkeypatch):
    """An error message quoting the token (as a library's could) reaches the task row; the
    alert's stored snapshot, both bodies and the log never hold it."""
    secret = "vk1.a.SECRETTOKENxyz0123456789abcdef"
    monkeypatch.setenv("VK_ACCESS_TOKEN", secret)
    caplog.set_level(logging.DEBUG)
    ended_task(store_url, [f"HTTP 401 for https://api.vk.ru/method/x?access_token={secret}"])
    with Receiver() as receiver:
        dispatcher = Dispatcher(
            config(receiver, VK_ALERT_SLACK_WEBHOOKS=f"{receiver.url}/slack"), store_url
        )
        try:
            assert dispatcher.run_pass().delivered == 2
        finally:
            dispatcher.close()
        raw = b"".join(receiver.raw).decode()
    assert "<token " in raw and secret not in raw
    with open_store(store_url) as store:
        rows = store._run(
            "dump",
            lambda cur: [
                cur.execute(f"SELECT * FROM {table}") or cur.fetchall()
                for table in ("alert_events", "alert_deliveries")
            ],
        )
    assert secret not in repr(rows)
    assert secret not in caplog.text and "/generic" not in caplog.text  # nor a webhook URL


def test_cli_lists_the_events_and_their_deliveries(store_url, capsys, monkeypatch):
    from vkscraper.cli.main import main

    task_id = ended_task(store_url, ["boom"])
    with Receiver() as receiver:
        receiver.statuses["/generic"] = [500]
        monkeypatch.setenv("VK_ALERT_WEBHOOKS", f"{receiver.url}/generic")
        assert main(["--database-url", store_url, "alerts", "deliver"]) == 1
    out = capsys.readouterr().out
    assert "delivered 0, failed 1" in out
    assert main(["--database-url", store_url, "alerts", "list"]) == 0
    out = capsys.readouterr().out
    assert f"failed     task {task_id}" in out and "attempts 1  retry at" in out
    assert "(HTTP 500)" in out and receiver.url not in out


def test_the_service_sends_the_outbox_from_its_own_loop(pg_url, tmp_path):
    """scrapyd with webhooks in its environment delivers an alert no crawl of its own sent."""
    from tests.helpers.scrapyd import Scrapyd

    task_id = ended_task(pg_url, ["failed elsewhere"])
    with Receiver() as receiver:
        env = {"VK_ALERT_WEBHOOKS": f"{receiver.url}/generic", "VK_ALERT_INTERVAL": "0.2"}
        with Scrapyd(tmp_path / "scrapyd", database_url=pg_url, token=TOKEN, env=env):
            [body] = receiver.wait_for("/generic", timeout=30)
    assert body["event"] == "task_failed" and body["task"]["task_id"] == task_id


def test_a_worker_sends_the_outbox_from_its_own_loop(pg_url, workers):
    """A worker configured by its -s options delivers an alert of a task it never ran."""
    from tests.helpers.workers import A

    task_id = ended_task(pg_url, ["failed elsewhere"])
    with Receiver() as receiver:
        w = workers([A], "http://127.0.0.1:9/method/")
        w.start(1, "-s", f"VK_ALERT_SLACK_WEBHOOKS={receiver.url}/slack",
                "-s", "VK_ALERT_INTERVAL=0.2")  # fmt: skip
        w.wait_started()
        [body] = receiver.wait_for("/slack", timeout=30)
        w.stop()
    assert f"task {task_id} failed" in body["text"]
    assert receiver.url not in w.logs()
