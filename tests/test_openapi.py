"""The API's published contract (``GET /api/openapi.json``) against what a live scrapyd
answers: every route of the document is called for a success and for its refusals, and each
answer's status must be documented for its operation and its body must match that status's
schema (strict: no field the document lacks), checked with ``jsonschema_rs`` (it comes with
Schemathesis, which fuzzes the same document in ``test_contract_fuzz.py``). A route whose
answer drifts fails here."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from typing import Any

import jsonschema_rs
import psycopg2
import pytest

from fakevk import FakeVk
from testkit.pg import temporary_database
from tests.helpers.crawl import TOKEN, small_dataset
from tests.helpers.scrapyd import Scrapyd
from vkscraper.service.openapi import DOCUMENT
from vkscraper.store import open_store

FAST = {"VK_REQUESTS_PER_SECOND": "1000", "VK_BACKOFF_BASE": "0"}


def errors(value: Any, schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """Every way ``value`` breaks ``schema`` (JSON Schema 2020-12, the dialect of OpenAPI 3.1,
    formats checked), its ``$ref``s resolved in the document's components."""
    validator = jsonschema_rs.Draft202012Validator(
        {**schema, "components": document["components"]}, validate_formats=True
    )
    found = validator.iter_errors(value)
    return [f"$/{'/'.join(map(str, e.instance_path))}: {e.message}" for e in found]


