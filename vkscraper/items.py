"""Items: plain dataclasses, read by pipelines and feed exports through ItemAdapter.

The spider yields one :class:`VkPage` per page VK answered, carrying what VK sent; the
normalize pipeline turns its rows into :class:`VkPost` and :class:`VkComment`, which are stored
and exported (one per line). ``kind`` ("post" / "comment") tells them apart in a mixed feed.
Pages, not rows, travel through Scrapy: its per-item path (middlewares, signals, a task per
item) costs more than normalizing and storing a row.

Natural keys are per wall: ``(owner_id, vk_post_id)`` and ``(owner_id, vk_comment_id)``.
For a community ``owner_id`` is negative (``-group_id``); it is computed in
:func:`vkscraper.vk.api.owner_id_for_group` and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class VkPost:
    vk_post_id: int
    owner_id: int
    group_id: int
    text: str
    date: datetime  # UTC, timezone-aware
    likes: int = 0
    comments_count: int = 0
    is_pinned: bool = False
    from_id: int | None = None  # the author: the community (owner_id) or a user; None if absent
    signer_id: int | None = None  # the user who signed a community post; None when unsigned
    views: int | None = None  # views.count; None when VK does not count them for the post
    reposts: int = 0  # reposts.count
    edited: datetime | None = None  # UTC, timezone-aware; None when never edited
    kind: str = field(default="post", init=False)


@dataclass(slots=True)
class VkComment:
    vk_comment_id: int
    post_vk_id: int
    owner_id: int
    parent_id: int | None  # VK id of the top-level comment a reply belongs to; None at top level
    thread_count: int
    author_id: int | None  # negative for a community; None for a deleted stub
    author_name: str | None
    text: str
    date: datetime | None  # UTC, timezone-aware
    likes: int = 0
    deleted: bool = False
    reply_to_user: int | None = None  # whom a reply answers (negative for a community)
    reply_to_comment: int | None = None  # the comment a reply answers (same wall)
    kind: str = field(default="comment", init=False)


@dataclass(slots=True)
class VkPage:
    """One page VK answered: a group's newest posts (``kind`` "posts") or one page of a post's
    comments or of one thread's replies (``kind`` "comments").

    The spider yields it with ``raw`` (the page as VK sent it) and ``rows`` empty; the
    normalize pipeline fills ``rows`` with :class:`VkPost` / :class:`VkComment` and drops
    ``raw``. A pipeline after it may change or remove rows; the store writes what is left.
    Feed exports write the rows, one per line
    (:class:`~vkscraper.extensions.feedexport.VkFeedExporter`).
    """

    kind: str  # "posts" | "comments"
    group_id: int
    post_id: int | None = None  # the post a comments page belongs to
    thread_id: int | None = None  # the top-level comment a thread page belongs to
    raw: dict[str, Any] | None = None
    # An anchored page repeats its anchor (and, at the top level, its inline replies): read
    # on the page before, not a row of this one.
    anchor: int | None = None
    rows: list[Any] = field(default_factory=list)


@dataclass
class VkGroup:
    """A community as ``groups.getById`` describes it (``id`` is positive)."""

    id: int
    screen_name: str | None = None
    name: str | None = None
    deactivated: str | None = None  # "deleted" / "banned" when VK says so
    is_closed: int = 0  # 0 open, 1 closed, 2 private
