"""Upserts of posts and comments and reading a task's results, on PostgreSQL and SQLite."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

from vkscraper.store import UpsertResult


def _posts(store, task_id):
    return store.task_results(task_id, "posts", limit=1000)


def _comments(store, task_id):
    return store.task_results(task_id, "comments", limit=1000)


def test_upsert_posts_is_idempotent_and_updates_mutable_fields(store, make_post):
    task = store.create_task([1])
    batch = [make_post(1, likes=1), make_post(2, likes=2)]
    assert store.upsert_posts(task, batch) == UpsertResult(inserted=2, updated=0)
    first = {p["vk_post_id"]: p for p in _posts(store, task)}

    time.sleep(0.002)
    assert store.upsert_posts(task, batch) == UpsertResult(inserted=0, updated=2)
    changed = [
        make_post(1, likes=10, text="edited", comments_count=4, is_pinned=True),
        make_post(3),
    ]
    time.sleep(0.002)
    assert store.upsert_posts(task, changed) == UpsertResult(inserted=1, updated=1)

    rows = {p["vk_post_id"]: p for p in _posts(store, task)}
    assert sorted(rows) == [1, 2, 3]
    p1 = rows[1]
    assert (p1["likes"], p1["text"], p1["comments_count"], p1["is_pinned"]) == (
        10,
        "edited",
        4,
        True,
    )
    assert p1["id"] == first[1]["id"]
    assert p1["created_at"] == first[1]["created_at"]
    assert p1["updated_at"] > first[1]["updated_at"]
    assert rows[2]["created_at"] == first[2]["created_at"]
    assert rows[2]["updated_at"] > first[2]["updated_at"]
    assert p1["date"] == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert p1["date"].utcoffset() == timedelta(0)


def test_upsert_comments_is_idempotent_and_updates_mutable_fields(store, make_post, make_comment):
    task = store.create_task([1])
    store.upsert_posts(task, [make_post(1)])
    batch = [make_comment(10), make_comment(11, parent_id=10)]
    assert store.upsert_comments(task, batch) == UpsertResult(2, 0)
    first = {c["vk_comment_id"]: c for c in _comments(store, task)}
    time.sleep(0.002)
    assert store.upsert_comments(task, batch) == UpsertResult(0, 2)
    time.sleep(0.002)
    deleted_stub = make_comment(
        10, author_id=None, author_name=None, text="", deleted=True, likes=7, thread_count=3
    )
    assert store.upsert_comments(task, [deleted_stub]) == UpsertResult(0, 1)

    rows = {c["vk_comment_id"]: c for c in _comments(store, task)}
    assert len(rows) == 2
    c10 = rows[10]
    assert c10["deleted"] is True
    assert (c10["author_id"], c10["author_name"], c10["text"]) == (None, None, "")
    assert (c10["likes"], c10["thread_count"]) == (7, 3)
    assert c10["created_at"] == first[10]["created_at"]
    assert c10["updated_at"] > first[10]["updated_at"]
    assert rows[11]["parent_id"] == 10
    assert rows[11]["deleted"] is False


def test_upsert_keeps_immutable_facts(store, make_post, make_comment):
    """The natural key decides identity; date, group_id, post_vk_id, parent_id and created_at
    are facts of the first sighting, which a later upsert of the same key does not rewrite."""
    task = store.create_task([1])
    first_date = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    other_date = datetime(2025, 2, 3, 4, 5, tzinfo=UTC)
    store.upsert_posts(task, [make_post(1, group_id=1, date=first_date), make_post(2)])
    store.upsert_comments(
        task,
        [
            make_comment(10, post_vk_id=1, parent_id=None, date=first_date),
            make_comment(11, post_vk_id=1, parent_id=10, date=first_date),
        ],
    )
    first_post = _posts(store, task)[0]
    first_comments = {c["vk_comment_id"]: c for c in _comments(store, task)}

    time.sleep(0.002)
    # Same keys: wall -1, post 1, comments 10 and 11; every immutable fact told differently.
    moved = make_post(1, group_id=77, owner_id=-1, date=other_date, text="edited")
    assert store.upsert_posts(task, [moved]) == UpsertResult(0, 1)
    changed = [
        make_comment(10, post_vk_id=2, parent_id=11, date=other_date, text="edited"),
        make_comment(11, post_vk_id=2, parent_id=None, date=None, text="edited"),
    ]
    assert store.upsert_comments(task, changed) == UpsertResult(0, 2)

    posts = _posts(store, task)
    assert [p["vk_post_id"] for p in posts] == [1, 2]
    post = posts[0]
    assert post["text"] == "edited"  # the upsert did land
    assert (post["owner_id"], post["group_id"], post["date"]) == (-1, 1, first_date)
    assert (post["id"], post["created_at"]) == (first_post["id"], first_post["created_at"])

    comments = {c["vk_comment_id"]: c for c in _comments(store, task)}
    assert sorted(comments) == [10, 11]
    for vk_id, parent_id in ((10, None), (11, 10)):
        comment, first = comments[vk_id], first_comments[vk_id]
        assert comment["text"] == "edited"  # the upsert did land
        assert (comment["post_vk_id"], comment["parent_id"], comment["date"]) == (
            1,
            parent_id,
            first_date,
        )
        assert (comment["id"], comment["created_at"]) == (first["id"], first["created_at"])


def test_same_vk_ids_on_two_walls_are_two_rows(store, make_post, make_comment):
    task = store.create_task([1, 2])
    assert store.upsert_posts(task, [make_post(7, group_id=1), make_post(7, group_id=2)]) == (
        UpsertResult(2, 0)
    )
    comments = [
        make_comment(9, post_vk_id=7, group_id=1),
        make_comment(9, post_vk_id=7, group_id=2),
    ]
    assert store.upsert_comments(task, comments) == UpsertResult(2, 0)
    assert sorted(p["owner_id"] for p in _posts(store, task)) == [-2, -1]
    assert sorted(c["owner_id"] for c in _comments(store, task)) == [-2, -1]


def test_duplicate_keys_in_one_batch_last_one_wins(store, make_post, make_comment):
    task = store.create_task([1])
    posts = [make_post(1, likes=1), make_post(2), make_post(1, likes=5)]
    assert store.upsert_posts(task, posts) == UpsertResult(2, 0)
    comments = [make_comment(3, text="a"), make_comment(3, text="b")]
    assert store.upsert_comments(task, comments) == UpsertResult(1, 0)
    assert {p["vk_post_id"]: p["likes"] for p in _posts(store, task)} == {1: 5, 2: 0}
    assert [c["text"] for c in _comments(store, task)] == ["b"]


def test_nul_bytes_removed_and_four_byte_emoji_kept(store, make_post, make_comment):
    task = store.create_task([1])
    store.upsert_posts(task, [make_post(1, text="a\x00b 😀🇷🇺 𝕏")])
    store.upsert_comments(task, [make_comment(2, text="\x00x😀", author_name="N\x00ame 🐱")])
    assert _posts(store, task)[0]["text"] == "ab 😀🇷🇺 𝕏"
    comment = _comments(store, task)[0]
    assert (comment["text"], comment["author_name"]) == ("x😀", "Name 🐱")


def test_text_with_copy_format_characters_round_trips(store, make_post, make_comment):
    """PostgreSQL gets comments by COPY: backslashes, tabs, newlines, carriage returns and a
    literal \\N in text are data, and None stays NULL (both backends alike)."""
    task = store.create_task([1])
    store.upsert_posts(task, [make_post(1)])
    odd = "a\tb\nc\r\\N \\ end\\"
    store.upsert_comments(task, [
        make_comment(2, text=odd, author_name="\\N"),
        make_comment(3, text="", author_name=None, parent_id=2, deleted=True),
    ])  # fmt: skip
    rows = {c["vk_comment_id"]: c for c in _comments(store, task)}
    assert (rows[2]["text"], rows[2]["author_name"]) == (odd, "\\N")
    assert (rows[3]["text"], rows[3]["author_name"], rows[3]["parent_id"]) == ("", None, 2)
    assert rows[3]["deleted"] is True and rows[2]["deleted"] is False


def test_dates_stored_as_utc(store, make_post, make_comment):
    task = store.create_task([1])
    moscow = timezone(timedelta(hours=3))
    store.upsert_posts(task, [make_post(1, date=datetime(2024, 1, 1, 3, 0, tzinfo=moscow))])
    store.upsert_comments(task, [make_comment(2, date=None)])
    post = _posts(store, task)[0]
    assert post["date"] == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    assert post["date"].tzinfo == UTC
    assert post["created_at"].tzinfo == UTC
    assert _comments(store, task)[0]["date"] is None


def test_empty_batches(store):
    assert store.upsert_posts(None, []) == UpsertResult(0, 0)
    assert store.upsert_comments(None, []) == UpsertResult(0, 0)


def test_task_results_keep_rows_a_later_task_touched(store, make_post, make_comment):
    first = store.create_task([1])
    store.upsert_posts(first, [make_post(1), make_post(2)])
    store.upsert_comments(first, [make_comment(10, post_vk_id=1)])
    second = store.create_task([1])
    store.upsert_posts(second, [make_post(2, likes=9), make_post(3)])
    store.upsert_comments(second, [make_comment(10, post_vk_id=1, likes=4)])

    assert [p["vk_post_id"] for p in _posts(store, first)] == [1, 2]
    assert [p["vk_post_id"] for p in _posts(store, second)] == [2, 3]
    assert _posts(store, first)[1]["last_task_id"] == second  # the row itself moved on
    assert [c["vk_comment_id"] for c in _comments(store, first)] == [10]
    assert _comments(store, second) == []  # comment 10 belongs to post 1, not in task 2


def test_task_results_paging(store, make_post, make_comment):
    task = store.create_task([1])
    store.upsert_posts(task, [make_post(i) for i in range(1, 8)])
    store.upsert_comments(task, [make_comment(i, post_vk_id=1 + i % 7) for i in range(1, 6)])
    seen, after = [], 0
    for _ in range(4):  # 7 rows in pages of 3: a cursor that repeats a row fails, not hangs
        page = store.task_results(task, "posts", limit=3, after_id=after)
        if not page:
            break
        assert len(page) <= 3
        assert all(p["id"] > after for p in page), "a page repeats a row before the cursor"
        seen += [p["vk_post_id"] for p in page]
        after = page[-1]["id"]
    else:
        raise AssertionError(f"paging did not end: {seen}")
    assert seen == list(range(1, 8))
    ids = [c["id"] for c in store.task_results(task, "comments", limit=2)]
    rest = [c["id"] for c in store.task_results(task, "comments", limit=10, after_id=ids[-1])]
    assert len(ids) == 2 and len(rest) == 3 and ids + rest == sorted(ids + rest)
    assert store.task_results(task + 100, "posts") == []


EDITED = datetime(2024, 5, 2, 8, 30, 15, tzinfo=UTC)


def test_analysis_fields_round_trip(store, make_post, make_comment):
    task = store.create_task([1])
    moscow = timezone(timedelta(hours=3))
    full = make_post(
        1,
        from_id=-1,
        signer_id=42,
        views=3_000_000_000,  # BIGINT
        reposts=7,
        edited=datetime(2024, 5, 2, 11, 30, 15, tzinfo=moscow),
    )
    by_user = make_post(2, from_id=77, views=0)
    store.upsert_posts(task, [full, by_user, make_post(3)])
    store.upsert_comments(
        task,
        [
            make_comment(10),
            make_comment(11, parent_id=10, reply_to_user=110, reply_to_comment=10),
            make_comment(12, parent_id=10, reply_to_user=-9, reply_to_comment=11),
        ],
    )
    posts = {p["vk_post_id"]: p for p in _posts(store, task)}
    fields = ("from_id", "signer_id", "views", "reposts", "edited")
    assert [posts[1][f] for f in fields] == [-1, 42, 3_000_000_000, 7, EDITED]
    assert posts[1]["edited"].tzinfo == UTC
    assert [posts[2][f] for f in fields] == [77, None, 0, 0, None]
    assert [posts[3][f] for f in fields] == [None, None, None, 0, None]  # the defaults
    replies = {
        c["vk_comment_id"]: (c["reply_to_user"], c["reply_to_comment"])
        for c in _comments(store, task)
    }
    assert replies == {10: (None, None), 11: (110, 10), 12: (-9, 11)}


def test_upserts_of_analysis_fields(store, make_post, make_comment):
    """Documented in vkscraper/store/content.py: reposts and signer_id follow VK's latest
    answer; views and edited too, but an answer without them keeps the stored value; from_id
    and reply_to_* are facts, filled when NULL and then kept."""
    task = store.create_task([1])
    later = EDITED + timedelta(days=1)

    def post(vk_id=1, **fields):
        store.upsert_posts(task, [make_post(vk_id, **fields)])
        row = next(p for p in _posts(store, task) if p["vk_post_id"] == vk_id)
        return {f: row[f] for f in ("from_id", "signer_id", "views", "reposts", "edited")}

    first = post(from_id=None, signer_id=42, views=100, reposts=1, edited=EDITED)
    assert first == {"from_id": None, "signer_id": 42, "views": 100, "reposts": 1,
                     "edited": EDITED}  # fmt: skip
    # VK now names the author (filled), dropped the signature, says nothing of views or edits.
    second = post(from_id=-1, signer_id=None, views=None, reposts=5, edited=None)
    assert second == {"from_id": -1, "signer_id": None, "views": 100, "reposts": 5,
                      "edited": EDITED}  # fmt: skip
    # A different author is not taken (a fact); new views, signature and edit time are.
    third = post(from_id=99, signer_id=7, views=250, reposts=0, edited=later)
    assert third == {"from_id": -1, "signer_id": 7, "views": 250, "reposts": 0,
                     "edited": later}  # fmt: skip
    # A sparse answer: likes still move, the facts and last known views and edit time stay.
    store.upsert_posts(task, [make_post(1, likes=9)])
    row = _posts(store, task)[0]
    assert (row["likes"], row["from_id"], row["views"], row["edited"]) == (9, -1, 250, later)

    store.upsert_posts(task, [make_post(2)])

    def comment(**fields):
        store.upsert_comments(task, [make_comment(11, post_vk_id=2, parent_id=10, **fields)])
        (row,) = [c for c in _comments(store, task) if c["vk_comment_id"] == 11]
        return row["reply_to_user"], row["reply_to_comment"], row["text"]

    assert comment(reply_to_user=None, reply_to_comment=None) == (None, None, "comment 11")
    assert comment(reply_to_user=5, reply_to_comment=10, text="a") == (5, 10, "a")  # filled
    assert comment(reply_to_user=None, reply_to_comment=None, text="b") == (5, 10, "b")  # kept
    assert comment(reply_to_user=6, reply_to_comment=9, text="c") == (5, 10, "c")  # a fact
