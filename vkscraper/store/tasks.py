"""Crawl tasks: status, timestamps and the ``metrics`` JSON document.

Several processes (scrapy-redis workers, scrapyd jobs) update one task at once, so every
metrics change is ONE ``UPDATE`` whose new value is computed in SQL from the current row
(``jsonb_set`` / ``||`` on PostgreSQL, ``json_set`` on SQLite): the row lock (PostgreSQL) or the
database write lock (SQLite) serialises them and no increment is lost. Never read the document,
change it in Python and write it back — except in the rare per-run steps (:func:`begin_run`,
:func:`resolve_task_groups`, :func:`reset_group`), which lock the row first
(``SELECT … FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already holds the write lock).

Metrics layout (the key of a group is its id, or the reference as given while unresolved)::

    {"run": 1, "posts": 0, "comments": 0, "errors": [], "groups_total": N, "groups_done": 0,
     "posts_expected": 0, "comments_expected": 0, "requests": 0,
     "groups": {"<gid>": {"posts_expected": 0, "comments_expected": 0, "status": "…",
                          "done": true, "posts": 0, "comments": 0, "errors": []}},
     "history": [{"run": 1, "status": "failed", "started_at": "…", "finished_at": "…",
                  "posts": …, "comments": …, "errors": […], …}]}

A run of an existing task: a task that never finished (``created``, ``in_progress``) resumes —
groups already done are skipped, the others start over and their earlier errors and expected
counts are replaced; the errors of no group (why the run stopped, a failed lookup) are
dropped. A finished task (``completed``, ``failed``) starts a fresh run: its metrics
and errors start empty, the previous run's move to ``history`` and the task's results are those
of the new run only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vkscraper.exceptions import StoreError
from vkscraper.store.alerts import record_task_end
from vkscraper.store.backends import Backend, clean_text
from vkscraper.store.content import seen_in_run
from vkscraper.vk.grouprefs import GroupRef

STATUSES = ("created", "in_progress", "completed", "failed")
# One error message is capped so that a huge HTML body cannot bloat every later metrics update.
MAX_ERROR_LENGTH = 2000


@dataclass
class Task:
    id: int
    status: str
    groups: list[int | str]
    metrics: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    job_id: str | None = None  # the scrapyd job that runs or last ran it
    job_settings: dict[str, str] | None = None  # the settings that job was queued with


def initial_metrics(groups_total: int, run: int = 1) -> dict[str, Any]:
    return {
        "run": run,
        "posts": 0,
        "comments": 0,
        "errors": [],
        "groups_total": groups_total,
        "groups_done": 0,
        "posts_expected": 0,
        "comments_expected": 0,
        "requests": 0,  # VK answers received by the run (all its processes)
        "groups": {},
    }


def normalize_groups(groups: Sequence[int | str | GroupRef]) -> list[int | str]:
    """Ids as positive ints, names as given; digit strings become ids. Duplicates are dropped,
    in order, in linear time (a task may name 50,000 groups)."""
    out: dict[int | str, None] = {}
    for g in groups:
        value: int | str
        if isinstance(g, GroupRef):
            value = g.group_id if g.group_id is not None else str(g.screen_name)
        elif isinstance(g, int) and not isinstance(g, bool):
            value = abs(g)
        elif isinstance(g, str) and re.fullmatch(r"-?[0-9]+", g.strip()):
            value = abs(int(g))
        elif isinstance(g, str) and g.strip():
            value = g.strip()
        else:
            raise StoreError(f"not a group id or name: {g!r}")
        if value == 0:
            raise StoreError("a group id must be a positive number")
        out.setdefault(value)
    return list(out)


def group_key(group: int | str) -> str:
    """The key of a group in ``metrics["groups"]``: its id, or a name as given."""
    if isinstance(group, int) and not isinstance(group, bool):
        return str(abs(group))
    return str(group)


_COLUMNS = (
    "id, status, groups, metrics, created_at, started_at, finished_at, updated_at, job_id, "
    "job_settings"
)


def _task_of_row(db: Backend, row: Sequence[Any]) -> Task:
    return Task(
        id=row[0],
        status=row[1],
        groups=db.from_json(row[2]),
        metrics=db.from_json(row[3]),
        created_at=db.from_ts(row[4]),  # type: ignore[arg-type]
        started_at=db.from_ts(row[5]),
        finished_at=db.from_ts(row[6]),
        updated_at=db.from_ts(row[7]),  # type: ignore[arg-type]
        job_id=row[8],
        job_settings=None if row[9] is None else db.from_json(row[9]),
    )


def _require_row(cur: Any, task_id: int) -> None:
    if cur.rowcount == 0:
        raise StoreError(f"task {task_id} does not exist")


def create_task(db: Backend, cur: Any, groups: Sequence[int | str | GroupRef]) -> int:
    values = normalize_groups(groups)
    sql = db.sql(
        "INSERT INTO tasks (status, groups, metrics, created_at, updated_at) "
        "VALUES ('created', {json}, {json}, {now}, {now})"
    )
    params = (db.json(values), db.json(initial_metrics(len(values))))
    if db.name == "postgresql":
        cur.execute(sql + " RETURNING id", params)
        return int(cur.fetchone()[0])
    cur.execute(sql, params)
    return int(cur.lastrowid)


def get_task(db: Backend, cur: Any, task_id: int) -> Task | None:
    cur.execute(db.sql(f"SELECT {_COLUMNS} FROM tasks WHERE id = %s"), (task_id,))
    row = cur.fetchone()
    return None if row is None else _task_of_row(db, row)


def list_tasks(db: Backend, cur: Any, limit: int) -> list[Task]:
    cur.execute(db.sql(f"SELECT {_COLUMNS} FROM tasks ORDER BY id DESC LIMIT %s"), (limit,))
    return [_task_of_row(db, row) for row in cur.fetchall()]


def _lock_task(db: Backend, cur: Any, task_id: int) -> Task:
    lock = " FOR UPDATE" if db.name == "postgresql" else ""
    cur.execute(db.sql(f"SELECT {_COLUMNS} FROM tasks WHERE id = %s{lock}"), (task_id,))
    row = cur.fetchone()
    if row is None:
        raise StoreError(f"task {task_id} does not exist")
    return _task_of_row(db, row)


def _write_task(db: Backend, cur: Any, task_id: int, groups: list[Any], metrics: dict) -> None:
    cur.execute(
        db.sql("UPDATE tasks SET groups = {json}, metrics = {json}, updated_at = {now} "
               "WHERE id = %s"),
        (db.json(groups), db.json(metrics), task_id),
    )  # fmt: skip


def begin_run(
    db: Backend,
    cur: Any,
    task_id: int,
    job_id: str | None = None,
    job_settings: dict[str, str] | None = None,
) -> Task:
    """Start a run of the task (status ``in_progress``) by the rule in the module docstring;
    ``job_id`` is the scrapyd job running it, when there is one, and ``job_settings`` the
    settings that job was started with (recorded when given)."""
    task = _lock_task(db, cur, task_id)
    if task.status in ("completed", "failed"):
        old = dict(task.metrics)
        history = old.pop("history", [])
        old.pop("groups", None)  # per-group detail stays out of the history: it can be large
        history.append(
            {
                **old,
                "run": old.get("run", 1),
                "status": task.status,
                "started_at": task.started_at.isoformat() if task.started_at else None,
                "finished_at": task.finished_at.isoformat() if task.finished_at else None,
            }
        )
        metrics = initial_metrics(len(task.groups), run=old.get("run", 1) + 1)
        metrics["history"] = history
        _write_task(db, cur, task_id, task.groups, metrics)
        # The new run's results are what it sees; the old rows stay in posts/comments.
        cur.execute(db.sql("DELETE FROM task_posts WHERE task_id = %s"), (task_id,))
        cur.execute(db.sql("UPDATE tasks SET started_at = NULL WHERE id = %s"), (task_id,))
    elif stale := _task_wide_errors(task.metrics):
        # A resume redoes whatever the stopped run had not done, lookups included; its errors
        # of no group (no usable token, a failed lookup) are found again if they still hold.
        metrics = dict(task.metrics)
        errors = list(metrics.get("errors") or [])
        for message in stale:
            errors.remove(message)
        metrics["errors"] = errors
        _write_task(db, cur, task_id, task.groups, metrics)
    start_task(db, cur, task_id)
    if job_id is not None:
        set_job(db, cur, task_id, job_id, job_settings)
    return _lock_task(db, cur, task_id)


def _task_wide_errors(metrics: dict[str, Any]) -> list[str]:
    """The task's errors that no group's entry holds."""
    errors = list(metrics.get("errors") or [])
    for entry in (metrics.get("groups") or {}).values():
        for message in entry.get("errors") or []:
            if message in errors:
                errors.remove(message)
    return errors


def set_job(
    db: Backend, cur: Any, task_id: int, job_id: str, settings: dict[str, str] | None = None
) -> None:
    """Record the scrapyd job that runs the task (the task API shows and cancels it) and,
    when given, the settings it was queued with (a later run without its own reuses them)."""
    if settings is None:
        cur.execute(db.sql("UPDATE tasks SET job_id = %s WHERE id = %s"), (job_id, task_id))
    else:
        cur.execute(
            db.sql("UPDATE tasks SET job_id = %s, job_settings = {json} WHERE id = %s"),
            (job_id, db.json(settings), task_id),
        )
    _require_row(cur, task_id)


_ADD_REQUESTS = {
    "postgresql": """
        UPDATE tasks SET metrics = jsonb_set(metrics, '{requests}',
            to_jsonb(COALESCE((metrics->>'requests')::bigint, 0) + %s))
        WHERE id = %s""",
    "sqlite": """
        UPDATE tasks SET metrics = json_set(metrics, '$.requests',
            COALESCE(json_extract(metrics, '$.requests'), 0) + ?)
        WHERE id = ?""",
}


def add_requests(db: Backend, cur: Any, task_id: int, count: int) -> None:
    """Add ``count`` VK answers received to the run's ``metrics.requests`` (summed over
    every process of the run, for the request-rate figures)."""
    cur.execute(_ADD_REQUESTS[db.name], (int(count), task_id))
    _require_row(cur, task_id)


def resolve_task_groups(
    db: Backend, cur: Any, task_id: int, resolved: dict[str, int]
) -> list[int | str]:
    """Replace references (names, or ids as given) by the group ids VK resolved them to.

    References not in ``resolved`` stay, so a group whose lookup failed is still part of the
    task (unfinished) and a later run tries it again. Duplicates (one group by id and by name)
    collapse to one entry. Returns the new list.
    """
    task = _lock_task(db, cur, task_id)
    groups = normalize_groups([resolved.get(group_key(g), g) for g in task.groups])
    if groups != task.groups:
        metrics = dict(task.metrics)
        metrics["groups_total"] = len(groups)
        for name in {group_key(g) for g in task.groups} - {group_key(g) for g in groups}:
            (metrics.get("groups") or {}).pop(name, None)  # a name now known by its id
        _write_task(db, cur, task_id, groups, metrics)
    return groups


def reset_group(db: Backend, cur: Any, task_id: int, group: int | str) -> None:
    """A group crawled again by a resumed run: drop what an earlier run decided about it
    (done, status, errors) so that nothing is counted twice.

    Its stored-row counts and expected counts stay until the new run's wall answer replaces
    the expected ones (:func:`add_progress` with ``replace_expected``): zeroing them here made
    a resumed task's progress drop to 0 % and show more comments stored than expected."""
    task = _lock_task(db, cur, task_id)
    metrics = dict(task.metrics)
    entry = (metrics.get("groups") or {}).get(group_key(group))
    if not entry:
        return
    if entry.pop("done", False):
        metrics["groups_done"] = metrics.get("groups_done", 0) - 1
    entry.pop("status", None)
    errors = list(metrics.get("errors") or [])
    for message in entry.pop("errors", None) or []:
        if message in errors:
            errors.remove(message)
    metrics["errors"] = errors
    _write_task(db, cur, task_id, task.groups, metrics)


