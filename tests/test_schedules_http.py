"""Schedules over HTTP: ``/api/schedules…`` of a real scrapyd (``tests/helpers/scrapyd.py``)
on PostgreSQL and SQLite. A schedule is added, listed, shown with its runs and last task,
paused, resumed and removed; a bad one is refused with a 400 naming the problem and nothing
stored; the token is never accepted nor shown. The runner that starts the tasks is tested
elsewhere: the schedules here are due hours from now."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from testkit.pg import temporary_database
from tests.helpers.crawl import TOKEN
from tests.helpers.scrapyd import Scrapyd
from vkscraper.store import open_store

pytestmark = pytest.mark.integration

HOURLY = {"name": "hourly", "groups": [10, "apiclub"], "every": "1h",
          "settings": {"LOG_LEVEL": "INFO", "VK_POSTS_PER_GROUP": 5}}  # fmt: skip
NIGHTLY = {"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Moscow"}


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory, pg_admin_url):
    with temporary_database(pg_admin_url, "vksched") as url:
        work = tmp_path_factory.mktemp("scrapyd-sched-pg")
        with Scrapyd(work, database_url=url, token=TOKEN, poll_interval=3600) as s:
            s.database_url = url
            yield s


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("scrapyd-sched-sqlite")
    with Scrapyd(work, database_url="", token=TOKEN, poll_interval=3600) as s:
        s.database_url = f"sqlite:///{work / 'vkscraper.sqlite3'}"
        yield s


@pytest.fixture(params=["postgresql", "sqlite"])
def server(request):
    return request.getfixturevalue(
        "pg_server" if request.param == "postgresql" else "sqlite_server"
    )


def send(
    url: str, method: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str | None]:
    """``(status, Allow header)`` of a request the test builds itself."""
    request = urllib.request.Request(url, body, headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Allow"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Allow"]


def schedule_ids(server: Scrapyd) -> list[int]:
    status, answer = server.call("GET", "/api/schedules")
    assert status == 200, answer
    return [s["scheduleId"] for s in answer["schedules"]]


def test_a_schedule_is_added_listed_shown_paused_resumed_and_removed(server):
    before = datetime.now(UTC)
    status, answer = server.call("POST", "/api/schedules", json_body=HOURLY)
    assert status == 200, answer
    hourly = answer["schedule"]
    assert hourly["name"] == "hourly" and hourly["groups"] == [10, "apiclub"]
    assert (hourly["everySeconds"], hourly["cron"], hourly["timezone"]) == (3600, None, "UTC")
    assert hourly["settings"] == {"LOG_LEVEL": "INFO", "VK_POSTS_PER_GROUP": "5"}
    assert not hourly["paused"] and hourly["skippedInARow"] == 0 and hourly["lastTask"] is None
    next_run = datetime.fromisoformat(hourly["nextRunAt"])
    assert before + timedelta(minutes=59) < next_run < before + timedelta(minutes=61)

    status, answer = server.call("POST", "/api/schedules", json_body=NIGHTLY)
    assert status == 200, answer
    nightly = answer["schedule"]
    assert nightly["groups"] is None  # the active groups at each run
    assert (nightly["everySeconds"], nightly["cron"]) == (None, "30 2 * * *")
    assert datetime.fromisoformat(nightly["nextRunAt"]).astimezone(UTC).hour == 23  # 02:30 MSK

    sid = hourly["scheduleId"]
    assert {sid, nightly["scheduleId"]} <= set(schedule_ids(server))
    status, answer = server.call("GET", f"/api/schedules/{sid}")
    assert status == 200, answer
    assert answer["schedule"]["runs"] == []
    assert {k: v for k, v in answer["schedule"].items() if k != "runs"} == hourly

    status, answer = server.call("POST", f"/api/schedules/{sid}/pause")
    assert status == 200 and answer["schedule"]["paused"], answer
    status, answer = server.call("GET", f"/api/schedules/{sid}")
    assert answer["schedule"]["paused"]
    status, answer = server.call("POST", f"/api/schedules/{sid}/resume")
    assert status == 200 and not answer["schedule"]["paused"], answer

    for path in (f"/api/schedules/{sid}", f"/api/schedules/{nightly['scheduleId']}"):
        status, answer = server.call("DELETE", path)
        assert status == 200 and answer == {"status": "ok", "scheduleId": int(path.split("/")[-1])}
        assert server.call("GET", path)[0] == 404
        assert server.call("DELETE", path)[0] == 404
    assert sid not in schedule_ids(server)


def test_a_schedule_shows_its_runs_and_its_last_tasks_status(pg_server):
    status, answer = pg_server.call("POST", "/api/schedules", json_body=HOURLY)
    sid = answer["schedule"]["scheduleId"]
    with open_store(pg_server.database_url) as store:
        first, last = store.create_task([10]), store.create_task([10])
        store.set_job(last, "0123456789abcdef0123456789abcdef")  # a job this scrapyd never had
    due = datetime(2026, 1, 1, 12, tzinfo=UTC)
    runs = [
        (due, "started", first, None),
        (due + timedelta(hours=1), "skipped", None, "skipped, still running"),
        (due + timedelta(hours=2), "started", last, None),
    ]
    import psycopg2

    with psycopg2.connect(pg_server.database_url) as conn, conn.cursor() as cur:
        for when, outcome, task, message in runs:
            cur.execute(
                "INSERT INTO schedule_runs (schedule_id, due_at, outcome, task_id, message) "
                "VALUES (%s, %s, %s, %s, %s)",
                (sid, when, outcome, task, message),
            )
        cur.execute("UPDATE schedules SET last_task_id = %s WHERE id = %s", (last, sid))
    conn.close()

    status, answer = pg_server.call("GET", f"/api/schedules/{sid}")
    assert status == 200, answer
    shown = answer["schedule"]
    assert shown["lastTask"] == {
        "taskId": last,
        "status": "created",
        "job": {"jobid": "0123456789abcdef0123456789abcdef", "state": "unknown"},
    }
    assert [(r["outcome"], r["taskId"], r["message"]) for r in shown["runs"]] == [
        ("started", last, None),
        ("skipped", None, "skipped, still running"),
        ("started", first, None),
    ]  # newest first
    assert shown["runs"][0]["dueAt"] == "2026-01-01T14:00:00Z"
    status, answer = pg_server.call("GET", f"/api/schedules/{sid}?limit=1")
    assert [r["taskId"] for r in answer["schedule"]["runs"]] == [last]
    (listed,) = [s for s in pg_server.call("GET", "/api/schedules")[1]["schedules"]
                 if s["scheduleId"] == sid]  # fmt: skip
    assert listed["lastTask"] == shown["lastTask"] and "runs" not in listed
    pg_server.call("DELETE", f"/api/schedules/{sid}")


def test_bad_schedules_are_refused_naming_the_problem_and_nothing_is_stored(pg_server):
    kept = schedule_ids(pg_server)
    refused = [
        ({**HOURLY, "cron": "0 * * * *"}, "exactly one of every"),
        ({"name": "x"}, "exactly one of every"),
        ({"every": "fortnightly"}, "every: 'fortnightly' is not an interval"),
        ({"every": 0}, "every: 0 s is out of range"),
        ({"every": True}, "'every' must be"),
        ({"cron": "61 * * * *"}, "cron: '61 * * * *' is not a cron expression"),
        ({"cron": "0 0 31 2 *"}, "cron"),  # 31 February: never due
        ({"cron": "0 * * * * *"}, "five fields"),
        ({**NIGHTLY, "timezone": "Mars/Olympus"}, "timezone: 'Mars/Olympus'"),
        ({**NIGHTLY, "timezone": "Europe"}, "timezone: 'Europe'"),
        ({**HOURLY, "groups": "10,11"}, "'groups' must be a list"),
        ({**HOURLY, "groups": []}, "groups: the list is empty"),
        ({**HOURLY, "groups": ["https://example.com/x"]}, "groups:"),
        ({**HOURLY, "settings": {"LOG_FILE": "/tmp/x"}}, "setting LOG_FILE cannot be sent"),
        ({**HOURLY, "settings": {"VK_ACCESS_TOKEN": "x"}}, "VK_ACCESS_TOKEN cannot be sent"),
        ({**HOURLY, "settings": ["LOG_LEVEL=INFO"]}, "'settings' must be an object"),
        ({**HOURLY, "name": "a" * 201}, "name: longer than 200"),
        ({**HOURLY, "name": "a\x00b"}, "'name' holds a control character"),
        ({**HOURLY, "name": "\ud800"}, "lone surrogate"),
        ({**HOURLY, "name": 5}, "'name' must be a string"),
        ({**HOURLY, "paused": True}, "unknown field(s): paused"),
    ]
    for body, reason in refused:
        status, answer = pg_server.call("POST", "/api/schedules", json_body=body)
        assert status == 400 and reason in answer["message"], (body, answer)
    status, answer = pg_server.call(
        "POST", "/api/schedules", json_body={**HOURLY, "groups": list(range(1, 50_002))}
    )
    assert status == 413, answer
    for body, kind in ((b"every=60", "application/x-www-form-urlencoded"), (b"[1]", "")):
        headers = {"Content-Type": kind or "application/json"}
        status, _ = send(pg_server.url + "/api/schedules", "POST", body, headers)
        assert status == (415 if kind else 400), body
    assert schedule_ids(pg_server) == kept


def test_the_token_is_never_accepted_nor_echoed(pg_server):
    kept = schedule_ids(pg_server)
    for body in (
        {**HOURLY, "name": f"mine {TOKEN}"},
        {**HOURLY, "settings": {"LOG_LEVEL": TOKEN}},
        {**NIGHTLY, "cron": TOKEN},  # a malformed cron would be echoed in its refusal
        {**NIGHTLY, "timezone": TOKEN},
        {**HOURLY, "every": TOKEN},
        {**HOURLY, "groups": [TOKEN]},
    ):
        status, answer = pg_server.call("POST", "/api/schedules", json_body=body)
        text = json.dumps(answer)
        assert status == 400, answer
        assert "access token" in answer["message"], answer
        assert TOKEN not in text and TOKEN[:16] not in text
    assert schedule_ids(pg_server) == kept


def test_routes_methods_ids_and_origins(pg_server):
    status, answer = pg_server.call("POST", "/api/schedules", json_body=HOURLY)
    sid = answer["schedule"]["scheduleId"]
    for path in ("/api/schedules/999999", "/api/schedules/999999/pause"):
        method = "GET" if path.endswith("999") else "POST"
        status, answer = pg_server.call(method, path)
        assert status == 404 and answer["message"] == "schedule 999999 does not exist"
    assert pg_server.call("POST", "/api/schedules/999999/resume")[0] == 404
    assert pg_server.call("GET", "/api/schedules/x")[0] == 400
    assert pg_server.call("POST", "/api/schedules/-1/pause")[0] == 400
    assert pg_server.call("GET", f"/api/schedules/{sid}?limit=0")[0] == 400
    assert pg_server.call("GET", "/api/schedules?limit=5")[0] == 400
    assert pg_server.call("GET", f"/api/schedules/{sid}/nothing")[0] == 404
    for method, path, allow in (
        ("PUT", "/api/schedules", "GET, HEAD, POST"),
        ("POST", f"/api/schedules/{sid}", "GET, HEAD, DELETE"),
        ("GET", f"/api/schedules/{sid}/pause", "POST"),
        ("DELETE", f"/api/schedules/{sid}/resume", "POST"),
    ):
        assert send(pg_server.url + path, method) == (405, allow), (method, path)
    # A page of another site cannot pause, resume, add or remove one.
    for method, path, body in (
        ("POST", f"/api/schedules/{sid}/pause", b""),
        ("POST", "/api/schedules", json.dumps(HOURLY).encode()),
        ("DELETE", f"/api/schedules/{sid}", None),
    ):
        headers = {"Origin": "http://evil.example", "Content-Type": "application/json"}
        assert send(pg_server.url + path, method, body, headers)[0] == 403, (method, path)
    status, answer = pg_server.call("GET", f"/api/schedules/{sid}")
    assert status == 200 and not answer["schedule"]["paused"]
    pg_server.call("DELETE", f"/api/schedules/{sid}")


def test_no_schedule_row_holds_the_token(pg_server):
    pg_server.call("POST", "/api/schedules", json_body=HOURLY)
    import psycopg2

    with psycopg2.connect(pg_server.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT s::text FROM schedules s UNION ALL SELECT r::text FROM schedule_runs r"
        )
        rows = [r[0] for r in cur.fetchall()]
    conn.close()
    assert rows and not [r for r in rows if TOKEN in r]


def test_distributed_mode_refuses_a_schedules_settings(tmp_path, pg_admin_url):
    with (
        temporary_database(pg_admin_url, "vkscheddist") as url,
        Scrapyd(tmp_path, database_url=url, token=TOKEN, poll_interval=3600,
                env={"VK_DISTRIBUTED": "1"}) as server,
    ):  # fmt: skip
        status, answer = server.call("POST", "/api/schedules", json_body=HOURLY)
        assert status == 400 and "distributed mode" in answer["message"], answer
        assert schedule_ids(server) == []
        status, answer = server.call(
            "POST",
            "/api/schedules",
            json_body={k: v for k, v in HOURLY.items() if k != "settings"},
        )
        assert status == 200 and answer["schedule"]["settings"] == {}, answer
