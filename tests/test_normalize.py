"""Normalization of VK responses into items: users, communities, stubs, odd text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vkscraper.exceptions import VkMalformedResponse
from vkscraper.items import VkComment, VkGroup, VkPost
from vkscraper.normalize import (
    ThreadToFetch,
    latest_posts,
    parse_comments,
    parse_groups,
    parse_posts,
    threads_to_fetch,
)

T0 = 1_700_000_000


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
        VkPost(1, -5, 5, "p1", datetime.fromtimestamp(T0, UTC), 7, 3, True),
        VkPost(2, -5, 5, "", datetime.fromtimestamp(T0 + 60, UTC), 0, 0, False),
    ]
    assert parse_posts(data, 5)[0].date.tzinfo is UTC


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
    got = parse_comments(COMMENTS, 5, 77)
    d = lambda s: datetime.fromtimestamp(T0 + s, UTC)  # noqa: E731
    assert got == [
        VkComment(10, 77, -5, None, 12, 1, "Анна Ким", "hi 😀\x00 end", d(0), 2, False),
        VkComment(11, 77, -5, 10, 0, -9, "Клуб 🚀", "from a club", d(1), 0, False),
        VkComment(12, 77, -5, 10, 0, 2, "Bo", "x", d(2), 1, False),
        VkComment(13, 77, -5, None, 1, None, None, "", d(3), 0, True),
        VkComment(14, 77, -5, None, 0, 3, None, "no profile for me", d(4), 0, False),
    ]


def test_thread_page_sets_parent_and_ignores_thread_field():
    page = {"items": [{"id": 20, "from_id": 1, "date": T0, "text": "r", "thread": {"count": 5}}]}
    (reply,) = parse_comments(page, 5, 77, parent_id=10)
    assert reply.parent_id == 10 and reply.thread_count == 0


def test_threads_to_fetch_only_incomplete_threads():
    assert list(threads_to_fetch(COMMENTS)) == [
        ThreadToFetch(comment_id=10, total=12, seen=2, last_seen_id=12),
        ThreadToFetch(comment_id=13, total=1, seen=0, last_seen_id=None),
    ]


def test_malformed_comment_pages():
    with pytest.raises(VkMalformedResponse):
        parse_comments({"items": [{"id": 1, "date": "yesterday"}]}, 5, 1)
    with pytest.raises(VkMalformedResponse):
        parse_comments({"items": [{"id": 1, "thread": {"items": [{"x": 1}]}}]}, 5, 1)
    with pytest.raises(VkMalformedResponse):
        parse_comments({"count": 1}, 5, 1)


def test_groups_both_shapes():
    new = {"groups": [{"id": 1, "name": "A", "screen_name": "a", "deactivated": "banned"}]}
    old = [{"id": 2, "name": "B", "screen_name": "b", "is_closed": 1}]
    assert parse_groups(new) == [VkGroup(1, "a", "A", "banned", 0)]
    assert parse_groups(old) == [VkGroup(2, "b", "B", None, 1)]
    with pytest.raises(VkMalformedResponse):
        parse_groups({"groups": [{"id": -1}]})
    with pytest.raises(VkMalformedResponse):
        parse_groups({"count": 3})
