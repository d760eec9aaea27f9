"""Turn VK response data into items. Pure functions; tolerant of absent optional fields.

VK marks almost nothing as required in its response schema, so counters default to 0, and a deleted
comment stub has no ``from_id`` or ``text``. Anything that is not the documented shape
raises :class:`VkMalformedResponse` naming what was wrong, never a bare ``KeyError``. JSON
objects are checked as ``dict`` (what the JSON parsers give), not ``Mapping``: an ABC check
per field costs a tenth of the crawler's CPU.

The fields only analysis needs (a post's ``from_id``, ``signer_id``, ``views``, ``reposts``,
``edited``; a reply's ``reply_to_user`` and ``reply_to_comment``) never fail a page: absent,
of the wrong type or out of the database's range, they take their default (0 for counters,
None otherwise). The same holds for ``likes`` and a comment's ``from_id``: a value that does
not fit its column would otherwise fail a whole batch of rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from vkscraper.exceptions import VkMalformedResponse
from vkscraper.items import VkComment, VkGroup, VkPage, VkPost
from vkscraper.vk.api import owner_id_for_group


def _utc(ts: Any) -> datetime | None:
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(int(ts), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise VkMalformedResponse(f"bad unixtime {ts!r}") from exc


# The columns' ranges: counters are INTEGER (views BIGINT), ids BIGINT.
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def _counter(obj: Any, key: str, maximum: int = _INT32_MAX) -> int | None:
    """``obj[key]["count"]`` of VK's counter objects (likes, comments, reposts, views); None
    when absent or not a count that fits (a bool, a negative or too large number, a string)."""
    sub = obj.get(key) if isinstance(obj, dict) else None
    value = sub.get("count") if isinstance(sub, dict) else None
    return value if type(value) is int and 0 <= value <= maximum else None


def _count(obj: Any, key: str) -> int:
    """A counter that VK omits when it is zero: 0 when absent or unusable."""
    return _counter(obj, key) or 0


def _vk_id(value: Any, *, positive: bool = False) -> int | None:
    """A user (positive) or community (negative) id, or a comment id (``positive``); None when
    absent, 0, not an integer or beyond BIGINT."""
    if type(value) is not int or value == 0 or abs(value) > _INT64_MAX:
        return None
    return None if positive and value < 0 else value


def _optional_utc(ts: Any) -> datetime | None:
    """An optional unixtime (``edited``): None when absent, 0 or unusable; never raises."""
    if type(ts) is not int or ts <= 0:
        return None
    try:
        return datetime.fromtimestamp(ts, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _items(data: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise VkMalformedResponse(f"{what}: expected an object with an 'items' list")
    items = data["items"]
    if not all(isinstance(i, dict) and isinstance(i.get("id"), int) for i in items):
        raise VkMalformedResponse(f"{what}: every item needs an integer 'id'")
    return items


def parse_posts(data: Any, group_id: int) -> list[VkPost]:
    """Posts of a ``wall.get`` response of community ``group_id``."""
    return [normalize_post(item, group_id) for item in _items(data, "wall.get")]


def normalize_post(item: Mapping[str, Any], group_id: int) -> VkPost:
    """One post of ``wall.get`` (an object with an integer ``id``) as a :class:`VkPost`."""
    date = _utc(item.get("date"))
    if date is None:
        raise VkMalformedResponse(f"wall.get: post {item['id']} has no date")
    if not -_INT64_MAX <= item["id"] <= _INT64_MAX:  # orjson gives ints up to 2**64 - 1
        raise VkMalformedResponse(f"wall.get: post id {item['id']} is beyond BIGINT")
    return VkPost(
        vk_post_id=item["id"],
        owner_id=owner_id_for_group(group_id),
        group_id=group_id,
        text=str(item.get("text") or ""),
        date=date,
        likes=_count(item, "likes"),
        comments_count=_count(item, "comments"),
        is_pinned=bool(item.get("is_pinned")),
        from_id=_vk_id(item.get("from_id")),
        signer_id=_vk_id(item.get("signer_id"), positive=True),
        views=_counter(item, "views", _INT64_MAX),
        reposts=_count(item, "reposts"),
        edited=_optional_utc(item.get("edited")),
    )


def latest_posts(posts: list[VkPost], limit: int) -> list[VkPost]:
    """The ``limit`` newest posts by date, duplicates dropped.

    The pinned post comes first on a wall even when it is old; it counts only when it is among
    the newest by date, which is why the caller asks VK for one post more than it needs.
    """
    unique = {p.vk_post_id: p for p in posts}
    return sorted(unique.values(), key=lambda p: (p.date, p.vk_post_id), reverse=True)[:limit]


class AuthorNames:
    """Names of comment authors from the ``profiles`` / ``groups`` of an extended response."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._names: dict[int, str] = {}
        for profile in _list(data.get("profiles")):
            if isinstance(profile, dict) and isinstance(profile.get("id"), int):
                parts = (profile.get("first_name"), profile.get("last_name"))
                self._names[profile["id"]] = " ".join(str(p) for p in parts if p)
        for group in _list(data.get("groups")):
            if isinstance(group, dict) and isinstance(group.get("id"), int):
                # Communities author as negative ids.
                self._names[-abs(group["id"])] = str(group.get("name") or "")

    def get(self, author_id: int | None) -> str | None:
        return None if author_id is None else self._names.get(author_id)


