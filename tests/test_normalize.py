"""Normalization of VK responses into items: users, communities, stubs, odd text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vkscraper.exceptions import VkMalformedResponse
from vkscraper.items import VkComment, VkGroup, VkPage, VkPost
from vkscraper.vk.normalize import (
    ThreadToFetch,
    check_comments_page,
    latest_posts,
    normalize_comments,
    normalize_posts,
    parse_groups,
    parse_posts,
    threads_to_fetch,
)

T0 = 1_700_000_000


def comments_page(data, group_id, post_id, thread_id=None):
    """What a ``wall.getComments`` page becomes: its shape checked by the spider (a malformed
    page raises), its rows and per-comment errors made by the normalize pipeline."""
    check_comments_page(data)
    return normalize_comments(VkPage("comments", group_id, post_id, thread_id, raw=data))


def comment_rows(data, group_id, post_id, thread_id=None):
    """The rows of a page whose every comment is well-formed."""
    rows, errors = comments_page(data, group_id, post_id, thread_id)
    assert errors == []
    return rows


def _post(pid, date, **extra):
    return {"id": pid, "owner_id": -5, "from_id": -5, "date": date, "text": f"p{pid}", **extra}


def test_posts_full_and_sparse():
    data = {
        "count": 2,
        "items": [
            _post(1, T0, is_pinned=1, likes={"count": 7}, comments={"count": 3}),
            {"id": 2, "date": T0 + 60},  # no text, likes or comments: VK marks them optional
        ],
    }
    assert parse_posts(data, 5) == [
        VkPost(1, -5, 5, "p1", datetime.fromtimestamp(T0, UTC), 7, 3, True, from_id=-5),
        VkPost(2, -5, 5, "", datetime.fromtimestamp(T0 + 60, UTC), 0, 0, False),
    ]
    assert parse_posts(data, 5)[0].date.tzinfo is UTC


NO_ANALYSIS_FIELDS = (None, None, None, 0, None)  # from_id, signer_id, views, reposts, edited


def _analysis_fields(post):
    return (post.from_id, post.signer_id, post.views, post.reposts, post.edited)


def test_post_analysis_fields():
    """Author, signer, views, reposts and the edit time, as wall.get returns them."""
    signed = _post(
        1,
        T0,
        signer_id=42,
        views={"count": 3_000_000_000},  # beyond INTEGER: the column is BIGINT
        reposts={"count": 12, "wall_count": 10, "mail_count": 2},
        edited=T0 + 3600,
    )
    by_user = {**_post(2, T0 + 1), "from_id": 77, "views": {"count": 0}}
    first, second = parse_posts({"items": [signed, by_user]}, 5)
    assert (first.from_id, first.signer_id, first.views, first.reposts) == (-5, 42, 3 * 10**9, 12)
    assert first.edited == datetime.fromtimestamp(T0 + 3600, UTC)
    assert first.edited.tzinfo is UTC
    assert (second.from_id, second.signer_id, second.views, second.reposts) == (77, None, 0, 0)
    assert second.edited is None


def test_post_analysis_fields_absent_take_defaults():
    """VK omits views on old posts, signer_id when unsigned, edited when never edited."""
    (post,) = parse_posts({"items": [{"id": 1, "date": T0}]}, 5)
    assert _analysis_fields(post) == NO_ANALYSIS_FIELDS


@pytest.mark.parametrize(
    "bad",
    [
        {"from_id": "-5", "signer_id": "42", "views": {"count": "10"}, "reposts": {"count": "3"},
         "edited": "yesterday"},
        {"from_id": True, "signer_id": True, "views": {"count": True}, "reposts": True,
         "edited": True},
        {"from_id": 0, "signer_id": -5, "views": {"count": -1}, "reposts": {"count": -2},
         "edited": 0},
        {"from_id": 2**70, "signer_id": 2**63, "views": {"count": 2**63},
         "reposts": {"count": 2**31}, "edited": 10**20},
        {"from_id": 1.5, "signer_id": [42], "views": 10, "reposts": [3], "edited": -1},
        {"from_id": None, "signer_id": {"id": 1}, "views": {"count": None}, "reposts": None,
         "edited": 1.5e9},
    ],
)  # fmt: skip
def test_post_analysis_fields_of_the_wrong_type_take_defaults(bad):
    """Never a crash nor a value that does not fit its column: the default instead."""
    (post,) = parse_posts({"items": [{"id": 1, "date": T0, "text": "t", **bad}]}, 5)
    assert _analysis_fields(post) == NO_ANALYSIS_FIELDS
    assert (post.vk_post_id, post.text) == (1, "t")  # the rest of the post is intact


@pytest.mark.parametrize(
    "data",
    [None, [], {"count": 1}, {"items": [{"date": T0}]}, {"items": [{"id": 1}]}, {"items": [1]}],
)
def test_malformed_wall_get(data):
    with pytest.raises(VkMalformedResponse):
        parse_posts(data, 5)


def test_latest_posts_keeps_pinned_only_when_recent():
    old_pinned = parse_posts({"items": [_post(1, T0, is_pinned=1)]}, 5)
    recent = parse_posts({"items": [_post(i, T0 + i * 100) for i in range(2, 13)]}, 5)
    chosen = latest_posts(old_pinned + recent, 10)
    assert [p.vk_post_id for p in chosen] == list(range(12, 2, -1))
    new_pinned = parse_posts({"items": [_post(99, T0 + 10_000, is_pinned=1)]}, 5)
    chosen = latest_posts(new_pinned + recent, 10)
    assert chosen[0].vk_post_id == 99 and len(chosen) == 10
    assert [p.vk_post_id for p in latest_posts(recent[:3], 10)] == [4, 3, 2]
    assert len(latest_posts(recent + recent, 10)) == 10  # duplicates dropped


COMMENTS = {
    "count": 6,
    "current_level_count": 3,
    "items": [
        {
            "id": 10,
            "from_id": 1,
            "date": T0,
            "text": "hi 😀\x00 end",
            "likes": {"count": 2},
            "parents_stack": [],
            "thread": {
                "count": 12,
                "items": [
                    {"id": 11, "from_id": -9, "date": T0 + 1, "text": "from a club"},
                    {"id": 12, "from_id": 2, "date": T0 + 2, "text": "x", "likes": {"count": 1}},
                ],
            },
        },
        # A deleted comment that still has replies: no from_id, text, post_id (vknet/vk#802)
        {"id": 13, "date": T0 + 3, "parents_stack": [], "thread": {"count": 1}, "deleted": True},
        {"id": 14, "from_id": 3, "date": T0 + 4, "text": "no profile for me"},
    ],
    "profiles": [
        {"id": 1, "first_name": "Анна", "last_name": "Ким"},
        {"id": 2, "first_name": "Bo"},
    ],
    "groups": [{"id": 9, "name": "Клуб 🚀"}],
}


def test_comments_users_communities_stubs_and_inline_replies():
    got = comment_rows(COMMENTS, 5, 77)
    d = lambda s: datetime.fromtimestamp(T0 + s, UTC)  # noqa: E731
    assert got == [
        VkComment(10, 77, -5, None, 12, 1, "Анна Ким", "hi 😀\x00 end", d(0), 2, False),
        VkComment(11, 77, -5, 10, 0, -9, "Клуб 🚀", "from a club", d(1), 0, False),
        VkComment(12, 77, -5, 10, 0, 2, "Bo", "x", d(2), 1, False),
        VkComment(13, 77, -5, None, 1, None, None, "", d(3), 0, True),
        VkComment(14, 77, -5, None, 0, 3, None, "no profile for me", d(4), 0, False),
    ]


def test_comments_reply_to_fields():
    """reply_to_user / reply_to_comment of replies, inline and on thread pages; None at the
    top level and on stubs."""
    page = {
        "items": [
            {
                "id": 30, "from_id": 1, "date": T0, "text": "top",
                "thread": {"count": 2, "items": [
                    {"id": 31, "from_id": 2, "date": T0 + 1, "text": "to the top",
                     "reply_to_user": 1, "reply_to_comment": 30},
                    {"id": 32, "from_id": 1, "date": T0 + 2, "text": "to a reply",
                     "reply_to_user": 2, "reply_to_comment": 31},
                ]},
            },
            {"id": 33, "date": T0 + 3, "thread": {"count": 1}, "deleted": True},
        ],
    }  # fmt: skip
    comments = comment_rows(page, 5, 77)
    got = {c.vk_comment_id: (c.reply_to_user, c.reply_to_comment) for c in comments}
    assert got == {30: (None, None), 31: (1, 30), 32: (2, 31), 33: (None, None)}
    thread = {"items": [{"id": 40, "from_id": 3, "date": T0, "text": "r",
                         "reply_to_user": -9, "reply_to_comment": 32}]}  # fmt: skip
    (reply,) = comment_rows(thread, 5, 77, thread_id=30)
    assert (reply.parent_id, reply.reply_to_user, reply.reply_to_comment) == (30, -9, 32)


@pytest.mark.parametrize(
    ("reply_to_user", "reply_to_comment"),
    [("1", "30"), (True, True), (0, 0), (2**70, -30), (1.5, [30]), ({"id": 1}, None)],
)
def test_comments_reply_to_fields_of_the_wrong_type_are_none(reply_to_user, reply_to_comment):
    reply = {"id": 31, "from_id": 2, "date": T0, "text": "r"}
    reply |= {"reply_to_user": reply_to_user, "reply_to_comment": reply_to_comment}
    page = {"items": [reply]}
    (reply,) = comment_rows(page, 5, 77, thread_id=30)
    assert (reply.reply_to_user, reply.reply_to_comment) == (None, None)
    assert (reply.vk_comment_id, reply.author_id, reply.text) == (31, 2, "r")


@pytest.mark.parametrize(
    "likes", [{"count": True}, {"count": -3}, {"count": 2**31}, {"count": 1.0}]
)
def test_counters_that_do_not_fit_are_zero(likes):
    """A like count the INTEGER column cannot hold would fail a whole batch: 0 instead."""
    (post,) = parse_posts({"items": [{"id": 1, "date": T0, "likes": likes}]}, 5)
    (comment,) = comment_rows({"items": [{"id": 1, "date": T0, "likes": likes}]}, 5, 1)
    assert post.likes == comment.likes == 0


def test_thread_page_sets_parent_and_ignores_thread_field():
    page = {"items": [{"id": 20, "from_id": 1, "date": T0, "text": "r", "thread": {"count": 5}}]}
    (reply,) = comment_rows(page, 5, 77, thread_id=10)
    assert reply.parent_id == 10 and reply.thread_count == 0


def test_threads_to_fetch_only_incomplete_threads():
    assert list(threads_to_fetch(COMMENTS)) == [
        ThreadToFetch(comment_id=10, total=12, seen=2, last_seen_id=12),
        ThreadToFetch(comment_id=13, total=1, seen=0, last_seen_id=None),
    ]


def test_malformed_comment_pages():
    """A malformed comment is an error of its own (its post's); a malformed page, an inline
    reply without an id included, fails as a whole."""
    rows, errors = comments_page({"items": [{"id": 1, "date": "yesterday"}]}, 5, 1)
    assert rows == [] and len(errors) == 1
    assert errors[0][0].startswith("group 5 post 1 comment 1: ") and errors[0][1] == 1
    with pytest.raises(VkMalformedResponse):
        comments_page({"items": [{"id": 1, "thread": {"items": [{"x": 1}]}}]}, 5, 1)
    with pytest.raises(VkMalformedResponse):
        comments_page({"count": 1}, 5, 1)


def test_groups_both_shapes():
    new = {"groups": [{"id": 1, "name": "A", "screen_name": "a", "deactivated": "banned"}]}
    old = [{"id": 2, "name": "B", "screen_name": "b", "is_closed": 1}]
    assert parse_groups(new) == [VkGroup(1, "a", "A", "banned", 0)]
    assert parse_groups(old) == [VkGroup(2, "b", "B", None, 1)]
    with pytest.raises(VkMalformedResponse):
        parse_groups({"groups": [{"id": -1}]})
    with pytest.raises(VkMalformedResponse):
        parse_groups({"count": 3})


def test_ids_beyond_bigint_are_malformed_not_rows():
    """orjson reads ints up to 2**64 - 1; a row with an id beyond BIGINT is that row's error."""
    huge = 2**63
    page = VkPage("posts", 1, raw={"items": [{"id": huge, "date": 1}, {"id": 2, "date": 1}]})
    rows, errors = normalize_posts(page)
    assert [r.vk_post_id for r in rows] == [2] and [p for _, p in errors] == [huge]
    items = [{"id": huge, "date": 1, "thread": {"count": 1, "items": [{"id": 5, "date": 1}]}}]
    rows, errors = normalize_comments(VkPage("comments", 1, 3, raw={"items": items}))
    assert rows == [] and len(errors) == 2  # the comment, and its reply (parent beyond BIGINT)
