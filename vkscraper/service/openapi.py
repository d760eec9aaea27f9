"""The task API's contract: an OpenAPI 3.1 document of the ``*.json`` services and the
``/api/tasks…`` and ``/api/schedules…`` routes, served at ``GET /api/openapi.json``.

Written by hand from what the routes answer (``core``, ``resources``, ``rest``) and kept true by
``tests/test_openapi.py``, which validates every answer of a live scrapyd against it. The
schemas are strict (``additionalProperties: false``): a field added, renamed or retyped in an
answer fails that test until this document says so.
"""

from __future__ import annotations

from typing import Any

from vkscraper.schedules.spec import MAX_NAME
from vkscraper.service.core import (
    JOB_STATES,
    MAX_BODY,
    MAX_GROUPS,
    RESULTS_LIMIT,
    TASKS_LIMIT,
)
from vkscraper.service.schedules import ADD_FIELDS, RUNS_LIMIT
from vkscraper.store.export import FIELDS
from vkscraper.store.schedules import OUTCOMES
from vkscraper.store.tasks import STATUSES

Schema = dict[str, Any]

INT: Schema = {"type": "integer"}
STR: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
NUM: Schema = {"type": "number"}
TIME: Schema = {"type": "string", "format": "date-time"}  # ISO 8601 UTC, "…Z"


def nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], optional: tuple[str, ...] = ()) -> Schema:
    """An object with exactly these properties, all required but ``optional``."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


PAIR: Schema = {"type": "array", "items": INT, "minItems": 2, "maxItems": 2}
GROUP: Schema = {"type": ["integer", "string"], "description": "a group id, or a name unresolved"}

# The columns of a result row and their JSON types (the fields of `export`).
_ROW_TYPES: dict[str, Schema] = {
    "id": INT, "vk_post_id": INT, "vk_comment_id": INT, "owner_id": INT, "group_id": INT,
    "post_vk_id": INT, "parent_id": nullable(INT), "reply_to_comment": nullable(INT),
    "reply_to_user": nullable(INT), "thread_count": INT, "author_id": nullable(INT),
    "author_name": nullable(STR), "date": nullable(TIME), "edited": nullable(TIME),
    "text": STR, "likes": INT, "reposts": INT, "views": nullable(INT),
    "comments_count": INT, "is_pinned": BOOL, "deleted": BOOL, "from_id": nullable(INT),
    "signer_id": nullable(INT), "created_at": TIME, "updated_at": TIME, "last_seen_at": TIME,
    "last_task_id": {
        **nullable(INT),
        "description": "the last task that wrote the row: may be a later task than this one",
    },
    "vanished_at": {
        **nullable(TIME),
        "description": "when a later complete crawl found the comment gone from VK",
    },
}  # fmt: skip


def _row(kind: str, label: str) -> Schema:
    return obj({"kind": {"const": label}, **{f: _ROW_TYPES[f] for f in FIELDS[kind]}})  # type: ignore[index]


_TASK: dict[str, Schema] = {
    "task_id": INT,
    "status": {"enum": list(STATUSES)},
    "groups": {"type": "array", "items": GROUP},
    "created_at": TIME,
    "started_at": nullable(TIME),
    "finished_at": nullable(TIME),
    "updated_at": TIME,
    "job": ref("Job"),
    "resumable": {
        "type": "boolean",
        "description": "not finished and no job of it pending, running or stopping",
    },
    "progress": obj(
        {
            "percent": {"type": "number", "minimum": 0, "maximum": 100},
            "groups": PAIR,
            "posts": PAIR,
            "comments": PAIR,
        }
    ),  # fmt: skip
    "counts": obj(
        {
            name: INT
            for name in (
                "posts",
                "posts_expected",
                "comments",
                "comments_expected",
                "groups_done",
                "groups_total",
                "errors",
                "requests",
            )
        }
    ),  # fmt: skip
    "timing": obj(
        {
            "elapsed_s": nullable(NUM),
            "requests_per_s": {
                **nullable(NUM),
                "description": "VK answers received, minus one, per second of the task's "
                "elapsed time: n requests paced one per interval span n - 1 intervals",
            },
            "comments_per_s": nullable(NUM),
        }
    ),  # fmt: skip
}
_GROUP_DETAIL = obj(
    {
        "group": GROUP,
        "name": nullable(STR),
        "status": {
            "type": "string",
            "description": "while the job is queued or running: `waiting`, `in_progress`, "
            "`done` or `failed`; once it is over, `not_started` or `stopped` for a group "
            "not begun or not finished",
        },
        "posts": INT,
        "posts_expected": INT,
        "comments": INT,
        "comments_expected": INT,
        "errors": {"type": "array", "items": STR},
    }
)
_RESULTS: dict[str, Schema] = {
    "task_id": INT,
    "kind": {"enum": ["posts", "comments"]},
    "task_status": {"enum": list(STATUSES)},
    "rows": {"type": "array", "items": {"oneOf": [ref("Post"), ref("Comment")]}},
    "next_after": {"type": "integer", "description": "pass it back as `after`"},
    "has_more": BOOL,
}
_SCHEDULE: dict[str, Schema] = {
    "scheduleId": INT,
    "name": STR,
    "groups": {
        "type": ["array", "null"],
        "items": GROUP,
        "description": "null: the active groups of the groups table at each run",
    },
    "everySeconds": {**nullable(INT), "description": "the interval; null for a cron schedule"},
    "cron": {**nullable(STR), "description": "five cron fields, read in `timezone`"},
    "timezone": STR,
    "settings": {"type": "object", "additionalProperties": STR},
    "paused": BOOL,
    "nextRunAt": TIME,
    "skippedInARow": {
        **INT,
        "description": "due runs skipped one after the other (the last task still queued or "
        "running); 0 once a run starts",
    },
    "lastTask": {
        "anyOf": [
            {"type": "null"},
            obj(
                {
                    "taskId": INT,
                    "status": {"enum": list(STATUSES)},
                    "job": ref("Job"),
                }
            ),
        ],
        "description": "the last task the schedule started; null before its first",
    },
    "createdAt": TIME,
    "updatedAt": TIME,
}
_SCHEDULE_RUN = obj(
    {
        "dueAt": TIME,
        "ranAt": TIME,
        "outcome": {
            "enum": list(OUTCOMES),
            "description": "`claimed`: its task created, not yet queued; `started`: queued; "
            "`skipped`: the last task was still queued or running; `failed`: see `message`",
        },
        "taskId": nullable(INT),
        "message": nullable(STR),
    }
)
OK: Schema = {"const": "ok"}
NODE: Schema = {"type": "string", "description": "scrapyd's node name"}

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {"status": {"const": "error"}, "node_name": NODE, "message": STR}, optional=("node_name",)
    ),
    "Job": {
        **obj({"jobid": nullable(STR), "state": {"enum": list(JOB_STATES)}}),
        "description": (
            "pending / running / stopping / finished as scrapyd (or the workers) report it; "
            "`unknown`: a job is recorded but no longer known (cancelled before it started, "
            "scrapyd restarted since or forgot it, out of the workers' Redis); `none`: the "
            "task never had a job (jobid null; created by the CLI or `scrapy crawl`)"
        ),
    },
    "Task": obj(_TASK),
    "TaskDetail": obj(
        {
            **_TASK,
            "metrics": {"type": "object"},
            "groups_detail": {"type": "array", "items": _GROUP_DETAIL},
        }
    ),  # fmt: skip
    "Post": _row("posts", "post"),
    "Comment": _row("comments", "comment"),
    "CollectOk": obj({"status": OK, "node_name": NODE, "task_id": INT, "jobid": STR}),
    "TaskOk": obj({"status": OK, "node_name": NODE, "task": ref("TaskDetail")}),
    "TasksOk": obj(
        {"status": OK, "node_name": NODE, "tasks": {"type": "array", "items": ref("Task")}}
    ),  # fmt: skip
    "ResultsOk": obj({"status": OK, "node_name": NODE, **_RESULTS}),
    "CancelOk": obj(
        {
            "status": OK,
            "node_name": NODE,
            "task_id": INT,
            "jobid": STR,
            "prevstate": {"enum": ["pending", "running"]},
        }
    ),  # fmt: skip
    "RestCollectOk": obj({"status": OK, "taskId": INT, "jobId": STR}),
    "RestTasksOk": obj({"status": OK, "tasks": {"type": "array", "items": ref("Task")}}),
    "RestResultsOk": obj({"status": OK, **_RESULTS}),
    "Schedule": obj(_SCHEDULE),
    "ScheduleDetail": obj(
        {**_SCHEDULE, "runs": {"type": "array", "items": _SCHEDULE_RUN}}
    ),  # fmt: skip
    "RestSchedulesOk": obj(
        {"status": OK, "schedules": {"type": "array", "items": ref("Schedule")}}
    ),  # fmt: skip
    "RestScheduleOk": obj({"status": OK, "schedule": ref("Schedule")}),
    "RestScheduleDetailOk": obj({"status": OK, "schedule": ref("ScheduleDetail")}),
    "RestScheduleRemovedOk": obj({"status": OK, "scheduleId": INT}),
    "RestCancelOk": obj(
        {"status": OK, "task_id": INT, "jobid": STR, "prevstate": {"enum": ["pending", "running"]}}
    ),
}

_WHY = {
    "400": "a missing, empty, repeated, malformed or unknown parameter or field, a bad group "
    "reference (each named, truncated), a refused setting or a schedule that cannot be (its "
    "interval, cron expression or time zone named)",
    "403": "a cross-site POST (its Origin is another site)",
    "404": "an unknown task, schedule or route",
    "405": "a wrong method (the Allow header names the right one; HEAD works as GET)",
    "409": "a job of the task already pending, running or stopping; or none to cancel",
    "413": f"more than {MAX_GROUPS} group references, or a body over {MAX_BODY} bytes",
    "415": "a body that is not Content-Type: application/json",
    "500": "an unexpected failure (the traceback goes to scrapyd's log only)",
    "503": "the database (or, distributed, the workers' Redis) is unreachable",
}


def _responses(ok: str, *errors: str) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "done", "content": _json(ref(ok))}}
    for code in (*errors, "405", "500", "503"):
        out[code] = {"description": _WHY[code], "content": _json(ref("Error"))}
    return out


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _query(name: str, schema: Schema, required: bool = False, about: str = "") -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": about}  # fmt: skip


def _bounded(low_high_default: tuple[int, int, int]) -> Schema:
    low, high, default = low_high_default
    return {"type": "integer", "minimum": low, "maximum": high, "default": default}


# Examples (valid values) are what Schemathesis's examples phase sends first, so the contract
# fuzz reaches a task that exists and a collect that succeeds, not only refusals.
TASK_ID: Schema = {**INT, "minimum": 0, "examples": [1]}
_TASK_ID_PATH = {"name": "taskId", "in": "path", "required": True, "schema": TASK_ID}
_TASK_ID_QUERY = _query("task_id", TASK_ID, required=True)
_RESULT_PARAMS = [
    _query("kind", {"enum": ["posts", "comments"], "default": "posts"}),
    _query("limit", _bounded(RESULTS_LIMIT)),
    _query("after", {**INT, "minimum": 0, "default": 0}, about="the `next_after` of a page"),
]
_FORM = "application/x-www-form-urlencoded"


_SCHEDULE_ID_PATH = {
    "name": "scheduleId",
    "in": "path",
    "required": True,
    "schema": {**INT, "minimum": 0, "examples": [1]},
}
_ADD_SCHEDULE: Schema = obj(
    {
        "name": {**STR, "maxLength": MAX_NAME},
        "groups": {
            "type": ["array", "null"],
            "items": GROUP,
            "maxItems": MAX_GROUPS,
            "description": "ids, names or URLs; null or left out: the active groups of the "
            "groups table at each run",
        },
        "every": {
            "type": ["integer", "string"],
            "description": "the interval: seconds, or a number with s, m, h or d (`15m`, `2h`)",
            "examples": [3600, "15m"],
        },
        "cron": {
            **STR,
            "description": "five cron fields (minute hour day-of-month month day-of-week)",
            "examples": ["0 */6 * * *"],
        },
        "timezone": {**STR, "default": "UTC", "description": "the cron's time zone (IANA)"},
        "settings": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number"]},
            "description": "crawl settings, as a collect takes them",
        },
    },
    optional=ADD_FIELDS,
) | {
    "oneOf": [{"required": ["every"]}, {"required": ["cron"]}],
    "examples": [
        {"name": "hourly", "groups": [1, "apiclub"], "every": "1h",
         "settings": {"LOG_LEVEL": "INFO"}},
        {"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Moscow"},
    ],
}  # fmt: skip


def EITHER(task_id: str) -> Schema:  # noqa: N802  (reads as a schema constant)
    """A collect body names new groups or an existing task, never both (a 400)."""
    return {"not": {"required": ["groups", task_id]}}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "vkscraper task API",
        "version": "1",
        "description": (
            "Tasks that crawl VK communities, run as scrapyd jobs, and the schedules that start "
            "them. The `*.json` services follow scrapyd's conventions (form parameters, "
            "`node_name`); `/api/tasks…` and `/api/schedules…` take and give "
            'JSON. Every refusal is `{"status": "error", "message": …}` with its HTTP '
            "status. Parameters are strict: an unknown, repeated or empty one is a 400."
        ),
    },
    "paths": {
        "/collect.json": {
            "post": {
                "summary": "create a task (or run task_id again) and queue its crawl",
                "requestBody": {
                    "required": False,
                    "content": {
                        _FORM: {
                            "schema": obj(
                                {
                                    "groups": {
                                        **STR,
                                        "description": "ids, names or URLs, comma-separated; "
                                        "omitted: the active groups of the groups table",
                                        "examples": ["1,apiclub,https://vk.com/club2"],
                                    },
                                    "setting": {
                                        "type": "array",
                                        "items": STR,
                                        "description": "NAME=value, repeatable",
                                    },
                                    "task_id": {**INT, "minimum": 0},
                                },
                                optional=("groups", "setting", "task_id"),
                            )
                            | EITHER("task_id")
                            | {
                                "examples": [
                                    {"groups": "1,apiclub", "setting": ["LOG_LEVEL=INFO"]}
                                ]
                            }
                        }
                    },
                },  # fmt: skip
                "responses": _responses("CollectOk", "400", "403", "404", "409", "413"),
            }
        },
        "/task.json": {
            "get": {
                "summary": "one task with its metrics and per-group detail",
                "parameters": [_TASK_ID_QUERY],
                "responses": _responses("TaskOk", "400", "404"),
            }
        },
        "/tasks.json": {
            "get": {
                "summary": "the newest tasks",
                "parameters": [_query("limit", _bounded(TASKS_LIMIT))],
                "responses": _responses("TasksOk", "400"),
            }
        },
        "/results.json": {
            "get": {
                "summary": "one page of a task's posts or comments, by a key cursor",
                "parameters": [_TASK_ID_QUERY, *_RESULT_PARAMS],
                "responses": _responses("ResultsOk", "400", "404"),
            }
        },
        "/cancel-task.json": {
            "post": {
                "summary": "stop the task's job (out of the queue, or SIGINT)",
                "requestBody": {
                    "required": True,
                    "content": {_FORM: {"schema": obj({"task_id": TASK_ID})}},
                },  # fmt: skip
                "responses": _responses("CancelOk", "400", "403", "404", "409"),
            }
        },
        "/api/tasks": {
            "get": {
                "summary": "the newest tasks",
                "parameters": [_query("limit", _bounded(TASKS_LIMIT))],
                "responses": _responses("RestTasksOk", "400"),
            }
        },
        "/api/tasks/collect": {
            "post": {
                "summary": "create a task (or run taskId again) and queue its crawl",
                "requestBody": {
                    "required": True,
                    "content": _json(
                        obj(
                            {
                                "groups": {
                                    "type": "array",
                                    "items": GROUP,
                                    "maxItems": MAX_GROUPS,
                                    "examples": [[1, "apiclub", "https://vk.com/club2"]],
                                },
                                "settings": {
                                    "type": "object",
                                    "additionalProperties": {"type": ["string", "number"]},
                                },
                                "taskId": {**INT, "minimum": 0},
                            },
                            optional=("groups", "settings", "taskId"),
                        )
                        | EITHER("taskId")
                        | {
                            "examples": [
                                {"groups": [1, "apiclub"], "settings": {"LOG_LEVEL": "INFO"}}
                            ]
                        }
                    ),
                },  # fmt: skip
                "responses": _responses("RestCollectOk", "400", "403", "404", "409", "413", "415"),
            }
        },
        "/api/tasks/{taskId}": {
            "get": {
                "summary": "one task (the task object itself: `status` is the task's)",
                "parameters": [_TASK_ID_PATH],
                "responses": _responses("TaskDetail", "400", "404"),
            }
        },
        "/api/tasks/{taskId}/results": {
            "get": {
                "summary": "one page of a task's posts or comments, by a key cursor",
                "parameters": [_TASK_ID_PATH, *_RESULT_PARAMS],
                "responses": _responses("RestResultsOk", "400", "404"),
            }
        },
        "/api/tasks/{taskId}/cancel": {
            "post": {
                "summary": "stop the task's job (out of the queue, or SIGINT)",
                "parameters": [_TASK_ID_PATH],
                "responses": _responses("RestCancelOk", "400", "403", "404", "409"),
            }
        },
        "/api/schedules": {
            "get": {
                "summary": "every schedule, oldest first",
                "responses": _responses("RestSchedulesOk", "400"),
            },
            "post": {
                "summary": "add a schedule (exactly one of `every` and `cron`)",
                "requestBody": {"required": True, "content": _json(_ADD_SCHEDULE)},
                "responses": _responses("RestScheduleOk", "400", "403", "413", "415"),
            },
        },
        "/api/schedules/{scheduleId}": {
            "get": {
                "summary": "one schedule with its newest runs, newest first",
                "parameters": [
                    _SCHEDULE_ID_PATH,
                    _query("limit", _bounded(RUNS_LIMIT), about="how many runs"),
                ],
                "responses": _responses("RestScheduleDetailOk", "400", "404"),
            },
            "delete": {
                "summary": "remove the schedule and its runs (its tasks stay)",
                "parameters": [_SCHEDULE_ID_PATH],
                "responses": _responses("RestScheduleRemovedOk", "400", "403", "404"),
            },
        },
        "/api/schedules/{scheduleId}/pause": {
            "post": {
                "summary": "stop the schedule from starting tasks (a running one runs on)",
                "parameters": [_SCHEDULE_ID_PATH],
                "responses": _responses("RestScheduleOk", "400", "403", "404"),
            }
        },
        "/api/schedules/{scheduleId}/resume": {
            "post": {
                "summary": "let a paused schedule start tasks again",
                "parameters": [_SCHEDULE_ID_PATH],
                "responses": _responses("RestScheduleOk", "400", "403", "404"),
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "this document",
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})}
                },  # fmt: skip
            }
        },
    },
    "components": {"schemas": SCHEMAS},
}