def start_task(db: Backend, cur: Any, task_id: int) -> None:
    """Status ``in_progress`` and ``started_at`` if unset, nothing else (tests, tools)."""
    cur.execute(
        db.sql(
            "UPDATE tasks SET status = 'in_progress', started_at = COALESCE(started_at, {now}), "
            "finished_at = NULL, updated_at = {now} WHERE id = %s"
        ),
        (task_id,),
    )
    _require_row(cur, task_id)


def add_progress(
    db: Backend,
    cur: Any,
    task_id: int,
    *,
    group_id: int | str | None,
    posts_expected: int,
    comments_expected: int,
    group_status: str | None,
    group_done: bool,
    replace_expected: bool = False,
) -> None:
    """Add to the expected counts (overall and per group) — or, ``replace_expected``, set
    the group's to these (a resumed group's new wall answer; the totals move by the
    difference) — and, with ``group_done``, count the group as done once."""
    if group_id is None and (group_status is not None or group_done or replace_expected):
        raise StoreError(
            "add_progress: group_status, group_done and replace_expected need a group_id"
        )
    if group_done and group_status is None:
        group_status = "done"
    params: dict[str, Any] = {
        "id": task_id,
        "pe": int(posts_expected),
        "ce": int(comments_expected),
        "gkey": None if group_id is None else group_key(group_id),
        "status": group_status,
    }
    if db.name == "postgresql":
        sql = _pg_add_progress(
            group_id is not None, group_status is not None, group_done, replace_expected
        )
    else:
        params["gpath"] = f'$.groups."{params["gkey"]}"'
        sql = _sqlite_add_progress(
            group_id is not None, group_status is not None, group_done, replace_expected
        )
    cur.execute(sql, params)
    _require_row(cur, task_id)


