"""What the task endpoints do, whatever the route: one implementation behind ``collect.json``,
``/api/tasks/…`` and the task page.

It runs inside the scrapyd process (built from scrapyd's root, which holds the scheduler, the
queues and the launcher) and talks to the same database as the crawls: ``DATABASE_URL`` from
the environment, else the SQLite file in the directory scrapyd was started from — the crawl
processes inherit both. A task is scheduled as the ``vk`` spider with ``-a task_id=N`` and a
job id of ours, recorded in ``tasks.job_id`` so its state can be shown and the job cancelled.

Distributed mode (``VK_DISTRIBUTED=1`` in the scrapyd process's environment, with
``REDIS_URL`` and a PostgreSQL ``DATABASE_URL``): a collected task goes into the Redis feed of
``python -m vkscraper worker`` processes instead of scrapyd's queue, as job ``workers:N``;
its state is read from Redis (``pending`` in the feed, ``running`` while workers crawl it), and
a cancel takes it out of the feed or ends it for every worker (the task stays resumable).

Every refusal is a :class:`RequestError` carrying its HTTP status; the routes turn it into
``{"status": "error", "message": …}``. Nothing is created when a request is refused.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from scrapy.settings import Settings
from twisted.internet import reactor, threads
from twisted.python.threadable import isInIOThread

from vkscraper import defaults
from vkscraper._internals import scrapyd_interrupt, scrapyd_running
from vkscraper.addon import check_settings, register_defaults
from vkscraper.connections import redis_url
from vkscraper.distributed import workqueue
from vkscraper.exceptions import StoreError, VkscraperError
from vkscraper.store import Store, open_store
from vkscraper.store.export import json_record
from vkscraper.store.metrics import Snapshot
from vkscraper.store.tasks import Task
from vkscraper.tokens.access import load_tokens
from vkscraper.tokens.trust import API_URLS_ENV, MAX_RPS_ENV, api_url_allowed
from vkscraper.vk.grouprefs import GroupRefError, parse_group_refs, split_group_refs

logger = logging.getLogger(__name__)

PROJECT = "vkscraper"  # scrapy.cfg [settings] / [deploy] project
SPIDER = "vk"
RESULTS_LIMIT = (1, 1000, 100)  # lowest, highest, default
TASKS_LIMIT = (1, 500, 20)
MAX_GROUPS = 50_000  # references in one request
MAX_BODY = 1 << 20  # bytes of a request body (form or JSON)
# Never accepted as setting=: scrapyd writes settings to its queue and its log; these are
# secrets or say where the crawl writes, and belong to the scrapyd process's environment.
ENVIRONMENT_ONLY = (
    "VK_ACCESS_TOKEN", "DATABASE_URL", "REDIS_URL",
    # Webhook URLs are secrets (a Slack URL is its own credential).
    "VK_ALERT_WEBHOOKS", "VK_ALERT_SLACK_WEBHOOKS",
)  # fmt: skip
# What an HTTP client may tune. Anything else could run code (pipelines, middlewares), write
# files (LOG_FILE, FEEDS) or send the token elsewhere (VK_API_URL: only VK's API or the origins
# the operator allows, vkscraper.tokens.trust), so it is refused. The rate may only be made slower:
# the crawl refuses VK_REQUESTS_PER_SECOND above the operator's VKSCRAPER_MAX_RPS, and
# VK_RATE_MARGIN may not go below the project's (_check_margin).
# The shared limit, the workers' and the schedule runner's settings are the operator's too: a
# client turning the shared limit off would let two processes on one token add up past VK's
# limit.
OPERATOR_ONLY = {"VK_API_URL", "VK_UNSAVED_DIR", "VK_SHARED_RATE_LIMIT"}
# Where alerts go, when and how often they are retried (vkscraper.alerts.config).
OPERATOR_ONLY |= {n for n in defaults.all_defaults() if n.startswith("VK_ALERT_")} | {
    "VK_PUBLIC_URL"
}
CLIENT_SETTINGS = frozenset(
    {n for n in defaults.all_defaults() if not n.startswith(("VK_WORKER_", "VK_SCHEDULE_"))}
    - OPERATOR_ONLY
) | {
    "LOG_LEVEL", "RETRY_ENABLED", "RETRY_TIMES", "DOWNLOAD_TIMEOUT", "DOWNLOAD_DELAY",
    "AUTOTHROTTLE_ENABLED", "AUTOTHROTTLE_TARGET_CONCURRENCY", "AUTOTHROTTLE_MAX_DELAY",
    "CLOSESPIDER_TIMEOUT",
}  # fmt: skip
_SETTING_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ACTIVE_STATES = ("pending", "running", "stopping")
JOB_STATES = (*ACTIVE_STATES, "finished", "unknown", "none")  # see job_state()
MAX_CLIENT_REFRESH = 60.0  # seconds: the longest VK_METRICS_INTERVAL a client may send
REOPEN_AFTER = 5.0  # seconds a failed database open is answered from memory (503)
DISTRIBUTED_ENV = "VK_DISTRIBUTED"  # "1": collect feeds the workers' Redis queue
T = TypeVar("T")


class RequestError(VkscraperError):
    """A request the service refuses or cannot serve; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> RequestError:
    return RequestError(400, message)


