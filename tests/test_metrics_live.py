"""The Prometheus metrics of real processes: the service's ``/metrics`` (a real scrapyd, its
crawl jobs against the emulator) and a worker's metrics port during a distributed run, both
parsed with prometheus_client's own parser; the counters the crawls add up in the database; a
dead database still answered; never the token in a scrape."""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from fakevk import FakeVk, generate_dataset
from testkit.pg import temporary_database
from tests.helpers.crawl import task_of
from tests.helpers.scrapyd import Scrapyd, free_port
from tests.helpers.workers import FAST, REDIS_URL, A, B, cli, dataset, refs, wait_done
from vkscraper import metrics
from vkscraper.store import open_store
from vkscraper.tokens.access import token_tag

pytestmark = pytest.mark.integration

TOKEN = "vk1.a.METRICS-fake-token-7c1e2d-0123456789"
REQUESTS = "vkscraper_vk_requests_total"


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def total(body: str, sample: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_the_services_metrics_parse_and_move_while_a_crawl_runs(tmp_path, pg_admin_url):
    data = generate_dataset(seed=5, groups=3, posts_per_group=8, max_comments=30,
                            max_replies=5, author_groups=0, closed_comments=False)  # fmt: skip
    with (
        temporary_database(pg_admin_url, "vkmetrics") as url,
        FakeVk(data, tokens=[TOKEN]) as vk,
        Scrapyd(tmp_path, database_url=url, token=TOKEN) as server,
    ):
        status, kind, before = get(server.url + "/metrics")
        assert status == 200 and kind == CONTENT_TYPE_LATEST, kind
        assert total(before, REQUESTS) == 0
        assert total(before, "vkscraper_up", source="database") == 1
        groups = ",".join(g["screen_name"] for g in data["groups"])
        status, answer = server.call(
            "POST", "/collect.json",
            data=[("groups", groups), ("setting", f"VK_API_URL={vk.url}"),
                  ("setting", "VK_EXECUTE=False"), ("setting", "VK_REQUESTS_PER_SECOND=12"),
                  ("setting", "VK_METRICS_INTERVAL=0.2")],
        )  # fmt: skip
        assert status == 200, answer
        task_id = answer["task_id"]
        during, bodies = [], []
        deadline = time.monotonic() + 120
        while (task := task_of(url, task_id)).status not in ("completed", "failed"):
            assert time.monotonic() < deadline, server.job_logs()[-3000:]
            body = get(server.url + "/metrics")[2]
            bodies.append(body)
            if task.status == "in_progress":
                during.append(total(body, REQUESTS))
            time.sleep(0.2)
        server.wait_task(task_id)
        after = get(server.url + "/metrics")[2]
        bodies.append(after)
        task = task_of(url, task_id)
    assert task.status == "completed", task.metrics["errors"]
    # Moved during the run, in steps, up to every answer of the task.
    moving = [n for n in during if n > 0]
    assert moving and moving[0] < total(after, REQUESTS), during
    tag = token_tag(TOKEN)
    answers = task.metrics["requests"]
    assert total(after, REQUESTS, token=tag, outcome="ok") == answers
    assert total(after, REQUESTS, method="wall.getComments", token=tag) > 0
    assert total(after, "vkscraper_comments_stored_total") == task.metrics["comments"]
    assert total(after, "vkscraper_posts_stored_total", result="inserted") == task.metrics["posts"]
    assert total(after, "vkscraper_runs_started_total") == 1
    assert total(after, "vkscraper_runs_ended_total", outcome="completed") == 1
    assert total(after, "vkscraper_tasks", status="completed") == 1
    assert not [b for b in bodies if TOKEN in b]


def test_a_schedules_gauges_come_from_its_runs_and_tasks(pg_url):
    now = datetime.now(UTC).replace(microsecond=0)
    with open_store(pg_url) as store:
        store.migrate()
        done = store.create_task([1])
        store.create_task([2])  # a task of no schedule
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO schedules (name, every_s, next_run_at) VALUES ('hourly', 3600, %s) "
            "RETURNING id",
            (now,),
        )
        schedule = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO schedules (name, cron, timezone, next_run_at) "
            "VALUES ('nightly', '0 3 * * *', 'Europe/Moscow', %s) RETURNING id",
            (now,),
        )
        nightly = cur.fetchone()[0]
        for due, late in ((now - timedelta(hours=2), 1), (now - timedelta(hours=1), 7)):
            cur.execute(
                "INSERT INTO schedule_runs (schedule_id, due_at, ran_at, outcome, task_id) "
                "VALUES (%s, %s, %s, 'started', %s)",
                (schedule, due, due + timedelta(seconds=late), done),
            )
        cur.execute(
            "UPDATE tasks SET schedule_id = %s, status = 'completed', finished_at = %s, "
            "metrics = jsonb_set(metrics, '{comments}', '3') WHERE id = %s",
            (schedule, now - timedelta(minutes=50), done),
        )
    with open_store(pg_url) as store:
        snap = store.metrics_snapshot()
        store.add_metric_counters({("vkscraper_runs_started_total", "{}"): 2.0})
        store.add_metric_counters({("vkscraper_runs_started_total", "{}"): 1.0})
        again = store.metrics_snapshot()
    by_id = {s.id: s for s in snap.schedules}
    assert by_id[schedule].last_ran_at - by_id[schedule].last_due_at == timedelta(seconds=7)
    assert by_id[schedule].last_comments_at == now - timedelta(minutes=50)
    assert by_id[nightly].cron == "0 3 * * *" and by_id[nightly].last_comments_at is None
    assert snap.tasks == {"completed": 1, "created": 1}
    assert again.counters == [("vkscraper_runs_started_total", "{}", 3.0)]


