"""A faithful VK API emulator over ``http.server`` (stdlib only, so any test process can load it).

It serves ``wall.get``, ``wall.getComments``, ``groups.getById`` and ``utils.resolveScreenName``
from a dataset (see :mod:`.dataset`) the way VK's API documentation describes real VK:
HTTP 200 with ``{"response": ...}`` or ``{"error": ...}``, per-token rate limiting and optional
transport faults, so client retry and paging logic meets realistic trouble.

Request handling, in this order (each step can end the request):

1. Fault draw. Every arrival draws from the seeded RNG whether it becomes a fault (500/502/503
   HTML page, 429 with ``Retry-After``, ``error10`` JSON, ``malformed`` truncated JSON,
   ``drop`` without an answer, ``slow`` answer). A logical request (method + params without the
   token) gets at most ``max_faults_per_request`` faults in a row, so a client with that many
   retries always gets through. The API steps below still run for faulted requests, so a
   faulted arrival counts against the rate limit like any other.
2. Token: ``Authorization: Bearer`` header first, then the ``access_token`` param. None → 5
   ``no access_token passed.``; unknown → 5 ``invalid access_token (4).``
3. Rate limit per token (sliding 1.0 s window): an arrival that finds ``rate_limit`` arrivals
   of the same token in the preceding second gets 6. Every arrival counts, refused ones too.
   An arrival's time is when the kernel received the request (``SO_TIMESTAMPNS``, Linux), as
   a real front end would see it, not when a handler thread got the GIL: a thread waiting
   behind another one's JSON encoding would otherwise see requests bunched that were not.
4. ``v``: missing, unparsable or below 5.81 → 8. Versions compare as (major, minor) integer
   pairs, so "5.9" is older than "5.81" as in VK's own numbering.
5. Method name (case-sensitive) → 3 when unknown; then the method's own param checks → 100.

Behaviour choices (unverified against live VK unless VK's documentation says so):

* ``count`` above 100 is clamped to 100 (VK documents a max of 100, not what happens above it).
  Defaults: 20 for wall.get, 10 for wall.getComments. Negative ``count`` → 100.
* ``wall.get`` on a positive ``owner_id`` (a user wall), on a user's screen name, or without
  any owner → 15 ``Access denied``: the emulator has no user walls, and VK answers an
  access-style error there.
* A deactivated community → 15 ``Access denied: group is blocked``. Checked before
  ``is_closed`` (members-only), which is checked before ``wall == 0`` (wall disabled).
* ``wall.get`` ``filter``: ``all`` lists the wall, ``owner`` its posts by the community
  (``from_id`` = ``owner_id``), ``others`` the posts by users; ``postponed``, ``suggests``,
  ``archived``, ``donut`` give an empty list; anything else → 100.
* A post carries ``from_id``, ``reposts`` and (unless its ``views`` is None) ``views`` always;
  ``signer_id`` and ``edited`` only when set, as VK omits them for unsigned and unedited posts.
* A pinned post comes first and is not repeated at its chronological place; it keeps its slot
  and counts in ``count``. Other posts are ordered by (date, id) descending.
* ``wall.getComments`` on an unknown post → 15 ``Access denied: post was not found check
  post_id param``; comments closed → 212 (existing comments stay counted in ``wall.get``).
* ``sort``: ``asc`` (default), ``desc``; ``smart`` is served as ``asc``; others → 100.
* ``start_comment_id``: the level is sorted first; the list then starts at that id, or (if it
  is not on the level, e.g. deleted) at the next greater id for ``asc`` / next smaller for
  ``desc``; ``offset`` is added to that position and may be negative (clamped at 0). No match
  gives an empty page.
* ``comment_id`` of a top-level comment (or stub) of the post → its visible replies; of a
  reply → an empty level (VK threads have two levels); of anything else → 100.
* ``reply_to_user`` / ``reply_to_comment`` come with a comment that has them (replies), with no
  parameter asked; never with a stub.
* ``preview_length`` truncates texts to that many Unicode code points, default 90, 0 = whole.
* Deleted comments: a deleted top-level comment with visible replies is a stub (id, date,
  parents_stack, thread, deleted) and takes a slot; deleted comments without visible replies
  and deleted replies are absent. Stubs count in ``count`` and never carry ``likes``.
* ``groups.getById`` answers ``{"groups", "profiles"}`` for v >= 5.194 and a bare list below;
  unknown ids/names are skipped, none known → 100 ``group_ids is undefined``.
* ``drift`` (off by default): after the first page of a post with more than one page of
  top-level comments is served, that many of the served comments are deleted (once per post),
  as users do while a collector pages. See :meth:`Api._drift`.
* The body is read as ``application/x-www-form-urlencoded`` whatever the content type says;
  POST params override query params of the same name.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import io
import json
import logging
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from . import vkscript
from .dataset import Dataset, normalize_dataset
from .jsontext import Encoded, encode, encode_any, encode_plain, plain

logger = logging.getLogger(__name__)

MIN_VERSION = (5, 81)
GROUPS_OBJECT_VERSION = (5, 194)  # groups.getById switches to {"groups", "profiles"} (unverified)
FAULT_KINDS = ("500", "502", "503", "429", "error10", "malformed", "drop", "slow")
_HTTP_TEXT = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    429: "Too Many Requests",
    404: "Not Found",
}
_V_MESSAGE = (
    "Invalid request: versions below 5.81 are deprecated. Version param should be passed as "
    '"v". "version" param is invalid and not supported. For more information go to '
    "https://dev.vk.com/ru/reference/versions"
)
_PARAM_MESSAGE = "One of the parameters specified was missing or invalid: "


class ApiError(Exception):
    """A VK error envelope to send back (HTTP 200)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def _undefined(name: str) -> ApiError:
    return ApiError(100, f"{_PARAM_MESSAGE}{name} is undefined")


