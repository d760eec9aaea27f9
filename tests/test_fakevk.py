"""Tests of the VK API emulator: real HTTP against the subprocess, urllib only (no Scrapy)."""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from fakevk import (
    FakeVk,
    expected_rows,
    generate_dataset,
    load_dataset,
    save_dataset,
    wall_readable,
)
from fakevk.dataset import normalize_dataset
from fakevk.server import RateLimiter
from tests.helpers.emulator import TOKEN, big_post, by_flag, call, err, first_group, ok

pytestmark = pytest.mark.integration

BIG_WALL_ID = 999_999  # a hand-made community with 130 posts, for wall.get paging


def _big_wall() -> dict[str, Any]:
    posts = [{"id": n, "date": 1_600_000_000 + n * 60, "text": f"post {n}"} for n in range(1, 131)]
    return {"id": BIG_WALL_ID, "screen_name": "bigwall", "name": "Big Wall", "posts": posts}


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    dataset = generate_dataset(seed=3, big_post=True, closed_groups=3)
    dataset["groups"].append(_big_wall())
    return dataset


@pytest.fixture(scope="module")
def vk(data: dict[str, Any]) -> Iterator[FakeVk]:
    with FakeVk(data) as server:
        yield server


def newest_post(group: dict[str, Any], rank: int = 0) -> dict[str, Any]:
    return sorted(group["posts"], key=lambda p: p["date"], reverse=True)[rank]


# -- wall.get ----------------------------------------------------------------------------------


def test_wall_get_pinned_first_then_by_date(vk: FakeVk, data: dict[str, Any]) -> None:
    """The old pinned post takes slot 0, is flagged, and is not repeated later."""
    group = first_group(data)
    pinned = next(p for p in group["posts"] if p["is_pinned"])
    assert pinned["date"] == min(p["date"] for p in group["posts"])
    seen: list[dict[str, Any]] = []
    for offset in range(0, 20, 5):
        page = ok(vk, "wall.get", owner_id=-group["id"], offset=offset, count=5)
        assert page["count"] == len(group["posts"])
        seen += page["items"]
    assert len(seen) == len(group["posts"])
    assert seen[0]["id"] == pinned["id"] and seen[0]["is_pinned"] == 1
    assert all("is_pinned" not in p for p in seen[1:])
    dates = [p["date"] for p in seen[1:]]
    assert dates == sorted(dates, reverse=True)
    assert len({p["id"] for p in seen}) == len(seen)


def test_wall_get_post_shape(vk: FakeVk, data: dict[str, Any]) -> None:
    """A post carries the 5.199 fields; comments.count equals wall.getComments count."""
    group = first_group(data)
    post = newest_post(group)
    item = ok(vk, "wall.get", owner_id=-group["id"], offset=1, count=1)["items"][0]
    assert item["id"] == post["id"]
    assert item["owner_id"] == item["from_id"] == -group["id"]
    assert item["post_type"] == "post" and item["marked_as_ads"] == 0
    assert item["likes"] == {
        "count": post["likes"],
        "user_likes": 0,
        "can_like": 1,
        "can_publish": 1,
        "repost_disabled": 0,
    }
    assert item["reposts"]["count"] == post["reposts"] and item["views"]["count"] == post["views"]
    assert set(item["comments"]) == {
        "count",
        "can_post",
        "groups_can_post",
        "can_close",
        "can_open",
    }
    comments = ok(vk, "wall.getComments", owner_id=-group["id"], post_id=post["id"])
    assert item["comments"]["count"] == comments["count"] > comments["current_level_count"]


def test_wall_get_author_signer_views_edited(vk: FakeVk, data: dict[str, Any]) -> None:
    """from_id, signer_id, views, reposts and edited as VK gives them: signer_id and edited
    only when set, views absent when the post has none; filter owner/others split by author."""
    group = first_group(data)
    owner = -group["id"]
    items = ok(vk, "wall.get", owner_id=owner, count=100)["items"]
    source = {p["id"]: p for p in group["posts"]}
    assert len(items) == len(source)
    for item in items:
        post = source[item["id"]]
        assert item["from_id"] == post["from_id"]
        assert item["reposts"]["count"] == post["reposts"]
        assert item.get("views", {}).get("count") == post["views"]
        assert item.get("signer_id") == post["signer_id"]
        assert item.get("edited") == post["edited"]
    newest, by_user, no_views = (newest_post(group, rank) for rank in (0, 1, 3))
    signed = next(i for i in items if i["id"] == newest["id"])
    assert signed["from_id"] == owner and signed["signer_id"] > 0
    assert signed["edited"] > signed["date"]
    assert next(i for i in items if i["id"] == by_user["id"])["from_id"] > 0
    assert "views" not in next(i for i in items if i["id"] == no_views["id"])
    mine = [
        p["id"] for p in ok(vk, "wall.get", owner_id=owner, count=100, filter="owner")["items"]
    ]
    others = ok(vk, "wall.get", owner_id=owner, count=100, filter="others")["items"]
    assert [p["id"] for p in others] == [by_user["id"]]
    assert sorted(mine + [by_user["id"]]) == sorted(source)


def test_wall_get_count_clamped_and_domain(vk: FakeVk) -> None:
    """count above 100 gives 100 items; domain addresses the same wall as owner_id."""
    page = ok(vk, "wall.get", owner_id=-BIG_WALL_ID, count=150)
    assert page["count"] == 130 and len(page["items"]) == 100
    rest = ok(vk, "wall.get", domain="bigwall", offset=100, count=100)
    assert [p["id"] for p in rest["items"]] == list(range(30, 0, -1))
    assert ok(vk, "wall.get", owner_id=-BIG_WALL_ID)["items"].__len__() == 20  # default count
    assert ok(vk, "wall.get", domain="bigwall", filter="others")["items"] == []


