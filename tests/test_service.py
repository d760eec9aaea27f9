"""The HTTP service as users run it: a real scrapyd process (``tests/helpers/scrapyd.py``,
configured by the repository's ``scrapyd.conf``), the emulator, real PostgreSQL and SQLite.

Collect → the task runs as a scrapyd job → task.json / the REST routes follow it → every
results page together equals the task's rows in the database; tasks queue one behind the
other inside the rate limit; cancel leaves a resumable task; bad requests get 4xx JSON."""

from __future__ import annotations

import csv
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest

from fakevk import FakeVk, expected_rows, generate_dataset
from testkit.pg import admin_execute, temporary_database
from tests.helpers.crawl import TOKEN, small_dataset
from tests.helpers.scrapyd import REPO, Scrapyd
from vkscraper.items import VkComment, VkPost
from vkscraper.store import open_store
from vkscraper.store.export import json_record

pytestmark = pytest.mark.integration

FAST = [("setting", "VK_REQUESTS_PER_SECOND=1000"), ("setting", "VK_BACKOFF_BASE=0")]
GROUPS = "10,threeposts,https://vk.com/pinnedold"


@pytest.fixture(scope="module")
def fakevk():
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        yield vk


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory, pg_admin_url):
    with temporary_database(pg_admin_url, "vksvc") as url:
        with Scrapyd(tmp_path_factory.mktemp("scrapyd-pg"), database_url=url, token=TOKEN) as s:
            s.database_url = url
            yield s


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("scrapyd-sqlite")
    # The default store of `make serve`: the SQLite file in scrapyd's directory, which the
    # crawl processes (started there) share.
    with Scrapyd(work, database_url="", token=TOKEN) as s:
        s.database_url = f"sqlite:///{work / 'vkscraper.sqlite3'}"
        yield s


@pytest.fixture(params=["postgresql", "sqlite"])
def server(request):
    return request.getfixturevalue(
        "pg_server" if request.param == "postgresql" else "sqlite_server"
    )


def db_rows(database_url: str, task_id: int, kind: str) -> list[dict]:
    with open_store(database_url) as store:
        rows = store.task_results(task_id, kind, limit=100_000)  # type: ignore[arg-type]
    return [json_record(r, kind) for r in rows]  # type: ignore[arg-type]


def all_pages(server: Scrapyd, path: str, limit: int) -> tuple[list[dict], int]:
    rows: list[dict] = []
    after, pages = 0, 0
    while True:
        sep = "&" if "?" in path else "?"
        status, page = server.call("GET", f"{path}{sep}limit={limit}&after={after}")
        assert status == 200, page
        assert all(r["id"] > after for r in page["rows"]), "a page repeats a row"
        rows += page["rows"]
        pages += 1
        assert pages <= 10_000, "paging does not end"
        if not page["has_more"]:
            return rows, pages
        assert page["next_after"] > after
        after = page["next_after"]


def test_collect_runs_the_task_and_results_pages_equal_the_database(server, fakevk):
    status, answer = server.call(
        "POST", "/collect.json",
        data=[("groups", GROUPS), ("setting", f"VK_API_URL={fakevk.url}"), *FAST],
    )  # fmt: skip
    assert status == 200 and answer["status"] == "ok", answer
    task_id = answer["task_id"]
    task = server.wait_task(task_id)
    assert task["status"] == "completed", task
    assert task["job"] == {"jobid": answer["jobid"], "state": "finished"}
    assert task["progress"]["percent"] == 100.0
    posts_expected, comments_expected = expected_rows(small_dataset())
    assert task["counts"]["posts"] == len(posts_expected)
    assert task["counts"]["comments"] == len(comments_expected)
    assert task["counts"]["requests"] > 0 and task["timing"]["requests_per_s"] > 0
    assert [g["status"] for g in task["groups_detail"]] == ["done", "done", "done"]

    for kind, oracle, key, limit in (
        ("posts", posts_expected, "vk_post_id", 7),
        ("comments", comments_expected, "vk_comment_id", 2),
    ):
        path = f"/results.json?task_id={task_id}&kind={kind}"
        pages, n = all_pages(server, path, limit=limit)
        assert n >= 2, "small pages: the cursor must be exercised"
        assert pages == db_rows(server.database_url, task_id, kind)
        assert sorted((r["owner_id"], r[key]) for r in pages) == sorted(
            (r["owner_id"], r[key]) for r in oracle
        )
        # The page's downloads stream the same rows, as `python -m vkscraper export` writes.
        status, text = server.call("GET", f"/tasks/{task_id}/{kind}.jsonl", raw=True)
        assert status == 200
        assert [json.loads(line) for line in text.splitlines()] == pages
        status, text = server.call("GET", f"/tasks/{task_id}/{kind}.csv", raw=True)
        assert status == 200
        table = list(csv.DictReader(io.StringIO(text)))
        assert [int(r["id"]) for r in table] == [r["id"] for r in pages]