def _invalid(name: str) -> ApiError:
    return ApiError(100, f"{_PARAM_MESSAGE}{name} is invalid")


def parse_faults(spec: str | dict[str, float] | None) -> list[tuple[str, float]]:
    """Parse ``"500:0.05,drop:0.1"`` (or a dict) into ``[(kind, probability)]``."""
    if not spec:
        return []
    items = (
        spec.items()
        if isinstance(spec, dict)
        else (part.split(":", 1) for part in spec.split(",") if part.strip())
    )
    faults = []
    for kind, prob in items:
        kind = str(kind).strip()
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        p = float(prob)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault probability for {kind} must be within [0, 1], got {p}")
        faults.append((kind, p))
    if sum(p for _, p in faults) > 1.0 + 1e-9:
        raise ValueError("fault probabilities add up to more than 1")
    return faults


def token_tag(token: str | None) -> str | None:
    """A short non-reversible tag, so logs can tell tokens apart without holding them."""
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()[:8]


def _version(raw: str | None) -> tuple[int, int] | None:
    if not raw:
        return None
    major, _, minor = raw.strip().partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Dataset index


@dataclass
class _PostView:
    post: dict[str, Any]
    level: list[dict[str, Any]]  # visible top-level comments and stubs, by id asc
    replies: dict[int, list[dict[str, Any]]]  # top id -> visible replies, by id asc
    reply_ids: set[int]
    total: int


class _Comment(NamedTuple):
    json: Encoded
    authors: list[int]


def _comment_id(comment: dict[str, Any]) -> Any:
    return comment["id"]


@dataclass
class _GroupView:
    group: dict[str, Any]
    wall: list[dict[str, Any]]  # pinned first, then by (date, id) desc
    posts: dict[int, _PostView] = field(default_factory=dict)

    @property
    def pinned_id(self) -> int | None:
        return self.wall[0]["id"] if self.wall and self.wall[0]["is_pinned"] else None


class World:
    """Read-only lookup tables over a dataset, built once at start-up."""

    def __init__(self, data: Dataset) -> None:
        data = normalize_dataset(data)
        self.profiles = {int(p["id"]): p for p in data["profiles"]}
        self.groups: dict[int, _GroupView] = {}
        self.names: dict[str, tuple[str, int]] = {}  # screen name -> ("group"|"user", id)
        for profile in data["profiles"]:
            if profile.get("screen_name"):
                self.names[profile["screen_name"]] = ("user", int(profile["id"]))
        for group in data["groups"]:
            self.groups[int(group["id"])] = self._index_group(group)
            self.names[group["screen_name"]] = ("group", int(group["id"]))
        # Answers made of such data are encoded with orjson, and survive a round trip through
        # JavaScript unchanged (see jsontext.plain and vkscript).
        self.plain = plain(data)

    @staticmethod
    def _index_group(group: dict[str, Any]) -> _GroupView:
        pinned = [p for p in group["posts"] if p["is_pinned"]]
        rest = sorted(
            (p for p in group["posts"] if not p["is_pinned"]),
            key=lambda p: (p["date"], p["id"]),
            reverse=True,
        )
        view = _GroupView(group, pinned + rest)
        for post in group["posts"]:
            level: list[dict[str, Any]] = []
            replies: dict[int, list[dict[str, Any]]] = {}
            reply_ids: set[int] = set()
            for top in sorted(post["comments"], key=lambda c: c["id"]):
                visible = sorted(
                    (r for r in top["replies"] if not r["deleted"]), key=lambda r: r["id"]
                )
                reply_ids.update(r["id"] for r in top["replies"])
                if top["deleted"] and not visible:
                    continue
                level.append(top)
                replies[top["id"]] = visible
            total = len(level) + sum(len(v) for v in replies.values())
            view.posts[post["id"]] = _PostView(post, level, replies, reply_ids, total)
        return view

    def resolve(self, name: str) -> tuple[str, int] | None:
        """Screen name → ("group"|"user", id); also ``club1``/``public1``/``event1``/``id1``."""
        if name in self.names:
            return self.names[name]
        for prefix, kind in (
            ("club", "group"),
            ("public", "group"),
            ("event", "group"),
            ("id", "user"),
        ):
            rest = name[len(prefix) :]
            if name.startswith(prefix) and rest.isdigit():
                ident = int(rest)
                known = self.groups if kind == "group" else self.profiles
                return (kind, ident) if ident in known else None
        return None