def _pg_num(path: str) -> str:
    return f"COALESCE(({path})::bigint, 0)"


_PG_GROUP = "metrics->'groups'->(%(gkey)s::text)"


def _pg_add_progress(has_group: bool, has_status: bool, done: bool, replace: bool) -> str:
    posts_exp = _pg_num("metrics->>'posts_expected'")
    comments_exp = _pg_num("metrics->>'comments_expected'")
    g_posts = _pg_num(f"{_PG_GROUP}->>'posts_expected'")
    g_comments = _pg_num(f"{_PG_GROUP}->>'comments_expected'")
    # replace: the totals lose the group's old expected counts and gain the new ones.
    minus_posts, minus_comments = (f" - {g_posts}", f" - {g_comments}") if replace else ("", "")
    parts = [
        f"jsonb_build_object('posts_expected', {posts_exp} + %(pe)s{minus_posts}, "
        f"'comments_expected', {comments_exp} + %(ce)s{minus_comments})"
    ]
    if has_group:
        base_posts, base_comments = ("0", "0") if replace else (g_posts, g_comments)
        entry = (
            f"COALESCE({_PG_GROUP}, '{{}}'::jsonb) || jsonb_build_object("
            f"'posts_expected', {base_posts} + %(pe)s, "
            f"'comments_expected', {base_comments} + %(ce)s)"
        )
        if has_status:
            entry += " || jsonb_build_object('status', %(status)s::text)"
        if done:
            entry += " || jsonb_build_object('done', true)"
        parts.append(
            "jsonb_build_object('groups', COALESCE(metrics->'groups', '{}'::jsonb) "
            f"|| jsonb_build_object(%(gkey)s::text, {entry}))"
        )
        if done:
            # Evaluated on the row before this update: each group is counted once, even
            # when a resumed crawl finishes it again.
            was_done = f"COALESCE(({_PG_GROUP}->>'done')::boolean, false)"
            groups_done = _pg_num("metrics->>'groups_done'")
            parts.append(
                f"jsonb_build_object('groups_done', {groups_done} + "
                f"CASE WHEN {was_done} THEN 0 ELSE 1 END)"
            )
    return (
        f"UPDATE tasks SET metrics = metrics || {' || '.join(parts)}, updated_at = now() "
        "WHERE id = %(id)s"
    )


