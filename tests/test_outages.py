"""Outages and signals, against the real services: PostgreSQL unavailable mid-crawl, and
`scrapy crawl vk` stopped by SIGTERM (once: graceful; twice: forced).

The database is made unavailable the way an operator would: ``ALTER DATABASE … ALLOW_CONNECTIONS
false`` plus ``pg_terminate_backend`` for the open sessions, then connections are allowed again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from scrapy import signals
from scrapy.utils.defer import deferred_f_from_coro_f

from fakevk import FakeVk, generate_dataset
from testkit.pg import admin_execute
from tests.helpers.crawl import (
    COMMENT_KEYS,
    DATASET,
    POST_KEYS,
    TOKEN,
    assert_stored_equals,
    comparable,
    edited,
    expected,
    group_refs,
    last_task,
    open_all_comments,
    run_crawl,
    stored_rows,
    task_of,
)
from vkscraper.cli import exitcodes
from vkscraper.pipelines.store import VkStorePipeline

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)


class Outage:
    """Makes one PostgreSQL database unavailable (`down`) and available again (`up`)."""

    def __init__(self, admin_url: str, db_url: str) -> None:
        self.admin_url = admin_url
        self.dbname = db_url.rsplit("/", 1)[1]
        self.started: float | None = None
        self.ended: float | None = None

    def down(self) -> None:
        admin_execute(self.admin_url, f"ALTER DATABASE {self.dbname} ALLOW_CONNECTIONS false")
        admin_execute(
            self.admin_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.dbname}' AND pid <> pg_backend_pid()",
        )
        self.started = time.monotonic()

    def up(self) -> None:
        admin_execute(self.admin_url, f"ALTER DATABASE {self.dbname} ALLOW_CONNECTIONS true")
        if self.started is not None and self.ended is None:
            self.ended = time.monotonic()


def store_pipeline(crawler) -> VkStorePipeline:
    (pipeline,) = [
        p for p in crawler.engine.scraper.itemproc.middlewares if isinstance(p, VkStorePipeline)
    ]
    return pipeline


def warnings_or_worse(records) -> list[str]:
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in records if r.levelno >= 30]


def read_dump(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def keys_of(rows: list[dict], kind: str) -> set[tuple[int, int]]:
    id_field = "vk_post_id" if kind == "VkPost" else "vk_comment_id"
    return {(r["owner_id"], r[id_field]) for r in rows if r.get("kind", kind) == kind}


# ------------------------------------------------------------------ database outages


@deferred_f_from_coro_f
async def test_an_outage_is_two_lines_retried_with_backoff_and_loses_nothing(
    pg_admin_url, pg_url, tmp_path, caplog
):
    """PostgreSQL is unavailable for 2.5 s mid-crawl: one line when it starts, one when it
    ends (with the items written), a few attempts rather than one per item, and the task
    completes with every row."""
    caplog.set_level(logging.INFO)
    outage = Outage(pg_admin_url, pg_url)
    timer = threading.Timer(2.5, outage.up)

    def break_db(crawler):
        outage.down()
        timer.start()

    try:
        with FakeVk(DATASET, tokens=[TOKEN]) as vk:
            # 8 requests/s: the crawl lasts ~7 s, so the database is back while it runs.
            crawler = await run_crawl(
                vk.url, pg_url, groups=group_refs(DATASET), after_items=(150, break_db),
                settings={"VK_UNSAVED_DIR": str(tmp_path), "VK_STORE_BATCH_SIZE": 20,
                          "VK_REQUESTS_PER_SECOND": 8, "VK_METRICS_INTERVAL": 5,
                          "VK_STORE_FLUSH_INTERVAL": 0.5},
            )  # fmt: skip
    finally:
        timer.cancel()
        outage.up()
        if timer.ident is not None:
            timer.join()
    task = last_task(pg_url)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(pg_url, task.id, DATASET)
    assert not list(tmp_path.glob("vkscraper-unsaved-*"))

    problems = warnings_or_worse(caplog.records)
    assert len(problems) <= 4, "\n".join(problems)
    stats = crawler.stats
    assert stats.get_value("vk/store/outages") == 1
    # Retried with backoff (after 1 s, then 2 s …), not once per item: hundreds of items
    # came in while it was down.
    assert 1 <= stats.get_value("vk/store/errors") <= 3, stats.get_value("vk/store/errors")
    (start,) = [m for m in problems if "Database unavailable" in m]
    assert re.search(r"\b\d+ item\(s\) waiting", start), start
    ends = [r.getMessage() for r in caplog.records if "Database back after" in r.getMessage()]
    assert len(ends) == 1, ends
    written = re.search(r"Database back after ([\d.]+) s; (\d+) item\(s\) written", ends[0])
    assert written, ends[0]
    assert 2.0 <= float(written.group(1)) < 8 and int(written.group(2)) > 0, ends[0]
    # The store's own lines: one WARNING when the connection is lost, one INFO when back.
    store_lines = [r for r in caplog.records if r.name == "vkscraper.store" and r.levelno >= 20]
    assert len([r for r in store_lines if r.levelno >= 30]) == 1, store_lines
    assert len([r for r in store_lines if "reconnected" in r.getMessage()]) == 1
    # The outage ended while the crawl still ran: the backoff retry found the database back,
    # not only the writes at close.
    messages = [r.getMessage() for r in caplog.records]
    closing = next(i for i, m in enumerate(messages) if m.startswith("Closing spider"))
    assert messages.index(ends[0]) < closing


@deferred_f_from_coro_f
async def test_a_long_outage_spills_beyond_the_buffer_and_keeps_memory_bounded(
    pg_admin_url, pg_url, tmp_path, caplog
):
    """Down from the 60th item until the crawl is over (back for the close): at most
    VK_STORE_MAX_BUFFER items are held, the others go to the unsaved file as they come; the
    groups are not recorded as done and the task error names the file and the counts."""
    caplog.set_level(logging.INFO)
    outage = Outage(pg_admin_url, pg_url)
    seen: list[tuple[int, int]] = []  # (items buffered, lines in the unsaved file) per item

    def watch(item):
        buffered = store_pipeline(crawler_ref[0]).buffered
        files = list(tmp_path.glob("vkscraper-unsaved-task*.jsonl"))
        lines = len(files[0].read_bytes().splitlines()) if files else 0
        seen.append((buffered, lines))

    crawler_ref: list = []

    def break_db(crawler):
        outage.down()
        crawler_ref.append(crawler)
        crawler.signals.connect(watch, signal=signals.item_scraped, weak=False)
        # Back once every request is done, before the spider closes.
        crawler.signals.connect(outage.up, signal=signals.spider_idle, weak=False)

    try:
        with FakeVk(DATASET, tokens=[TOKEN]) as vk:
            crawler = await run_crawl(
                vk.url, pg_url, groups=group_refs(DATASET), after_items=(60, break_db),
                settings={"VK_UNSAVED_DIR": str(tmp_path), "VK_STORE_BATCH_SIZE": 20,
                          "VK_STORE_MAX_BUFFER": 50, "VK_METRICS_INTERVAL": 5},
            )  # fmt: skip
    finally:
        outage.up()
    assert outage.ended is not None  # the crawl ran to its end with the database down
    (path,) = tmp_path.glob("vkscraper-unsaved-task*.jsonl")
    dumped = read_dump(path)

    # Memory stayed bounded, and the file grew while the crawl ran (not all at close).
    assert max(b for b, _ in seen) <= 50
    assert crawler.stats.get_value("vk/store/peak_buffer") <= 50
    lines_seen = [n for _, n in seen]
    assert lines_seen == sorted(lines_seen) and len(set(lines_seen)) > 10
    assert lines_seen[-1] == len(dumped) > 1000  # every spilled item was on disk before close
    assert crawler.stats.get_value("vk/store/unsaved_items") == len(dumped)
    assert {r["kind"] for r in dumped} <= {"VkPost", "VkComment"}

    # Nothing lost, nothing twice: stored + spilled == the dataset, and they do not overlap.
    task = last_task(pg_url)
    posts, _ = stored_rows(pg_url, task.id)
    stored_posts = {(r["owner_id"], r["vk_post_id"]) for r in posts}
    # Every comment row of this fresh database: a comment stored while its post went to the
    # file belongs to no task post yet, so the task's results cannot show it (timing decides
    # which items land where).
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT owner_id, vk_comment_id FROM comments")
            stored_comments = set(cur.fetchall())
    finally:
        conn.close()
    dumped_posts, dumped_comments = keys_of(dumped, "VkPost"), keys_of(dumped, "VkComment")
    want_posts, want_comments = expected(DATASET)
    assert not stored_posts & dumped_posts and not stored_comments & dumped_comments
    assert stored_posts | dumped_posts == set(want_posts)
    assert stored_comments | dumped_comments == set(want_comments)
    # The file holds the rows as collected (the store removes NUL characters, the file not).
    got = comparable(
        [{**r, "date": _ts(r["date"]), "text": r["text"].replace("\x00", "")}
         for r in dumped if r["kind"] == "VkComment"],
        COMMENT_KEYS,
    )  # fmt: skip
    assert got == {k: want_comments[k] for k in got}

    # Spilled items are not in the database: no group is done, the task says where they are.
    assert task.status == "failed"
    n_posts, n_comments = len(dumped_posts), len(dumped_comments)
    message = f"database unavailable: {n_posts} post(s) and {n_comments} comment(s) were saved"
    assert any(e.startswith(message) and str(path) in e for e in task.metrics["errors"]), (
        task.metrics["errors"]
    )
    assert task.metrics["groups_done"] == 0
    # No line per item: ~1,100 items went to the file. (The task extension logs each progress
    # update it could not write, per group event and metrics tick, not per item.)
    problems = warnings_or_worse(caplog.records)
    assert len(problems) <= 10, "\n".join(problems)
    assert len([m for m in problems if "further items go to" in m]) == 1


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_a_page_larger_than_the_buffer_is_stored_while_the_database_is_up(
    store_url, tmp_path
):
    """VK_STORE_MAX_BUFFER bounds what waits for a database that is down; with the database
    up, a page with more rows than that (a comments page holds up to 1,100) is written, not
    sent to the unsaved file."""
    settings = {"VK_STORE_MAX_BUFFER": 5, "VK_UNSAVED_DIR": str(tmp_path)}
    with FakeVk(DATASET, tokens=[TOKEN]) as vk:
        crawler = await run_crawl(vk.url, store_url, groups=group_refs(DATASET), settings=settings)
    assert not list(tmp_path.glob("vkscraper-unsaved-task*.jsonl"))
    assert crawler.stats.get_value("vk/store/unsaved_items") is None
    task = last_task(store_url)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(store_url, task.id, DATASET)


def _ts(value: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(value).timestamp())


# ------------------------------------------------------------------ SIGTERM


def _signal_data(data):
    open_all_comments(data)
    # A group without comments is done right after its wall.get, while the others go on.
    quiet = [g for g in data["groups"] if not g.get("author_only")][-1]
    for post in quiet["posts"]:
        post["comments"] = []


SIGNAL_DATA = edited(
    generate_dataset(seed=3, groups=3, posts_per_group=10, max_comments=30), _signal_data
)
SIGNAL_REFS = ",".join(str(g["id"]) for g in SIGNAL_DATA["groups"] if not g.get("author_only"))


def start_crawl(log: Path, database_url: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["VK_ACCESS_TOKEN"] = TOKEN
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scrapy", "crawl", "vk", "-s", f"DATABASE_URL={database_url}",
             "-s", "VK_STORE_BATCH_SIZE=20", "-s", "CONCURRENT_REQUESTS=4", *args],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def query(database_url: str, sql: str) -> int:
    conn = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


def wait_until(proc: subprocess.Popen, database_url: str, log: Path, sql: str) -> None:
    """Until ``sql`` (a count) is positive: the crawl is under way."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if (query(database_url, sql) or 0) > 0:
                return
        except psycopg2.Error:
            pass  # not migrated yet
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    pytest.fail(f"not within 30 s: {sql}")