# --------------------------------------------------------------------------------------------
# Methods


class Api:
    """The method implementations; pure functions of the world and the params, except for
    the optional ``drift`` (comments deleted while a client pages)."""

    def __init__(self, world: World, drift: int = 0) -> None:
        self.world = world
        self.drift = drift
        self._drifted: set[tuple[int, int]] = set()
        self._drift_lock = threading.Lock()
        # Comments and authors are encoded as parts of the answer (see jsontext).
        self._encode = encode_plain if world.plain else encode_any
        self._authors_json: dict[int, Encoded | None] = {}  # author id -> profile/group JSON
        self.methods = {
            "wall.get": self.wall_get,
            "wall.getComments": self.wall_get_comments,
            "groups.getById": self.groups_get_by_id,
            "utils.resolveScreenName": self.utils_resolve_screen_name,
        }

    # -- params

    @staticmethod
    def _int(
        params: dict[str, str],
        name: str,
        default: int | None = None,
        *,
        minimum: int | None = None,
    ) -> int | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _invalid(name) from None
        if minimum is not None and value < minimum:
            raise _invalid(name)
        return value

    def _required_int(self, params: dict[str, str], name: str, **kw: Any) -> int:
        value = self._int(params, name, **kw)
        if value is None:
            raise _undefined(name)
        return value

    def _flag(self, params: dict[str, str], name: str) -> bool:
        return bool(self._int(params, name, 0))

    def _page(self, params: dict[str, str], default_count: int) -> tuple[int, int]:
        count = self._int(params, "count", default_count, minimum=0)
        offset = self._int(params, "offset", 0)
        assert count is not None and offset is not None
        return offset, min(count, 100)  # above 100 is clamped (unverified)

    # -- objects

    def _wall_group(self, owner_id: int | None) -> _GroupView:
        if owner_id is None or owner_id > 0:
            raise ApiError(15, "Access denied")  # no user walls here (unverified choice)
        view = self.world.groups.get(-owner_id)
        if view is None:
            raise _undefined("owner_id")
        group = view.group
        if group["deactivated"]:
            raise ApiError(15, "Access denied: group is blocked")
        if int(group["is_closed"]) in (1, 2):
            raise ApiError(15, "Access denied: this wall available only for community members")
        if int(group["wall"]) == 0:
            raise ApiError(15, "Access denied: wall is disabled")
        return view

    @staticmethod
    def group_object(group: dict[str, Any]) -> dict[str, Any]:
        gid = int(group["id"])
        obj: dict[str, Any] = {
            "id": gid,
            "name": group["name"],
            "screen_name": group["screen_name"],
            "is_closed": int(group["is_closed"]),
            "type": group["type"],
            "is_admin": 0,
            "is_member": 0,
            "is_advertiser": 0,
            "photo_50": "https://vk.com/images/community_50.png",
            "photo_100": "https://vk.com/images/community_100.png",
            "photo_200": "https://vk.com/images/community_200.png",
        }
        if group["deactivated"]:
            obj["deactivated"] = group["deactivated"]
        return obj

    def profile_object(self, pid: int) -> dict[str, Any] | None:
        profile = self.world.profiles.get(pid)
        if profile is None:
            return None
        obj = {
            "id": pid,
            "first_name": profile["first_name"],
            "last_name": profile["last_name"],
            "can_access_closed": True,
            "is_closed": False,
        }
        if profile.get("screen_name"):
            obj["screen_name"] = profile["screen_name"]
        return obj

    def _authors(self, author_ids: list[int]) -> tuple[list[Encoded], list[Encoded]]:
        profiles: list[Encoded] = []
        groups: list[Encoded] = []
        seen: set[int] = set()
        for aid in author_ids:
            if aid in seen:
                continue
            seen.add(aid)
            if aid not in self._authors_json:
                obj = (
                    self.profile_object(aid)
                    if aid > 0
                    else self.group_object(self.world.groups[-aid].group)
                    if -aid in self.world.groups
                    else None
                )
                self._authors_json[aid] = None if obj is None else self._encode(obj)
            author = self._authors_json[aid]
            if author is not None:
                (profiles if aid > 0 else groups).append(author)
        return profiles, groups

    @staticmethod
    def _post_object(
        owner_id: int, post: dict[str, Any], total: int, pinned: bool
    ) -> dict[str, Any]:
        closed = bool(post["comments_closed"])
        obj: dict[str, Any] = {
            "id": post["id"],
            "owner_id": owner_id,
            "from_id": post["from_id"],
            "date": post["date"],
            "marked_as_ads": 0,
            "post_type": "post",
            "text": post["text"],
            "comments": {
                "count": total,
                "can_post": 0 if closed else 1,
                "groups_can_post": not closed,
                "can_close": 0,
                "can_open": 0,
            },
            "likes": {
                "count": post["likes"],
                "user_likes": 0,
                "can_like": 1,
                "can_publish": 1,
                "repost_disabled": 0,
            },
            "reposts": {
                "count": post["reposts"],
                "wall_count": post["reposts"],
                "mail_count": 0,
                "user_reposted": 0,
            },
            "hash": hashlib.sha1(f"{owner_id}_{post['id']}".encode()).hexdigest()[:14],
        }
        if post["views"] is not None:
            obj["views"] = {"count": post["views"]}
        if post["signer_id"] is not None:
            obj["signer_id"] = post["signer_id"]
        if post["edited"] is not None:
            obj["edited"] = post["edited"]
        if pinned:
            obj["is_pinned"] = 1
        return obj

    # -- wall.get

    def wall_get(self, params: dict[str, str], version: tuple[int, int]) -> Any:
        owner_id = self._int(params, "owner_id")
        if owner_id is None and params.get("domain"):
            found = self.world.resolve(params["domain"])
            if found is None:
                raise _undefined("owner_id")
            kind, ident = found
            owner_id = -ident if kind == "group" else ident
        offset, count = self._page(params, 20)
        if offset < 0:
            raise _invalid("offset")
        view = self._wall_group(owner_id)
        assert owner_id is not None
        filt = params.get("filter") or "all"
        if filt == "all":
            wall = view.wall
        elif filt in ("owner", "others"):
            wall = [p for p in view.wall if (p["from_id"] == owner_id) == (filt == "owner")]
        elif filt in ("postponed", "suggests", "archived", "donut"):
            wall = []
        else:
            raise _invalid("filter")
        pinned = view.pinned_id
        items = [
            self._post_object(owner_id, p, view.posts[p["id"]].total, p["id"] == pinned)
            for p in wall[offset : offset + count]
        ]
        result: dict[str, Any] = {"count": len(wall), "items": items}
        if self._flag(params, "extended"):
            result["profiles"] = []
            result["groups"] = [self.group_object(view.group)]
        return result

    # -- wall.getComments

    def _comment_object(
        self,
        owner_id: int,
        pv: _PostView,
        item: dict[str, Any],
        parent: int | None,
        *,
        need_likes: bool,
        preview: int,
        thread_items: int,
    ) -> dict[str, Any]:
        def cut(text: str) -> str:
            return text[:preview] if preview > 0 else text

        if parent is None:
            replies = pv.replies[item["id"]]
            thread = {
                "count": len(replies),
                "items": [
                    self._comment_object(
                        owner_id,
                        pv,
                        r,
                        item["id"],
                        need_likes=need_likes,
                        preview=preview,
                        thread_items=0,
                    )
                    for r in replies[:thread_items]
                ],
                "can_post": True,
                "show_reply_button": True,
                "groups_can_post": True,
            }
            if item["deleted"]:
                return {
                    "id": item["id"],
                    "date": item["date"],
                    "parents_stack": [],
                    "thread": thread,
                    "deleted": True,
                }
        obj: dict[str, Any] = {
            "id": item["id"],
            "from_id": item["from_id"],
            "date": item["date"],
            "text": cut(item["text"]),
            "post_id": pv.post["id"],
            "owner_id": owner_id,
            "parents_stack": [] if parent is None else [parent],
        }
        if parent is None:
            obj["thread"] = thread
        for key in ("reply_to_user", "reply_to_comment"):
            if item.get(key) is not None:
                obj[key] = item[key]
        if need_likes:
            obj["likes"] = {"count": item["likes"], "user_likes": 0, "can_like": 1}
        return obj

    def _comment_json(
        self,
        owner_id: int,
        pv: _PostView,
        item: dict[str, Any],
        parent: int | None,
        *,
        need_likes: bool,
        preview: int,
        thread_items: int,
    ) -> _Comment:
        """:meth:`_comment_object` encoded, with the authors it names (itself unless a stub,
        then its inlined replies)."""
        obj = self._comment_object(
            owner_id, pv, item, parent,
            need_likes=need_likes, preview=preview, thread_items=thread_items,
        )  # fmt: skip
        authors = [obj["from_id"]] if "from_id" in obj else []  # stubs have no author
        authors += [sub["from_id"] for sub in obj.get("thread", {}).get("items", [])]
        return _Comment(self._encode(obj), authors)

    def wall_get_comments(self, params: dict[str, str], version: tuple[int, int]) -> Any:
        owner_id = self._required_int(params, "owner_id")
        post_id = self._required_int(params, "post_id", minimum=0)
        need_likes = self._flag(params, "need_likes")
        preview = self._int(params, "preview_length", 90, minimum=0)
        thread_items = self._int(params, "thread_items_count", 0)
        if thread_items is None or not 0 <= thread_items <= 10:
            raise _invalid("thread_items_count")
        offset, count = self._page(params, 10)
        start_id = self._int(params, "start_comment_id", minimum=0)
        comment_id = self._int(params, "comment_id", minimum=0)
        sort = params.get("sort") or "asc"
        if sort not in ("asc", "desc", "smart"):
            raise _invalid("sort")
        view = self._wall_group(owner_id)
        pv = view.posts.get(post_id)
        if pv is None:
            raise ApiError(15, "Access denied: post was not found check post_id param")
        if pv.post["comments_closed"]:
            raise ApiError(212, "Access to post comments denied")

        parent: int | None = None
        if comment_id is None:
            level = pv.level
        elif comment_id in pv.replies:
            level, parent = pv.replies[comment_id], comment_id
        elif comment_id in pv.reply_ids:
            level, parent = [], comment_id
        else:
            raise _invalid("comment_id")
        desc = sort == "desc"
        position = 0
        if start_id is not None:
            # The level is sorted by id: the first comment at start_id or after it (asc), at
            # start_id or before it (desc); none is the end.
            if desc:
                position = len(level) - bisect.bisect_right(level, start_id, key=_comment_id)
            else:
                position = bisect.bisect_left(level, start_id, key=_comment_id)
        if desc:
            level = level[::-1]
        position = max(0, position + offset)
        comments = [
            self._comment_json(
                owner_id,
                pv,
                c,
                parent,
                need_likes=need_likes,
                preview=preview or 0,
                thread_items=thread_items,
            )
            for c in level[position : position + count]
        ]
        if (
            self.drift
            and comment_id is None
            and start_id is None
            and offset == 0
            and len(level) > count
        ):
            self._drift(owner_id, pv, [c for c in level[:count]])
        result: dict[str, Any] = {
            "count": pv.total,
            "items": [c.json for c in comments],
            "current_level_count": len(level),
            "can_post": True,
            "show_reply_button": True,
            "groups_can_post": True,
        }
        if self._flag(params, "extended"):
            authors = [aid for c in comments for aid in c.authors]
            result["profiles"], result["groups"] = self._authors(authors)
            result["post_author_id"] = owner_id
        return result

    def _drift(self, owner_id: int, pv: _PostView, served: list[dict[str, Any]]) -> None:
        """Live data: right after the first page of a multi-page post is served, ``drift`` of
        its comments (ones without replies) are deleted, once per post: the last one served
        (a client's natural anchor) and the earliest ones. Offset paging then skips as many
        comments; anchored paging does not."""
        with self._drift_lock:
            key = (owner_id, pv.post["id"])
            if key in self._drifted:
                return
            self._drifted.add(key)
            deletable = [c for c in served if not pv.replies.get(c["id"])]
            victims = deletable[-1:] + deletable[: self.drift - 1] if self.drift > 0 else []
            gone = {c["id"] for c in victims}
            pv.level = [c for c in pv.level if c["id"] not in gone]
            pv.total -= len(gone)

    # -- groups.getById

    def groups_get_by_id(self, params: dict[str, str], version: tuple[int, int]) -> Any:
        raw = params.get("group_ids") or params.get("group_id") or ""
        fields = {f.strip() for f in (params.get("fields") or "").split(",") if f.strip()}
        found: list[dict[str, Any]] = []
        seen: set[int] = set()
        for ref in (r.strip() for r in raw.split(",")):
            if not ref:
                continue
            gid: int | None = None
            if ref.lstrip("-").isdigit():
                gid = abs(int(ref))
            else:
                hit = self.world.resolve(ref)
                if hit and hit[0] == "group":
                    gid = hit[1]
            if gid is None or gid in seen or gid not in self.world.groups:
                continue
            seen.add(gid)
            view = self.world.groups[gid]
            obj = self.group_object(view.group)
            if "wall" in fields:
                obj["wall"] = int(view.group["wall"])
            if "members_count" in fields:
                obj["members_count"] = int(view.group["members_count"])
            if "fixed_post" in fields and view.pinned_id is not None:
                obj["fixed_post"] = view.pinned_id
            found.append(obj)
        if not found:
            raise _undefined("group_ids")
        if version >= GROUPS_OBJECT_VERSION:
            return {"groups": found, "profiles": []}
        return found

    # -- utils.resolveScreenName

    def utils_resolve_screen_name(self, params: dict[str, str], version: tuple[int, int]) -> Any:
        name = (params.get("screen_name") or "").strip()
        if not name:
            raise _undefined("screen_name")
        hit = self.world.resolve(name)
        if hit is None:
            return []  # VK's documented quirk: not found is an empty list, not an error
        kind, ident = hit
        if kind == "group":
            kind = self.world.groups[ident].group["type"]
        return {"type": kind, "object_id": ident}


