"""Batch upserts of posts and comments, and reading a task's results back.

One batch is one ``INSERT … ON CONFLICT (owner_id, vk_…_id) DO UPDATE`` statement: PostgreSQL
gets a multi-row ``execute_values`` for posts and, for comments, the rows by ``COPY`` into a
temporary table and ``INSERT … SELECT`` from it, both with ``RETURNING (xmax = 0)`` (true for a
fresh insert),
SQLite an ``executemany`` of the same statement, counted with a pre-select of the existing keys
inside the same ``BEGIN IMMEDIATE`` transaction. Only the mutable fields are updated;
``created_at`` keeps the first sighting, ``updated_at`` moves on every upsert and a comment's
``last_seen_at`` on every sighting. The natural key and the facts that never change on VK
(``date``, ``group_id``, ``post_vk_id``, ``parent_id``) are not updated.

The fields added for analysis (migration 0003):

* what VK changes follows its latest answer: ``reposts`` and ``signer_id`` (editing a post can
  add or remove the signature), like ``likes`` and ``text``;
* ``views`` and ``edited`` follow it too, but an answer without them keeps the stored value:
  VK never takes views back nor un-edits a post, so an absent field is "not told", not NULL;
* facts — a post's ``from_id``, a comment's ``reply_to_user`` and ``reply_to_comment`` — are
  filled when still NULL (rows stored before 0003, or an answer that lacked them) and never
  overwritten once known, like ``date``.

A task's comments are the comments of its posts that its run saw: first stored before the run
ended and last seen after it started (the ``tasks.started_at`` of the run). A comment that a
complete crawl of its post no longer returns keeps its row, marked ``deleted``, with its
``last_seen_at`` telling when VK last had it (:func:`mark_vanished`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from vkscraper.items import VkComment, VkPost
from vkscraper.store.backends import Backend, PostgresBackend, clean_text

# SQLite before 3.32 allows 999 parameters per statement; keep the key pre-select below it.
_SQLITE_KEY_CHUNK = 400


@dataclass(frozen=True)
class UpsertResult:
    inserted: int = 0
    updated: int = 0

    @property
    def total(self) -> int:
        return self.inserted + self.updated


_POST_COLUMNS = (
    "vk_post_id, owner_id, group_id, text, likes, comments_count, is_pinned, date, task_id, "
    "from_id, signer_id, views, reposts, edited"
)
_POST_UPDATE = """
    text = excluded.text,
    likes = excluded.likes,
    comments_count = excluded.comments_count,
    is_pinned = excluded.is_pinned,
    signer_id = excluded.signer_id,
    reposts = excluded.reposts,
    views = COALESCE(excluded.views, posts.views),
    edited = COALESCE(excluded.edited, posts.edited),
    from_id = COALESCE(posts.from_id, excluded.from_id),
    task_id = COALESCE(excluded.task_id, posts.task_id),
    updated_at = excluded.updated_at
"""
_COMMENT_COLUMNS = (
    "vk_comment_id, post_vk_id, owner_id, parent_id, thread_count, author_id, author_name, "
    "text, likes, date, deleted, task_id, reply_to_user, reply_to_comment"
)
_COMMENT_UPDATE = """
    text = excluded.text,
    likes = excluded.likes,
    thread_count = excluded.thread_count,
    deleted = excluded.deleted,
    author_id = excluded.author_id,
    author_name = excluded.author_name,
    reply_to_user = COALESCE(comments.reply_to_user, excluded.reply_to_user),
    reply_to_comment = COALESCE(comments.reply_to_comment, excluded.reply_to_comment),
    task_id = COALESCE(excluded.task_id, comments.task_id),
    updated_at = excluded.updated_at,
    last_seen_at = excluded.last_seen_at,
    vanished_at = NULL
