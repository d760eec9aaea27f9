"""Schemathesis fuzzes a live scrapyd against the document it serves (``/api/openapi.json``).

Where ``test_openapi.py`` calls each route with requests a person wrote, this generates them
from the document itself — its examples, the boundaries of every parameter and body field
(the coverage phase, valid and invalid values alike) and random ones — and checks every
answer: never a 5xx, a status the operation documents, a JSON body of the documented type
that matches that status's schema (strict: ``additionalProperties: false``).

scrapyd never launches the crawls the fuzz queues (its poller waits longer than the test
runs), so nothing leaves the machine; the test checks that no job started. The run is
deterministic (a fixed seed, derandomized generation, a fixed number of examples per
operation) and the CLI runs as a child process, outside pytest's reactor and warning filters.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import psycopg2
import pytest

from testkit.pg import temporary_database
from tests.helpers.crawl import TOKEN
from tests.helpers.scrapyd import Scrapyd
from vkscraper.items import VkComment, VkPost
from vkscraper.schedules.spec import parse_spec
from vkscraper.service.openapi import DOCUMENT
from vkscraper.store import open_store

pytestmark = pytest.mark.integration

ST = Path(sys.executable).with_name("st")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
EXAMPLES = 100  # per operation: ~1,900 requests, about 17 s
SEED = 17
NEVER = 10**7  # seconds: scrapyd's poller never takes a queued job during the test


def seed_tasks(database_url: str) -> None:
    """Tasks 1–3 and schedules 1–2 so that generated small ids find something: one task with
    stored posts and comments (nullable fields both null and set) and an error, one never
    queued, one whose job scrapyd does not know; a schedule whose last task is the first."""
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with open_store(database_url) as store:
        store.migrate()
        task = store.create_task([10, "apiclub"])
        store.set_job(task, "0123456789abcdef0123456789abcdef")
        posts = [
            VkPost(vk_post_id=i, owner_id=-10, group_id=10, text=f"post {i}", date=when)
            for i in (1, 2, 3)
        ]
        store.upsert_posts(task, posts)
        store.upsert_comments(
            task,
            [
                VkComment(
                    vk_comment_id=100 + i,
                    post_vk_id=1,
                    owner_id=-10,
                    parent_id=parent,
                    thread_count=0,
                    author_id=author,
                    author_name=None,
                    text="c",
                    date=when,
                )  # fmt: skip
                for i, (parent, author) in enumerate([(None, 5), (100, None), (None, None)])
            ],
        )
        store.add_error(task, "group apiclub: not found", group="apiclub")
        store.create_task([11])
        third = store.create_task([12, 13])
        store.set_job(third, "fedcba9876543210fedcba9876543210")
        # Schedules 1 and 2: one whose last task is task 1, with a run; one by cron.
        hourly = store.add_schedule(parse_spec(name="hourly", groups=[10], every="1h"))
        store.add_schedule(parse_spec(cron="0 */6 * * *", timezone="Europe/Moscow"))
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE schedules SET last_task_id = %s WHERE id = %s", (task, hourly))
        cur.execute(
            "INSERT INTO schedule_runs (schedule_id, due_at, outcome, task_id) "
            "VALUES (%s, now(), 'started', %s)",
            (hourly, task),
        )
    conn.close()


@pytest.fixture
def server(tmp_path, pg_admin_url):
    with temporary_database(pg_admin_url, "vkfuzz") as url:
        seed_tasks(url)
        with Scrapyd(tmp_path / "scrapyd", database_url=url, token=TOKEN,
                     poll_interval=NEVER) as s:  # fmt: skip
            yield s


def test_every_generated_request_is_answered_as_documented(server, tmp_path):
    run = subprocess.run(
        [
            str(ST), "run", f"{server.url}/api/openapi.json",
            "--checks", ",".join(CHECKS),
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(EXAMPLES),
            "--seed", str(SEED), "--generation-deterministic",
            "--workers", "1", "--request-timeout", "20",
            "--no-color", "--output-truncate", "false",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, f"{run.stdout[-20000:]}\n{run.stderr[-3000:]}"
    # Every operation of the document was exercised (but the document itself: no input).
    tested = {
        case.get("name")
        for report in (tmp_path / "report").glob("*.xml")
        for case in ElementTree.parse(report).iter("testcase")
    }
    assert tested == {
        f"{method.upper()} {path}"
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if path != "/api/openapi.json"
    }
    # The queued crawls never ran: no job was launched.
    assert not list((server.workdir / "logs_dir").rglob("*.log")), server.output()[-3000:]