# --------------------------------------------------------------------------------------------
# Enforcement


class RateLimiter:
    """Sliding one-second window per token; every arrival is recorded, refused ones too.

    Handler threads may check arrivals out of order (each is timed when its bytes came), so an
    arrival is refused when it makes ``limit + 1`` arrivals within one window, whichever of
    them came last: in order, that is the arrival finding ``limit`` in the second before it;
    checked late, it may complete a run an arrival already answered had started."""

    def __init__(self, limit: int, window: float = 1.0) -> None:
        self.limit = limit
        self.window = window
        self._arrivals: dict[str, list[float]] = collections.defaultdict(list)
        self._lock = threading.Lock()

    def allow(self, token: str, now: float) -> bool:
        if self.limit <= 0:
            return True
        with self._lock:
            arrivals = self._arrivals[token]
            del arrivals[: bisect.bisect_right(arrivals, now - 2 * self.window)]
            i = bisect.bisect_right(arrivals, now)
            arrivals.insert(i, now)
            n = self.limit
            # every run of n + 1 consecutive arrivals that holds this one
            return all(
                arrivals[start + n] - arrivals[start] >= self.window
                for start in range(max(0, i - n), min(i, len(arrivals) - n - 1) + 1)
            )


class FaultInjector:
    """Seeded fault draws with a cap on consecutive faults per logical request."""

    def __init__(self, faults: list[tuple[str, float]], seed: int, max_in_a_row: int) -> None:
        self.faults = faults
        self.rng = random.Random(seed)
        self.max_in_a_row = max_in_a_row
        self._streaks: dict[str, int] = {}
        self._lock = threading.Lock()

    def draw(self, key: str) -> str | None:
        if not self.faults:
            return None
        with self._lock:
            roll = self.rng.random()  # drawn even when capped, so the sequence stays stable
            kind = None
            acc = 0.0
            for name, prob in self.faults:
                acc += prob
                if roll < acc:
                    kind = name
                    break
            if kind is not None and self._streaks.get(key, 0) >= self.max_in_a_row:
                kind = None
            if kind is None:
                self._streaks.pop(key, None)
            else:
                self._streaks[key] = self._streaks.get(key, 0) + 1
            return kind


