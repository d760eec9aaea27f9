"""The :class:`Store`: one database connection shared by threads, one transaction per call.

Scrapy calls the store from worker threads (``asyncio.to_thread``), so a
``threading.Lock`` guards the single connection: psycopg2 refuses re-entrant use and sqlite3
connections are not safe to share without it. Each public method runs in exactly one
transaction; a driver error rolls it back and surfaces as one-line :class:`StoreError`.

When PostgreSQL drops the connection (restart, ``pg_terminate_backend``, network) before the
transaction committed, the call reconnects and runs once more: nothing was committed, so the
retry cannot double-apply anything. If the connection is lost *during* COMMIT the outcome is
unknown, so the call raises and only the next call reconnects.

An outage is logged once, however many calls fail during it: one WARNING when the connection is
lost (or a reconnect fails first), DEBUG lines for the calls that fail after it, and one INFO
line when a call reconnects, with how long it lasted. :attr:`Store.down_since` tells callers
that an outage is going on. The store never waits between attempts: each call tries to connect
once; callers that retry (the store pipeline) pace themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from vkscraper.connections import database_url
from vkscraper.exceptions import StoreError
from vkscraper.items import VkComment, VkGroup, VkPost
from vkscraper.store import alerts, content, groups, metrics, migrations, schedules, tasks
from vkscraper.store.backends import Backend, backend_for, first_line
from vkscraper.store.content import UpsertResult
from vkscraper.store.schedules import Claimed, JobStates, Schedule, ScheduleRun
from vkscraper.store.tasks import Task
from vkscraper.vk.grouprefs import GroupRef

if TYPE_CHECKING:
    from vkscraper.schedules.spec import ScheduleSpec

# The package logger by contract (not __name__): "which store is in use" is logged here.
logger = logging.getLogger("vkscraper.store")

T = TypeVar("T")


class _CommitLost(Exception):
    """The connection broke while committing: the transaction may or may not have landed."""


def open_store(url: str | None = None) -> Store:
    """Connect to ``url``, else ``DATABASE_URL``, else ``sqlite:///vkscraper.sqlite3``
    (:func:`~vkscraper.connections.database_url`).

    Does not migrate: call :meth:`Store.migrate`. Raises :class:`StoreError` with one line
    (backend, where, the driver's first line) when the URL is bad or the server unreachable.
    """
    backend = backend_for(database_url(url))
    store = Store(backend)
    logger.info("using %s store %s", backend.label, backend.safe_url)
    return store


class Store:
    """Posts, comments, tasks and groups in PostgreSQL or SQLite. Thread-safe."""

    def __init__(self, backend: Backend) -> None:
        self._db = backend
        self._lock = threading.Lock()
        self._conn: Any = backend.connect()
        self._closed = False
        # The outage in progress: when it began (monotonic) and how many calls failed in it.
        self._down_since: float | None = None
        self._failed_calls = 0

    # ---------------------------------------------------------------- properties
    @property
    def backend(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self._db.name

    @property
    def supports_multiprocess(self) -> bool:
        """False for SQLite: one process at a time (no scrapy-redis workers, no scrapyd)."""
        return self._db.supports_multiprocess

    @property
    def down_since(self) -> float | None:
        """``time.monotonic()`` when the connection was lost, while it is; else None."""
        return self._down_since

    @property
    def url(self) -> str:
        """The database URL with any password replaced by ``***``."""
        return self._db.safe_url

    def require_multiprocess(self, feature: str) -> None:
        """Raise :class:`StoreError` unless several processes may share this store."""
        if not self.supports_multiprocess:
            raise StoreError(
                f"{feature} needs PostgreSQL: set DATABASE_URL=postgresql://…; "
                "SQLite is single-process"
            )

    # ---------------------------------------------------------------- plumbing
    def _run(self, op: str, fn: Callable[[Any], T], *, write: bool = True) -> T:
        """Run ``fn(cursor)`` in one transaction, reconnecting once on a lost connection."""
        with self._lock:
            if self._closed:
                raise StoreError(f"{op}: the store is closed")
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    with self._db.transaction(conn, write=write) as cur:
                        result = fn(cur)
                    try:
                        conn.commit()
                    except self._db.driver_error as exc:
                        if self._db.is_disconnect(exc, conn):
                            raise _CommitLost(first_line(exc)) from exc
                        self._rollback_quietly(conn)  # e.g. SQLite BUSY leaves it open
                        raise
                    return result
                except _CommitLost as exc:
                    self._drop_connection()
                    self._went_down(op, str(exc))
                    raise StoreError(
                        f"{self._db.label} at {self._db.where()}: connection lost while "
                        f"committing {op} (it may or may not have been saved): {exc}"
                    ) from None
                except self._db.driver_error as exc:
                    if self._db.is_disconnect(exc, conn):
                        self._drop_connection()
                        self._went_down(op, first_line(exc))
                        if attempt == 1:
                            continue
                    raise StoreError(f"{self._db.label} error in {op}: {first_line(exc)}") from exc
            raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> Any:
        if self._conn is None:
            try:
                self._conn = self._db.connect()
            except StoreError as exc:  # the server is still away
                self._went_down("reconnect", str(exc))
                raise
            if self._down_since is None:  # dropped after a failed rollback: no outage
                logger.info("reconnected to %s store %s", self._db.label, self._db.safe_url)
            else:
                logger.info(
                    "reconnected to %s store %s after %.1f s (%d call(s) failed meanwhile)",
                    self._db.label,
                    self._db.safe_url,
                    time.monotonic() - self._down_since,
                    self._failed_calls,
                )
                self._down_since = None
        return self._conn

    def _went_down(self, op: str, reason: str) -> None:
        """The connection is lost: a WARNING for the first failure of an outage only."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._failed_calls = 0
            logger.warning(
                "%s connection lost (%s: %s); reconnecting on the next calls, logged once "
                "until it is back",
                self._db.label,
                op,
                reason,
            )
        else:
            self._failed_calls += 1
            logger.debug("%s still unavailable (%s): %s", self._db.label, op, reason)

    def _rollback_quietly(self, conn: Any) -> None:
        try:
            conn.rollback()
        except self._db.driver_error:
            self._drop_connection()  # unusable: start afresh on the next call

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._db.close(self._conn)
            self._conn = None

    def close(self) -> None:
        """Close the connection; later calls raise :class:`StoreError`. Idempotent."""
        with self._lock:
            self._closed = True
            self._drop_connection()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- schema
    def migrate(self) -> list[str]:
        """Apply pending migrations (safe from several processes at once); return versions."""
        applied = self._run("migrate", lambda cur: migrations.apply(self._db, cur))
        if applied:
            logger.info("applied migrations %s", ", ".join(applied))
        return applied

    # ---------------------------------------------------------------- content
    def upsert_posts(self, task_id: int | None, posts: Sequence[VkPost]) -> UpsertResult:
        """Insert or update posts by ``(owner_id, vk_post_id)`` in one statement.

        Updates text, likes, comments_count, is_pinned, task_id and updated_at; created_at
        never changes. Duplicates within the batch keep the last one. NUL characters are
        removed from the text (PostgreSQL rejects them); the row is always kept. Each post is
        also recorded in ``task_posts`` for ``task_id``.
        """
        return self._run(
            "upsert_posts", lambda cur: content.upsert_posts(self._db, cur, task_id, posts)
        )

    def upsert_comments(self, task_id: int | None, comments: Sequence[VkComment]) -> UpsertResult:
        """Insert or update comments by ``(owner_id, vk_comment_id)`` in one statement.

        Updates text, likes, thread_count, deleted, author_id, author_name, task_id and
        updated_at; created_at never changes. Duplicates within the batch keep the last one.
        NUL characters are removed from text and author_name (PostgreSQL rejects them).
        """
        return self._run(
            "upsert_comments",
            lambda cur: content.upsert_comments(self._db, cur, task_id, comments),
        )

    def task_results(
        self,
        task_id: int,
        kind: Literal["posts", "comments"] = "posts",
        limit: int = 100,
        after_id: int = 0,
    ) -> list[dict[str, Any]]:
        """A task's posts, or the comments of its posts, ordered by row ``id`` after
        ``after_id`` (pass the last ``id`` you got to read the next page)."""
        if kind not in ("posts", "comments"):
            raise ValueError(f"kind must be 'posts' or 'comments', not {kind!r}")
        return self._run(
            "task_results",
            lambda cur: content.task_results(self._db, cur, task_id, kind, limit, after_id),
            write=False,
        )

    # ---------------------------------------------------------------- tasks
    def create_task(self, groups: Sequence[int | str]) -> int:
        """A new task in status ``created`` with zeroed metrics; returns its id."""
        return self._run("create_task", lambda cur: tasks.create_task(self._db, cur, groups))

    def get_task(self, task_id: int) -> Task | None:
        return self._run(
            "get_task", lambda cur: tasks.get_task(self._db, cur, task_id), write=False
        )

    def list_tasks(self, limit: int = 50) -> list[Task]:
        """The newest tasks first."""
        return self._run(
            "list_tasks", lambda cur: tasks.list_tasks(self._db, cur, limit), write=False
        )

    def begin_run(
        self, task_id: int, job_id: str | None = None, job_settings: dict[str, str] | None = None
    ) -> Task:
        """Start a run: resume an unfinished task, or a fresh run of a finished one (its
        previous run kept in ``metrics.history``); returns the task as the run starts. With
        ``job_id`` (a scrapyd job), records it and, when given, the job's settings."""
        return self._run(
            "begin_run",
            lambda cur: tasks.begin_run(self._db, cur, task_id, job_id, job_settings),
        )

    def set_job(self, task_id: int, job_id: str, settings: dict[str, str] | None = None) -> None:
        """Record the scrapyd job that runs the task (and the settings it was queued with)."""
        self._run("set_job", lambda cur: tasks.set_job(self._db, cur, task_id, job_id, settings))

    def add_requests(self, task_id: int, count: int) -> None:
        """Atomically add ``count`` to the run's ``metrics.requests``."""
        self._run("add_requests", lambda cur: tasks.add_requests(self._db, cur, task_id, count))

    def start_task(self, task_id: int) -> None:
        """Status ``in_progress``; ``started_at`` is set only the first time. No run rules:
        crawls use :meth:`begin_run`."""
        self._run("start_task", lambda cur: tasks.start_task(self._db, cur, task_id))

    def resolve_task_groups(self, task_id: int, resolved: dict[str, int]) -> list[int | str]:
        """Replace the task's references found in ``resolved`` (reference key → group id) by
        their ids; the others stay. Returns the task's group list."""
        return self._run(
            "resolve_task_groups",
            lambda cur: tasks.resolve_task_groups(self._db, cur, task_id, resolved),
        )

    def reset_group(self, task_id: int, group: int | str) -> None:
        """Forget what an earlier run recorded for a group about to be crawled again."""
        self._run("reset_group", lambda cur: tasks.reset_group(self._db, cur, task_id, group))

    def mark_vanished(self, since: datetime, owner_id: int, post_ids: Sequence[int]) -> int:
        """Mark the comments of posts crawled completely since ``since`` (a time from this
        database, e.g. a :class:`Task`'s ``updated_at``) that were not seen since then as
        deleted; returns how many."""
        return self._run(
            "mark_vanished",
            lambda cur: content.mark_vanished(self._db, cur, since, owner_id, post_ids),
        )

    def add_progress(
        self,
        task_id: int,
        *,
        group_id: int | str | None = None,
        posts_expected: int = 0,
        comments_expected: int = 0,
        group_status: str | None = None,
        group_done: bool = False,
        replace_expected: bool = False,
    ) -> None:
        """Atomically add to the expected counts (overall and per group) — or, with
        ``replace_expected``, set the group's to these (the totals move by the difference:
        a resumed group's new wall answer) — and, with ``group_done``, count the group as
        done once and set ``groups.<gid>.status`` (``group_status`` or ``"done"``)."""
        self._run(
            "add_progress",
            lambda cur: tasks.add_progress(
                self._db,
                cur,
                task_id,
                group_id=group_id,
                posts_expected=posts_expected,
                comments_expected=comments_expected,
                group_status=group_status,
                group_done=group_done,
                replace_expected=replace_expected,
            ),
        )

    def refresh_counts(self, task_id: int, group_ids: Sequence[int] | None = None) -> None:
        """Set metrics.posts/comments per group from the task's stored rows — of every group,
        or only of ``group_ids`` (cheap while a crawl runs) — and the totals from those."""
        self._run(
            "refresh_counts", lambda cur: tasks.refresh_counts(self._db, cur, task_id, group_ids)
        )

    def add_error(self, task_id: int, message: str, group: int | str | None = None) -> None:
        """Atomically append a message to metrics.errors (a task with errors ends failed);
        with ``group``, also to that group's entry."""
        self._run("add_error", lambda cur: tasks.add_error(self._db, cur, task_id, message, group))

    def finish_task(self, task_id: int) -> str:
        """``completed`` when metrics.errors is empty, else ``failed``; returns the status."""
        return self._run("finish_task", lambda cur: tasks.finish_task(self._db, cur, task_id))

    # ---------------------------------------------------------------- alerts
    def record_task_stopped(self, task_id: int, reason: str) -> None:
        """The alert event of a run left resumable for a reason the operator must fix."""
        self._run(
            "record_task_stopped",
            lambda cur: alerts.record_task_stopped(self._db, cur, task_id, reason),
        )

    def prepare_alerts(
        self, webhooks: Sequence[str], kinds: Sequence[str], since: datetime, skipped_after: int
    ) -> int:
        """Write the events of schedules skipped ``skipped_after`` times in a row (when
        ``skipped`` is among ``kinds``), then a delivery per webhook tag for each event of
        ``kinds`` since ``since`` that has none; returns how many deliveries were added."""

        def prepare(cur: Any) -> int:
            if "skipped" in kinds:
                alerts.record_skip_events(self._db, cur, skipped_after)
            return alerts.plan_deliveries(self._db, cur, webhooks, kinds, since)

        return self._run("prepare_alerts", prepare)

    def claim_alert_delivery(
        self, webhooks: Sequence[str], now: datetime, lease_until: datetime
    ) -> alerts.Delivery | None:
        """The oldest due delivery to one of ``webhooks``, held until ``lease_until``."""
        return self._run(
            "claim_alert_delivery",
            lambda cur: alerts.claim_delivery(self._db, cur, webhooks, now, lease_until),
        )

    def settle_alert_delivery(
        self, delivery_id: int, error: str | None, next_attempt_at: datetime | None
    ) -> None:
        """Delivered (``error`` None), or failed: try again at ``next_attempt_at`` (None:
        given up)."""
        self._run(
            "settle_alert_delivery",
            lambda cur: alerts.settle_delivery(self._db, cur, delivery_id, error, next_attempt_at),
        )

    def list_alert_events(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest alert events, each with its deliveries."""
        return self._run(
            "list_alert_events",
            lambda cur: alerts.list_events(self._db, cur, limit),
            write=False,
        )

    # ---------------------------------------------------------------- groups
    def add_groups(self, refs: Sequence[GroupRef]) -> None:
        """Ids into ``groups``, names into ``pending_groups``; existing ones are reactivated."""
        self._run("add_groups", lambda cur: groups.add_groups(self._db, cur, refs))

    def remove_groups(self, refs: Sequence[GroupRef]) -> groups.GroupsRemoved:
        """Delete the groups; returns how many rows went (an ``int``) with ``.not_found``,
        the references that named no group."""
        return self._run("remove_groups", lambda cur: groups.remove_groups(self._db, cur, refs))

    def list_groups(self) -> list[dict[str, Any]]:
        """Resolved and pending groups (``pending`` True for names without an id yet)."""
        return self._run("list_groups", lambda cur: groups.list_groups(self._db, cur), write=False)

    def active_group_refs(self) -> list[GroupRef]:
        """What a crawl without explicit groups should visit: active ids, then active names."""
        return self._run(
            "active_group_refs", lambda cur: groups.active_group_refs(self._db, cur), write=False
        )

    def deactivate_groups(self, reasons: dict[GroupRef, str]) -> int:
        """Switch off groups of the list (unknown or deleted on VK), with the reason."""
        return self._run(
            "deactivate_groups", lambda cur: groups.deactivate_groups(self._db, cur, reasons)
        )

    def save_resolved_groups(self, resolved: Sequence[VkGroup]) -> None:
        """Upsert groups by id (existing rows keep is_active, new ones are not in the list
        unless a pending name put them there); drop matching pending names."""
        self._run(
            "save_resolved_groups",
            lambda cur: groups.save_resolved_groups(self._db, cur, resolved),
        )

    # ---------------------------------------------------------------- schedules
    def add_schedule(self, spec: ScheduleSpec, first_run_at: datetime | None = None) -> int:
        """Store a checked schedule; its first run is ``first_run_at``, else the next due time
        from now. Returns its id."""
        return self._run(
            "add_schedule", lambda cur: schedules.add_schedule(self._db, cur, spec, first_run_at)
        )

    def get_schedule(self, schedule_id: int) -> Schedule | None:
        return self._run(
            "get_schedule",
            lambda cur: schedules.get_schedule(self._db, cur, schedule_id),
            write=False,
        )

    def list_schedules(self) -> list[Schedule]:
        """Every schedule, by id."""
        return self._run(
            "list_schedules", lambda cur: schedules.list_schedules(self._db, cur), write=False
        )

    def pause_schedule(self, schedule_id: int) -> Schedule | None:
        """Pause it (no runs until resumed); None when there is no such schedule."""
        return self._run(
            "pause_schedule", lambda cur: schedules.pause_schedule(self._db, cur, schedule_id)
        )

    def resume_schedule(self, schedule_id: int) -> Schedule | None:
        """Unpause it: next run at the next due time from now, skipped_in_a_row 0."""
        return self._run(
            "resume_schedule", lambda cur: schedules.resume_schedule(self._db, cur, schedule_id)
        )

    def remove_schedule(self, schedule_id: int) -> bool:
        """Delete it and its run history (its tasks stay); False when there was none."""
        return self._run(
            "remove_schedule", lambda cur: schedules.remove_schedule(self._db, cur, schedule_id)
        )

    def schedule_runs(self, schedule_id: int, limit: int = 20) -> list[ScheduleRun]:
        """The schedule's runs, newest due time first."""
        return self._run(
            "schedule_runs",
            lambda cur: schedules.schedule_runs(self._db, cur, schedule_id, limit),
            write=False,
        )

    def claim_due_schedules(self, jobs: JobStates, limit: int = 100) -> list[Claimed]:
        """Claim the due schedules exactly once across processes (see
        :func:`vkscraper.store.schedules.claim_due`); returns the runs to launch."""
        return self._run(
            "claim_due_schedules", lambda cur: schedules.claim_due(self._db, cur, jobs, limit)
        )

    def reclaim_stale_runs(self, grace: float, limit: int = 100) -> list[Claimed]:
        """Runs left ``claimed`` longer than ``grace`` seconds, claimed again to be launched."""
        return self._run(
            "reclaim_stale_runs", lambda cur: schedules.reclaim_stale(self._db, cur, grace, limit)
        )

    def set_run_outcome(self, run_id: int, outcome: str, message: str | None = None) -> bool:
        """A claimed run is ``started`` (launched) or ``failed`` (with the reason)."""
        return self._run(
            "set_run_outcome",
            lambda cur: schedules.set_run_outcome(self._db, cur, run_id, outcome, message),
        )

    # ---------------------------------------------------------------- Prometheus metrics
    def add_metric_counters(self, deltas: Mapping[tuple[str, str], float]) -> None:
        """Add each ``(name, canonical labels) → delta`` to its total, in one transaction."""
        self._run("add_metric_counters", lambda cur: metrics.add_counters(self._db, cur, deltas))

    def metrics_snapshot(self) -> metrics.Snapshot:
        """The counters' totals, the tasks by status and each schedule's timings."""
        return self._run(
            "metrics_snapshot", lambda cur: metrics.snapshot(self._db, cur), write=False
        )
