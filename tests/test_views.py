"""The SQL views of migration 0003 and the docs' example queries, on PostgreSQL and SQLite."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vkscraper.items import VkGroup
from vkscraper.store import migrations, open_store

SCHEMA_PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "schema.md"
EDITED = datetime(2024, 5, 2, 8, 30, tzinfo=UTC)

POSTS_WITH_GROUP = [
    "id", "vk_post_id", "owner_id", "group_id", "group_screen_name", "group_name", "from_id",
    "signer_id", "text", "date", "edited", "likes", "reposts", "views", "comments_count",
    "is_pinned", "url", "task_id", "created_at", "updated_at",
]  # fmt: skip
COMMENTS_WITH_POST = [
    "id", "vk_comment_id", "owner_id", "group_id", "post_vk_id", "parent_id",
    "reply_to_comment", "reply_to_user", "thread_count", "author_id", "author_name", "text",
    "likes", "date", "deleted", "last_seen_at", "task_id", "created_at", "updated_at",
    "post_text", "post_date", "post_from_id", "post_url",
]  # fmt: skip


def query(store, sql, params=None):
    """Rows of ``sql`` as dicts; ``:name`` parameters as in the docs (psycopg2 spells them
    ``%(name)s``); timestamps as aware datetimes and booleans as bools on both backends."""
    if store.backend == "postgresql":
        sql = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)

    def run(cur):
        if params:
            cur.execute(sql, params)
        else:
            cur.execute(sql)  # no parameters: a '%' in the SQL stays as written
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    rows = store._run("query", run, write=False)
    for row in rows:
        for col in row.keys() & {"date", "edited", "post_date", "created_at", "updated_at",
                                 "last_seen_at"}:  # fmt: skip
            row[col] = store._db.from_ts(row[col])
        for col in row.keys() & {"is_pinned", "deleted"}:
            row[col] = bool(row[col])
    return rows


def columns(store, view):
    def run(cur):
        cur.execute(f"SELECT * FROM {view} WHERE 1 = 0")
        return [d[0] for d in cur.description]

    return store._run("columns", run, write=False)


def test_views_have_the_same_columns_on_both_backends(store):
    assert columns(store, "posts_with_group") == POSTS_WITH_GROUP
    assert columns(store, "comments_with_post") == COMMENTS_WITH_POST


def test_posts_with_group_joins_the_group_and_builds_the_link(store, make_post):
    store.save_resolved_groups([VkGroup(1, "apiclub", "API Club 🚀")])
    task = store.create_task([1, 2])
    store.upsert_posts(
        task,
        [
            make_post(7, group_id=1, from_id=-1, signer_id=42, views=1000, reposts=3,
                      edited=EDITED, likes=5),
            make_post(7, group_id=2, from_id=55),  # same post id, another wall, group unknown
        ],
    )  # fmt: skip
    rows = {r["owner_id"]: r for r in query(store, "SELECT * FROM posts_with_group")}
    assert sorted(rows) == [-2, -1]  # one row per post: the LEFT JOIN keeps unknown groups
    one, two = rows[-1], rows[-2]
    assert (one["group_screen_name"], one["group_name"]) == ("apiclub", "API Club 🚀")
    assert one["url"] == "https://vk.com/wall-1_7"
    assert (one["from_id"], one["signer_id"], one["views"], one["reposts"]) == (-1, 42, 1000, 3)
    assert (one["edited"], one["likes"], one["text"], one["is_pinned"]) == (
        EDITED,
        5,
        "post 7",
        False,
    )
    assert (two["group_screen_name"], two["group_name"]) == (None, None)
    assert two["url"] == "https://vk.com/wall-2_7"
    assert (two["from_id"], two["views"], two["edited"]) == (55, None, None)


def test_comments_with_post_never_pairs_comments_with_another_walls_post(
    store, make_post, make_comment
):
    """Posts 7 of walls -1 and -2 and comments 9 of both: each comment meets its own post
    only. A join on the post id alone would give four rows, two of them wrong."""
    task = store.create_task([1, 2])
    store.upsert_posts(
        task,
        [
            make_post(7, group_id=1, text="wall one", from_id=-1),
            make_post(7, group_id=2, text="wall two", from_id=-2),
        ],
    )
    store.upsert_comments(
        task,
        [
            make_comment(9, post_vk_id=7, group_id=1, text="on one"),
            make_comment(9, post_vk_id=7, group_id=2, text="on two"),
            make_comment(10, post_vk_id=7, group_id=2, parent_id=9, reply_to_user=109,
                         reply_to_comment=9, text="reply on two"),
            make_comment(11, post_vk_id=8, group_id=2, text="post 8 is not stored"),
        ],
    )  # fmt: skip
    rows = query(store, "SELECT * FROM comments_with_post ORDER BY owner_id, vk_comment_id")
    got = [
        (r["owner_id"], r["vk_comment_id"], r["text"], r["post_text"], r["post_from_id"])
        for r in rows
    ]
    assert got == [
        (-2, 9, "on two", "wall two", -2),
        (-2, 10, "reply on two", "wall two", -2),
        (-2, 11, "post 8 is not stored", None, None),  # kept: the LEFT JOIN
        (-1, 9, "on one", "wall one", -1),
    ]
    reply = rows[1]
    assert (reply["parent_id"], reply["reply_to_user"], reply["reply_to_comment"]) == (9, 109, 9)
    assert reply["group_id"] == 2 and reply["post_url"] == "https://vk.com/wall-2_7"
    assert reply["post_date"] == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert reply["deleted"] is False and rows[2]["post_url"] == "https://vk.com/wall-2_8"


def _apply_only(store, versions):
    real = migrations.available
    wanted = [m for m in real(store.backend) if m.version in versions]
    migrations.available = lambda name: wanted
    try:
        return store._run("migrate", lambda cur: migrations.apply(store._db, cur))
    finally:
        migrations.available = real


def test_migration_0003_keeps_existing_rows_valid(store_url):
    """A database with rows from before 0003: they stay, with reposts 0 and NULL in the other
    new columns, and show in the views; the next upsert fills them."""
    with open_store(store_url) as store:
        assert _apply_only(store, {"0001", "0002"}) == ["0001", "0002"]
        store._run(
            "rows",
            lambda cur: (
                cur.execute(
                    "INSERT INTO posts (vk_post_id, owner_id, group_id, text, date) "
                    "VALUES (7, -1, 1, 'old post', '2024-01-02T03:04:05.000000Z')"
                ),
                cur.execute(
                    "INSERT INTO comments (vk_comment_id, post_vk_id, owner_id, parent_id, "
                    "text, last_seen_at) "
                    "VALUES (9, 7, -1, 8, 'old reply', '2024-01-02T03:04:05.000000Z')"
                ),
            ),
        )
        assert "0003" in store.migrate()
        (post,) = query(store, "SELECT * FROM posts_with_group")
        assert (post["text"], post["url"], post["reposts"]) == (
            "old post",
            "https://vk.com/wall-1_7",
            0,
        )
        assert [post[c] for c in ("from_id", "signer_id", "views", "edited")] == [None] * 4
        (comment,) = query(store, "SELECT * FROM comments_with_post")
        assert (comment["text"], comment["post_text"]) == ("old reply", "old post")
        assert (comment["reply_to_user"], comment["reply_to_comment"]) == (None, None)


# --------------------------------------------------------------------- the docs' examples


def docs_queries() -> list[str]:
    """The ```sql blocks of the "Querying the data" section of docs/reference/schema.md."""
    text = SCHEMA_PAGE.read_text(encoding="utf-8")
    section = text.split("## Querying the data", 1)[1]
    section = re.split(r"\n##+ ", section, maxsplit=1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def test_the_docs_have_the_four_examples():
    queries = docs_queries()
    assert len(queries) == 4
    assert "posts_with_group" in queries[0] and "comments_with_post" in queries[1]
    assert "RECURSIVE" in queries[2] and "last_seen_at" in queries[3]


@pytest.fixture
def walls(store, make_post, make_comment):
    """Two communities whose post and comment ids overlap; a third not in ``groups``."""
    store.save_resolved_groups([VkGroup(1, "one", "One"), VkGroup(2, "two", "Two")])
    task = store.create_task([1, 2, 3])
    views = {1: 100, 2: None, 3: 300, 4: 50, 5: 300}
    posts = [make_post(i, group_id=1, views=v, reposts=i) for i, v in views.items()]
    posts += [make_post(1, group_id=2, views=None), make_post(2, group_id=2, views=10)]
    posts += [make_post(1, group_id=3, views=5)]
    store.upsert_posts(task, posts)

    def c(vk_id, parent=None, to=None, group_id=1, **kw):
        return make_comment(vk_id, post_vk_id=1, group_id=group_id, parent_id=parent,
                            reply_to_comment=to, **kw)  # fmt: skip

    store.upsert_comments(
        task,
        [
            c(10), c(11, parent=10, to=10), c(12, parent=10, to=11), c(13, parent=10),
            c(20), c(21, parent=20, to=20),
            # wall -2 reuses the ids; its comment 11 answers 10 of ITS wall
            c(10, group_id=2), c(11, parent=10, to=10, group_id=2),
        ],
    )  # fmt: skip
    return task


def run_example(store, n, **params):
    return query(store, docs_queries()[n], params)


def test_example_top_posts_by_views(store, walls):
    rows = run_example(store, 0)
    got = [(r["group_id"], r["vk_post_id"], r["views"]) for r in rows]
    # Ties by the newer post; posts without a view count come last (PostgreSQL would put
    # NULLs first in a DESC order without NULLS LAST).
    assert got == [(1, 5, 300), (1, 3, 300), (1, 1, 100), (2, 2, 10), (2, 1, None), (3, 1, 5)]
    assert rows[0]["group_screen_name"] == "one" and rows[-1]["group_screen_name"] is None
    assert rows[0]["url"] == "https://vk.com/wall-1_5" and rows[0]["reposts"] == 5


def test_example_comments_of_one_post(store, walls):
    rows = run_example(store, 1, owner_id=-1, post_id=1)
    assert [(r["vk_comment_id"], r["parent_id"]) for r in rows] == [
        (10, None), (11, 10), (12, 10), (13, 10), (20, None), (21, 20),
    ]  # fmt: skip
    assert rows[0]["author_name"] == "user 10" and rows[0]["author_id"] == 110
    other = run_example(store, 1, owner_id=-2, post_id=1)
    assert [r["vk_comment_id"] for r in other] == [10, 11]


def test_example_reply_chain(store, walls):
    chain = run_example(store, 2, owner_id=-1, comment_id=12)
    assert [(r["depth"], r["vk_comment_id"]) for r in chain] == [(2, 10), (1, 11), (0, 12)]
    assert [r["text"] for r in chain] == ["comment 10", "comment 11", "comment 12"]
    # No reply_to_comment: the reply answers its thread's top-level comment.
    assert [r["vk_comment_id"] for r in run_example(store, 2, owner_id=-1, comment_id=13)] == [
        10,
        13,
    ]
    assert [r["vk_comment_id"] for r in run_example(store, 2, owner_id=-1, comment_id=20)] == [20]
    # Wall -2's comment 11 answers wall -2's comment 10, not wall -1's.
    chain = run_example(store, 2, owner_id=-2, comment_id=11)
    assert [r["vk_comment_id"] for r in chain] == [10, 11]


def test_example_comments_deleted_since_the_last_run(store, make_post, make_comment):
    """Run 1 sees comments 1-3 on each of two walls; run 2 no longer sees 3 on wall -1;
    run 3 no longer sees 2 there either. After run 3 the example lists 2 of wall -1 only."""
    task = store.create_task([1, 2])

    def run(comment_ids_on_wall_one):
        time.sleep(0.002)
        since = store.begin_run(task).updated_at
        time.sleep(0.002)
        store.upsert_posts(task, [make_post(1, group_id=1), make_post(1, group_id=2)])
        store.upsert_comments(
            task,
            [make_comment(i, group_id=1) for i in comment_ids_on_wall_one]
            + [make_comment(i, group_id=2) for i in (1, 2, 3)],
        )
        store.mark_vanished(since, -1, [1])
        store.mark_vanished(since, -2, [1])
        store.finish_task(task)

    run([1, 2, 3])
    assert run_example(store, 3, task_id=task) == []
    run([1, 2])
    assert [(r["owner_id"], r["vk_comment_id"]) for r in run_example(store, 3, task_id=task)] == [
        (-1, 3)
    ]
    run([1])
    rows = run_example(store, 3, task_id=task)
    assert [(r["owner_id"], r["vk_comment_id"]) for r in rows] == [(-1, 2)]
    assert rows[0]["text"] == "comment 2" and rows[0]["last_seen_at"] is not None
