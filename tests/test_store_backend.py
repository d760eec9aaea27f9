"""Choosing the backend, errors as one line, migrations (also concurrent), reconnecting."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import psycopg2
import pytest

from vkscraper.exceptions import StoreError
from vkscraper.store import migrations, open_store

REPO = Path(__file__).resolve().parents[1]
SCHEMA_TABLES = {
    "groups",
    "pending_groups",
    "tasks",
    "posts",
    "comments",
    "task_posts",
    "schedules",
    "schedule_runs",
    "alert_events",
    "alert_deliveries",
    "metric_counters",
    "schema_migrations",
}


def test_backend_choice_and_logged_url(pg_url, sqlite_url, caplog):
    caplog.set_level(logging.INFO, logger="vkscraper.store")
    with open_store(pg_url) as pg:
        assert (pg.backend, pg.supports_multiprocess) == ("postgresql", True)
        pg.require_multiprocess("scrapy-redis")
    with open_store(pg_url.replace("postgresql://", "postgres://")) as pg2:
        assert pg2.backend == "postgresql"
    with open_store(sqlite_url) as lite:
        assert (lite.backend, lite.supports_multiprocess) == ("sqlite", False)
        with pytest.raises(StoreError) as err:
            lite.require_multiprocess("scrapyd")
        assert str(err.value) == (
            "scrapyd needs PostgreSQL: set DATABASE_URL=postgresql://…; SQLite is single-process"
        )
    messages = [r.getMessage() for r in caplog.records if r.name == "vkscraper.store"]
    assert any("PostgreSQL" in m and pg_url in m for m in messages)
    assert any("SQLite" in m for m in messages)


def test_password_is_redacted_in_log_and_error(pg_url, caplog):
    caplog.set_level(logging.INFO, logger="vkscraper.store")
    url = pg_url.replace("postgres@", "postgres:s3cret@")  # trust auth ignores it
    with open_store(url) as store:
        assert "s3cret" not in store.url and "***" in store.url
    assert caplog.records and all("s3cret" not in r.getMessage() for r in caplog.records)
    bad = "postgresql://u:s3cret@127.0.0.1:1/db"
    with pytest.raises(StoreError) as err:
        open_store(bad)
    assert "s3cret" not in str(err.value)


def test_default_is_sqlite_file_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with open_store() as store:
        assert store.backend == "sqlite"
        store.migrate()
    assert (tmp_path / "vkscraper.sqlite3").exists()


def test_database_url_from_environment(pg_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", pg_url)
    with open_store() as store:
        assert store.backend == "postgresql"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "postgresql://postgres@127.0.0.1:1/nope",
            'PostgreSQL at 127.0.0.1:1/nope: cannot connect: connection to server at "127.0.0.1", '
            "port 1 failed: Connection refused",
            marks=pytest.mark.integration,
        ),
        ("mysql://u:pw@host/db", "unsupported DATABASE_URL 'mysql://u:***@host/db'"),
        ("sqlite://relative.db", "SQLite: bad URL"),
        ("sqlite:////nonexistent-dir/x/db.sqlite3", "directory /nonexistent-dir/x does not exist"),
        pytest.param(
            "postgresql://postgres@127.0.0.1:5432/vkst_missing_db",
            'database "vkst_missing_db"',
            marks=pytest.mark.integration,
        ),
    ],
)
def test_bad_url_is_one_clear_line(url, expected):
    with pytest.raises(StoreError) as err:
        open_store(url)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    # No chained driver traceback behind the one line.
    assert err.value.__cause__ is None
    assert err.value.__context__ is None or err.value.__suppress_context__


EVERY_VERSION = [m.version for m in migrations.available("sqlite")]


def _tables(store):
    if store.backend == "postgresql":
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
    return store._run("t", lambda cur: (cur.execute(sql), {r[0] for r in cur.fetchall()})[1])


def test_migrate_empty_database_then_noop(store_url):
    with open_store(store_url) as store:
        assert _tables(store) == set()
        assert store.migrate() == EVERY_VERSION
        assert _tables(store) == SCHEMA_TABLES
        assert store.migrate() == []
    with open_store(store_url) as again:
        assert again.migrate() == []


def test_migration_0002_backfills_last_seen_from_a_v1_database(store_url):
    from vkscraper.store import migrations

    with open_store(store_url) as store:
        v1 = [m for m in migrations.available(store.backend) if m.version == "0001"]
        store._run("v1", lambda cur: _apply_only(store, cur, v1))
        store._run(
            "row",
            lambda cur: cur.execute(
                "INSERT INTO comments (vk_comment_id, post_vk_id, owner_id, text, updated_at) "
                "VALUES (1, 1, -1, 'old', '2024-01-02T03:04:05.000000Z')"
            ),
        )
        assert store.migrate() == EVERY_VERSION[1:]
        rows = store._run(
            "read",
            lambda cur: (
                cur.execute("SELECT last_seen_at, updated_at FROM comments"),
                cur.fetchall(),
            )[1],
        )
    assert len(rows) == 1 and rows[0][0] == rows[0][1]  # last seen = last updated


def _apply_only(store, cur, wanted):
    from vkscraper.store import migrations

    real = migrations.available
    migrations.available = lambda name: wanted
    try:
        return migrations.apply(store._db, cur)
    finally:
        migrations.available = real


def _migrations(url):
    with open_store(url) as store:
        return store._run(
            "t",
            lambda cur: (
                cur.execute("SELECT version FROM schema_migrations"),
                [r[0] for r in cur.fetchall()],
            )[1],
        )


@pytest.mark.integration
def test_migrate_from_several_processes_at_once(store_url):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vkscraper", "-q", "--database-url", store_url, "migrate"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert err == ""
        outputs.append(out.strip())
    assert (
        sorted(outputs) == [f"applied: {', '.join(EVERY_VERSION)}"] + ["schema is up to date"] * 3
    )
    assert sorted(_migrations(store_url)) == EVERY_VERSION


def test_driver_error_rolls_back_and_store_keeps_working(store, make_post):
    task = store.create_task([1])
    with pytest.raises(StoreError, match=r"error in upsert_posts: .*(null|NULL)") as err:
        store.upsert_posts(task, [make_post(1), make_post(2, date=None)])
    assert "\n" not in str(err.value)
    assert store.task_results(task) == []  # the valid post was rolled back too
    assert store.upsert_posts(task, [make_post(1)]).inserted == 1


def test_closed_store_raises(store):
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_tasks()


def test_threads_share_one_store(store, make_post):
    task = store.create_task([1])
    errors = []

    def work(base):
        try:
            for i in range(10):
                store.upsert_posts(task, [make_post(base + i), make_post(base + i + 1000)])
                store.get_task(task)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k * 100,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.task_results(task, limit=1000)) == 6 * 10 * 2


def _terminate_store_connection(store, admin_url):
    pid = store._conn.get_backend_pid()
    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert cur.fetchone()[0] is True
    finally:
        conn.close()


def test_reconnects_after_connection_killed(pg_url, pg_admin_url, make_post, caplog):
    with open_store(pg_url) as store:
        store.migrate()
        task = store.create_task([1])
        store.upsert_posts(task, [make_post(1)])
        _terminate_store_connection(store, pg_admin_url)
        # The next call notices, reconnects once and runs in a fresh transaction.
        assert store.upsert_posts(task, [make_post(2)]).inserted == 1
        assert any("reconnecting" in r.getMessage() for r in caplog.records)
        _terminate_store_connection(store, pg_admin_url)
        assert [p["vk_post_id"] for p in store.task_results(task)] == [1, 2]
        store.add_progress(task, posts_expected=3)
        assert store.get_task(task).metrics["posts_expected"] == 3


def test_server_gone_gives_store_error_then_recovers(pg_url, pg_admin_url, make_post):
    with open_store(pg_url) as store:
        store.migrate()
        task = store.create_task([1])
        store.upsert_posts(task, [make_post(1)])
        real_url = store._db.url
        # Point reconnects at a dead port: the retry fails with one clear line ...
        store._db.url = "postgresql://postgres@127.0.0.1:1/gone"
        _terminate_store_connection(store, pg_admin_url)
        with pytest.raises(StoreError, match="cannot connect"):
            store.get_task(task)
        with pytest.raises(StoreError, match="cannot connect"):
            store.get_task(task)
        # ... and once the server is back, the next call works; committed data is intact.
        store._db.url = real_url
        assert store.get_task(task).status == "created"
        assert [p["vk_post_id"] for p in store.task_results(task)] == [1]