def test_wall_get_extended(vk: FakeVk, data: dict[str, Any]) -> None:
    """extended=1 adds profiles and the community in groups."""
    group = first_group(data)
    page = ok(vk, "wall.get", owner_id=-group["id"], count=1, extended=1)
    assert page["profiles"] == []
    assert [g["id"] for g in page["groups"]] == [group["id"]]


# -- wall.getComments --------------------------------------------------------------------------


def test_comments_offset_paging_over_100(vk: FakeVk, data: dict[str, Any]) -> None:
    """Top-level paging follows current_level_count; count includes the replies."""
    group, post = big_post(data)
    params = {"owner_id": -group["id"], "post_id": post["id"], "preview_length": 0}
    first = ok(vk, "wall.getComments", **params, count=100)
    assert first["current_level_count"] > 100 and len(first["items"]) == 100
    second = ok(vk, "wall.getComments", **params, count=100, offset=100)
    ids = [c["id"] for c in first["items"] + second["items"]]
    assert len(ids) == first["current_level_count"] == len(set(ids))
    assert ids == sorted(ids)
    replies = sum(c["thread"]["count"] for c in first["items"] + second["items"])
    assert first["count"] == first["current_level_count"] + replies
    assert ok(vk, "wall.getComments", **params, count=500)["items"].__len__() == 100
    assert ok(vk, "wall.getComments", **params)["items"].__len__() == 10  # default count