def _sqlite_num(path: str) -> str:
    return f"COALESCE(json_extract(metrics, {path}), 0)"


_SQ_POSTS_EXP = "'$.posts_expected'"
_SQ_COMMENTS_EXP = "'$.comments_expected'"
_SQ_GROUPS_DONE = "'$.groups_done'"


def _sqlite_add_progress(has_group: bool, has_status: bool, done: bool, replace: bool) -> str:
    # json_set applies its (path, value) pairs in order and creates missing objects on the
    # way; every value is computed from the row before this update.
    old = {k: _sqlite_num(f":gpath || '.{k}'") for k in ("posts_expected", "comments_expected")}
    minus = {k: f" - {v}" if replace else "" for k, v in old.items()}
    edits = [
        f"'$.posts_expected', {_sqlite_num(_SQ_POSTS_EXP)} + :pe{minus['posts_expected']}",
        f"'$.comments_expected', {_sqlite_num(_SQ_COMMENTS_EXP)} + :ce"
        f"{minus['comments_expected']}",
    ]
    if has_group:
        for key, param in (("posts_expected", ":pe"), ("comments_expected", ":ce")):
            base = "0" if replace else old[key]
            edits.append(f":gpath || '.{key}', {base} + {param}")
        if done:
            was_done = "COALESCE(json_extract(metrics, :gpath || '.done'), 0)"
            edits.append(
                f"'$.groups_done', {_sqlite_num(_SQ_GROUPS_DONE)} + "
                f"CASE WHEN {was_done} THEN 0 ELSE 1 END"
            )
            edits.append(":gpath || '.done', json('true')")
        if has_status:
            edits.append(":gpath || '.status', :status")
    return (
        f"UPDATE tasks SET metrics = json_set(metrics, {', '.join(edits)}), "
        "updated_at = vk_now() WHERE id = :id"
    )


