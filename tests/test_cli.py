"""``python -m vkscraper``: commands, output and exit codes (0 ok, 1 database, 2 bad input)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vkscraper.cli.main import main
from vkscraper.store import open_store
from vkscraper.store.migrations import available

REPO = Path(__file__).resolve().parents[1]


def run(capsys, url, *args):
    code = main(["-q", "--database-url", url, *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "vkscraper", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_migrate_twice(capsys, store_url):
    every = ", ".join(m.version for m in available("sqlite"))
    assert run(capsys, store_url, "migrate")[:2] == (0, f"applied: {every}\n")
    assert run(capsys, store_url, "migrate")[:2] == (0, "schema is up to date\n")


def test_groups_commands(capsys, store_url):
    code, out, _ = run(
        capsys, store_url, "groups", "add", "club5", "ApiClub", "https://vk.com/durov"
    )
    assert code == 0
    assert out.splitlines() == [
        "added 5",
        "added apiclub (pending resolution)",
        "added durov (pending resolution)",
    ]
    code, out, _ = run(capsys, store_url, "groups", "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].split()[:3] == ["5", "-", "active"]
    assert lines[1].split()[:3] == ["pending", "apiclub", "active"]
    assert run(capsys, store_url, "groups", "remove", "5", "durov") == (0, "removed 2\n", "")
    assert run(capsys, store_url, "groups", "list")[1].split()[:2] == ["pending", "apiclub"]


def test_groups_remove_names_what_it_did_not_find(capsys, store_url):
    """A reference that names no listed group is a warning on stderr, one per reference, and
    the status stays 0: the group is off the list either way (idempotent for scripts)."""
    run(capsys, store_url, "groups", "add", "5", "apiclub")
    code, out, err = run(capsys, store_url, "groups", "remove", "7", "5", "vk.com/Nobody")
    assert (code, out) == (0, "removed 1\n")
    assert err.splitlines() == [
        "vkscraper: warning: not found: 7",
        "vkscraper: warning: not found: nobody",
    ]
    # Run again: nothing left to remove, every reference is reported.
    code, out, err = run(capsys, store_url, "groups", "remove", "5", "apiclub")
    assert (code, out) == (0, "removed 1\n")
    assert err == "vkscraper: warning: not found: 5\n"


def test_task_create_show_list(capsys, store_url):
    code, out, _ = run(capsys, store_url, "task", "create", "--groups", "1,apiclub, club2")
    assert code == 0
    task_id = int(out)
    code, out, _ = run(capsys, store_url, "task", "show", str(task_id))
    assert code == 0
    head, _, metrics = out.partition("metrics:\n")
    assert head.splitlines()[0] == f"task {task_id}: created"
    assert "groups:      1, apiclub, 2" in head
    assert "started_at:  -" in head
    assert json.loads(metrics)["groups_total"] == 3
    code, out, _ = run(capsys, store_url, "task", "list")
    assert code == 0 and out.splitlines()[1].split()[:2] == [str(task_id), "created"]


def test_bad_input_exits_2_with_one_line(capsys, sqlite_url):
    code, out, err = run(capsys, sqlite_url, "groups", "add", "vk.com/id42")
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        "vkscraper: error: 'vk.com/id42' is a user page, not a community"
    ]
    code, _, err = run(capsys, sqlite_url, "task", "create", "--groups", " , ")
    assert code == 2 and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["task", "show", "abc"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid int value" in err


@pytest.mark.parametrize(
    ("args", "entry"),
    [
        (["task", "create", "--groups", "foo bar"], "'foo bar'"),
        (["task", "create", "--groups", "group24983,bad ref!"], "'bad ref!'"),
        (["groups", "add", "apiclub", "club 5"], "'club 5'"),
    ],
)
def test_a_space_inside_a_list_entry_is_refused_naming_the_entry(capsys, sqlite_url, args, entry):
    code, out, err = run(capsys, sqlite_url, *args)
    assert (code, out) == (2, "")
    assert (
        err == f"vkscraper: error: {entry} has a space inside: separate references with commas\n"
    )
    assert run(capsys, sqlite_url, "task", "list")[1] == "no tasks\n"
    assert run(capsys, sqlite_url, "groups", "list")[1] == "no groups\n"


@pytest.mark.integration
@pytest.mark.parametrize(
    "args",
    [
        ["task", "show", "42"],
        ["task", "watch", "42"],
        ["export", "42"],
        ["export", "42", "--out", "x"],
    ],
)
def test_every_command_taking_a_task_id_says_a_missing_task_alike(tmp_path, args):
    """One wording and one status (2, bad input, as docs/reference/cli.md says) for "no such
    task", whichever command is given the id."""
    result = run_process("--database-url", f"sqlite:///{tmp_path / 'x.sqlite3'}", *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "vkscraper: error: task 42 does not exist\n"


def test_task_list_has_a_header_and_the_last_run(capsys, sqlite_url):
    """Columns under a header row; the time shown is when the latest run started (not when the
    task was created), and how long it took."""
    run(capsys, sqlite_url, "migrate")
    with open_store(sqlite_url) as store:
        never = store.create_task([1])
        ran = store.create_task([1, 2])
        store.begin_run(ran)
        store.finish_task(ran)
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        db.execute(
            "UPDATE tasks SET created_at = '2020-01-02T03:04:05+00:00', "
            "started_at = '2026-05-01T10:00:00+00:00', "
            "finished_at = '2026-05-01T11:02:03+00:00' WHERE id = ?",
            (ran,),
        )
    code, out, _ = run(capsys, sqlite_url, "task", "list")
    assert code == 0
    assert out.splitlines() == [
        "ID  STATUS     LAST RUN (UTC)          TOOK  GROUPS  POSTS  COMMENTS  ERRORS",
        f" {ran}  completed  2026-05-01 10:00:00  1:02:03     0/2      0         0       0",
        f" {never}  created    never                      -     0/1      0         0       0",
    ]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgresql://postgres:hunter2@127.0.0.1:1/x", "PostgreSQL at 127.0.0.1:1/x"),
        ("oracle://scott:hunter2@db/x", "unsupported DATABASE_URL"),
    ],
)
def test_bad_database_url_one_line_exit_1(url, needle):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url}
    result = run_process("groups", "list", env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vkscraper: ") and needle in lines[0]
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_store_line_only_with_verbose(pg_url):
    """The store's INFO line ("using … store") is for crawl logs; the CLI prints it with -v."""
    result = run_process("--database-url", pg_url, "task", "list")
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("no tasks\n", "")
    result = run_process("--database-url", pg_url, "-v", "task", "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "no tasks\n"
    assert f"INFO vkscraper.store: using PostgreSQL store {pg_url}\n" in result.stderr
    result = run_process("--database-url", pg_url, "-v", "-q", "task", "list")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


# main() with a store that logs one line per level as it migrates (every command migrates).
_LEVEL_PROBE = """
import logging, sys
from vkscraper.cli.main import main
from vkscraper.store import Store
real = Store.migrate
def migrate(self):
    log = logging.getLogger("vkscraper.store")
    log.warning("probe warning")
    log.error("probe error")
    return real(self)
Store.migrate = migrate
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.integration
@pytest.mark.parametrize(
    ("flag", "levels"),
    [(None, ["WARNING", "ERROR"]), ("-q", ["ERROR"]), ("-v", ["INFO", "WARNING", "ERROR"])],
)
def test_log_levels(sqlite_url, flag, levels):
    args = [flag] if flag else []
    result = subprocess.run(
        [sys.executable, "-c", _LEVEL_PROBE, *args, "--database-url", sqlite_url, "task", "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "no tasks\n"), result.stderr
    seen = [line.split()[0] for line in result.stderr.splitlines()]
    assert sorted(set(seen)) == sorted(levels), result.stderr


def test_a_worker_refuses_an_s_option_without_a_value(capsys, pg_url):
    code, _, err = run(capsys, pg_url, "worker", "-s", "VK_EXECUTE")
    assert (code, err) == (2, "vkscraper: error: -s takes NAME=VALUE, got 'VK_EXECUTE'\n")


def test_a_worker_uses_the_database_its_s_setting_names(capsys, tmp_path, pg_url, monkeypatch):
    """``worker -s DATABASE_URL=postgresql://…`` with none in the environment: the worker's
    checks use that database (no SQLite file made, no "needs PostgreSQL" refusal)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # where the default SQLite file would be made
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    args = ["-q", "worker", "-s", f"DATABASE_URL={pg_url}", "-s", "VK_POSTS_PER_GROUP=500"]
    code = main(args)  # refused by the worker's own check of the settings: nothing starts
    err = capsys.readouterr().err
    assert (code, "VK_POSTS_PER_GROUP must be between" in err) == (2, True), err
    assert not list(tmp_path.iterdir())


def test_a_worker_checks_the_redis_its_s_setting_names(capsys, pg_url, monkeypatch):
    """``worker -s REDIS_URL=…`` is the Redis the worker uses (vkscraper.connections: the
    value given for the run, then the environment): its check before starting asks that one,
    not the environment's. The settings are refused here (nothing starts), after Redis."""
    refused = ["-s", "VK_POSTS_PER_GROUP=500"]  # the worker's own check stops it
    reachable, unreachable = "redis://127.0.0.1:6379/0", "redis://127.0.0.1:1/0"
    monkeypatch.delenv("REDIS_URL", raising=False)
    code, _, err = run(capsys, pg_url, "worker", "-s", f"REDIS_URL={reachable}", *refused)
    assert (code, "VK_POSTS_PER_GROUP must be between" in err) == (2, True), err
    monkeypatch.setenv("REDIS_URL", unreachable)
    code, _, err = run(capsys, pg_url, "worker", "-s", f"REDIS_URL={reachable}", *refused)
    assert (code, "VK_POSTS_PER_GROUP must be between" in err) == (2, True), err
    monkeypatch.setenv("REDIS_URL", reachable)
    code, _, err = run(capsys, pg_url, "worker", "-s", f"REDIS_URL={unreachable}", *refused)
    assert code == 1 and "127.0.0.1:1" in err and "unreachable" in err, err