def _thread_post(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The first group's newest post and its long thread (13 replies, one deleted)."""
    group = first_group(data)
    post = newest_post(group)
    thread = post["comments"][0]
    assert len(thread["replies"]) == 13
    return group, post, thread


def test_comment_branch_paging(vk: FakeVk, data: dict[str, Any]) -> None:
    """comment_id returns that comment's visible replies, paged by offset."""
    group, post, thread = _thread_post(data)
    visible = [r["id"] for r in thread["replies"] if not r["deleted"]]
    got: list[dict[str, Any]] = []
    for offset in range(0, 15, 5):
        page = ok(
            vk,
            "wall.getComments",
            owner_id=-group["id"],
            post_id=post["id"],
            comment_id=thread["id"],
            offset=offset,
            count=5,
        )
        assert page["current_level_count"] == len(visible) == 12
        got += page["items"]
    assert [r["id"] for r in got] == visible
    assert all(r["parents_stack"] == [thread["id"]] and "thread" not in r for r in got)
    assert any(r.get("reply_to_comment") == thread["id"] for r in got)
    # One answers an earlier reply of the same thread, naming that reply's author.
    by_id = {r["id"]: r for r in got}
    deep = [r for r in got if r.get("reply_to_comment") in by_id]
    assert deep
    assert all(r["reply_to_user"] == by_id[r["reply_to_comment"]]["from_id"] for r in deep)
    assert all(
        r["reply_to_user"] == thread["from_id"]
        for r in got
        if r.get("reply_to_comment") == thread["id"]
    )


def test_thread_items_inline_and_limit(vk: FakeVk, data: dict[str, Any]) -> None:
    """thread_items_count inlines the first replies; above 10 is error 100."""
    group, post, thread = _thread_post(data)
    params = {"owner_id": -group["id"], "post_id": post["id"], "count": 1}
    top = ok(vk, "wall.getComments", **params, thread_items_count=10)["items"][0]
    assert top["thread"]["count"] == 12 and len(top["thread"]["items"]) == 10
    visible = [r["id"] for r in thread["replies"] if not r["deleted"]]
    assert [r["id"] for r in top["thread"]["items"]] == visible[:10]
    assert ok(vk, "wall.getComments", **params)["items"][0]["thread"]["items"] == []
    error = err(vk, "wall.getComments", **params, thread_items_count=11)
    assert error["error_code"] == 100 and "thread_items_count is invalid" in error["error_msg"]


def test_need_likes_and_preview_length(vk: FakeVk, data: dict[str, Any]) -> None:
    """likes only with need_likes=1; texts are cut to 90 characters unless preview_length=0."""
    group, post, thread = _thread_post(data)
    params = {"owner_id": -group["id"], "post_id": post["id"], "count": 1}
    assert len(thread["text"]) > 90
    plain = ok(vk, "wall.getComments", **params)["items"][0]
    assert "likes" not in plain and plain["text"] == thread["text"][:90]
    full = ok(vk, "wall.getComments", **params, need_likes=1, preview_length=0)["items"][0]
    assert full["text"] == thread["text"]
    assert full["likes"] == {"count": thread["likes"], "user_likes": 0, "can_like": 1}


def test_sort_desc_and_start_comment_id(vk: FakeVk, data: dict[str, Any]) -> None:
    """desc reverses the level; start_comment_id starts there or at the next greater id."""
    group, post = big_post(data)
    params = {"owner_id": -group["id"], "post_id": post["id"]}
    asc = [c["id"] for c in ok(vk, "wall.getComments", **params, count=100)["items"]]
    asc += [c["id"] for c in ok(vk, "wall.getComments", **params, count=100, offset=100)["items"]]
    desc = [c["id"] for c in ok(vk, "wall.getComments", **params, count=100, sort="desc")["items"]]
    assert desc == asc[::-1][:100]
    start = ok(vk, "wall.getComments", **params, start_comment_id=asc[5], count=3)["items"]
    assert [c["id"] for c in start] == asc[5:8]
    shifted = ok(vk, "wall.getComments", **params, start_comment_id=asc[5], offset=2, count=1)
    assert shifted["items"][0]["id"] == asc[7]
    # a deleted comment is not on the level: the list starts at the next greater id
    group, post, _thread = _thread_post(data)
    lonely = post["comments"][2]
    params = {"owner_id": -group["id"], "post_id": post["id"], "count": 100}
    level = [c["id"] for c in ok(vk, "wall.getComments", **params)["items"]]
    assert lonely["id"] not in level
    after = ok(vk, "wall.getComments", **params, start_comment_id=lonely["id"])["items"]
    assert [c["id"] for c in after] == [i for i in level if i > lonely["id"]]
    before = ok(vk, "wall.getComments", **params, start_comment_id=lonely["id"], sort="desc")
    assert [c["id"] for c in before["items"]] == [i for i in level[::-1] if i < lonely["id"]]


def test_deleted_comments(vk: FakeVk, data: dict[str, Any]) -> None:
    """A deleted comment with replies is a bare stub; deleted leaves vanish."""
    group, post, _thread = _thread_post(data)
    stub_src, lonely = post["comments"][1], post["comments"][2]
    assert stub_src["deleted"] and lonely["deleted"] and not lonely["replies"]
    page = ok(
        vk,
        "wall.getComments",
        owner_id=-group["id"],
        post_id=post["id"],
        count=100,
        need_likes=1,
        thread_items_count=2,
    )
    by_id = {c["id"]: c for c in page["items"]}
    stub = by_id[stub_src["id"]]
    assert set(stub) == {"id", "date", "parents_stack", "thread", "deleted"}
    assert stub["deleted"] is True and stub["parents_stack"] == []
    assert stub["thread"]["count"] == len(stub_src["replies"]) > 0
    assert lonely["id"] not in by_id
    deleted_reply = post["comments"][0]["replies"][4]
    assert deleted_reply["deleted"]
    branch = ok(
        vk,
        "wall.getComments",
        owner_id=-group["id"],
        post_id=post["id"],
        comment_id=post["comments"][0]["id"],
        count=100,
    )
    assert deleted_reply["id"] not in {r["id"] for r in branch["items"]}


def test_extended_comments_authors(vk: FakeVk, data: dict[str, Any]) -> None:
    """profiles and groups cover every author, including inline thread items."""
    group, post, _thread = _thread_post(data)
    page = ok(
        vk,
        "wall.getComments",
        owner_id=-group["id"],
        post_id=post["id"],
        count=100,
        extended=1,
        thread_items_count=10,
    )
    authors = set()
    for item in page["items"]:
        authors.update([item["from_id"]] if "from_id" in item else [])
        authors.update(r["from_id"] for r in item["thread"]["items"])
    assert -group["id"] in authors  # the community answered as itself
    assert {p["id"] for p in page["profiles"]} == {a for a in authors if a > 0}
    assert {g["id"] for g in page["groups"]} == {-a for a in authors if a < 0}
    profile = page["profiles"][0]
    assert {"id", "first_name", "last_name", "can_access_closed", "is_closed"} <= set(profile)
    assert page["post_author_id"] == -group["id"]


# -- groups.getById and utils.resolveScreenName ------------------------------------------------


def test_groups_get_by_id_shapes(vk: FakeVk, data: dict[str, Any]) -> None:
    """Object shape from 5.194, bare list below; unknown refs are skipped."""
    group = first_group(data)
    author = by_flag(data, author_only=True)
    pinned = next(p for p in group["posts"] if p["is_pinned"])
    new = ok(
        vk,
        "groups.getById",
        group_ids=f"{group['id']},nosuchname,{author['screen_name']}",
        fields="wall,fixed_post,members_count",
    )
    assert new["profiles"] == []
    assert [g["id"] for g in new["groups"]] == [group["id"], author["id"]]
    first = new["groups"][0]
    assert first["fixed_post"] == pinned["id"] and first["wall"] == 1
    assert first["members_count"] == group["members_count"]
    assert first["is_member"] == 0 and "deactivated" not in first
    old = ok(vk, "groups.getById", group_id=group["screen_name"], v="5.131")
    assert isinstance(old, list) and old[0]["id"] == group["id"] and "wall" not in old[0]
    blocked = by_flag(data, deactivated="banned")
    shown = ok(vk, "groups.getById", group_ids=blocked["id"])["groups"][0]
    assert shown["deactivated"] == "banned"
    error = err(vk, "groups.getById", group_ids="nosuchname,123456789")
    assert error["error_code"] == 100 and error["error_msg"].endswith("group_ids is undefined")


def test_resolve_screen_name(vk: FakeVk, data: dict[str, Any]) -> None:
    """Communities resolve with their type, users as user, unknown names to []."""
    for group in data["groups"][:3]:
        got = ok(vk, "utils.resolveScreenName", screen_name=group["screen_name"])
        assert got == {"type": group["type"], "object_id": group["id"]}
    assert {g["type"] for g in data["groups"][:3]} == {"group", "page", "event"}
    user = next(p for p in data["profiles"] if p.get("screen_name"))
    assert ok(vk, "utils.resolveScreenName", screen_name=user["screen_name"]) == {
        "type": "user",
        "object_id": user["id"],
    }
    assert ok(vk, "utils.resolveScreenName", screen_name="no_such_name") == []


# -- errors ------------------------------------------------------------------------------------


def test_token_errors_and_transport(vk: FakeVk, data: dict[str, Any]) -> None:
    """Missing and unknown tokens give 5; header, form and query all work."""
    owner = -first_group(data)["id"]
    assert call(vk, "wall.get", token=None, owner_id=owner)["error"]["error_msg"] == (
        "User authorization failed: no access_token passed."
    )
    assert call(vk, "wall.get", token="nope", owner_id=owner)["error"]["error_msg"] == (
        "User authorization failed: invalid access_token (4)."
    )
    assert "response" in call(vk, "wall.get", get=True, owner_id=owner, count=1)
    request = urllib.request.Request(
        vk.url + "wall.get",
        data=f"owner_id={owner}&v=5.199&count=1".encode(),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert "response" in json.loads(resp.read())


@pytest.mark.parametrize(
    ("method", "params", "code", "message"),
    [
        ("wall.get", {"v": ""}, 8, "Invalid request: versions below 5.81 are deprecated."),
        ("wall.get", {"v": "5.80"}, 8, "Invalid request: versions below 5.81"),
        ("wall.get", {"v": "5.9"}, 8, "Invalid request: versions below 5.81"),
        ("wall.gett", {}, 3, "Unknown method passed"),
        ("Wall.get", {}, 3, "Unknown method passed"),
        (
            "wall.get",
            {"owner_id": -123456789},
            100,
            "One of the parameters specified was missing or invalid: owner_id is undefined",
        ),
        ("wall.get", {"domain": "no_such_name"}, 100, "owner_id is undefined"),
        ("wall.get", {"owner_id": "abc"}, 100, "owner_id is invalid"),
        ("wall.get", {"owner_id": 5}, 15, "Access denied"),
        ("wall.getComments", {"owner_id": -1}, 100, "post_id is undefined"),
        ("utils.resolveScreenName", {}, 100, "screen_name is undefined"),
    ],
)
def test_simple_errors(
    vk: FakeVk, method: str, params: dict[str, Any], code: int, message: str
) -> None:
    """Each error has VK's code and text, and request_params never echo the token."""
    error = err(vk, method, **params)
    assert error["error_code"] == code
    assert message in error["error_msg"]
    echoed = error["request_params"]
    assert echoed[:2] == [{"key": "method", "value": method}, {"key": "oauth", "value": "1"}]
    assert {p["key"] for p in echoed[2:]} == {str(k) for k in params} | {"v"}
    assert TOKEN not in json.dumps(error) and "access_token" not in json.dumps(error)


def test_v_message_exact(vk: FakeVk) -> None:
    """The version error is VK's full text."""
    assert err(vk, "wall.get", v="5.0")["error_msg"] == (
        "Invalid request: versions below 5.81 are deprecated. Version param should be passed as "
        '"v". "version" param is invalid and not supported. For more information go to '
        "https://dev.vk.com/ru/reference/versions"
    )


def test_group_access_errors(vk: FakeVk, data: dict[str, Any]) -> None:
    """Disabled, members-only and blocked walls give the three 15 texts, on both methods."""
    cases = [
        (by_flag(data, wall=0), "Access denied: wall is disabled"),
        (
            by_flag(data, is_closed=1),
            "Access denied: this wall available only for community members",
        ),
        (by_flag(data, deactivated="banned"), "Access denied: group is blocked"),
    ]
    for group, text in cases:
        for method in ("wall.get", "wall.getComments"):
            error = err(vk, method, owner_id=-group["id"], post_id=1)
            assert (error["error_code"], error["error_msg"]) == (15, text)


def test_post_errors(vk: FakeVk, data: dict[str, Any]) -> None:
    """Unknown post → 15; closed comments → 212."""
    group = first_group(data)
    error = err(vk, "wall.getComments", owner_id=-group["id"], post_id=10**8)
    assert error == {
        **error,
        "error_code": 15,
        "error_msg": "Access denied: post was not found check post_id param",
    }
    closed_group = next(g for g in data["groups"] if any(p["comments_closed"] for p in g["posts"]))
    post = next(p for p in closed_group["posts"] if p["comments_closed"])
    error = err(vk, "wall.getComments", owner_id=-closed_group["id"], post_id=post["id"])
    assert (error["error_code"], error["error_msg"]) == (212, "Access to post comments denied")


def test_log_has_no_token(vk: FakeVk) -> None:
    """The request log names tokens only by a short hash tag."""
    call(vk, "wall.get", token=None, owner_id=-BIG_WALL_ID, count=1)
    call(vk, "wall.get", owner_id=-BIG_WALL_ID, count=1)
    raw = vk.log_path.read_text(encoding="utf-8")
    assert TOKEN not in raw and "access_token" not in raw
    entries = vk.requests()
    assert {"t", "method", "params", "token", "outcome", "status"} <= set(entries[-1])
    assert entries[-1]["outcome"] == "ok" and len(entries[-1]["token"]) == 8
    assert entries[-2]["token"] is None and entries[-2]["outcome"] == "error:5"


# -- rate limit --------------------------------------------------------------------------------


@pytest.mark.rate
def test_rate_limit_per_token(data: dict[str, Any]) -> None:
    """With 3 rps the 4th quick request is refused with 6; other tokens are independent."""
    for _attempt in range(3):
        with FakeVk(data, rate_limit=3, tokens=("alpha", "beta")) as vk:
            codes = [
                call(vk, "wall.get", token="alpha", owner_id=-BIG_WALL_ID, count=1)
                .get("error", {})
                .get("error_code")
                for _ in range(4)
            ]
            arrivals = [e["t"] for e in vk.requests()]
            if arrivals[3] - arrivals[0] >= 1.0:
                continue  # a loaded machine spread the four over a second: nothing to judge
            assert codes == [None, None, None, 6]
            assert "response" in call(vk, "wall.get", token="beta", owner_id=-BIG_WALL_ID, count=1)
            time.sleep(1.1)
            assert "response" in call(
                vk, "wall.get", token="alpha", owner_id=-BIG_WALL_ID, count=1
            )
            error = err(vk, "wall.get", token="alpha", v="1.0")  # refused later, still counted
            assert error["error_code"] == 8
            outcomes = [e["outcome"] for e in vk.requests()]
            assert outcomes.count("error:6") == 1
            return
    pytest.fail("four requests never came within one second (server clock) in three tries")


def test_rate_limiter_counts_refused_arrivals() -> None:
    """The sliding window keeps refused arrivals too (explicit clock: exact and instant)."""
    limiter = RateLimiter(3)
    assert [limiter.allow("a", t) for t in (0.0, 0.1, 0.2)] == [True, True, True]
    assert [limiter.allow("a", t) for t in (0.5, 0.6, 0.7)] == [False, False, False]
    # the accepted arrivals have left the window (0.3, 1.3], the three refused ones have not
    assert limiter.allow("a", 1.3) is False
    assert limiter.allow("b", 1.3) is True  # per token
    # (0.75, 1.75] holds only the refused arrival at 1.3
    assert limiter.allow("a", 1.75) is True


def test_rate_limiter_judges_arrivals_checked_out_of_order() -> None:
    """Handler threads may check arrivals late: 4 arrivals within 1 s are refused one, and
    arrivals in different seconds are not, whatever the order they are checked in."""
    limiter = RateLimiter(3)
    assert [limiter.allow("a", t) for t in (0.1, 0.2, 1.5)] == [True, True, True]
    assert limiter.allow("a", 0.3) is True  # 0.1, 0.2, 0.3: three; 1.5 is another second
    assert limiter.allow("a", 0.35) is False  # 0.1 … 0.35: four within 0.25 s
    late = RateLimiter(3)
    assert [late.allow("a", t) for t in (0.0, 0.5, 0.52)] == [True, True, True]
    # checked last but not the last to arrive: 0.0, 0.5, 0.51, 0.52 are four within 1 s
    assert late.allow("a", 0.51) is False
    also = RateLimiter(3)
    assert [also.allow("a", t) for t in (0.2, 0.6, 0.9, 1.25)] == [True, True, True, True]
    # 0.6, 0.9, 1.1, 1.25 are four within 1 s, though only 0.2 … 1.1 was judged before
    assert also.allow("a", 1.1) is False


def test_an_arrival_is_timed_when_its_bytes_reached_the_server(data: dict[str, Any]) -> None:
    """Not when a handler thread got to it: a second request sent on the same connection while
    the first is answered slowly (1 s) is timed when it was sent."""
    import socket

    def get(count: int) -> bytes:
        query = urllib.parse.urlencode({"owner_id": -BIG_WALL_ID, "count": count, "v": "5.199",
                                        "access_token": "test-token"})  # fmt: skip
        return f"GET /method/wall.get?{query} HTTP/1.1\r\nHost: vk\r\n\r\n".encode()

    with FakeVk(data, faults={"slow": 1.0}, slow_seconds=1) as vk:
        host, port = urllib.parse.urlsplit(vk.url).netloc.split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(get(1))
            time.sleep(0.2)
            before = time.time()
            conn.sendall(get(2))  # waits in the kernel while the first answer sleeps
            sent = time.time()
            answers = b""
            while answers.count(b"HTTP/1.1 200") < 2:
                answers += conn.recv(65536)
        (second,) = [e for e in vk.requests() if e["params"]["count"] == "2"]
    # Its bytes came during sendall (0.05 s for the clock readings); a handler thread gets to
    # it only after the first answer, 0.8 s later.
    assert before <= second["t"] <= sent + 0.05, (second["t"] - before, sent - before)


def test_a_request_sent_before_its_connection_is_accepted_is_timed_when_sent(
    data: dict[str, Any],
) -> None:
    """The first request of a connection may come before the server has a thread for it
    (here the emulator's process is stopped meanwhile): it is still timed when its bytes
    came, before the process went on."""
    import signal
    import socket

    query = urllib.parse.urlencode({"owner_id": -BIG_WALL_ID, "count": 1, "v": "5.199",
                                    "access_token": "test-token"})  # fmt: skip
    with FakeVk(data) as vk:
        host, port = urllib.parse.urlsplit(vk.url).netloc.split(":")
        pid = vk._proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            before = time.time()
            conn = socket.create_connection((host, int(port)))  # the kernel accepts it
            conn.sendall(f"GET /method/wall.get?{query} HTTP/1.1\r\nHost: vk\r\n\r\n".encode())
            time.sleep(0.5)
            resumed = time.time()
        finally:
            os.kill(pid, signal.SIGCONT)
        with conn:
            assert b"HTTP/1.1 200" in conn.recv(65536)
        (entry,) = vk.requests()
    assert before <= entry["t"] < resumed, (entry["t"] - before, resumed - before)


def _wall_get_code(vk: FakeVk) -> int | None:
    """One quick wall.get; its error code, or None when it was answered."""
    body = call(vk, "wall.get", owner_id=-BIG_WALL_ID, count=1)
    return body["error"]["error_code"] if "error" in body else None


@pytest.mark.rate
def test_refused_requests_count_toward_the_limit(data: dict[str, Any]) -> None:
    """A request refused with 6 stays in the one-second window: a client that keeps hammering
    stays locked out until it pauses for a whole second."""
    for _attempt in range(3):
        with FakeVk(data, rate_limit=3) as vk:
            accepted = [_wall_get_code(vk) for _ in range(3)]
            time.sleep(0.5)
            refused = [_wall_get_code(vk) for _ in range(3)]  # the 3 accepted ones are still in
            # Wait until the accepted requests are more than a second old, but the refused ones
            # are not: only the refused ones can keep this request out.
            time.sleep(0.7)
            probe = _wall_get_code(vk)
            time.sleep(0.6)  # the refused requests leave the window; only the probe is left
            after_pause = _wall_get_code(vk)
            log = [e for e in vk.requests() if e["method"] == "wall.get"]
        t = [e["t"] for e in log]
        # The scenario as timed by the server's clock; a loaded machine may shift a request
        # across a window's edge, and then this run proves nothing either way.
        if not (
            t[5] - t[0] < 1.0  # the six first requests within one second
            and t[6] - t[2] > 1.0  # the accepted requests have left the window by the probe
            and t[6] - t[3] < 1.0  # the refused requests are still in the window at the probe
            and t[7] - t[5] > 1.0  # the refused requests have left the window
            and t[7] - t[6] < 1.0  # the refused probe is still in the window
        ):
            continue
        assert [e["outcome"] for e in log[:6]] == ["ok"] * 3 + ["error:6"] * 3
        assert (accepted, refused) == ([None] * 3, [6] * 3)
        assert probe == 6
        assert after_pause is None  # one arrival in the window: accepted
        return
    pytest.fail("three runs in a row were not timed as the scenario needs (server clock)")


# -- faults ------------------------------------------------------------------------------------


def _attempt(vk: FakeVk) -> tuple[str, Any]:
    """One raw attempt: ("http", (status, headers, body)) or ("exc", exception)."""
    body = urllib.parse.urlencode(
        {"owner_id": -BIG_WALL_ID, "count": 2, "v": "5.199", "access_token": TOKEN}
    ).encode()
    try:
        with urllib.request.urlopen(vk.url + "wall.get", data=body, timeout=10) as resp:
            return "http", (resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return "http", (exc.code, dict(exc.headers), exc.read())
    except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as exc:
        return "exc", exc


def _check_symptom(kind: str, result: tuple[str, Any], elapsed: float) -> None:
    how, value = result
    if kind == "drop":
        assert how == "exc"
        return
    status, headers, body = value
    if kind in ("500", "502", "503", "429"):
        assert status == int(kind) and body.startswith(b"<html>")
        if kind == "429":
            assert headers["Retry-After"] == "7"
    elif kind == "error10":
        error = json.loads(body)["error"]
        assert (status, error["error_code"], error["error_msg"]) == (
            200,
            10,
            "Internal server error",
        )
        assert TOKEN not in body.decode()
    elif kind == "malformed":
        assert status == 200
        with pytest.raises(ValueError):
            json.loads(body)
        assert body.startswith(b'{"response":')
    elif kind == "slow":
        assert status == 200 and "response" in json.loads(body) and elapsed >= 0.3


@pytest.mark.parametrize(
    "kind", ["500", "502", "503", "429", "error10", "malformed", "drop", "slow"]
)
def test_fault_kinds_and_cap(data: dict[str, Any], kind: str) -> None:
    """A certain fault shows its symptom twice, then the 3rd attempt of the request passes."""
    with FakeVk(data, faults={kind: 1.0}, retry_after=7, slow_seconds=0.3) as vk:
        for _ in range(2):
            started = time.monotonic()
            _check_symptom(kind, _attempt(vk), time.monotonic() - started)
        how, (status, _headers, body) = _attempt(vk)
        assert status == 200 and "response" in json.loads(body)
        log = vk.requests()
    assert [e["outcome"] for e in log] == [f"fault:{kind}"] * 2 + ["ok"]
    assert log[0]["status"] == (None if kind == "drop" else int(kind) if kind.isdigit() else 200)


def test_faults_are_seeded(data: dict[str, Any]) -> None:
    """The same seed gives the same fault sequence."""

    def outcomes(seed: int) -> list[str]:
        with FakeVk(data, faults="500:0.3,error10:0.3", seed=seed) as vk:
            for n in range(12):
                call_raw = urllib.parse.urlencode(
                    {"owner_id": -BIG_WALL_ID, "offset": n, "v": "5.199", "access_token": TOKEN}
                )
                try:
                    urllib.request.urlopen(vk.url + "wall.get", data=call_raw.encode()).close()
                except urllib.error.HTTPError as exc:
                    exc.close()
            return [e["outcome"] for e in vk.requests()]

    first = outcomes(11)
    assert first == outcomes(11)
    assert {"ok", "fault:500", "fault:error10"} <= set(first)


# -- dataset -----------------------------------------------------------------------------------


def test_generator_is_deterministic_and_varied(tmp_path: Any) -> None:
    """Same seed, same data; the promised quirks are all present."""
    one = generate_dataset(seed=5, big_post=True)
    assert one == generate_dataset(seed=5, big_post=True)
    assert one != generate_dataset(seed=6, big_post=True)
    path = tmp_path / "d.json"
    save_dataset(one, path)
    assert load_dataset(path) == one

    walls = [g for g in one["groups"] if not g["author_only"]]
    assert len(walls) == 3 and len({g["id"] for g in one["groups"]}) == len(one["groups"])
    assert all(g["screen_name"] == f"group{g['id']}" for g in one["groups"])
    assert any(g["author_only"] for g in one["groups"])
    post_ids = [{p["id"] for p in g["posts"]} for g in walls]
    assert post_ids[0] & post_ids[1]  # ids repeat across walls
    comments = [c for g in walls for p in g["posts"] for c in p["comments"]]
    replies = [r for c in comments for r in c["replies"]]
    texts = [c["text"] for c in comments + replies]
    assert any("\x00" in t for t in texts)
    assert any(any(ord(ch) > 0xFFFF for ch in t) for t in texts)
    assert any("\n" in t for t in texts) and any(len(t) > 90 for t in texts)
    assert any("ё" in t.lower() or "и" in t for t in texts)
    assert any(c["from_id"] < 0 for c in comments + replies)
    assert any(c["deleted"] and any(not r["deleted"] for r in c["replies"]) for c in comments)
    assert any(len(c["replies"]) > 10 for c in comments)
    assert any(len(p["comments"]) > 100 for g in walls for p in g["posts"])
    assert all(any(not p["comments"] for p in g["posts"]) for g in walls)
    posts = [p for g in walls for p in g["posts"]]
    assert any(p["signer_id"] for p in posts) and any(p["edited"] for p in posts)
    assert all(p["edited"] > p["date"] for p in posts if p["edited"])
    assert any(p["from_id"] > 0 for p in posts) and any(p["views"] is None for p in posts)
    assert any(p["reposts"] > 0 for p in posts)
    # The community posts (signed or not), or a user does (never signed).
    assert all(p["from_id"] == -g["id"] or p["from_id"] > 0 for g in walls for p in g["posts"])
    assert not any(p["signer_id"] for p in posts if p["from_id"] > 0)
    # reply_to_* point at the top-level comment or an earlier reply of the same thread, and
    # name its author.
    to_a_reply = 0
    for top in comments:
        authors = {top["id"]: top["from_id"]}
        for reply in top["replies"]:
            target = reply["reply_to_comment"]
            if target is not None:
                assert target in authors, (top["id"], reply["id"], target)
                assert reply["reply_to_user"] == authors[target]
                to_a_reply += target != top["id"]
            authors[reply["id"]] = reply["from_id"]
    assert to_a_reply
    assert not any(
        "\x00" in t
        for g in generate_dataset(seed=5, nul=False)["groups"]
        for p in g["posts"]
        for c in p["comments"]
        for t in [c["text"]]
    )


def _crawl(vk: FakeVk, group: dict[str, Any], posts_per_group: int) -> tuple[list, list]:
    """A straightforward complete crawl of one wall through the emulator."""
    owner = -group["id"]
    page = ok(vk, "wall.get", owner_id=owner, count=posts_per_group + 1)
    posts = sorted(page["items"], key=lambda p: p["date"], reverse=True)[:posts_per_group]
    rows = []
    for post in posts:
        if post["comments"]["can_post"] == 0 or post["comments"]["count"] == 0:
            continue
        offset = 0
        while True:
            level = ok(
                vk,
                "wall.getComments",
                owner_id=owner,
                post_id=post["id"],
                count=100,
                offset=offset,
                preview_length=0,
                need_likes=1,
            )
            for top in level["items"]:
                rows.append((top["id"], None, top.get("from_id"), top.get("text", ""), None, None))
                done = 0
                while done < top["thread"]["count"]:
                    branch = ok(
                        vk,
                        "wall.getComments",
                        owner_id=owner,
                        post_id=post["id"],
                        comment_id=top["id"],
                        count=100,
                        offset=done,
                        preview_length=0,
                    )
                    rows += [
                        (
                            r["id"],
                            top["id"],
                            r["from_id"],
                            r["text"],
                            r.get("reply_to_user"),
                            r.get("reply_to_comment"),
                        )
                        for r in branch["items"]
                    ]
                    done += len(branch["items"])
            offset += len(level["items"])
            if offset >= level["current_level_count"] or not level["items"]:
                break
    return posts, rows


def test_expected_rows_match_the_server(vk: FakeVk, data: dict[str, Any]) -> None:
    """The oracle agrees with a naive complete crawl of every readable wall."""
    want_posts, want_comments = expected_rows(data, posts_per_group=10)
    readable = [g for g in data["groups"] if wall_readable(g)]
    assert len(readable) == 4  # 3 generated + the big wall; closed and author-only skipped
    got_posts, got_rows = [], []
    for group in readable:
        posts, rows = _crawl(vk, group, 10)
        got_posts += [
            (
                -group["id"],
                p["id"],
                p["comments"]["count"],
                p["text"],
                p["from_id"],
                p.get("signer_id"),
                p["views"]["count"] if "views" in p else None,
                p["reposts"]["count"],
                p.get("edited"),
            )
            for p in posts
        ]
        got_rows += [(-group["id"], *row) for row in rows]
    assert sorted(got_posts, key=repr) == sorted(
        (
            (
                p["owner_id"],
                p["vk_post_id"],
                p["comments_count"],
                p["text"],
                p["from_id"],
                p["signer_id"],
                p["views"],
                p["reposts"],
                None if p["edited"] is None else int(p["edited"].timestamp()),
            )
            for p in want_posts
        ),
        key=repr,
    )
    assert sorted(got_rows, key=repr) == sorted(
        (
            (
                c["owner_id"],
                c["vk_comment_id"],
                c["parent_id"],
                c["author_id"],
                c["text"],
                c["reply_to_user"],
                c["reply_to_comment"],
            )
            for c in want_comments
        ),
        key=repr,
    )
    # The oracle covers the new fields with real variety, not only their defaults.
    assert {p["edited"] is None for p in want_posts} == {True, False}
    assert any(p["signer_id"] for p in want_posts) and any(p["views"] is None for p in want_posts)
    assert any(p["from_id"] > 0 for p in want_posts)
    assert any(c["reply_to_comment"] not in (None, c["parent_id"]) for c in want_comments)
    pinned = next(p for p in first_group(data)["posts"] if p["is_pinned"])
    assert pinned["id"] not in {
        p["vk_post_id"] for p in want_posts if p["group_id"] == first_group(data)["id"]
    }
    stubs = [c for c in want_comments if c["deleted"]]
    assert stubs and all(c["author_id"] is None and c["text"] == "" for c in stubs)
    names = {c["author_name"] for c in want_comments if c["author_id"] == -first_group(data)["id"]}
    assert names == {first_group(data)["name"]}
    assert any("\x00" in c["text"] for c in want_comments)
    _, cleaned = expected_rows(data, nul_replacement="")
    assert not any("\x00" in c["text"] for c in cleaned)


def test_dataset_validation() -> None:
    """An id used twice on one wall, or two pinned posts, is refused at load time."""
    twice = {
        "groups": [
            {
                "id": 1,
                "posts": [{"id": 1, "date": 1, "comments": [{"id": 1, "from_id": 1, "date": 2}]}],
            }
        ]
    }
    with pytest.raises(ValueError, match="used twice"):
        normalize_dataset(twice)
    pinned = {
        "groups": [
            {
                "id": 1,
                "posts": [
                    {"id": 1, "date": 1, "is_pinned": True},
                    {"id": 2, "date": 2, "is_pinned": True},
                ],
            }
        ]
    }
    with pytest.raises(ValueError, match="pinned"):
        normalize_dataset(pinned)


def test_dataset_without_the_newer_fields_gets_defaults(tmp_path: Any) -> None:
    """A dataset JSON written before from_id/signer_id/edited/views/reposts/reply_to_* existed
    loads, is served and has an oracle: community author, views and reposts 0, nothing else."""
    old = {
        "profiles": [{"id": 1, "first_name": "Ann", "last_name": "Lee"}],
        "groups": [{"id": 7, "screen_name": "old", "name": "Old", "posts": [
            {"id": 1, "date": 1_600_000_000, "text": "p", "comments": [
                {"id": 2, "from_id": 1, "date": 1_600_000_100, "text": "c", "replies": [
                    {"id": 3, "from_id": 1, "date": 1_600_000_200, "text": "r"}]}]}]}],
    }  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    posts, comments = expected_rows(json.loads(path.read_text(encoding="utf-8")))
    assert [
        (p["from_id"], p["signer_id"], p["views"], p["reposts"], p["edited"]) for p in posts
    ] == [(-7, None, 0, 0, None)]
    assert {(c["reply_to_user"], c["reply_to_comment"]) for c in comments} == {(None, None)}
    assert expected_rows(load_dataset(path)) == (posts, comments)
    with FakeVk(path) as server:
        (item,) = ok(server, "wall.get", owner_id=-7)["items"]
        page = ok(server, "wall.getComments", owner_id=-7, post_id=1, thread_items_count=10)
    assert item["from_id"] == -7 and item["views"] == {"count": 0}
    assert item["reposts"]["count"] == 0
    assert "signer_id" not in item and "edited" not in item
    (reply,) = page["items"][0]["thread"]["items"]
    assert "reply_to_user" not in reply and "reply_to_comment" not in reply


def test_start_failure_is_reported(tmp_path: Any) -> None:
    """A server that dies at start-up raises with its stderr."""
    with pytest.raises(RuntimeError, match="did not start") as info:
        FakeVk(tmp_path / "missing.json").start()
    assert "missing.json" in str(info.value)


def test_sigterm_exits_cleanly(data: dict[str, Any]) -> None:
    """stop() sends SIGTERM and the server shuts down cleanly with exit code 0."""
    vk = FakeVk(data).start()
    proc = vk._proc
    assert proc is not None and vk.url.endswith("/method/")
    vk.stop()
    assert proc.returncode == 0


def test_drift_deletes_comments_after_the_first_page(data: dict[str, Any]) -> None:
    """With drift, comments served on page 1 vanish; offsets then skip, anchors do not."""
    group, post = big_post(data)
    params = {"owner_id": -group["id"], "post_id": post["id"], "count": 100}
    with FakeVk(data, drift=5) as drifting:
        first = ok(drifting, "wall.getComments", **params)
        by_offset = ok(drifting, "wall.getComments", **params, offset=100)
        anchored = ok(
            drifting, "wall.getComments", **params, start_comment_id=first["items"][-1]["id"]
        )
        again = ok(drifting, "wall.getComments", **params)  # once per post
    assert by_offset["current_level_count"] == first["current_level_count"] - 5
    assert again["current_level_count"] == by_offset["current_level_count"]
    first_ids = {c["id"] for c in first["items"]}
    skipped = {c["id"] for c in anchored["items"]} - {c["id"] for c in by_offset["items"]}
    assert len(skipped - first_ids) == 5  # what offset paging loses
    assert len(first_ids | {c["id"] for c in anchored["items"]}) == first["current_level_count"]


# -- the start-up listing --------------------------------------------------------------------


@pytest.mark.parametrize("closed_groups", [0, 1, 3])
def test_the_listing_says_what_a_crawl_of_each_group_finds(closed_groups: int) -> None:
    """Each line of the start-up listing, checked against the emulator's own answers to
    wall.get for that group (issue 19: 'comments only, no wall to crawl' hid an empty wall)."""
    from fakevk.__main__ import start_message

    dataset = generate_dataset(seed=1, closed_groups=closed_groups)
    listing = start_message("http://x/method/", dataset, [TOKEN], 3, None)
    by_id = {g["id"]: g for g in dataset["groups"]}
    lines = [line.split(None, 2) for line in listing.splitlines() if line.startswith("    ")]
    lines = [(int(gid), what) for gid, _, what in lines if gid.isdigit()]
    assert len(lines) == min(5, len(dataset["groups"]))
    with FakeVk(dataset, tokens=[TOKEN]) as vk:
        for gid, what in lines:
            body = call(vk, "wall.get", owner_id=-gid, count=100)
            m = re.fullmatch(r"(\d+) posts(?:, (\d+) with comments closed: VK error 212)?", what)
            if m is not None:
                assert body["response"]["count"] == int(m[1]) > 0, (gid, what)
                closed = sum(p["comments_closed"] for p in by_id[gid]["posts"])
                assert closed == int(m[2] or 0), (gid, what)
            elif what.startswith("no posts"):
                assert body["response"]["count"] == 0 and by_id[gid]["author_only"], gid
            else:
                assert what.endswith("VK error 15"), what
                assert body["error"]["error_code"] == 15, (gid, what)


def test_closed_groups_leave_the_other_groups_as_they_were() -> None:
    """`make demo-errors` adds a closed wall to `make demo`'s dataset: every other group keeps
    its id, role and posts, so one id tells one story (the listing of ``--generate 1``, the
    demo and the demo with errors)."""
    base = generate_dataset(seed=1)  # `--generate 1 --closed-comments`
    with_errors = generate_dataset(seed=1, closed_groups=1)  # … `--closed-groups 1`
    assert with_errors["groups"][: len(base["groups"])] == base["groups"]
    [closed] = with_errors["groups"][len(base["groups"]) :]
    assert not wall_readable(closed) and closed["id"] not in {g["id"] for g in base["groups"]}
    listed = generate_dataset(seed=1)  # `fakevk --generate 1`: the same ids, the same roles
    assert [(g["id"], g["author_only"]) for g in listed["groups"]] == [
        (g["id"], g["author_only"]) for g in base["groups"]
    ]