SOME_ROWS = "SELECT count(*) FROM comments"
A_GROUP_DONE = "SELECT max((metrics->>'groups_done')::int) FROM tasks"


def finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the crawl did not stop:\n{log.read_text()[-3000:]}")
    return log.read_text()


def assert_consistent(database_url: str, task_id: int) -> tuple[int, int]:
    """What a stopped crawl left: no session of it, no comment without its post, every row as
    VK had it, and every group recorded as done has all of its rows."""
    sessions = query(
        database_url,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert sessions == 0  # nothing of the stopped crawl left open, no transaction half-way
    orphans = query(
        database_url,
        "SELECT count(*) FROM comments c WHERE NOT EXISTS (SELECT 1 FROM posts p "
        "WHERE p.owner_id = c.owner_id AND p.vk_post_id = c.post_vk_id)",
    )
    assert orphans == 0
    posts, comments = stored_rows(database_url, task_id)
    got_posts, got_comments = comparable(posts, POST_KEYS), comparable(comments, COMMENT_KEYS)
    want_posts, want_comments = expected(SIGNAL_DATA)
    assert got_posts == {k: want_posts[k] for k in got_posts}
    assert got_comments == {k: want_comments[k] for k in got_comments}
    task = task_of(database_url, task_id)
    for key, group in task.metrics["groups"].items():
        if group.get("done"):
            owner = -int(key)
            for got, want in ((got_posts, want_posts), (got_comments, want_comments)):
                assert {k for k in got if k[0] == owner} == {k for k in want if k[0] == owner}, (
                    f"group {key} is recorded as done without all of its rows"
                )
    return len(posts), len(comments)


def resume(tmp_path: Path, database_url: str, task_id: int) -> None:
    """Resume against an emulator without rate enforcement (the same data): quick."""
    with FakeVk(SIGNAL_DATA, tokens=[TOKEN]) as vk:
        log = tmp_path / "resume.log"
        proc = start_crawl(log, database_url, "-a", f"task_id={task_id}", "-s",
                           f"VK_API_URL={vk.url}", "-s", "VK_REQUESTS_PER_SECOND=1000",
                           "-s", "VK_BACKOFF_BASE=0")  # fmt: skip
        out = finish(proc, log)
    assert proc.returncode == exitcodes.OK, out[-3000:]
    task = task_of(database_url, task_id)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(database_url, task_id, SIGNAL_DATA)


def stat(out: str, name: str) -> int:
    match = re.search(rf"'{re.escape(name)}': (\d+)", out)
    assert match, f"{name} not in the stats dump"
    return int(match.group(1))


def test_sigterm_stops_gracefully_and_the_task_resumes(pg_url, tmp_path):
    log = tmp_path / "crawl.log"
    with FakeVk(SIGNAL_DATA, tokens=[TOKEN], rate_limit=3) as vk:
        proc = start_crawl(log, pg_url, "-a", f"groups={SIGNAL_REFS}", "-s",
                           f"VK_API_URL={vk.url}")  # fmt: skip
        wait_until(proc, pg_url, log, SOME_ROWS)
        proc.send_signal(signal.SIGTERM)
        out = finish(proc, log)
    assert proc.returncode == exitcodes.INTERRUPTED, out[-3000:]
    assert "Received SIGTERM, shutting down gracefully" in out
    assert "Traceback" not in out
    task = last_task(pg_url)
    assert task.status == "in_progress" and task.finished_at is None
    n_posts, n_comments = assert_consistent(pg_url, task.id)
    # Everything collected was written (the batch in flight too), nothing else.
    assert (n_posts, n_comments) == (
        stat(out, "vk/store/posts_inserted"),
        stat(out, "vk/store/comments_inserted"),
    )
    assert n_posts + n_comments == stat(out, "vk/items/post") + stat(out, "vk/items/comment")
    want_posts, want_comments = expected(SIGNAL_DATA)
    assert n_comments < len(want_comments)  # stopped early: there is something to resume
    resume(tmp_path, pg_url, task.id)


def test_a_second_sigterm_forces_the_stop_and_the_database_stays_consistent(pg_url, tmp_path):
    log = tmp_path / "crawl.log"
    with FakeVk(SIGNAL_DATA, tokens=[TOKEN], rate_limit=3) as vk:
        proc = start_crawl(log, pg_url, "-a", f"groups={SIGNAL_REFS}", "-s",
                           f"VK_API_URL={vk.url}")  # fmt: skip
        # Once a group is recorded as done: its rows must all be in the database by then.
        wait_until(proc, pg_url, log, A_GROUP_DONE)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out = finish(proc, log)
    assert "Received SIGTERM twice, forcing unclean shutdown" in out, out[-3000:]
    assert proc.returncode == exitcodes.INTERRUPTED, out[-3000:]
    task = last_task(pg_url)  # readable
    assert task.status in ("in_progress", "failed")
    assert any(g.get("done") for g in task.metrics["groups"].values())  # checked below
    assert_consistent(pg_url, task.id)
    resume(tmp_path, pg_url, task.id)