_ADD_ERROR = {
    "postgresql": """
        UPDATE tasks SET metrics = jsonb_set(metrics, '{errors}',
                COALESCE(metrics->'errors', '[]'::jsonb) || jsonb_build_array(%(msg)s::text)),
            updated_at = now()
        WHERE id = %(id)s""",
    "sqlite": """
        UPDATE tasks SET metrics = json_set(metrics, '$.errors',
                json_insert(COALESCE(json_extract(metrics, '$.errors'), '[]'), '$[#]', :msg)),
            updated_at = vk_now()
        WHERE id = :id""",
}
# The same, and the message also kept in the group's entry (so a resume can replace it).
_ADD_GROUP_ERROR = {
    "postgresql": """
        UPDATE tasks SET metrics = jsonb_set(jsonb_set(metrics, '{errors}',
                COALESCE(metrics->'errors', '[]'::jsonb) || jsonb_build_array(%(msg)s::text)),
                ARRAY['groups', %(gkey)s::text],
                COALESCE(metrics->'groups'->(%(gkey)s::text), '{}'::jsonb) || jsonb_build_object(
                    'errors', COALESCE(metrics->'groups'->(%(gkey)s::text)->'errors', '[]'::jsonb)
                        || jsonb_build_array(%(msg)s::text))),
            updated_at = now()
        WHERE id = %(id)s""",
    "sqlite": """
        UPDATE tasks SET metrics = json_set(metrics,
                '$.errors',
                json_insert(COALESCE(json_extract(metrics, '$.errors'), '[]'), '$[#]', :msg),
                :gpath || '.errors',
                json_insert(COALESCE(json_extract(metrics, :gpath || '.errors'), '[]'),
                            '$[#]', :msg)),
            updated_at = vk_now()
        WHERE id = :id""",
}