@dataclass
class ServerConfig:
    tokens: frozenset[str] = frozenset({"test-token"})
    rate_limit: int = 3
    faults: list[tuple[str, float]] = field(default_factory=list)
    seed: int = 0
    retry_after: int = 1
    slow_seconds: float = 2.0
    max_faults_per_request: int = 2
    drift: int = 0
    log_path: str | None = None
    # execute: tokens VK refuses it for (error 28), and the answer size limit (error 13)
    no_execute_tokens: frozenset[str] = frozenset()
    execute_max_bytes: int = vkscript.MAX_BYTES
    # token -> (VK error code, method or None for all): a revoked token (5), a captcha (14),
    # a spent daily quota (29) …, for that token only, inside execute too
    token_errors: dict[str, tuple[int, str | None]] = field(default_factory=dict)


class FakeVkServer(ThreadingHTTPServer):
    """The HTTP server; handlers reach the shared state through ``self.server``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], data: Dataset, config: ServerConfig) -> None:
        super().__init__(address, _Handler)
        self.api = Api(World(data), config.drift)
        self.config = config
        self.limiter = RateLimiter(config.rate_limit)
        self.injector = FaultInjector(config.faults, config.seed, config.max_faults_per_request)
        self._log_lock = threading.Lock()
        self._log = None
        if config.log_path:
            # line-buffered appends; one JSON object per line, flushed after each request
            self._log = open(config.log_path, "a", encoding="utf-8")  # noqa: SIM115

    def server_bind(self) -> None:
        super().server_bind()
        if sys.platform == "linux":
            # Connections inherit it, so the kernel times a request that comes before the
            # handler thread is up (with it set only per connection, such bytes carry no
            # time unless another socket has asked for times).
            self.socket.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}/method/"

    def record(self, entry: dict[str, Any]) -> None:
        if self._log is None:
            return
        line = json.dumps(entry, ensure_ascii=False)
        with self._log_lock:
            self._log.write(line + "\n")
            self._log.flush()

    def server_close(self) -> None:
        super().server_close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def call(self, method: str, params: dict[str, str], token: str | None, now: float) -> Any:
        """Run the API checks in their documented order; raise ApiError or return a response."""
        if token is None:
            raise ApiError(5, "User authorization failed: no access_token passed.")
        if token not in self.config.tokens:
            raise ApiError(5, "User authorization failed: invalid access_token (4).")
        if not self.limiter.allow(token, now):
            raise ApiError(6, "Too many requests per second")
        self._token_error(token, method)
        version = _version(params.get("v"))
        if version is None or version < MIN_VERSION:
            raise ApiError(8, _V_MESSAGE)
        if method == "execute":
            return self.execute(params, token, version)
        handler = self.api.methods.get(method)
        if handler is None:
            raise ApiError(3, "Unknown method passed")
        return handler(params, version)

    def _token_error(self, token: str, method: str) -> None:
        code, only = self.config.token_errors.get(token, (0, None))
        if code and (only is None or only == method):
            raise ApiError(code, _TOKEN_ERRORS.get(code, "Token error"))

    def execute(self, params: dict[str, str], token: str, version: tuple[int, int]) -> Any:
        """Run the VKScript in ``code`` (one request against the rate limit, whatever it
        calls); the other parameters are its ``Args``."""
        if token in self.config.no_execute_tokens:
            raise ApiError(28, "Application authorization failed: method is unavailable "
                               "with service token")  # fmt: skip
        code = params.get("code")
        if not code:
            raise _undefined("code")
        args = {k: v for k, v in params.items() if k not in ("code", "v", "func_v")}

        def inner(method: str, inner_params: dict[str, str]) -> Any:
            self._token_error(token, method)
            handler = self.api.methods.get(method)
            if handler is None:
                raise ApiError(3, "Unknown method passed")
            # Transient inner failures, drawn like the outer faults: false + error 10.
            key = json.dumps(["execute", method, sorted(inner_params.items())], ensure_ascii=False)
            if self.injector.draw(key) == "error10":
                raise ApiError(10, "Internal server error")
            return handler(inner_params, version)

        try:
            return vkscript.run(
                code, args, inner, max_bytes=self.config.execute_max_bytes,
                exact_answers=self.api.world.plain,
            )  # fmt: skip
        except vkscript.ScriptError as exc:
            raise ApiError(exc.code, exc.message) from None


_TOKEN_ERRORS = {
    5: "User authorization failed: access_token has expired.",
    14: "Captcha needed",
    17: "Validation required: please open redirect_uri in browser",
    29: "Rate limit reached",
}


def _error_body(code: int, message: str, method: str, params: dict[str, str]) -> dict[str, Any]:
    echoed = [{"key": "method", "value": method}, {"key": "oauth", "value": "1"}]
    echoed += [{"key": k, "value": v} for k, v in params.items()]  # the token is never in params
    return {"error": {"error_code": code, "error_msg": message, "request_params": echoed}}


# Linux's value (x86, ARM); the socket module does not name it.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


class _StampedSocketReader(io.RawIOBase):
    """The connection's raw reader: ``recvmsg`` instead of ``recv``, keeping the kernel's
    receive time of the latest bytes read (``stamp``; None where the kernel gives none)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.stamp: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size, ancillary, _flags, _addr = self.sock.recvmsg_into([buffer], socket.CMSG_SPACE(16))
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
                seconds, nanoseconds = struct.unpack("qq", data[:16])
                self.stamp = seconds + nanoseconds / 1e9
        return size