def test_the_seed_rest_routes_run_a_task_the_same_way(pg_server, fakevk):
    status, answer = pg_server.call(
        "POST", "/api/tasks/collect",
        json_body={"groups": [10, "threeposts"], "settings": {"VK_API_URL": fakevk.url,
                   "VK_REQUESTS_PER_SECOND": "1000", "VK_BACKOFF_BASE": "0"}},
    )  # fmt: skip
    assert status == 200 and set(answer) >= {"taskId", "jobId"}, answer
    task_id = answer["taskId"]
    pg_server.wait_task(task_id)
    status, task = pg_server.call("GET", f"/api/tasks/{task_id}")
    assert status == 200 and task["status"] == "completed" and task["task_id"] == task_id
    status, listing = pg_server.call("GET", "/api/tasks?limit=5")
    assert task_id in [t["task_id"] for t in listing["tasks"]]
    for kind in ("posts", "comments"):
        rows, _ = all_pages(pg_server, f"/api/tasks/{task_id}/results?kind={kind}", limit=5)
        assert rows == db_rows(pg_server.database_url, task_id, kind)
        assert len(rows) == task["counts"][kind]


def test_the_operators_vk_api_url_is_the_default_of_every_task(tmp_path, fakevk):
    """Issue 19: scrapyd started with VK_API_URL=<emulator> in its environment (and nothing
    in VKSCRAPER_API_URLS): a collect that sends no settings crawls the emulator."""
    env = {"VK_API_URL": fakevk.url, "VKSCRAPER_API_URLS": ""}
    with Scrapyd(tmp_path / "scrapyd", database_url="", token=TOKEN, env=env) as server:
        status, answer = server.call(
            "POST", "/api/tasks/collect", json_body={"groups": [10, "threeposts"]}
        )
        assert status == 200, answer
        task = server.wait_task(answer["taskId"])
        assert task["status"] == "completed", (task, server.job_logs()[-3000:])
        assert task["counts"]["posts"] > 0 and task["counts"]["comments"] > 0
        # a client may still name it (it is trusted), but no other local URL
        status, answer = server.call(
            "POST", "/api/tasks/collect",
            json_body={"groups": [10], "settings": {"VK_API_URL": "http://127.0.0.1:1/method/"}},
        )  # fmt: skip
        assert status == 400 and "VK_API_URL" in answer["message"], answer


@pytest.mark.rate
def test_two_tasks_posted_together_run_one_after_the_other_within_the_rate(pg_server):
    with FakeVk(small_dataset(), tokens=[TOKEN], rate_limit=3) as vk:
        ids = []
        for groups in ("10,11,12", "pinnedrecent,threeposts"):
            status, answer = pg_server.call(
                "POST", "/collect.json",
                data=[("groups", groups), ("setting", f"VK_API_URL={vk.url}")],
            )  # fmt: skip
            assert status == 200, answer
            ids.append(answer["task_id"])
        tasks = [pg_server.wait_task(i) for i in ids]
        log = vk.requests()
    assert [t["status"] for t in tasks] == ["completed", "completed"]
    with open_store(pg_server.database_url) as store:
        first, second = (store.get_task(i) for i in ids)
    assert first.finished_at <= second.started_at, "max_proc = 1: one crawl at a time"
    times = sorted(r["t"] for r in log)
    busiest = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    assert busiest <= 3, f"{busiest} requests in one second on one token"
    assert not [r for r in log if r["outcome"] == "error:6"]
    assert len(log) == sum(t["counts"]["requests"] for t in tasks)