def add_error(
    db: Backend, cur: Any, task_id: int, message: str, group: int | str | None = None
) -> None:
    text = clean_text(str(message)) or ""
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 1] + "…"
    params: dict[str, Any] = {"msg": text, "id": task_id}
    if group is None:
        cur.execute(_ADD_ERROR[db.name], params)
    else:
        params["gkey"] = group_key(group)
        params["gpath"] = f'$.groups."{params["gkey"]}"'
        cur.execute(_ADD_GROUP_ERROR[db.name], params)
    _require_row(cur, task_id)


# Step 1 sets posts/comments of the task's groups (all, or those in :owners) from the stored
# rows: posts via task_posts, comments of those posts. Step 2 sums the per-group entries into
# the totals, so refreshing one group costs one group's rows, not the whole task's.
_REFRESH_GROUPS = {
    "postgresql": """
        WITH per AS (
            SELECT p.group_id AS gid, count(DISTINCT p.id) AS posts, count(c.id) AS comments
            FROM task_posts tp
            JOIN tasks rt ON rt.id = tp.task_id
            JOIN posts p ON p.owner_id = tp.owner_id AND p.vk_post_id = tp.vk_post_id
            LEFT JOIN comments c ON c.owner_id = p.owner_id AND c.post_vk_id = p.vk_post_id
                AND {seen_in_run}
            WHERE tp.task_id = %(id)s
              AND (%(owners)s::bigint[] IS NULL OR tp.owner_id = ANY(%(owners)s::bigint[]))
            GROUP BY p.group_id
        )
        UPDATE tasks t SET metrics = jsonb_set(t.metrics, '{groups}',
                COALESCE(t.metrics->'groups', '{}'::jsonb) || COALESCE((
                    SELECT jsonb_object_agg(gid::text,
                        COALESCE(t.metrics->'groups'->(gid::text), '{}'::jsonb)
                        || jsonb_build_object('posts', posts, 'comments', comments))
                    FROM per), '{}'::jsonb)),
            updated_at = now()
        WHERE t.id = %(id)s""",
    "sqlite": """
        WITH per AS (
            SELECT p.group_id AS gid, count(DISTINCT p.id) AS posts, count(c.id) AS comments
            FROM task_posts tp
            JOIN tasks rt ON rt.id = tp.task_id
            JOIN posts p ON p.owner_id = tp.owner_id AND p.vk_post_id = tp.vk_post_id
            LEFT JOIN comments c ON c.owner_id = p.owner_id AND c.post_vk_id = p.vk_post_id
                AND {seen_in_run}
            WHERE tp.task_id = :id
              AND (:owners IS NULL OR tp.owner_id IN (SELECT value FROM json_each(:owners)))
            GROUP BY p.group_id
        )
        UPDATE tasks SET metrics = json_set(metrics,
                '$.groups', json_patch(COALESCE(json_extract(metrics, '$.groups'), '{}'),
                    COALESCE((SELECT json_group_object(CAST(gid AS TEXT), json_patch(
                        COALESCE(json_extract(tasks.metrics, '$.groups."' || gid || '"'), '{}'),
                        json_object('posts', posts, 'comments', comments)))
                    FROM per), '{}'))),
            updated_at = vk_now()
        WHERE id = :id""",
}
# Groups that have no stored row (a wall without posts, an unknown name) get zero counts.
_ZERO_COUNTS = {
    "postgresql": """
        UPDATE tasks SET metrics = jsonb_set(metrics, '{groups}', (
                SELECT jsonb_object_agg(k, CASE WHEN v ? 'posts' THEN v
                    ELSE v || '{"posts": 0, "comments": 0}'::jsonb END)
                FROM jsonb_each(metrics->'groups') AS e(k, v)))
        WHERE id = %(id)s AND metrics->'groups' <> '{}'::jsonb""",
    "sqlite": """
        UPDATE tasks SET metrics = json_set(metrics, '$.groups', (
                SELECT json_group_object(key, CASE
                    WHEN json_extract(value, '$.posts') IS NULL
                    THEN json_patch(value, '{"posts": 0, "comments": 0}') ELSE json(value) END)
                FROM json_each(metrics, '$.groups')))
        WHERE id = :id AND json_extract(metrics, '$.groups') != '{}'""",
}
_REFRESH_TOTALS = {
    "postgresql": """
        UPDATE tasks SET metrics = metrics || jsonb_build_object(
                'posts', (SELECT COALESCE(sum((v->>'posts')::bigint), 0)
                          FROM jsonb_each(COALESCE(metrics->'groups', '{}'::jsonb)) AS e(k, v)),
                'comments', (SELECT COALESCE(sum((v->>'comments')::bigint), 0)
                             FROM jsonb_each(COALESCE(metrics->'groups', '{}'::jsonb)) AS e(k, v)))
        WHERE id = %(id)s""",
    "sqlite": """
        UPDATE tasks SET metrics = json_set(metrics,
                '$.posts', (SELECT COALESCE(sum(json_extract(value, '$.posts')), 0)
                            FROM json_each(metrics, '$.groups')),
                '$.comments', (SELECT COALESCE(sum(json_extract(value, '$.comments')), 0)
                               FROM json_each(metrics, '$.groups')))
        WHERE id = :id""",
}