"""


def _dedupe(items: Sequence[Any], key_attr: str) -> list[Any]:
    # PostgreSQL refuses to update one row twice in a statement; the last sighting wins.
    by_key: dict[tuple[int, int], Any] = {}
    for item in items:
        by_key[(item.owner_id, getattr(item, key_attr))] = item
    return list(by_key.values())


def _pg_template(n_values: int, tail: str) -> str:
    """``execute_values`` row template: one ``%s`` per value, then the timestamps."""
    return f"({', '.join(['%s'] * n_values)}, {tail})"


def _sqlite_values(n_values: int, tail: str) -> str:
    return f"{', '.join(['?'] * n_values)}, {tail}"


def _post_row(db: Backend, task_id: int | None, p: VkPost) -> tuple[Any, ...]:
    return (
        p.vk_post_id,
        p.owner_id,
        p.group_id,
        clean_text(p.text) or "",
        p.likes,
        p.comments_count,
        bool(p.is_pinned),
        db.ts(p.date),
        task_id,
        p.from_id,
        p.signer_id,
        p.views,
        p.reposts,
        db.ts(p.edited),
    )


def _comment_row(db: Backend, task_id: int | None, c: VkComment) -> tuple[Any, ...]:
    return (
        c.vk_comment_id,
        c.post_vk_id,
        c.owner_id,
        c.parent_id,
        c.thread_count,
        c.author_id,
        clean_text(c.author_name),
        clean_text(c.text) or "",
        c.likes,
        db.ts(c.date),
        bool(c.deleted),
        task_id,
        c.reply_to_user,
        c.reply_to_comment,
    )


def upsert_posts(
    db: Backend, cur: Any, task_id: int | None, posts: Sequence[VkPost]
) -> UpsertResult:
    batch = _dedupe(posts, "vk_post_id")
    if not batch:
        return UpsertResult()
    rows = [_post_row(db, task_id, p) for p in batch]
    if isinstance(db, PostgresBackend):
        # The posts upsert and the task_posts insert in one statement (data-modifying CTE).
        sql = f"""
            WITH up AS (
                INSERT INTO posts ({_POST_COLUMNS}, created_at, updated_at) VALUES %s
                ON CONFLICT (owner_id, vk_post_id) DO UPDATE SET {_POST_UPDATE}
                RETURNING owner_id, vk_post_id, (xmax = 0) AS inserted
            ), tp AS (
                INSERT INTO task_posts (task_id, owner_id, vk_post_id)
                SELECT %s::bigint, owner_id, vk_post_id FROM up WHERE %s::bigint IS NOT NULL
                ON CONFLICT DO NOTHING
            )
            SELECT inserted FROM up
        """
        # execute_values takes exactly one %s: bind the task id first, then escape its '%'.
        sql = cur.mogrify(sql.replace("VALUES %s", "VALUES %%s"), (task_id, task_id)).decode()
        result = db.execute_values(
            cur, sql, rows, template=_pg_template(len(rows[0]), "now(), now()")
        )
        inserted = sum(1 for (was_insert,) in result if was_insert)
        return UpsertResult(inserted, len(rows) - inserted)
    existing = _sqlite_existing(cur, "posts", "vk_post_id", [(r[1], r[0]) for r in rows])
    cur.executemany(
        f"""INSERT INTO posts ({_POST_COLUMNS}, created_at, updated_at)
            VALUES ({_sqlite_values(len(rows[0]), "vk_now(), vk_now()")})
            ON CONFLICT (owner_id, vk_post_id) DO UPDATE SET {_POST_UPDATE}""",
        rows,
    )
    if task_id is not None:
        cur.executemany(
            "INSERT INTO task_posts (task_id, owner_id, vk_post_id) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(task_id, r[1], r[0]) for r in rows],
        )
    return UpsertResult(len(rows) - existing, existing)


def upsert_comments(
    db: Backend, cur: Any, task_id: int | None, comments: Sequence[VkComment]
) -> UpsertResult:
    batch = _dedupe(comments, "vk_comment_id")
    if not batch:
        return UpsertResult()
    rows = [_comment_row(db, task_id, c) for c in batch]
    if isinstance(db, PostgresBackend):
        # COPY into a session-local table, then one INSERT … SELECT: a quarter of the client
        # CPU of execute_values, which quotes every value of every row in Python.
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS vk_comments_in ON COMMIT DELETE ROWS AS "
            f"SELECT {_COMMENT_COLUMNS} FROM comments WITH NO DATA"
        )
        cur.copy_expert(f"COPY vk_comments_in ({_COMMENT_COLUMNS}) FROM STDIN", _copy_text(rows))
        cur.execute(
            f"""INSERT INTO comments ({_COMMENT_COLUMNS}, created_at, updated_at, last_seen_at)
                SELECT {_COMMENT_COLUMNS}, now(), now(), now() FROM vk_comments_in
                ON CONFLICT (owner_id, vk_comment_id) DO UPDATE SET {_COMMENT_UPDATE}
                RETURNING (xmax = 0)"""
        )
        inserted = sum(1 for (was_insert,) in cur.fetchall() if was_insert)
        cur.execute("TRUNCATE vk_comments_in")  # a second batch in this transaction
        return UpsertResult(inserted, len(rows) - inserted)
    existing = _sqlite_existing(cur, "comments", "vk_comment_id", [(r[2], r[0]) for r in rows])
    cur.executemany(
        f"""INSERT INTO comments ({_COMMENT_COLUMNS}, created_at, updated_at, last_seen_at)
            VALUES ({_sqlite_values(len(rows[0]), "vk_now(), vk_now(), vk_now()")})
            ON CONFLICT (owner_id, vk_comment_id) DO UPDATE SET {_COMMENT_UPDATE}""",
        rows,
    )
    return UpsertResult(len(rows) - existing, existing)


def _copy_text_value(value: str | None) -> str:
    """A text value in COPY's text format: backslash, tab, newline and carriage return
    escaped; NULL is ``\\N``."""
    if value is None:
        return "\\N"
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _copy_text(rows: list[tuple[Any, ...]]) -> io.StringIO:
    """Comment rows (:func:`_comment_row`) as COPY text: one f-string per row, as the
    columns' types are known (a function call per value cost more than the database)."""
    null, text = "\\N", _copy_text_value
    lines = [
        f"{r[0]}\t{r[1]}\t{r[2]}\t{null if r[3] is None else r[3]}\t{r[4]}\t"
        f"{null if r[5] is None else r[5]}\t{text(r[6])}\t{text(r[7])}\t{r[8]}\t"
        f"{null if r[9] is None else r[9].isoformat()}\t{'t' if r[10] else 'f'}\t"
        f"{null if r[11] is None else r[11]}\t{null if r[12] is None else r[12]}\t"
        f"{null if r[13] is None else r[13]}\n"
        for r in rows
    ]
    return io.StringIO("".join(lines))


