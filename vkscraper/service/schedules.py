"""What the schedule endpoints do, whatever the route: one implementation behind
``/api/schedules…`` and the schedules page.

A schedule is created here and run by the schedule runner (:mod:`vkscraper.schedules`); this
module only lists, shows, adds, pauses, resumes and removes them. It shares the task service's
database (one connection, its 503s: :class:`~vkscraper.service.core.ServiceStore`) and reads
the state of each schedule's last task the way the task routes do (scrapyd's jobs, or the
workers' Redis in distributed mode).

A schedule's crawl settings are a client's settings: they pass
:func:`~vkscraper.service.core.check_task_settings` like a collect's and are refused in
distributed mode like a collect's. The access token is never accepted anywhere in a request
(not even in a field that an error message would echo) and so never shown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from vkscraper.schedules.spec import ScheduleError, parse_spec
from vkscraper.service.core import (
    MAX_GROUPS,
    RequestError,
    TaskService,
    _iso,
    bad_request,
    check_task_settings,
    job_state,
    parse_int,
)
from vkscraper.store import Store
from vkscraper.store.schedules import Schedule, ScheduleRun
from vkscraper.store.tasks import Task
from vkscraper.tokens.access import load_tokens, token_forms

T = TypeVar("T")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # the database refuses NUL; none belongs in a field
RUNS_LIMIT = (1, 200, 20)  # lowest, highest, default runs shown with a schedule
ADD_FIELDS = ("name", "groups", "every", "cron", "timezone", "settings")


class ScheduleService:
    """The schedule operations of one scrapyd process, over its task service (cheap: one
    per request)."""

    def __init__(self, tasks: TaskService) -> None:
        self.tasks = tasks

    def _call(self, fn: Callable[[Store], T]) -> T:
        return self.tasks.database.call(fn)

    def _schedule(self, schedule_id: int) -> Schedule:
        schedule = self._call(lambda s: s.get_schedule(schedule_id))
        if schedule is None:
            raise RequestError(404, f"schedule {schedule_id} does not exist")
        return schedule

    def _views(self, schedules: list[Schedule]) -> list[dict[str, Any]]:
        """Each schedule with its last task's status and job state."""
        ids = {s.last_task_id for s in schedules if s.last_task_id is not None}

        def read(store: Store) -> dict[int, Task]:
            return {t.id: t for i in ids if (t := store.get_task(i)) is not None}

        last = self._call(read) if ids else {}
        states = self.tasks.job_states() if last else {}
        return [schedule_view(s, last.get(s.last_task_id or 0), states) for s in schedules]

    # ------------------------------------------------------------------ operations
    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule, oldest first."""
        return self._views(self._call(lambda s: s.list_schedules()))

    def schedule(
        self, schedule_id: str | int | None, limit: str | int | None = None
    ) -> dict[str, Any]:
        """One schedule with its newest runs (``limit``), newest first."""
        sid = parse_int("scheduleId", schedule_id)
        n = parse_int("limit", limit, RUNS_LIMIT)
        view = self._views([self._schedule(sid)])[0]
        runs = self._call(lambda s: s.schedule_runs(sid, limit=n))
        view["runs"] = [run_view(r) for r in runs]
        return view

    def add(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Check a schedule as a client sends it (the fields of :data:`ADD_FIELDS`) and store
        it; 400 naming the problem."""
        refuse_tokens(body)
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise bad_request("the body holds a lone surrogate (not valid Unicode)") from None
        unknown = sorted(set(body) - set(ADD_FIELDS))
        if unknown:
            raise bad_request(f"unknown field(s): {', '.join(unknown)}")
        name, every, cron = body.get("name", ""), body.get("every"), body.get("cron")
        timezone, settings, groups = (
            body.get("timezone", "UTC"),
            body.get("settings", {}),
            body.get("groups"),
        )
        if not isinstance(name, str):
            raise bad_request("'name' must be a string")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int | str)):
            raise bad_request("'every' must be seconds (an integer) or a string like '15m'")
        if cron is not None and not isinstance(cron, str):
            raise bad_request("'cron' must be a string of five cron fields")
        if not isinstance(timezone, str):
            raise bad_request("'timezone' must be a string naming a time zone")
        for field_name, text in (("name", name), ("every", every), ("cron", cron),
                                 ("timezone", timezone)):  # fmt: skip
            if isinstance(text, str) and CONTROL.search(text):
                raise bad_request(f"'{field_name}' holds a control character")
        if not isinstance(settings, dict):
            raise bad_request("'settings' must be an object of NAME: value")
        if groups is not None:
            if not isinstance(groups, list) or not all(
                isinstance(g, str | int) and not isinstance(g, bool) for g in groups
            ):
                raise bad_request("'groups' must be a list of ids, names or URLs, or null")
            if len(groups) > MAX_GROUPS:
                raise RequestError(413, f"more than {MAX_GROUPS} group references")
        self.tasks.refuse_distributed_settings(bool(settings))
        checked = check_task_settings(settings)
        try:
            spec = parse_spec(
                name=name, groups=groups, every=every, cron=cron, timezone=timezone,
                settings=checked,
            )  # fmt: skip
        except ScheduleError as exc:
            raise bad_request(str(exc)) from None
        schedule_id = self._call(lambda s: s.add_schedule(spec))
        return self._views([self._schedule(schedule_id)])[0]

    def pause(self, schedule_id: str | int | None) -> dict[str, Any]:
        """Stop the schedule from starting tasks (a task it started runs on)."""
        sid = parse_int("scheduleId", schedule_id)
        schedule = self._call(lambda s: s.pause_schedule(sid))
        if schedule is None:
            raise RequestError(404, f"schedule {sid} does not exist")
        return self._views([schedule])[0]

    def resume(self, schedule_id: str | int | None) -> dict[str, Any]:
        """Let a paused schedule start tasks again (from its next due time)."""
        sid = parse_int("scheduleId", schedule_id)
        schedule = self._call(lambda s: s.resume_schedule(sid))
        if schedule is None:
            raise RequestError(404, f"schedule {sid} does not exist")
        return self._views([schedule])[0]

    def remove(self, schedule_id: str | int | None) -> dict[str, Any]:
        """Delete the schedule and its run history; its tasks stay."""
        sid = parse_int("scheduleId", schedule_id)
        if not self._call(lambda s: s.remove_schedule(sid)):
            raise RequestError(404, f"schedule {sid} does not exist")
        return {"scheduleId": sid}