def refresh_counts(
    db: Backend, cur: Any, task_id: int, group_ids: Sequence[int] | None = None
) -> None:
    owners: Any = None
    if group_ids is not None:
        ids = [-abs(int(g)) for g in group_ids]
        owners = ids if db.name == "postgresql" else json.dumps(ids)
    sql = _REFRESH_GROUPS[db.name].replace("{seen_in_run}", seen_in_run("rt", "c"))
    cur.execute(sql, {"id": task_id, "owners": owners})
    _require_row(cur, task_id)
    cur.execute(_ZERO_COUNTS[db.name], {"id": task_id})
    cur.execute(_REFRESH_TOTALS[db.name], {"id": task_id})


_FINISH = {
    "postgresql": """
        UPDATE tasks SET status = CASE
                WHEN jsonb_array_length(COALESCE(metrics->'errors', '[]'::jsonb)) = 0
                THEN 'completed' ELSE 'failed' END,
            finished_at = now(), updated_at = now()
        WHERE id = %s
        RETURNING status""",
    "sqlite": """
        UPDATE tasks SET status = CASE
                WHEN COALESCE(json_array_length(metrics, '$.errors'), 0) = 0
                THEN 'completed' ELSE 'failed' END,
            finished_at = vk_now(), updated_at = vk_now()
        WHERE id = ?""",
}


def finish_task(db: Backend, cur: Any, task_id: int) -> str:
    """End the run (``completed`` or ``failed``) and, in the same transaction, write its
    alert event to the outbox (:mod:`vkscraper.store.alerts`)."""
    cur.execute(_FINISH[db.name], (task_id,))
    _require_row(cur, task_id)
    if db.name == "postgresql":
        status = str(cur.fetchone()[0])
    else:
        cur.execute("SELECT status FROM tasks WHERE id = ?", (task_id,))
        status = str(cur.fetchone()[0])
    record_task_end(db, cur, task_id)
    return status


def dumps_metrics(metrics: dict[str, Any]) -> str:
    """Pretty JSON for humans (the CLI)."""
    return json.dumps(metrics, indent=2, ensure_ascii=False, sort_keys=True)
