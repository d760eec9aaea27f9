"""Items the spider yields: plain dataclasses, read by pipelines through ItemAdapter.

Natural keys are per wall: ``(owner_id, vk_post_id)`` and ``(owner_id, vk_comment_id)``.
For a community ``owner_id`` is negative (``-group_id``); it is computed in
:func:`vkscraper.api.owner_id_for_group` and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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


@dataclass
class VkGroup:
    """A community as ``groups.getById`` describes it (``id`` is positive)."""

    id: int
    screen_name: str | None = None
    name: str | None = None
    deactivated: str | None = None  # "deleted" / "banned" when VK says so
    is_closed: int = 0  # 0 open, 1 closed, 2 private
