"""Items: plain dataclasses, read by pipelines and feed exports through ItemAdapter.

The spider yields what VK sent (:class:`VkRawPost`, :class:`VkRawComment`); the normalize
pipeline turns them into :class:`VkPost` and :class:`VkComment`, which are stored and
exported. ``kind`` ("post" / "comment") tells them apart in a mixed feed.

Natural keys are per wall: ``(owner_id, vk_post_id)`` and ``(owner_id, vk_comment_id)``.
For a community ``owner_id`` is negative (``-group_id``); it is computed in
:func:`vkscraper.api.owner_id_for_group` and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
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


@dataclass
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


@dataclass
class VkRawPost:
    """A post of ``wall.get`` as VK sent it (``data``), for the normalize pipeline."""

    owner_id: int
    group_id: int
    data: dict[str, Any]


@dataclass
class VkRawComment:
    """A comment or reply of ``wall.getComments`` as VK sent it, with its place (post,
    top-level comment) and its author's name from the page's ``profiles``/``groups``."""

    owner_id: int
    post_vk_id: int
    parent_id: int | None
    data: dict[str, Any]
    author_name: str | None = None


@dataclass
class VkGroup:
    """A community as ``groups.getById`` describes it (``id`` is positive)."""

    id: int
    screen_name: str | None = None
    name: str | None = None
    deactivated: str | None = None  # "deleted" / "banned" when VK says so
    is_closed: int = 0  # 0 open, 1 closed, 2 private