def check_comments_page(data: Any) -> list[dict[str, Any]]:
    """The items of one ``wall.getComments`` page, its shape checked (inline replies
    included): a malformed page fails as a whole, a malformed comment only itself
    (:func:`normalize_comments`)."""
    items = _items(data, "wall.getComments")
    for item in items:
        thread = item.get("thread")
        inline = thread.get("items") if isinstance(thread, dict) else None
        if inline:
            _items({"items": inline}, "wall.getComments thread")
    return items


def normalize_posts(page: VkPage) -> tuple[list[VkPost], list[tuple[str, int | None]]]:
    """The rows of a posts page, and ``(error, post id)`` for each post that is malformed."""
    assert page.raw is not None
    rows, errors = [], []
    for item in page.raw["items"]:
        try:
            rows.append(normalize_post(item, page.group_id))
        except VkMalformedResponse as exc:
            errors.append((f"group {page.group_id} post {item['id']}: {exc}", item["id"]))
    return rows, errors


def normalize_comments(page: VkPage) -> tuple[list[VkComment], list[tuple[str, int | None]]]:
    """The rows of a comments page (inline replies included; an anchored page's anchor and
    its inline replies left out), and ``(error, post id)`` for each malformed comment."""
    data, post_id, thread = page.raw, page.post_id, page.thread_id
    assert data is not None and post_id is not None
    owner_id = owner_id_for_group(page.group_id)
    names = AuthorNames(data)
    rows: list[VkComment] = []
    errors: list[tuple[str, int | None]] = []

    def add(item: Mapping[str, Any], parent: int | None) -> None:
        try:
            rows.append(normalize_comment(item, owner_id, post_id, parent, names))
        except VkMalformedResponse as exc:
            where = f"group {page.group_id} post {post_id} comment {item['id']}"
            errors.append((f"{where}: {exc}", post_id))

    items = data["items"]
    if page.anchor is not None and items and items[0]["id"] == page.anchor:
        items = items[1:]  # the anchor, and its inline replies, came on the page before
    for item in items:
        add(item, thread)
        if thread is None and isinstance(sub := item.get("thread"), dict):
            for reply in _list(sub.get("items")):
                add(reply, item["id"])
    return rows, errors


def normalize_comment(
    item: Mapping[str, Any],
    owner_id: int,
    post_id: int,
    parent_id: int | None = None,
    names: AuthorNames | None = None,
) -> VkComment:
    """One comment or reply of ``wall.getComments`` (an object with an integer ``id``);
    ``parent_id`` is its top-level comment when it is a reply."""
    # orjson gives ints up to 2**64 - 1; no BIGINT column takes those beyond 2**63 - 1.
    if (
        abs(item["id"]) > _INT64_MAX
        or abs(post_id) > _INT64_MAX
        or abs(parent_id or 0) > _INT64_MAX
    ):
        raise VkMalformedResponse(
            "wall.getComments: an id (comment, post or thread) is beyond BIGINT"
        )
    author_id = _vk_id(item.get("from_id"))
    return VkComment(
        vk_comment_id=item["id"],
        post_vk_id=post_id,
        owner_id=owner_id,
        parent_id=parent_id,
        thread_count=_count(item, "thread") if parent_id is None else 0,
        author_id=author_id,
        author_name=names.get(author_id) if names is not None else None,
        text=str(item.get("text") or ""),
        date=_utc(item.get("date")),
        likes=_count(item, "likes"),
        deleted=bool(item.get("deleted")),
        reply_to_user=_vk_id(item.get("reply_to_user")),
        reply_to_comment=_vk_id(item.get("reply_to_comment"), positive=True),
    )


class ThreadToFetch(NamedTuple):
    comment_id: int  # the top-level comment
    total: int  # thread.count
    seen: int  # replies that came inline
    last_seen_id: int | None  # the last inline reply: the anchor of the first thread page


def threads_to_fetch(data: Any) -> Iterator[ThreadToFetch]:
    """Top-level comments whose thread did not fit inline (``thread.count`` larger than the
    number of inline items)."""
    for item in _items(data, "wall.getComments"):
        thread = item.get("thread")
        if not isinstance(thread, dict):
            continue
        total = thread.get("count", 0)
        inline = _list(thread.get("items"))
        if isinstance(total, int) and total > len(inline):
            last = inline[-1].get("id") if inline and isinstance(inline[-1], dict) else None
            yield ThreadToFetch(item["id"], total, len(inline), last)


def parse_groups(data: Any) -> list[VkGroup]:
    """``groups.getById``: the 5.199 ``{"groups": [...]}`` shape or the older bare list."""
    groups = data.get("groups") if isinstance(data, dict) else data
    if not isinstance(groups, list):
        raise VkMalformedResponse("groups.getById: expected a list of groups")
    result = []
    for g in groups:
        if not isinstance(g, dict) or not isinstance(g.get("id"), int) or g["id"] <= 0:
            raise VkMalformedResponse("groups.getById: every group needs a positive integer id")
        result.append(
            VkGroup(
                id=g["id"],
                screen_name=g.get("screen_name"),
                name=g.get("name"),
                deactivated=g.get("deactivated") or None,
                is_closed=int(g.get("is_closed") or 0),
            )
        )
    return result