class _Handler(BaseHTTPRequestHandler):
    server: FakeVkServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API; every answer has a length
    # TCP_NODELAY, as nginx's default: the headers and the body are two writes, and with
    # Nagle's algorithm a short body waited for the client's delayed ACK of the headers (40 ms
    # on Linux) on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "nginx"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self._reader: _StampedSocketReader | None = None
        if sys.platform != "linux":  # elsewhere arrivals are timed when read
            return
        self.connection.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)  # as inherited
        self._reader = _StampedSocketReader(self.connection)
        self.rfile.close()  # the makefile() reader it replaces; the socket stays open
        self.rfile = io.BufferedReader(self._reader)

    def parse_request(self) -> bool:
        # The request line was just read: its bytes' receive time is the arrival. (Requests
        # a client sends back to back without waiting for answers, which Scrapy does not, may
        # come in one read and share the time of its last bytes.)
        stamp = None
        if self._reader is not None:  # taken, so a later read without one cannot reuse it
            stamp, self._reader.stamp = self._reader.stamp, None
        self._arrived = time.time() if stamp is None else stamp
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(self.rfile.read(length) if length > 0 else b"")

    def _serve(self, body: bytes) -> None:
        arrived = self._arrived
        url = urllib.parse.urlsplit(self.path)
        if not url.path.startswith("/method/"):
            self._send(404, _html(404), "text/html")
            return
        method = urllib.parse.unquote(url.path[len("/method/") :])
        params: dict[str, str] = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        params.update(
            urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        )
        token = params.pop("access_token", None)
        auth = self.headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            token = auth[7:].strip()

        fault = self.server.injector.draw(
            json.dumps([method, sorted(params.items())], ensure_ascii=False)
        )
        executed: vkscript.ExecuteResult | None = None
        try:
            response = self.server.call(method, params, token, arrived)
            if isinstance(response, vkscript.ExecuteResult):  # answers still as markers
                executed = response
                response = None if executed.text is None else json.loads(executed.text)
            payload: dict[str, Any] = {"response": response}
            if executed is not None and executed.errors:
                payload["execute_errors"] = executed.errors
            outcome = "ok"
        except ApiError as exc:
            payload = _error_body(exc.code, exc.message, method, params)
            outcome = f"error:{exc.code}"

        # Build the answer first and log it before sending, so a client that has its answer
        # can already read the matching log line.
        answer: tuple[int, bytes, str, dict[str, str]] | None
        json_type = "application/json; charset=utf-8"

        def answer_body() -> bytes:
            data = encode(payload)
            return data if executed is None else executed.expand(data)

        if fault is None or fault == "slow":
            if fault == "slow":
                time.sleep(self.server.config.slow_seconds)
            answer = (200, answer_body(), json_type, {})
        elif fault in ("500", "502", "503"):
            answer = (int(fault), _html(int(fault)), "text/html", {})
        elif fault == "429":
            retry_after = {"Retry-After": str(self.server.config.retry_after)}
            answer = (429, _html(429), "text/html", retry_after)
        elif fault == "error10":
            error10 = _error_body(10, "Internal server error", method, params)
            answer = (200, encode(error10), json_type, {})
        elif fault == "malformed":
            raw = answer_body()
            answer = (200, raw[: max(1, len(raw) // 2)], json_type, {})
        else:  # drop: hang up without a status line
            answer = None
        if fault is not None:
            outcome = f"fault:{fault}"
        self.server.record(
            {
                "t": arrived,
                # Seconds from arrival to a built answer: the emulator's own time (with the
                # rate limit's wait), to tell its latency from the crawler's.
                "took": round(time.time() - arrived, 4),
                "method": method,
                "params": params,
                "token": token_tag(token),
                "outcome": outcome,
                "status": None if answer is None else answer[0],
                **(
                    {"calls": executed.calls, "execute_errors": len(executed.errors)}
                    if executed is not None
                    else {}
                ),
            }
        )
        if answer is None:
            self.close_connection = True
        else:
            self._send(*answer)

    def _send(
        self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _html(status: int) -> bytes:
    title = f"{status} {_HTTP_TEXT.get(status, 'Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1>"
        "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()