def _sqlite_existing(cur: Any, table: str, id_column: str, keys: list[tuple[int, int]]) -> int:
    """How many of ``(owner_id, vk_id)`` keys already exist (the write lock is held)."""
    found = 0
    for start in range(0, len(keys), _SQLITE_KEY_CHUNK):
        chunk = keys[start : start + _SQLITE_KEY_CHUNK]
        values = ", ".join(["(?, ?)"] * len(chunk))
        cur.execute(
            f"SELECT count(*) FROM {table} WHERE (owner_id, {id_column}) IN (VALUES {values})",
            [v for key in chunk for v in key],
        )
        found += cur.fetchone()[0]
    return found


_RESULT_SQL = {
    "posts": """
        SELECT p.id, p.vk_post_id, p.owner_id, p.group_id, p.text, p.likes, p.comments_count,
               p.is_pinned, p.date, p.task_id AS last_task_id, p.created_at, p.updated_at,
               p.from_id, p.signer_id, p.views, p.reposts, p.edited
        FROM task_posts tp
        JOIN posts p ON p.owner_id = tp.owner_id AND p.vk_post_id = tp.vk_post_id
        WHERE tp.task_id = %s AND p.id > %s
        ORDER BY p.id
        LIMIT %s
    """,
    "comments": """
        SELECT c.id, c.vk_comment_id, c.post_vk_id, c.owner_id, c.parent_id, c.thread_count,
               c.author_id, c.author_name, c.text, c.likes, c.date, c.deleted,
               c.task_id AS last_task_id, c.created_at, c.updated_at, c.last_seen_at,
               c.vanished_at, c.reply_to_user, c.reply_to_comment
        FROM task_posts tp
        JOIN tasks t ON t.id = tp.task_id
        JOIN comments c ON c.owner_id = tp.owner_id AND c.post_vk_id = tp.vk_post_id
        WHERE tp.task_id = %s AND c.id > %s AND {seen_in_run}
        ORDER BY c.id
        LIMIT %s
    """,
}
_TS_COLUMNS = frozenset(
    {"date", "edited", "created_at", "updated_at", "last_seen_at", "vanished_at"}
)


def seen_in_run(task: str = "t", comment: str = "c") -> str:
    """SQL condition: comment ``c`` was seen by the run of task ``t`` and had not vanished
    from VK by its end (no bounds before the task first started; none above while it runs)."""
    return (
        f"({task}.started_at IS NULL OR {comment}.last_seen_at >= {task}.started_at) AND "
        f"({task}.finished_at IS NULL OR {comment}.created_at <= {task}.finished_at) AND "
        f"({comment}.vanished_at IS NULL OR ({task}.finished_at IS NOT NULL "
        f"AND {comment}.vanished_at > {task}.finished_at))"
    )


_BOOL_COLUMNS = frozenset({"is_pinned", "deleted"})


def task_results(
    db: Backend,
    cur: Any,
    task_id: int,
    kind: Literal["posts", "comments"],
    limit: int,
    after_id: int,
) -> list[dict[str, Any]]:
    """Rows of one task ordered by row id, starting after ``after_id`` (keyset paging)."""
    sql = _RESULT_SQL[kind].replace("{seen_in_run}", seen_in_run())
    cur.execute(db.sql(sql), (task_id, after_id, limit))
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        record = dict(zip(names, row, strict=True))
        for col in _TS_COLUMNS & record.keys():
            record[col] = db.from_ts(record[col])
        for col in _BOOL_COLUMNS & record.keys():
            record[col] = bool(record[col])
        out.append(record)
    return out


_MARK_VANISHED = """
    UPDATE comments SET deleted = true, vanished_at = {now}, updated_at = {now}
    WHERE owner_id = %s AND post_vk_id = %s AND vanished_at IS NULL AND last_seen_at < %s
"""


def mark_vanished(
    db: Backend, cur: Any, since: datetime, owner_id: int, post_ids: Sequence[int]
) -> int:
    """After complete crawls of these posts that began at ``since``: mark their comments not
    seen since then as deleted and vanished (the rows stay). Returns how many were marked."""
    marked = 0
    sql = db.sql(_MARK_VANISHED)
    for post_id in post_ids:
        cur.execute(sql, (owner_id, post_id, db.ts(since)))
        marked += max(cur.rowcount, 0)
    return marked