def parse_int(name: str, raw: str | int | None, bounds: tuple[int, int, int] | None = None) -> int:
    """A whole-number parameter: 400 naming it when missing, malformed or out of range. Only
    an absent one (None) takes the default: an empty value (``after=``) is malformed."""
    if raw is None:
        if bounds is None:
            raise bad_request(f"'{name}' parameter is required")
        return bounds[2]
    if isinstance(raw, bool) or not re.fullmatch(r"\s*[0-9]{1,18}\s*", str(raw)):
        raise bad_request(f"'{name}' must be a whole number, got {str(raw)[:40]!r}")
    value = int(raw)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise bad_request(f"'{name}' must be between {bounds[0]} and {bounds[1]}, got {value}")
    return value


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def on_reactor(fn: Callable[[], T]) -> T:
    """``fn()`` in the reactor thread, where scrapyd's queue (an SQLite connection of that
    thread) and launcher live; the service's requests run in pool threads."""
    if isInIOThread():
        return fn()
    return threads.blockingCallFromThread(reactor, fn)


class ServiceStore:
    """The database of one scrapyd process's services, shared by their request threads (one
    connection): the task operations and the schedule operations read and write through
    :meth:`call`."""

    def __init__(self, store_factory: Callable[[], Store] = open_store) -> None:
        self._store_factory = store_factory
        self._store: Store | None = None
        self._opening = threading.Lock()
        self._open_failed: tuple[float, str] | None = None  # (monotonic time, the 503's text)

    def call(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn`` with the store (thread-safe, shared by the request threads), opened and
        migrated on first use; a database error is a 503 that names it, and the next request
        opens and migrates afresh (a database recreated meanwhile has no tables).

        After a failed open, requests answer that 503 at once for :data:`REOPEN_AFTER`
        seconds: a server that accepts connections but never answers costs one connect
        timeout, not one per request queued behind it."""
        store = None
        try:
            with self._opening:
                if self._store is None:
                    failed = self._open_failed
                    if failed is not None and time.monotonic() - failed[0] < REOPEN_AFTER:
                        raise RequestError(503, failed[1])
                    try:
                        opened = self._store_factory()
                        opened.migrate()
                    except StoreError as exc:
                        message = f"the database is unavailable: {exc}"
                        self._open_failed = (time.monotonic(), message)
                        logger.warning("task service: database unavailable: %s", exc)
                        raise RequestError(503, message) from None
                    self._open_failed = None
                    self._store = opened
                store = self._store
            return fn(store)
        except StoreError as exc:
            logger.warning("task service: database unavailable: %s", exc)
            with self._opening:
                if store is not None and self._store is store:
                    self._store = None
                    store.close()
            raise RequestError(503, f"the database is unavailable: {exc}") from None


class TaskService:
    """The task operations for one scrapyd process (see :meth:`of`)."""

    def __init__(self, root: Any, store_factory: Callable[[], Store] = open_store) -> None:
        self.root = root
        self.database = ServiceStore(store_factory)
        self._stopping: set[str] = set()  # jobs sent SIGINT: a second one would force them
        # Requests run in pool threads: "is a job of this task queued? if not, queue one"
        # must not interleave for one task.
        self._queueing = threading.Lock()
        self.distributed = os.environ.get(DISTRIBUTED_ENV, "").lower() in ("1", "true", "yes")
        self._redis: Any = None

    @classmethod
    def of(cls, root: Any) -> TaskService:
        """The one service of this scrapyd root, shared by every route (one connection)."""
        service = getattr(root, "_vkscraper_service", None)
        if service is None:
            service = cls(root)
            root._vkscraper_service = service
        return service

    # ------------------------------------------------------------------ database
    def _call(self, fn: Callable[[Store], T]) -> T:
        return self.database.call(fn)

    def _task(self, task_id: int) -> Task:
        task = self._call(lambda s: s.get_task(task_id))
        if task is None:
            raise RequestError(404, f"task {task_id} does not exist")
        return task

    # ------------------------------------------------------------------ scrapyd jobs
    def job_states(self) -> dict[str, str]:
        """Every job scrapyd knows: ``pending`` (queued), ``running``, ``stopping``,
        ``finished``; in distributed mode, the workers' tasks."""
        if self.distributed:
            return self._worker_states()
        return on_reactor(self._job_states)

    # ------------------------------------------------------------------ workers (Redis)
    def _workers(self) -> Any:
        """The workers' Redis (distributed mode)."""
        if self._redis is None:
            url = redis_url()
            if not url:
                raise RequestError(503, f"{DISTRIBUTED_ENV}=1 needs REDIS_URL in the environment")
            import redis

            self._redis = redis.Redis.from_url(url)
        return self._redis

    def _worker_states(self) -> dict[str, str]:
        try:
            states = workqueue.task_states(self._workers())
        except Exception as exc:  # redis.RedisError, OSError
            raise RequestError(503, f"the workers' Redis is unreachable: {exc}") from None
        return {worker_job(t): state for t, state in states.items()}

    def _enqueue(self, task_id: int) -> dict[str, Any]:
        job = worker_job(task_id)
        self._call(lambda s: s.set_job(task_id, job, {}))
        workqueue.enqueue(self._workers(), task_id)
        logger.info("task service: task %s queued for the workers", task_id)
        return {"task_id": task_id, "jobid": job}

    def _job_states(self) -> dict[str, str]:
        states: dict[str, str] = {job.job: "finished" for job in self.root.launcher.finished}
        for queue in self.root.poller.queues.values():
            for message in queue.list():
                states[message["_job"]] = "pending"
        running = set(scrapyd_running(self.root))
        self._stopping &= running  # forget the jobs that ended
        for job in running:
            states[job] = "stopping" if job in self._stopping else "running"
        return states

    def _queue(self) -> Any:
        queue = self.root.poller.queues.get(PROJECT)
        if queue is None:
            raise RequestError(
                503,
                f"scrapyd has no project {PROJECT!r}: start it from the project directory "
                "(make serve) or deploy the project with scrapyd-deploy",
            )
        return queue

    def refuse_distributed_settings(self, given: bool) -> None:
        """In distributed mode a task runs with the settings of the workers that take it:
        settings sent with it would be silently ignored, so they are refused."""
        if self.distributed and given:
            raise bad_request(
                "settings cannot be sent in distributed mode: the workers' own apply "
                "(python -m vkscraper worker -s NAME=VALUE)"
            )

    # ------------------------------------------------------------------ operations
    def collect(
        self,
        groups: str | Sequence[Any] | None,
        settings: Sequence[str] | Mapping[str, Any] = (),
        task_id: str | int | None = None,
    ) -> dict[str, Any]:
        """Create a task (``created``) for ``groups`` — or the active groups of the groups
        table when None — or take the existing ``task_id`` (it resumes, or re-runs when it
        finished; without settings of its own it gets those of its last job), and queue the
        crawl as a scrapyd job. The task turns ``in_progress`` when
        the crawl starts."""
        given = bool(settings)
        overrides = check_task_settings(settings)
        if self.distributed:
            self.refuse_distributed_settings(given)
            self._call(lambda s: s.require_multiprocess("distributed mode"))
            self._worker_states()  # Redis answers, before a task is created
        else:
            self._queue()
        if task_id is None:
            values = self._group_values(groups)
            created = self._call(lambda s: s.create_task(values))
            return self.queue_task(created, overrides)
        if groups is not None:
            raise bad_request("give either 'groups' or 'task_id', not both")
        tid = parse_int("task_id", task_id)
        with self._queueing:
            task = self._task(tid)
            state = self.job_states().get(task.job_id or "")
            if state in ACTIVE_STATES:
                raise RequestError(409, f"task {task.id} is already {state} as job {task.job_id}")
            if self.distributed:
                return self.queue_task(task.id, {})
            if not given and task.job_settings:
                # Run it as it was queued last (the emulator's URL, a page size…), checked
                # again: the operator's rules may have changed since.
                overrides = check_task_settings(task.job_settings)
            return self.queue_task(task.id, overrides)

    def queue_task(self, task_id: int, overrides: dict[str, str]) -> dict[str, Any]:
        """Queue a crawl of an existing task: a scrapyd job with ``overrides`` (checked by
        :func:`check_task_settings`), or, in distributed mode, the workers' feed (where the
        workers' own settings apply: ``overrides`` must be empty). Returns task_id and jobid."""
        if self.distributed:
            self.refuse_distributed_settings(bool(overrides))
            return self._enqueue(task_id)
        self._queue()
        return self._schedule(task_id, overrides)

    def _schedule(self, task_id: int, overrides: dict[str, str]) -> dict[str, Any]:
        jobid = uuid.uuid1().hex
        self._call(lambda s: s.set_job(task_id, jobid, overrides))
        on_reactor(
            lambda: self.root.scheduler.schedule(
                PROJECT, SPIDER, priority=0.0, settings=overrides, _job=jobid, task_id=str(task_id)
            )
        )
        logger.info("task service: task %s queued as job %s", task_id, jobid)
        return {"task_id": task_id, "jobid": jobid}

    def _group_values(self, groups: str | Sequence[Any] | None) -> list[int | str]:
        if groups is None:
            refs = self._call(lambda s: s.active_group_refs())
            if not refs:
                raise bad_request(
                    "no 'groups' given and the groups table has no active group: pass "
                    "groups=… or add some with `python -m vkscraper groups add …`"
                )
        else:
            if not isinstance(groups, str) and not (
                isinstance(groups, Sequence)
                and all(isinstance(g, str | int) and not isinstance(g, bool) for g in groups)
            ):
                raise bad_request("'groups' must be a list of ids, names or URLs")
            items = split_group_refs(groups) if isinstance(groups, str) else groups
            if len(items) > MAX_GROUPS:
                raise RequestError(413, f"more than {MAX_GROUPS} group references")
            try:
                refs = parse_group_refs([str(g) for g in items])
            except GroupRefError as exc:
                raise bad_request(f"bad group reference: {exc}") from None
            if not refs:
                raise bad_request("'groups' names no community")
        return [r.group_id if r.group_id is not None else str(r.screen_name) for r in refs]

    def task(self, task_id: str | int | None) -> dict[str, Any]:
        """One task: status, timestamps, its job, progress, rates and the full metrics."""
        task = self._task(parse_int("task_id", task_id))
        view = task_view(task, self.job_states())
        view["metrics"] = task.metrics
        names = self._call(lambda s: s.list_groups())
        view["groups_detail"] = groups_detail(
            task, {str(g["id"]): g["name"] for g in names}, view["job"]["state"]
        )
        return view

    def tasks(self, limit: str | int | None = None) -> list[dict[str, Any]]:
        """The newest tasks, each as :meth:`task` without the per-group detail and errors."""
        n = parse_int("limit", limit, TASKS_LIMIT)
        states = self.job_states()
        return [task_view(t, states) for t in self._call(lambda s: s.list_tasks(n))]

    def results(
        self,
        task_id: str | int | None,
        kind: str | None = None,
        limit: str | int | None = None,
        after: str | int | None = None,
    ) -> dict[str, Any]:
        """One page of the task's posts or comments in row-id order after ``after`` (a key
        cursor: pass back ``next_after``). Pages never repeat a row; while the task runs, an
        older row it sees again keeps its lower id and joins behind the cursor, so the full
        set is read once the task has ended."""
        tid = parse_int("task_id", task_id)
        kind = "posts" if kind is None else kind
        if kind not in ("posts", "comments"):
            raise bad_request(f"'kind' must be 'posts' or 'comments', got {kind[:40]!r}")
        n = parse_int("limit", limit, RESULTS_LIMIT)
        after_id = parse_int("after", after, (0, 2**63 - 1, 0))
        task = self._task(tid)
        rows = self._call(lambda s: s.task_results(tid, kind, limit=n, after_id=after_id))  # type: ignore[arg-type]
        return {
            "task_id": tid,
            "kind": kind,
            "task_status": task.status,
            "rows": [json_record(r, kind) for r in rows],  # type: ignore[arg-type]
            "next_after": rows[-1]["id"] if rows else after_id,
            "has_more": len(rows) == n,
        }

    def cancel(self, task_id: str | int | None) -> dict[str, Any]:
        """Stop the task's job: out of the queue if it had not started, else SIGINT (the
        crawl stops gracefully and the task stays resumable: collect it again)."""
        task = self._task(parse_int("task_id", task_id))
        job = task.job_id
        if self.distributed:
            return self._cancel_workers(task)

        def stop() -> str | None:  # in the reactor thread: look and act in one step
            state = self._job_states().get(job or "")
            if state == "pending":
                self._queue().remove(lambda message: message["_job"] == job)
            elif state == "running" and (process := scrapyd_running(self.root).get(job or "")):
                scrapyd_interrupt(process)
                self._stopping.add(process.job)
            return state

        state = on_reactor(stop)
        if state == "stopping":
            raise RequestError(409, f"task {task.id} is already stopping (job {job})")
        if state not in ("pending", "running"):
            raise RequestError(
                409, f"task {task.id} has no pending or running job (status {task.status})"
            )
        logger.info("task service: task %s job %s cancelled (%s)", task.id, job, state)
        return {"task_id": task.id, "jobid": job, "prevstate": state}

    def _cancel_workers(self, task: Task) -> dict[str, Any]:
        """Out of the feed if no worker took it yet, else ended for every worker: each closes
        its crawl of it and puts back the groups it had not finished (resumable)."""
        job = worker_job(task.id)
        state = self._worker_states().get(job)
        if state in ("pending", "running"):
            # A worker taking it from the feed meanwhile drops it (BEGIN sees "cancelled").
            workqueue.TaskQueue(self._workers(), task.id, "service").cancel()
        else:
            raise RequestError(
                409, f"task {task.id} is not queued or running (status {task.status})"
            )
        logger.info("task service: task %s cancelled for the workers (%s)", task.id, state)
        return {"task_id": task.id, "jobid": job, "prevstate": state}

    # ------------------------------------------------------------------ /metrics
    def metrics_snapshot(self) -> Snapshot:
        """The database's side of ``/metrics`` (503 :class:`RequestError` when unavailable)."""
        return self._call(lambda s: s.metrics_snapshot())

    def fleet(self) -> workqueue.Fleet:
        """Distributed mode: the workers' queue and how many are alive (503 when Redis is
        unreachable)."""
        try:
            return workqueue.fleet(self._workers())
        except Exception as exc:  # redis.RedisError, OSError
            raise RequestError(503, f"the workers' Redis is unreachable: {exc}") from None


def check_task_settings(settings: Sequence[str] | Mapping[str, Any]) -> dict[str, str]:
    """``NAME=value`` pairs (or a mapping) as settings for the crawl, refused with a 400 that
    names the problem: a name not in :data:`CLIENT_SETTINGS`, a value the crawl would refuse
    or that could break scrapyd's launcher (control characters). A value is never echoed:
    it might be a secret."""
    pairs: list[tuple[str, str]] = []
    if isinstance(settings, Mapping):
        for k, v in settings.items():
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                raise bad_request(f"setting {str(k)[:40]!r}: the value must be a string or number")
            pairs.append((str(k), str(v)))
    else:
        pairs = [(n, v) for n, _, v in (str(s).partition("=") for s in settings)]
    tokens = load_tokens()
    out: dict[str, str] = {}
    for name, text in pairs:
        name = name.strip()
        if not _SETTING_NAME.fullmatch(name):
            raise bad_request(
                f"setting {name[:40]!r}: expected NAME=value with an upper-case NAME"
            )
        if name in out:
            raise bad_request(f"setting {name} is given twice")
        if name in ENVIRONMENT_ONLY:
            raise bad_request(
                f"{name} cannot be sent with a task: set it in the environment of the scrapyd "
                "process (settings are written to scrapyd's queue and log)"
            )
        if name == "VK_API_URL":
            if not api_url_allowed(text):
                raise bad_request(
                    f"VK_API_URL: not an allowed URL (the token is sent there); the operator "
                    f"lists the allowed ones in {API_URLS_ENV} of the scrapyd process"
                )
        elif name == "VK_RATE_MARGIN":
            _check_margin(text)
        elif name == "VK_METRICS_INTERVAL":
            _check_refresh(text)
        elif name not in CLIENT_SETTINGS:
            raise bad_request(
                f"setting {name} cannot be sent with a task (allowed: VK_API_URL, "
                f"{', '.join(sorted(CLIENT_SETTINGS))})"
            )
        if _CONTROL.search(text):
            raise bad_request(f"setting {name}: the value holds a control character")
        if any(t in text for t in tokens):
            raise bad_request(f"setting {name} holds the access token: it must not be sent")
        out[name] = text
    probe = Settings()
    probe.setmodule("vkscraper.settings", priority="project")
    register_defaults(probe)
    probe.setdict(out, priority="cmdline")
    try:
        check_settings(probe)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return out


def _check_margin(text: str) -> None:
    """A client may widen the margin between requests, never narrow it below the project's
    (the crawl itself only refuses a margin below 1)."""
    try:
        slower = float(text) >= defaults.VK_RATE_MARGIN
    except ValueError:
        return  # the crawl's own check names a malformed number
    if not slower:
        raise bad_request(
            f"VK_RATE_MARGIN below {defaults.VK_RATE_MARGIN:g} would speed the crawl up: only "
            f"the operator sets the rate limit ({MAX_RPS_ENV} in the environment of the scrapyd "
            "process)"
        )


def _check_refresh(text: str) -> None:
    """The task row's refresh is also the heartbeat by which a schedule runner tells a running
    task of another process from a dead one (VK_SCHEDULE_STALE_AFTER): a client may not turn it
    off or stretch it past a minute."""
    try:
        seconds = float(text)
    except ValueError:
        return  # the crawl's own check names a malformed number
    if not 0 < seconds <= MAX_CLIENT_REFRESH:
        raise bad_request(
            f"VK_METRICS_INTERVAL must be above 0 and at most {MAX_CLIENT_REFRESH:g} seconds "
            "when sent with a task"
        )


def worker_job(task_id: int) -> str:
    """The job id of a task run by workers (distributed mode)."""
    return f"workers:{task_id}"


def job_state(task: Task, states: Mapping[str, str]) -> str:
    """The state of the task's job (:data:`JOB_STATES`): scrapyd's (or the workers') own,
    ``none`` when the task never had a job (created by the CLI or ``scrapy crawl``), and
    ``unknown`` when its job is no longer known — removed from the queue before it started,
    forgotten by a scrapyd restarted since (scrapyd keeps jobs in memory only) or beyond its
    ``finished_to_keep``, or, in distributed mode, out of the workers' Redis."""
    if not task.job_id:
        return "none"
    return states.get(task.job_id, "unknown")


def task_view(task: Task, states: Mapping[str, str]) -> dict[str, Any]:
    """A task for the API and the page, without the per-group detail."""
    m = task.metrics
    state = job_state(task, states)
    finished = task.status in ("completed", "failed")
    end = task.finished_at or datetime.now(UTC)
    elapsed = (end - task.started_at).total_seconds() if task.started_at else None
    requests = int(m.get("requests") or 0)
    comments = int(m.get("comments") or 0)
    return {
        "task_id": task.id,
        "status": task.status,
        "groups": task.groups,
        "created_at": _iso(task.created_at),
        "started_at": _iso(task.started_at),
        "finished_at": _iso(task.finished_at),
        "updated_at": _iso(task.updated_at),
        "job": {"jobid": task.job_id, "state": state},
        # Not finished and no job queued or running: interrupted, cancelled or never queued.
        "resumable": not finished and state not in ACTIVE_STATES,
        "progress": progress(task),
        "counts": {
            "posts": int(m.get("posts") or 0),
            "posts_expected": int(m.get("posts_expected") or 0),
            "comments": comments,
            "comments_expected": int(m.get("comments_expected") or 0),
            "groups_done": int(m.get("groups_done") or 0),
            "groups_total": int(m.get("groups_total") or len(task.groups)),
            "errors": len(m.get("errors") or []),
            "requests": requests,
        },
        "timing": {
            "elapsed_s": None if elapsed is None else round(max(elapsed, 0.0), 1),
            # (n - 1) / span: n requests paced one per interval span n - 1 intervals, so
            # n / span would read above the limit the crawl keeps (3.2/s for a short task).
            "requests_per_s": _rate(max(requests - 1, 0), elapsed),
            "comments_per_s": _rate(comments, elapsed),
        },
    }


def _rate(count: int, seconds: float | None) -> float | None:
    return None if not seconds or seconds <= 0 else round(count / seconds, 2)


def _fraction(done: int, expected: int) -> float:
    return 1.0 if expected <= 0 else min(done / expected, 1.0)


def progress(task: Task) -> dict[str, Any]:
    """How far the run is: groups done / total, posts and comments stored / expected, and
    one ``percent`` — each group weighs the same; a group counts its stored rows against
    what VK announced for it, 100 % once done or failed (expected counts grow as groups
    start, so a global stored/expected ratio would jump backwards). A completed task is at
    100 %; a failed one shows how far it got (one that failed before crawling is at 0 %)."""
    m = task.metrics
    total = int(m.get("groups_total") or len(task.groups)) or 1
    share = 0.0
    for g in (m.get("groups") or {}).values():
        if g.get("done") or g.get("status") in ("done", "failed"):
            share += 1.0
        elif g.get("posts_expected") is not None:
            rows = int(g.get("posts") or 0) + int(g.get("comments") or 0)
            expected = int(g.get("posts_expected") or 0) + int(g.get("comments_expected") or 0)
            share += 0.5 * _fraction(rows, expected)  # the other half comes when it ends
    percent = 100 * min(share / total, 1.0)
    if task.status == "completed":
        percent = 100.0
    elif task.status != "failed":
        percent = min(percent, 99.9)  # 100 % is for a finished task only
    return {
        "percent": round(percent, 1),
        "groups": [int(m.get("groups_done") or 0), int(m.get("groups_total") or 0)],
        "posts": [int(m.get("posts") or 0), int(m.get("posts_expected") or 0)],
        "comments": [int(m.get("comments") or 0), int(m.get("comments_expected") or 0)],
    }


def groups_detail(task: Task, names: Mapping[str, str | None], state: str) -> list[dict[str, Any]]:
    """Per group of the task, in the task's order: status and stored / expected counts.

    The status is the group's own (``in_progress``, ``done``, ``failed``) while the task's
    job (``state``, see :func:`job_state`) is queued or running; once it is over, a group
    never begun is ``not_started`` and one begun but not finished is ``stopped`` (``waiting``
    and ``in_progress`` would claim work that nothing is doing)."""
    per_group = task.metrics.get("groups") or {}
    over = state not in ACTIVE_STATES
    out = []
    for group in task.groups:
        key = str(group)
        g = per_group.get(key) or {}
        status = g.get("status") or ("not_started" if over else "waiting")
        if over and status == "in_progress":
            status = "stopped"
        out.append(
            {
                "group": group,
                "name": names.get(key),
                "status": status,
                "posts": int(g.get("posts") or 0),
                "posts_expected": int(g.get("posts_expected") or 0),
                "comments": int(g.get("comments") or 0),
                "comments_expected": int(g.get("comments_expected") or 0),
                "errors": list(g.get("errors") or []),
            }
        )
    return out