class Contract:
    """Calls a scrapyd and checks each answer against the document."""

    def __init__(self, server: Scrapyd, document: dict[str, Any]) -> None:
        self.server = server
        self.document = document
        self.seen: set[tuple[str, str, int]] = set()

    def operation(self, method: str, path: str) -> tuple[str | None, dict[str, Any] | None]:
        """The path's template and the method's operation; ``(template, None)`` for a method
        the path does not take, ``(None, None)`` for a path the document does not have."""
        bare = path.split("?", 1)[0]
        for template, item in self.document["paths"].items():
            pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, bare):
                return template, item.get(method.lower())
        return None, None

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        status, body = self.server.call(method, path, **kwargs)
        assert status == expect, (method, path, status, body)
        self.check(method, path, status, body)
        return body

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        template, operation = self.operation(method, path)
        if operation is None:  # not in the document: refused as the document says of all
            assert status == (405 if template else 404), (method, path, status)
            schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
        else:
            response = operation["responses"].get(str(status))
            assert response is not None, f"{method} {path}: {status} is not documented"
            schema = response["content"]["application/json"]["schema"]
        problems = errors(body, schema, self.document)
        assert not problems, f"{method} {path} ({status}) breaks the document:\n" + "\n".join(
            problems[:20]
        )
        self.seen.add((method, template or path, status))

    def raw(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
        import json

        request = urllib.request.Request(self.server.url + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        answer = json.loads(payload)
        self.check(method, path, status, answer)
        return status, answer


@pytest.fixture(scope="module")
def server(tmp_path_factory, pg_admin_url):
    with temporary_database(pg_admin_url, "vkoapi") as url:
        work = tmp_path_factory.mktemp("scrapyd-openapi")
        with Scrapyd(work, database_url=url, token=TOKEN) as s:
            s.database_url = url
            yield s


def new_task(server: Scrapyd, groups: list, job: str | None = None) -> int:
    with open_store(server.database_url) as store:
        store.migrate()
        task_id = store.create_task(groups)
        if job:
            store.set_job(task_id, job)
        return task_id


def test_the_service_serves_the_document(server):
    status, served = server.call("GET", "/api/openapi.json")
    assert status == 200 and served == DOCUMENT
    assert served["openapi"].startswith("3.1")
    assert server.call("POST", "/api/openapi.json", data={})[0] == 405
    assert server.call("GET", "/api/openapi.json?x=1")[0] == 400


def test_every_route_answers_as_its_document_says(server):
    contract = Contract(server, DOCUMENT)
    call = contract.call
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        settings = {"VK_API_URL": vk.url, **FAST}
        form = [("groups", "10,threeposts,https://vk.com/pinnedold")]
        form += [("setting", f"{k}={v}") for k, v in settings.items()]
        done = call("POST", "/collect.json", 200, data=form)
        rest = call("POST", "/api/tasks/collect", 200,
                    json_body={"groups": [10, "threeposts"], "settings": settings})  # fmt: skip
        for task_id in (done["task_id"], rest["taskId"]):
            server.wait_task(task_id)
        task_id = done["task_id"]
        # Re-runs of a finished task, cancelled at once: pending or running, both documented.
        again = call("POST", "/collect.json", 200, data={"task_id": str(task_id)})
        call("POST", "/collect.json", 409, data={"task_id": str(task_id)})
        call("POST", "/cancel-task.json", 200, data={"task_id": str(task_id)})
        server.wait_task(task_id, until=("in_progress", "completed", "failed"))
        call("POST", "/api/tasks/collect", 200, json_body={"taskId": rest["taskId"]})
        call("POST", "/api/tasks/collect", 409, json_body={"taskId": rest["taskId"]})
        call("POST", f"/api/tasks/{rest['taskId']}/cancel", 200, data={})
        server.wait_task(rest["taskId"], until=("in_progress", "completed", "failed"))
        assert again["jobid"]
        # A full run to read back.
        done = call("POST", "/collect.json", 200, data=form)
        server.wait_task(done["task_id"])
    task_id = done["task_id"]

    no_job = new_task(server, [10, "apiclub"])
    forgotten = new_task(server, [11], job="0123456789abcdef0123456789abcdef")
    for tid in (task_id, no_job, forgotten):
        call("GET", f"/task.json?task_id={tid}", 200)
        call("GET", f"/api/tasks/{tid}", 200)
    call("GET", "/tasks.json", 200)
    call("GET", "/tasks.json?limit=500", 200)
    call("GET", "/api/tasks?limit=3", 200)
    for kind in ("posts", "comments"):
        page = call("GET", f"/results.json?task_id={task_id}&kind={kind}&limit=2", 200)
        assert page["rows"] and page["has_more"]
        call("GET", f"/results.json?task_id={task_id}&kind={kind}&after={page['next_after']}", 200)
        page = call("GET", f"/api/tasks/{task_id}/results?kind={kind}&limit=1000", 200)
        assert page["rows"] and not page["has_more"]
    call("GET", f"/results.json?task_id={no_job}", 200)

    # Refusals, each route.
    for path in (
        "/task.json?task_id=x",
        "/tasks.json?limit=0",
        "/results.json?task_id=1&kind=",
        "/api/tasks?limit=",
        f"/api/tasks/{task_id}/results?after=-1",
        "/api/tasks/x",
    ):
        call("GET", path, 400)  # fmt: skip
    for path in (
        "/task.json?task_id=999999",
        "/results.json?task_id=999999",
        "/api/tasks/999999",
        "/api/tasks/999999/results",
        "/api/nothing",
    ):
        call("GET", path, 404)  # fmt: skip
    call("POST", "/cancel-task.json", 404, data={"task_id": "999999"})
    call("POST", "/api/tasks/999999/cancel", 404, data={})
    call("POST", "/collect.json", 404, data={"task_id": "999999"})
    call("POST", "/api/tasks/collect", 404, json_body={"taskId": 999999})
    for method, path in (
        ("POST", "/task.json"),
        ("POST", "/tasks.json"),
        ("POST", "/results.json"),
        ("GET", "/collect.json"),
        ("GET", "/cancel-task.json"),
        ("POST", "/api/tasks"),
        ("GET", "/api/tasks/collect"),
        ("POST", f"/api/tasks/{task_id}"),
        ("POST", f"/api/tasks/{task_id}/results"),
        ("GET", f"/api/tasks/{task_id}/cancel"),
    ):
        call(method, path, 405, data={} if method == "POST" else None)  # fmt: skip
    call("POST", "/collect.json", 400, data={"groups": "[bad"})
    call("POST", "/collect.json", 400, data={"groups": "10", "setting": "LOG_FILE=/tmp/x"})
    call("POST", "/cancel-task.json", 400, data={"task_id": ""})
    call("POST", "/cancel-task.json", 409, data={"task_id": str(no_job)})
    call("POST", f"/api/tasks/{no_job}/cancel", 409, data={})
    call("POST", "/api/tasks/x/cancel", 400, data={})
    call("POST", "/api/tasks/collect", 400, json_body={"groups": "10"})
    call("POST", "/collect.json", 413, data={"groups": ",".join(map(str, range(1, 50_002)))})
    call("POST", "/api/tasks/collect", 413, json_body={"groups": list(range(1, 50_002))})
    contract.raw("POST", "/api/tasks/collect", b"groups=10",
                 {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    for path, body, kind in (
        ("/collect.json", b"groups=10", "application/x-www-form-urlencoded"),
        ("/cancel-task.json", b"task_id=1", "application/x-www-form-urlencoded"),
        ("/api/tasks/collect", b'{"groups": [10]}', "application/json"),
        (f"/api/tasks/{task_id}/cancel", b"", "application/json"),
    ):
        headers = {"Content-Type": kind, "Origin": "http://evil.example"}
        status, _ = contract.raw("POST", path, body, headers)
        assert status == 403, path

    # Schedules: one with a last task and runs, one by cron; each route's refusals.
    body = {"name": "hourly", "groups": [10, "apiclub"], "every": "1h", "settings": FAST}
    sid = call("POST", "/api/schedules", 200, json_body=body)["schedule"]["scheduleId"]
    by_cron = call("POST", "/api/schedules", 200, json_body={"cron": "0 * * * *"})
    with psycopg2.connect(server.database_url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE schedules SET last_task_id = %s WHERE id = %s", (task_id, sid))
        cur.execute(
            "INSERT INTO schedule_runs (schedule_id, due_at, outcome, task_id, message) VALUES "
            "(%s, now() - interval '2 hours', 'started', %s, NULL), "
            "(%s, now() - interval '1 hour', 'skipped', NULL, 'skipped, still running')",
            (sid, task_id, sid),
        )
    conn.close()
    call("GET", "/api/schedules", 200)
    shown = call("GET", f"/api/schedules/{sid}", 200)["schedule"]
    assert shown["lastTask"]["taskId"] == task_id and len(shown["runs"]) == 2
    call("GET", f"/api/schedules/{sid}?limit=1", 200)
    call("POST", f"/api/schedules/{sid}/pause", 200, data={})
    call("POST", f"/api/schedules/{sid}/resume", 200, data={})
    call("DELETE", f"/api/schedules/{by_cron['schedule']['scheduleId']}", 200)
    call("POST", "/api/schedules", 400, json_body={"every": "fortnightly"})
    call("POST", "/api/schedules", 413, json_body={"every": 60, "groups": list(range(50_002))})
    contract.raw("POST", "/api/schedules", b"every=60",
                 {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    call("GET", "/api/schedules?limit=1", 400)
    call("GET", f"/api/schedules/{sid}?limit=0", 400)
    call("GET", "/api/schedules/999999", 404)
    call("DELETE", "/api/schedules/x", 400)
    call("DELETE", "/api/schedules/999999", 404)
    call("POST", "/api/schedules/999999/pause", 404, data={})
    call("POST", "/api/schedules/x/resume", 400, data={})
    call("POST", "/api/schedules/999999/resume", 404, data={})
    for method, path in (
        ("PUT", "/api/schedules"),
        ("POST", f"/api/schedules/{sid}"),
        ("GET", f"/api/schedules/{sid}/pause"),
        ("GET", f"/api/schedules/{sid}/resume"),
    ):
        call(method, path, 405, data={} if method != "GET" else None)
    for path in (f"/api/schedules/{sid}/pause", f"/api/schedules/{sid}/resume"):
        status, _ = contract.raw("POST", path, b"", {"Origin": "http://evil.example"})
        assert status == 403, path
    status, _ = contract.raw("DELETE", f"/api/schedules/{sid}", b"",
                             {"Origin": "http://evil.example"})  # fmt: skip
    assert status == 403
    status, _ = contract.raw("POST", "/api/schedules", b'{"every": 60}',
                             {"Content-Type": "application/json",
                              "Origin": "http://evil.example"})  # fmt: skip
    assert status == 403

    # Every operation of the document was seen answering 200 and refusing.
    for template, item in DOCUMENT["paths"].items():
        if template == "/api/openapi.json":
            continue
        for method in item:
            codes = {s for m, t, s in contract.seen if (m, t) == (method.upper(), template)}
            assert 200 in codes and codes - {200}, f"{method} {template}: only saw {codes}"


@pytest.mark.integration
def test_the_database_down_answers_as_documented(tmp_path):
    dead = "postgresql://postgres@127.0.0.1:1/nothing"
    with Scrapyd(tmp_path, database_url=dead, token=TOKEN) as server:
        contract = Contract(server, DOCUMENT)
        for method, path, data in (
            ("GET", "/task.json?task_id=1", None),
            ("GET", "/tasks.json", None),
            ("GET", "/results.json?task_id=1", None),
            ("POST", "/collect.json", {"groups": "10"}),
            ("POST", "/cancel-task.json", {"task_id": "1"}),
            ("GET", "/api/tasks", None),
            ("GET", "/api/tasks/1", None),
            ("GET", "/api/tasks/1/results", None),
            ("POST", "/api/tasks/1/cancel", {}),
            ("GET", "/api/schedules", None),
            ("GET", "/api/schedules/1", None),
            ("DELETE", "/api/schedules/1", None),
            ("POST", "/api/schedules/1/pause", {}),
            ("POST", "/api/schedules/1/resume", {}),
        ):
            contract.call(method, path, 503, data=data)
        started = time.monotonic()
        contract.call("POST", "/api/tasks/collect", 503, json_body={"groups": [10]})
        contract.call("POST", "/api/schedules", 503, json_body={"every": 60})
        assert time.monotonic() - started < 5