@pytest.mark.rate
def test_cancel_a_running_task_then_collect_it_again_resumes_it(pg_server):
    data = generate_dataset(seed=7, groups=2, posts_per_group=10, min_comments=150,
                            max_comments=250, max_replies=5)  # fmt: skip
    for group in data["groups"]:
        for post in group["posts"]:
            post["comments_closed"] = False  # the generator closes one post's comments
    posts_expected, comments_expected = expected_rows(data, nul_replacement="")
    with FakeVk(data, tokens=[TOKEN], rate_limit=0) as vk:
        groups = ",".join(str(g["id"]) for g in data["groups"][:2])
        # One call per execute: as slow as plain calls, so the crawl (at twice VK's pace: the
        # test is not about the rate) runs long enough to be cancelled while it writes.
        settings = [("setting", f"VK_API_URL={vk.url}"), ("setting", "VK_EXECUTE_CALLS=1"),
                    ("setting", "VK_REQUESTS_PER_SECOND=6")]  # fmt: skip
        _, first = pg_server.call("POST", "/collect.json", data=[("groups", groups), *settings])
        # A second task behind it is removed from the queue without ever starting.
        _, queued = pg_server.call("POST", "/collect.json", data=[("groups", "1"), *settings])
        task_id = first["task_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, answer = pg_server.call("GET", f"/task.json?task_id={task_id}")
            if answer["task"]["counts"]["comments"] > 0:
                break
            time.sleep(0.3)
        # Paged while the crawl writes: ids only grow, no row twice.
        running, _ = all_pages(pg_server, f"/results.json?task_id={task_id}&kind=comments", 50)
        ids = [r["id"] for r in running]
        assert ids == sorted(set(ids)) and ids
        status, cancelled = pg_server.call(
            "POST", "/cancel-task.json", data={"task_id": queued["task_id"]}
        )
        assert status == 200 and cancelled["prevstate"] == "pending", cancelled
        status, cancelled = pg_server.call("POST", "/cancel-task.json", data={"task_id": task_id})
        assert status == 200 and cancelled["prevstate"] == "running", cancelled
        # A second SIGINT would force an unclean stop: refused while the job winds down.
        status, twice = pg_server.call("POST", "/cancel-task.json", data={"task_id": task_id})
        assert status == 409 and "already stopping" in twice["message"], twice
        stopped = pg_server.wait_task(task_id, until=("in_progress",))
        assert stopped["resumable"] and stopped["job"]["state"] == "finished"
        assert 0 < stopped["counts"]["comments"] < len(comments_expected)
        status, again = pg_server.call("POST", "/cancel-task.json", data={"task_id": task_id})
        assert status == 409, again

        # No settings given: the run gets those of the task's last job (the emulator's URL).
        status, resumed = pg_server.call("POST", "/collect.json", data={"task_id": task_id})
        assert status == 200 and resumed["task_id"] == task_id, resumed
        status, twice = pg_server.call(
            "POST", "/collect.json", data=[("task_id", str(task_id)), *settings]
        )
        assert status == 409, "a task already queued is not queued twice"
        done = pg_server.wait_task(task_id, timeout=180)
    assert done["status"] == "completed", done["metrics"]["errors"]
    assert done["counts"]["comments"] == len(comments_expected)
    rows = db_rows(pg_server.database_url, task_id, "comments")
    keys = [(r["owner_id"], r["vk_comment_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(comments_expected)
    assert len(db_rows(pg_server.database_url, task_id, "posts")) == len(posts_expected)
    _, never = pg_server.call("GET", f"/task.json?task_id={queued['task_id']}")
    assert never["task"]["status"] == "created" and never["task"]["resumable"]


def create_task(server: Scrapyd, groups: list) -> int:
    with open_store(server.database_url) as store:
        store.migrate()
        return store.create_task(groups)


def count_tasks(server: Scrapyd) -> int:
    with open_store(server.database_url) as store:
        store.migrate()
        return len(store.list_tasks(10_000))


def refused_setting(pair: str, words: str) -> tuple:
    """A collect of group 10 with one ``setting=`` the service must refuse (400)."""
    return ("POST", "/collect.json", {"groups": "10", "setting": pair}, 400, words)


BAD_REQUESTS = [
    # method, path, form data or JSON body, status, words of the message
    ("POST", "/collect.json", {"groups": "10,[oops"}, 400, "[oops"),
    ("POST", "/collect.json", {"groups": " , "}, 400, "names no community"),
    # Comma-separated: a space inside an entry refuses the list, naming the whole entry.
    ("POST", "/collect.json", {"groups": "group24983,bad ref!"}, 400, "'bad ref!' has a space"),
    ("POST", "/collect.json", {"groups": "10 11"}, 400, "'10 11' has a space inside"),
    ("POST", "/collect.json", {"groups": "10", "spider": "x"}, 400, "unknown parameter"),
    refused_setting("VK_ACCESS_TOKEN=abc", "VK_ACCESS_TOKEN"),
    refused_setting("VK_COMMENTS_PAGE_SIZE=500", "VK_COMMENTS_PAGE_SIZE"),
    refused_setting("VK_NO_SUCH=1", "VK_NO_SUCH"),
    refused_setting("novalue", "NAME=value"),
    # What could run code, write files or send the token elsewhere is not a client's choice.
    refused_setting("LOG_FILE=/tmp/x", "LOG_FILE cannot be sent"),
    refused_setting("ITEM_PIPELINES={}", "ITEM_PIPELINES cannot be sent"),
    refused_setting("VK_API_URL=http://evil.example/", "VK_API_URL: not an allowed URL"),
    # The shared limit and the workers' settings are the operator's (two processes on one
    # token would add up past VK's limit without the shared one).
    refused_setting("VK_SHARED_RATE_LIMIT=False", "VK_SHARED_RATE_LIMIT cannot be sent"),
    refused_setting("VK_WORKER_GROUPS=5", "VK_WORKER_GROUPS cannot be sent"),
    # Where alerts go (a webhook URL is a secret) and when, are the operator's.
    refused_setting("VK_ALERT_WEBHOOKS=http://evil.example/", "VK_ALERT_WEBHOOKS cannot be sent"),
    refused_setting("VK_ALERT_ON=completed", "VK_ALERT_ON cannot be sent"),
    # A NUL in a value would stop scrapyd's launcher for good (spawnProcess refuses it).
    refused_setting("VK_BACKOFF_BASE=1\x00", "control character"),
    ("POST", "/collect.json", [("groups", "10"), ("groups", "11")], 400, "more than once"),
    (
        "POST",
        "/collect.json",
        [("groups", "10"), ("setting", "VK_BACKOFF_BASE=0"), ("setting", "VK_BACKOFF_BASE=1")],
        400,
        "given twice",
    ),
    ("GET", "/tasks.json/x", None, 404, "no such route"),
    ("POST", "/collect.json", {"task_id": "999999"}, 404, "task 999999"),
    ("POST", "/collect.json", {"task_id": "abc"}, 400, "whole number"),
    ("GET", "/collect.json?groups=10", None, 405, "GET is not allowed"),
    ("GET", "/task.json", None, 400, "'task_id' parameter is required"),
    ("GET", "/task.json?task_id=999999", None, 404, "task 999999 does not exist"),
    ("GET", "/task.json?task_id=-1", None, 400, "whole number"),
    ("POST", "/task.json", {"task_id": "1"}, 405, "use GET"),
    ("GET", "/tasks.json?limit=0", None, 400, "'limit'"),
    ("GET", "/results.json?task_id=1&kind=likes", None, 400, "'kind'"),
    ("GET", "/results.json?task_id=1&limit=5000", None, 400, "'limit'"),
    ("GET", "/results.json?kind=posts", None, 400, "'task_id'"),
    ("GET", "/results.json?task_id=999999", None, 404, "task 999999"),
    ("POST", "/cancel-task.json", {}, 400, "'task_id'"),
    ("POST", "/cancel-task.json", {"task_id": "999999"}, 404, "task 999999"),
    ("GET", "/cancel-task.json?task_id=1", None, 405, "use POST"),
    ("POST", "/api/tasks/collect", b"{not json", 400, "not valid JSON"),
    ("POST", "/api/tasks/collect", [10], 400, "JSON object"),
    (
        "POST",
        "/api/tasks/collect",
        {"groups": [10], "settings": {"VK_ALERT_SLACK_WEBHOOKS": "https://hooks.example/x"}},
        400,
        "VK_ALERT_SLACK_WEBHOOKS cannot be sent",
    ),
    ("POST", "/api/tasks/collect", {"groups": "10", "extra": 1}, 400, "extra"),
    ("POST", "/api/tasks/collect", {"groups": [{"id": 1}]}, 400, "'groups' must be a list"),
    ("POST", "/api/tasks/collect", {"groups": []}, 400, "names no community"),
    ("POST", "/api/tasks/collect", {"groups": [10, "a b"]}, 400, "'a b' has a space inside"),
    ("POST", "/api/tasks/collect", {"groups": [10], "settings": []}, 400, "must be an object"),
    (
        "POST",
        "/api/tasks/collect",
        {"groups": [10], "settings": {"VK_BACKOFF_BASE": {"a": 1}}},
        400,
        "string or number",
    ),
    ("POST", "/api/tasks/collect", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ("GET", "/api/tasks?foo=1", None, 400, "unknown parameter"),
    ("GET", "/api/tasks/collect", None, 405, "use POST"),
    ("GET", "/api/tasks/999999", None, 404, "task 999999"),
    ("GET", "/api/tasks/abc", None, 400, "whole number"),
    ("GET", "/api/nothing/here", None, 404, "no such route"),
    # An empty value is malformed, not the default.
    ("GET", "/results.json?task_id=1&kind=", None, 400, "'kind'"),
    ("GET", "/results.json?task_id=1&after=", None, 400, "'after'"),
    ("GET", "/results.json?task_id=1&limit=", None, 400, "'limit'"),
    ("GET", "/tasks.json?limit=", None, 400, "'limit'"),
    ("GET", "/api/tasks/1/results?after=&kind=", None, 400, "'kind'"),
    ("GET", "/api/tasks/1/results?after=", None, 400, "'after'"),
    # The REST body's types are those documented: a list and an integer.
    ("POST", "/api/tasks/collect", {"groups": "AAA"}, 400, "'groups' must be a list"),
    ("POST", "/api/tasks/collect", {"taskId": "1"}, 400, "'taskId' must be a whole number"),
    ("POST", "/api/tasks/collect", {"taskId": True}, 400, "'taskId' must be a whole number"),
    # 413: too many references (however short), or a body over 1 MiB.
    (
        "POST",
        "/collect.json",
        {"groups": ",".join(str(i) for i in range(1, 50_002))},
        413,
        "more than 50000 group references",
    ),
    ("POST", "/collect.json", {"groups": "1," * 600_000}, 413, "larger than 1 MiB"),
    (
        "POST",
        "/api/tasks/collect",
        {"groups": list(range(1, 50_002))},
        413,
        "more than 50000 group references",
    ),
    ("POST", "/api/tasks/collect", {"groups": ["1"] * 300_000}, 413, "larger than 1 MiB"),
]


@pytest.mark.parametrize(("method", "path", "payload", "code", "words"), BAD_REQUESTS)
def test_bad_requests_get_a_4xx_json_error_and_create_nothing(
    pg_server, method, path, payload, code, words
):
    before = count_tasks(pg_server)
    if isinstance(payload, bytes):
        status, answer = _raw_post(pg_server, path, payload)
    elif path.startswith("/api/") and payload is not None:
        status, answer = pg_server.call(method, path, json_body=payload)
    else:
        status, answer = pg_server.call(method, path, data=payload)
    assert status == code, answer
    assert isinstance(answer, dict) and answer["status"] == "error", answer
    assert words in answer["message"], answer["message"]
    assert "Traceback" not in answer["message"]
    assert count_tasks(pg_server) == before


def _raw_post(server: Scrapyd, path: str, body: bytes):
    request = urllib.request.Request(
        server.url + path, body, {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_cancel_of_a_task_without_a_job_is_a_conflict(pg_server):
    task_id = create_task(pg_server, [10])  # created by the CLI: never queued
    status, answer = pg_server.call("POST", "/cancel-task.json", data={"task_id": task_id})
    assert status == 409 and "no pending or running job" in answer["message"], answer


def test_a_form_body_on_the_rest_collect_is_415_not_a_parameter_error(pg_server):
    before = count_tasks(pg_server)
    request = urllib.request.Request(
        pg_server.url + "/api/tasks/collect", b"groups=10",
        {"Content-Type": "application/x-www-form-urlencoded"}, method="POST",
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    answer = json.loads(refused.value.read())
    assert refused.value.code == 415, answer
    assert "Content-Type: application/json" in answer["message"]
    assert count_tasks(pg_server) == before


def test_bad_group_references_are_echoed_truncated(pg_server):
    status, answer = pg_server.call("POST", "/collect.json", data={"groups": "x" * 500_000})
    assert status == 400 and "bad group reference" in answer["message"], answer
    assert len(answer["message"]) < 300, len(answer["message"])
    many = [f"bad[{i}" for i in range(5000)]
    status, answer = pg_server.call("POST", "/api/tasks/collect", json_body={"groups": many})
    assert status == 400 and "and 4990 more bad reference(s)" in answer["message"], answer
    assert len(answer["message"]) < 2000, len(answer["message"])


def test_head_on_get_routes_answers_like_get_without_a_body(pg_server):
    task_id = create_task(pg_server, [10])
    for path in (
        "/tasks.json",
        f"/task.json?task_id={task_id}",
        f"/results.json?task_id={task_id}",
        "/api/tasks",
        f"/api/tasks/{task_id}",
        f"/api/tasks/{task_id}/results",
    ):
        request = urllib.request.Request(pg_server.url + path, method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, path
            assert response.headers["Content-Type"].startswith("application/json"), path
            assert response.read() == b"", path
    status, answer = pg_server.call("HEAD", "/task.json")  # HEAD of a refusal: no body either
    assert status == 400 and answer == ""
    status, _ = pg_server.call("HEAD", "/collect.json")
    assert status == 405


def test_the_csv_download_neutralises_formulas(pg_server):
    task_id = create_task(pg_server, [10])
    when = datetime(2024, 5, 1, tzinfo=UTC)
    with open_store(pg_server.database_url) as store:
        store.begin_run(task_id)
        store.upsert_posts(task_id, [VkPost(vk_post_id=1, owner_id=-10, group_id=10,
                                            text="+1", date=when)])  # fmt: skip
        comment = VkComment(
            vk_comment_id=1, post_vk_id=1, owner_id=-10, parent_id=None, thread_count=0,
            author_id=5, author_name="@evil", text='=HYPERLINK("http://x")', date=when,
        )  # fmt: skip
        store.upsert_comments(task_id, [comment])
    status, text = pg_server.call("GET", f"/tasks/{task_id}/comments.csv", raw=True)
    assert status == 200
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["text"] == '\'=HYPERLINK("http://x")' and row["author_name"] == "'@evil"
    assert row["owner_id"] == "-10"
    status, text = pg_server.call("GET", f"/tasks/{task_id}/posts.csv", raw=True)
    assert next(csv.DictReader(io.StringIO(text)))["text"] == "'+1"


def test_a_task_without_a_known_job_says_so_in_every_view(pg_server):
    """``job.state`` is never null: ``none`` for a task that never had a job (the CLI made
    it), ``unknown`` for a job this scrapyd does not know (it restarted since)."""
    never = create_task(pg_server, [10])
    forgotten = create_task(pg_server, [11])
    with open_store(pg_server.database_url) as store:
        store.set_job(forgotten, "0123456789abcdef0123456789abcdef")  # a previous scrapyd's
    expected = {
        never: {"jobid": None, "state": "none"},
        forgotten: {"jobid": "0123456789abcdef0123456789abcdef", "state": "unknown"},
    }
    _, listed = pg_server.call("GET", "/tasks.json?limit=500")
    _, rest_listed = pg_server.call("GET", "/api/tasks?limit=500")
    for task_id, job in expected.items():
        _, one = pg_server.call("GET", f"/task.json?task_id={task_id}")
        _, rest_one = pg_server.call("GET", f"/api/tasks/{task_id}")
        views = [one["task"], rest_one]
        views += [t for t in listed["tasks"] + rest_listed["tasks"] if t["task_id"] == task_id]
        assert len(views) == 4
        for view in views:
            assert view["job"] == job and view["resumable"], view


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory, pg_admin_url):
    """A scrapyd that never polls its queue: every job it is given stays pending."""
    with temporary_database(pg_admin_url, "vkidle") as url:
        work = tmp_path_factory.mktemp("scrapyd-idle")
        with Scrapyd(work, database_url=url, token=TOKEN, poll_interval=3600) as s:
            s.database_url = url
            yield s


def test_a_job_cancelled_before_it_started_reads_unknown(idle_server):
    status, queued = idle_server.call("POST", "/collect.json", data={"groups": "10"})
    assert status == 200, queued
    _, task = idle_server.call("GET", f"/task.json?task_id={queued['task_id']}")
    assert task["task"]["job"] == {"jobid": queued["jobid"], "state": "pending"}
    status, cancelled = idle_server.call(
        "POST", "/cancel-task.json", data={"task_id": queued["task_id"]}
    )
    assert status == 200 and cancelled["prevstate"] == "pending", cancelled
    _, task = idle_server.call("GET", f"/task.json?task_id={queued['task_id']}")
    assert task["task"]["job"] == {"jobid": queued["jobid"], "state": "unknown"}
    assert task["task"]["resumable"]


def test_a_collect_of_50000_groups_answers_within_seconds(idle_server):
    """Group lists are deduplicated in linear time (a list scan took 18 s for 50,000)."""
    names = ",".join(f"name{i}" for i in range(50_000))
    started = time.monotonic()
    status, answer = idle_server.call("POST", "/collect.json", data={"groups": names})
    took = time.monotonic() - started
    assert status == 200, answer
    assert took < 5, f"collect of 50,000 groups took {took:.1f} s"
    started = time.monotonic()
    _, task = idle_server.call("GET", f"/task.json?task_id={answer['task_id']}")
    assert task["task"]["counts"]["groups_total"] == 50_000
    assert time.monotonic() - started < 5


def test_the_database_down_is_a_503_with_a_clear_message(tmp_path):
    dead = "postgresql://postgres@127.0.0.1:1/nothing"
    with Scrapyd(tmp_path, database_url=dead, token=TOKEN) as server:
        for method, path, data in (
            ("GET", "/task.json?task_id=1", None),
            ("POST", "/collect.json", {"groups": "10"}),
            ("GET", "/api/tasks/1", None),
        ):
            status, answer = server.call(method, path, data=data)
            assert status == 503, answer
            assert answer["status"] == "error"
            assert answer["message"].startswith("the database is unavailable: PostgreSQL")
            assert "127.0.0.1:1" in answer["message"]
        status, page = server.call("GET", "/tasks", raw=True)
        assert status == 503 and "the database is unavailable" in page
        assert "Traceback" not in page
        _, jobs = server.call("GET", "/listjobs.json?project=vkscraper")
        assert jobs["pending"] == [] and jobs["running"] == [], "nothing was queued"


def test_a_database_that_never_answers_costs_one_timeout_not_one_per_request(tmp_path):
    """A server that accepts connections and never answers: requests do not queue behind
    one connect timeout each (12 parallel requests took 100-120 s); after a failed open
    the service answers 503 at once for a few seconds."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])  # kept open, never written to
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    port = silent.getsockname()[1]
    answers: list[tuple[int, str]] = []
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/nothing?connect_timeout=3"
        with Scrapyd(tmp_path, database_url=url, token=TOKEN) as server:

            def ask() -> None:
                status, answer = server.call("GET", "/tasks.json", timeout=120)
                answers.append((status, answer["message"]))

            started = time.monotonic()
            askers = [threading.Thread(target=ask) for _ in range(12)]
            for t in askers:
                t.start()
            for t in askers:
                t.join(120)
            took = time.monotonic() - started
            assert server.call("GET", "/daemonstatus.json")[0] == 200
    finally:
        stop.set()
        acceptor.join(5)
        silent.close()
        for conn in held:
            conn.close()
    assert len(answers) == 12 and {a[0] for a in answers} == {503}, answers
    assert all(a[1].startswith("the database is unavailable: PostgreSQL") for a in answers)
    assert took < 10, f"12 requests took {took:.1f} s behind a 3 s connect timeout"


def test_with_credentials_configured_every_route_needs_them(tmp_path, pg_admin_url):
    with (
        temporary_database(pg_admin_url, "vksvc") as url,
        Scrapyd(tmp_path, database_url=url, token=TOKEN, auth=("ops", "s3cret")) as server,
    ):
        for method, path in (
            ("GET", "/tasks.json"),
            ("POST", "/collect.json"),
            ("GET", "/api/tasks"),
            ("GET", "/tasks"),
            ("GET", "/tasks/static/tasks.js"),
        ):
            status, _ = server.call(method, path, data={} if method == "POST" else None,
                                    auth=None)  # fmt: skip
            assert status == 401, path
            status, _ = server.call(method, path, auth=("ops", "wrong"),
                                    data={} if method == "POST" else None)  # fmt: skip
            assert status == 401, path
        assert server.call("GET", "/tasks.json")[0] == 200
        assert server.call("GET", "/tasks", raw=True)[0] == 200


def test_the_token_never_reaches_the_client_or_scrapyd_logs(pg_server, fakevk):
    status, answer = pg_server.call(
        "POST", "/collect.json", data=[("groups", "11"), ("setting", f"VK_API_URL={fakevk.url}"),
                                       *FAST],
    )  # fmt: skip
    task = pg_server.wait_task(answer["task_id"])
    pages = [
        pg_server.call("GET", f"/task.json?task_id={task['task_id']}", raw=True)[1],
        pg_server.call("GET", "/tasks.json", raw=True)[1],
        pg_server.call("GET", "/listjobs.json?project=vkscraper", raw=True)[1],
        pg_server.call("GET", f"/tasks/{task['task_id']}", raw=True)[1],
    ]
    status, refused = pg_server.call(
        "POST", "/collect.json", data={"groups": "11", "setting": f"LOG_LEVEL=x{TOKEN}"}
    )
    assert status == 400 and "holds the access token" in refused["message"]
    assert TOKEN not in refused["message"]
    for text in (*pages, pg_server.output(), pg_server.job_logs()):
        assert TOKEN not in text


def test_an_egg_deployed_with_scrapyd_deploy_runs_tasks(tmp_path, pg_admin_url, fakevk):
    """A remote scrapyd: no scrapy.cfg of ours beside it, the project arrives as an egg built
    and uploaded by `scrapyd-deploy` (the migrations and page assets travel inside it) —
    with `addversion.json` switched back on and credentials, as docs/topics/security.md says."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("scrapy.cfg", "setup.py", "pyproject.toml"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "vkscraper", project / "vkscraper",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    with (
        temporary_database(pg_admin_url, "vkegg") as url,
        Scrapyd(
            tmp_path / "remote",
            database_url=url,
            token=TOKEN,
            project_dir=False,
            auth=("deployer", "s3cret"),
            services={"addversion.json": "scrapyd.webservice.AddVersion"},
        ) as server,
    ):
        status, answer = server.call("POST", "/collect.json", data={"groups": "11"})
        assert status == 503 and "no project 'vkscraper'" in answer["message"], answer
        with open(project / "scrapy.cfg", "a") as cfg:
            cfg.write(
                f"\n[deploy:test]\nurl = {server.url}/\nproject = vkscraper\n"
                "username = deployer\npassword = s3cret\n"
            )
        deploy = subprocess.run(
            [str(Path(sys.executable).with_name("scrapyd-deploy")), "test", "--version", "1"],
            cwd=project, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert deploy.returncode == 0, deploy.stderr
        built = subprocess.run(
            [str(Path(sys.executable).with_name("scrapyd-deploy")), "--build-egg", "out.egg"],
            cwd=project, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        names = set(zipfile.ZipFile(project / "out.egg").namelist())
        for needed in (
            "vkscraper/store/sql/postgres/0006_task_job.sql",
            "vkscraper/service/static/tasks.js",
            "vkscraper/service/page.py",
        ):
            assert needed in names, f"{needed} missing from the egg"  # fmt: skip
        assert '"status": "ok"' in deploy.stdout + deploy.stderr
        status, answer = server.call(
            "POST", "/collect.json",
            data=[("groups", "11"), ("setting", f"VK_API_URL={fakevk.url}"), *FAST],
        )  # fmt: skip
        assert status == 200, answer
        task = server.wait_task(answer["task_id"])
        assert task["status"] == "completed", task["metrics"]["errors"]
        assert task["counts"]["comments"] == 3


def test_a_task_scheduled_with_scrapyds_own_schedule_json_shows_its_job(pg_server, fakevk):
    """Plain scrapyd scheduling works too: the crawl records scrapyd's job id (`_job`)."""
    task_id = create_task(pg_server, [11])
    status, answer = pg_server.call(
        "POST", "/schedule.json",
        data=[("project", "vkscraper"), ("spider", "vk"), ("task_id", str(task_id)),
              ("setting", f"VK_API_URL={fakevk.url}"), *FAST],
    )  # fmt: skip
    assert status == 200 and answer["status"] == "ok", answer
    task = pg_server.wait_task(task_id)
    assert task["status"] == "completed"
    assert task["job"] == {"jobid": answer["jobid"], "state": "finished"}


def test_a_task_started_by_schedule_json_runs_again_with_that_jobs_settings(pg_server):
    """schedule.json (ScrapydWeb, scrapyd clients) passes `setting=` to the crawl as `-s`:
    the crawl records them, so a re-run through collect.json goes to the same emulator."""
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        task_id = create_task(pg_server, [11])
        status, answer = pg_server.call(
            "POST", "/schedule.json",
            data=[("project", "vkscraper"), ("spider", "vk"), ("task_id", str(task_id)),
                  ("setting", f"VK_API_URL={vk.url}"), *FAST, ("setting", "LOG_LEVEL=INFO")],
        )  # fmt: skip
        assert status == 200 and answer["status"] == "ok", answer
        assert pg_server.wait_task(task_id)["status"] == "completed"
        with open_store(pg_server.database_url) as store:
            recorded = store.get_task(task_id).job_settings
        assert recorded == {"VK_API_URL": vk.url, "VK_REQUESTS_PER_SECOND": "1000",
                            "VK_BACKOFF_BASE": "0", "LOG_LEVEL": "INFO"}  # fmt: skip
        first = len(vk.requests())
        status, again = pg_server.call("POST", "/collect.json", data={"task_id": task_id})
        assert status == 200, again
        task = pg_server.wait_task(task_id)
        assert task["status"] == "completed", task["metrics"]["errors"]
        assert task["metrics"]["run"] == 2
        assert len(vk.requests()) > first, "the re-run went elsewhere than the job's emulator"
    assert TOKEN not in json.dumps(recorded)


def test_cancel_stops_a_crawl_resolving_thousands_of_unknown_groups(tmp_path, pg_admin_url):
    """Each unknown name costs several writes while the engine waits for the callback: a
    cancel stopped after 281 s for 5,000 names (over 6 minutes for 50,000)."""
    names = ",".join(f"nosuch{i}" for i in range(5000))
    with (
        FakeVk(small_dataset(), tokens=[TOKEN]) as vk,
        temporary_database(pg_admin_url, "vkcancel") as url,
        Scrapyd(tmp_path, database_url=url, token=TOKEN) as server,
    ):
        _, answer = server.call("POST", "/collect.json", data=[
            ("groups", names), ("setting", f"VK_API_URL={vk.url}"), *FAST])  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, task = server.call("GET", f"/task.json?task_id={answer['task_id']}")
            if task["task"]["counts"]["errors"]:
                break
            time.sleep(0.2)
        status, cancelled = server.call(
            "POST", "/cancel-task.json", data={"task_id": answer["task_id"]}
        )
        assert status == 200 and cancelled["prevstate"] == "running", cancelled
        stopped = server.wait_task(answer["task_id"], until=("in_progress",), timeout=30)
    assert stopped["resumable"] and stopped["counts"]["errors"] < 5000


def test_cross_site_requests_are_refused(pg_server):
    """A page of another site must not start or cancel crawls with the operator's token."""
    before = count_tasks(pg_server)
    for path, body, kind in (
        ("/collect.json", b"groups=10", "application/x-www-form-urlencoded"),
        ("/api/tasks/collect", b'{"groups": [10]}', "application/json"),
        ("/cancel-task.json", b"task_id=1", "application/x-www-form-urlencoded"),
    ):
        request = urllib.request.Request(
            pg_server.url + path, body,
            {"Content-Type": kind, "Origin": "http://evil.example"}, method="POST",
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        refused.value.close()
        assert refused.value.code == 403, path
    # A JSON body must say so: text/plain is what a cross-site form could send unasked.
    request = urllib.request.Request(
        pg_server.url + "/api/tasks/collect", b'{"groups": [10]}',
        {"Content-Type": "text/plain"}, method="POST",
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 415
    assert count_tasks(pg_server) == before


def test_the_service_recovers_when_the_database_is_recreated(tmp_path, pg_admin_url):
    with temporary_database(pg_admin_url, "vkrec") as url:
        name = url.rsplit("/", 1)[1]
        with Scrapyd(tmp_path, database_url=url, token=TOKEN) as server:
            assert server.call("GET", "/tasks.json")[0] == 200
            admin_execute(pg_admin_url, f'DROP DATABASE "{name}" WITH (FORCE)')
            admin_execute(pg_admin_url, f'CREATE DATABASE "{name}"')
            codes = [server.call("GET", "/tasks.json")[0] for _ in range(3)]
            assert codes[-1] == 200, codes
            status, answer = server.call("POST", "/collect.json", data={"groups": "10"})
            assert status == 200, answer


def test_a_slow_database_does_not_stall_scrapyd(pg_server):
    """The service reads the database in pool threads: while the tasks table is locked,
    scrapyd's own endpoints and the launcher keep answering; the task answer waits."""
    task_id = create_task(pg_server, [10])
    holder = psycopg2.connect(pg_server.database_url)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        answers: list[tuple[float, int]] = []

        def slow() -> None:
            started = time.monotonic()
            status, _ = pg_server.call("GET", f"/task.json?task_id={task_id}")
            answers.append((time.monotonic() - started, status))

        waiting = threading.Thread(target=slow)
        waiting.start()
        deadline = time.monotonic() + 30
        while not lock_waiters(holder):  # the task request is now blocked on the lock
            assert time.monotonic() < deadline, "the task request never reached the lock"
            time.sleep(0.05)
        # Answered while the lock is still held (the call's 30 s timeout bounds a stall).
        status, _ = pg_server.call("GET", "/daemonstatus.json")
        assert status == 200 and not answers, answers
        time.sleep(2.5)
    finally:
        holder.rollback()  # releases the lock
        holder.close()
    waiting.join(10)
    assert answers and answers[0][1] == 200 and answers[0][0] >= 2.5, answers


def lock_waiters(conn) -> int:
    """Sessions waiting for a lock on the tasks table (``conn`` may hold it)."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted "
                    "AND relation = 'tasks'::regclass")  # fmt: skip
        return cur.fetchone()[0]


def test_the_page_hints_name_the_port_scrapyd_listens_on(tmp_path):
    """`SCRAPYD_HTTP_PORT=6801 make serve` (docs/usage/scrapyd.md, "Another port or address"):
    scrapyd listens there, and the page's curl hints name that port, not the default 6800."""
    from tests.helpers.scrapyd import free_port

    work = tmp_path / "scrapyd"
    database = f"sqlite:///{tmp_path / 'port.sqlite3'}"
    port = free_port()
    server = Scrapyd(
        work, database_url=database, token=TOKEN, poll_interval=3600,  # no crawl ever starts
        env={"SCRAPYD_HTTP_PORT": str(port)},
    )  # fmt: skip
    server.port, server.url = port, f"http://127.0.0.1:{port}"  # the environment wins
    with server:
        status, page = server.call("GET", "/tasks", raw=True)
        assert status == 200, page
        assert f"curl -d groups=… http://127.0.0.1:{port}/collect.json" in page
        status, answer = server.call("POST", "/collect.json", data={"groups": "10"})
        assert status == 200, answer
        server.call("POST", "/cancel-task.json", data={"task_id": str(answer["task_id"])})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, page = server.call("GET", f"/tasks/{answer['task_id']}", raw=True)
            if "Resume</b>" in page:
                break
            time.sleep(0.3)
        assert f"curl -d task_id={answer['task_id']} http://127.0.0.1:{port}/collect.json" in page
        assert ":6800" not in page