def refuse_tokens(body: Mapping[str, Any]) -> None:
    """A request holding the access token anywhere (a name, a cron field, a setting) is
    refused without echoing what it sent: a refusal naming a malformed field would show it,
    and a stored schedule would keep it in the database."""
    text = json.dumps(body, ensure_ascii=False)
    for token in load_tokens():
        if any(form in text for form in token_forms(token)):
            raise bad_request("the request holds the access token: it must not be sent")


def schedule_view(
    schedule: Schedule, last: Task | None, states: Mapping[str, str]
) -> dict[str, Any]:
    """A schedule for the API and the page (camelCase, as the REST routes answer)."""
    return {
        "scheduleId": schedule.id,
        "name": schedule.name,
        "groups": schedule.groups,
        "everySeconds": schedule.every_s,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "settings": dict(schedule.settings or {}),
        "paused": bool(schedule.paused),
        "nextRunAt": _iso(schedule.next_run_at),
        "skippedInARow": int(schedule.skipped_in_a_row or 0),
        "lastTask": None
        if last is None
        else {
            "taskId": last.id,
            "status": last.status,
            "job": {"jobid": last.job_id, "state": job_state(last, states)},
        },
        "createdAt": _iso(schedule.created_at),
        "updatedAt": _iso(schedule.updated_at),
    }


def run_view(run: ScheduleRun) -> dict[str, Any]:
    return {
        "dueAt": _iso(run.due_at),
        "ranAt": _iso(run.ran_at),
        "outcome": run.outcome,
        "taskId": run.task_id,
        "message": run.message,
    }
