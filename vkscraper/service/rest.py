"""The seed's REST routes, mounted at ``/api`` (``scrapyd.conf``: ``api = …rest.Api``)::

    POST /api/tasks/collect        {"groups": [...], "settings": {"K": "V"}}
                                   → {"taskId": N, "jobId": …}
    POST /api/tasks/collect        {"taskId": N}   (resume / re-run task N)
    GET  /api/tasks[?limit=20]     → {"tasks": [...]}
    GET  /api/tasks/N              → the task (as task.json's "task")
    GET  /api/tasks/N/results?kind=posts|comments&limit=&after=
    POST /api/tasks/N/cancel
    GET  /api/schedules            → {"schedules": [...]}
    POST /api/schedules            {"name": …, "groups": [...] | null, "every": 3600 | "1h"
                                    or "cron": "0 * * * *", "timezone": …, "settings": {…}}
                                   → {"schedule": {...}}
    GET  /api/schedules/N[?limit=20]  → {"schedule": {..., "runs": [...]}}
    DELETE /api/schedules/N        → {"scheduleId": N}
    POST /api/schedules/N/pause    → {"schedule": {...}}   (also /resume)
    GET  /api/openapi.json         → the OpenAPI 3.1 document of these routes and the *.json

Thin adapters over :class:`~vkscraper.service.core.TaskService` and
:class:`~vkscraper.service.schedules.ScheduleService`, the code behind the ``*.json``
services; errors are the same ``{"status": "error", "message": …}`` with the same statuses.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web import resource
from twisted.web.server import Request

from vkscraper.service.core import MAX_BODY, RequestError, TaskService, bad_request
from vkscraper.service.openapi import DOCUMENT
from vkscraper.service.resources import (
    Work,
    answer,
    arg,
    check_body_size,
    check_method,
    check_origin,
    check_params,
    json_response,
    outcome,
)
from vkscraper.service.schedules import ScheduleService


class Api(resource.Resource):
    isLeaf = True

    def __init__(self, root: Any) -> None:
        super().__init__()
        self.root = root

    def render(self, txrequest: Request) -> bytes | int:
        service = TaskService.of(self.root)
        path = [p.decode("utf-8", "replace") for p in txrequest.postpath or [] if p]
        if path == ["openapi.json"]:
            return self.contract(txrequest)
        return answer(txrequest, lambda: self.route(service, txrequest, path))

    def contract(self, txrequest: Request) -> bytes | int:
        """The OpenAPI document itself (not wrapped in ``{"status": "ok"}``)."""

        def check() -> Work:
            check_method(txrequest, "GET")
            check_params(txrequest, ())
            return dict

        ok, refused = outcome(txrequest, check, {})
        return (
            json_response(txrequest, 200, DOCUMENT) if ok else json_response(txrequest, *refused)
        )

    def route(self, service: TaskService, txrequest: Request, path: list[str]) -> Work:
        """Check the request now; return the work to run in a thread (see ``answer``)."""

        schedules = ScheduleService(service)

        def need(expected: str, *params: str, json_body: bool = False) -> None:
            check_method(txrequest, expected)
            check_origin(txrequest)
            if json_body:  # before the parameters: Twisted reads a form body as parameters
                _check_json_type(txrequest)
            check_body_size(txrequest)
            check_params(txrequest, params)

        match path:
            case ["tasks"]:
                need("GET", "limit")
                limit = arg(txrequest, "limit")
                return lambda: {"tasks": service.tasks(limit)}
            case ["tasks", "collect"]:
                need("POST", json_body=True)
                body = _json_body(txrequest)
                unknown = sorted(set(body) - {"groups", "settings", "taskId"})
                if unknown:
                    raise bad_request(f"unknown field(s): {', '.join(unknown)}")
                settings = body.get("settings", {})
                if not isinstance(settings, dict):
                    raise bad_request("'settings' must be an object of NAME: value")
                if "groups" in body and not isinstance(body["groups"], list):
                    raise bad_request("'groups' must be a list of ids, names or URLs")
                task = body.get("taskId")
                if "taskId" in body and (not isinstance(task, int) or isinstance(task, bool)):
                    raise bad_request("'taskId' must be a whole number (a JSON integer)")

                def collect() -> dict[str, Any]:
                    done = service.collect(body.get("groups"), settings, body.get("taskId"))
                    return {"taskId": done["task_id"], "jobId": done["jobid"]}

                return collect
            case ["tasks", task_id]:
                need("GET")
                return lambda: service.task(task_id)
            case ["tasks", task_id, "results"]:
                need("GET", "kind", "limit", "after")
                kind, limit, after = (arg(txrequest, p) for p in ("kind", "limit", "after"))
                return lambda: service.results(task_id, kind, limit, after)
            case ["tasks", task_id, "cancel"]:
                need("POST")
                return lambda: service.cancel(task_id)
            case ["schedules"]:
                check_method(txrequest, ("GET", "POST"))
                if txrequest.method == b"POST":
                    need("POST", json_body=True)
                    body = _json_body(txrequest)
                    return lambda: {"schedule": schedules.add(body)}
                need("GET")
                return lambda: {"schedules": schedules.schedules()}
            case ["schedules", schedule_id]:
                check_method(txrequest, ("GET", "DELETE"))
                if txrequest.method == b"DELETE":
                    need("DELETE")
                    return lambda: schedules.remove(schedule_id)
                need("GET", "limit")
                limit = arg(txrequest, "limit")
                return lambda: {"schedule": schedules.schedule(schedule_id, limit)}
            case ["schedules", schedule_id, "pause"]:
                need("POST")
                return lambda: {"schedule": schedules.pause(schedule_id)}
            case ["schedules", schedule_id, "resume"]:
                need("POST")
                return lambda: {"schedule": schedules.resume(schedule_id)}
        raise RequestError(404, f"no such route: /api/{'/'.join(path)}")


def _check_json_type(txrequest: Request) -> None:
    # A JSON content type also makes a cross-site browser request ask first (CORS preflight),
    # which this service never grants.
    kind = (txrequest.getHeader("Content-Type") or "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise RequestError(415, "send the body as JSON with Content-Type: application/json")


def _json_body(txrequest: Request) -> dict[str, Any]:
    content = txrequest.content
    raw = content.read(MAX_BODY + 1) if content is not None else b""
    if len(raw) > MAX_BODY:
        raise RequestError(413, "the JSON body is larger than 1 MiB")
    try:
        body = json.loads(raw or b"{}")
    except RecursionError:
        raise bad_request("the body is not valid JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body