def test_counters_add_up_in_sqlite_too(sqlite_url):
    series = ("vkscraper_vk_errors_total", metrics.canonical({"code": "6"}))
    with open_store(sqlite_url) as store:
        store.migrate()
        store.add_metric_counters({series: 1.0})
        store.add_metric_counters({series: 2.5, ("vkscraper_runs_started_total", "{}"): 0})
        snap = store.metrics_snapshot()
    assert snap.counters == [(*series, 3.5)]
    assert snap.schedules == [] and snap.tasks == {}


def test_a_dead_database_still_answers_a_scrape(tmp_path):
    dead = "postgresql://postgres@127.0.0.1:1/nothing"
    with Scrapyd(tmp_path, database_url=dead, token=TOKEN) as server:
        status, _, body = get(server.url + "/metrics")
        log = server.output()
    assert status == 200
    assert total(body, "vkscraper_up", source="database") == 0
    assert "/metrics: the database is unavailable" in log
    assert "Traceback" not in body and TOKEN not in body


def test_a_workers_port_shows_its_requests_per_token_during_a_run(workers, pg_url):
    data = dataset(seed=31, groups=6)
    port = free_port()
    with FakeVk(data, tokens=[A, B]) as vk:
        w = workers([A, B], vk.url)
        w.start(1, "--metrics-port", str(port), *FAST, "-s", f"VK_API_URL={vk.url}",
                "-s", "VK_EXECUTE=False", "-s", "VK_METRICS_INTERVAL=0.2")  # fmt: skip
        w.wait_started()
        assert f"Worker metrics on http://127.0.0.1:{port}/metrics" in w.log(0)
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        during, bodies = [], []
        deadline = time.monotonic() + 120
        while (task := task_of(pg_url, task_id)).status not in ("completed", "failed"):
            assert time.monotonic() < deadline, w.logs()[-3000:]
            body = get(f"http://127.0.0.1:{port}/metrics")[2]
            bodies.append(body)
            if task.status == "in_progress":
                during.append(
                    {token_tag(t): total(body, REQUESTS, token=token_tag(t)) for t in (A, B)}
                )
            time.sleep(0.2)
        task = wait_done(pg_url, task_id, 30, w)
        time.sleep(0.5)  # the crawl's close adds its last deltas
        live = get(f"http://127.0.0.1:{port}/metrics")[2]
        bodies.append(live)
    assert task.status == "completed", task.metrics["errors"]
    assert [d for d in during if any(d.values())], during
    for token in (A, B):
        assert total(live, REQUESTS, token=token_tag(token), outcome="ok") > 0
    assert not [b for b in bodies if A in b or B in b]
    # One worker: its live view and the totals it added to the database agree.
    with open_store(pg_url) as store:
        stored = store.metrics_snapshot().counters
    in_db = sum(v for name, _, v in stored if name == REQUESTS)
    assert in_db == total(live, REQUESTS) == task.metrics["requests"]
    assert A not in repr(stored) and B not in repr(stored)


def test_a_worker_refuses_a_metrics_port_it_cannot_open(pg_url, server):
    env = {**os.environ, "VK_ACCESS_TOKEN": A, "REDIS_URL": REDIS_URL, "DATABASE_URL": pg_url}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli(env, "worker", "--metrics-port", str(port), check=False)
    assert out.returncode == 2, out.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in out.stderr
    assert A not in out.stderr + out.stdout
