"""Parse the ways a user names a VK community into an id or a screen name to resolve.

Accepted: ``123``, ``-123``, ``club123``, ``public123``, ``event123``, a screen name
(``apiclub``) and ``vk.com/…``, ``m.vk.com/…``, ``vk.ru/…`` URLs with or without a scheme,
``www.``, a trailing slash, a query or a fragment. Ids come back positive (group ids, never
owner ids); names are resolved later with ``groups.getById``.

Lists, wherever they come from (``task create --groups``, ``-a groups=``, ``groups=`` of
``collect.json``), are comma-separated; whitespace around an entry is trimmed, whitespace
inside one is refused: ``foo bar`` is a typo for ``foo,bar`` or a name with a space, and
guessing either would crawl something the user did not name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# ASCII digits only: \d would also take look-alikes such as Arabic-Indic digits.
_ID_PATH = re.compile(r"(?:club|public|event)([0-9]+)")
_NUMBER = re.compile(r"-?[0-9]+")
_MAX_ID = 2**63 - 1  # the database's BIGINT
# VK screen names: latin letters, digits, underscore and dot; 2-32 characters, not all digits.
_SCREEN_NAME = re.compile(r"[A-Za-z0-9_.]{2,32}")
_SPACE = re.compile(r"\s")
_VK_HOSTS = {"vk.com", "vk.ru", "m.vk.com", "m.vk.ru", "www.vk.com", "www.vk.ru", "new.vk.com"}


SHOWN_CHARS = 80  # of a bad reference in an error message (a client may send megabytes)
SHOWN_ERRORS = 10  # bad references named in one message; the rest are counted


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


class GroupRefError(ValueError):
    """A group reference that is neither an id nor a screen name nor a VK community URL."""


@dataclass(frozen=True)
class GroupRef:
    """Exactly one of ``group_id`` (positive) and ``screen_name`` is set."""

    group_id: int | None = None
    screen_name: str | None = None

    def __str__(self) -> str:
        return str(self.group_id) if self.group_id is not None else str(self.screen_name)


def parse_group_ref(raw: str | int) -> GroupRef:
    """Parse one reference; raise :class:`GroupRefError` naming the input when it is not one."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _from_id(abs(raw), raw)
    text = str(raw).strip()
    if not text:
        raise GroupRefError("empty group reference")
    if _SPACE.search(text):
        raise GroupRefError(f"{_shown(text)} has a space inside: separate references with commas")
    path = _path_of(text)
    if _NUMBER.fullmatch(path):
        return _from_id(abs(int(path)), raw)
    m = _ID_PATH.fullmatch(path.lower())
    if m:
        return _from_id(int(m.group(1)), raw)
    if re.fullmatch(r"id[0-9]+", path.lower()):
        raise GroupRefError(f"{_shown(raw)} is a user page, not a community")
    if _SCREEN_NAME.fullmatch(path):
        return GroupRef(screen_name=path.lower())
    raise GroupRefError(
        f"{_shown(raw)} is not a VK community: expected an id, club123/public123/event123, "
        "a screen name or a vk.com/vk.ru URL"
    )


def split_group_refs(raw: str) -> list[str]:
    """The entries of a comma-separated list, trimmed, empty ones dropped (an entry keeps any
    whitespace inside it: :func:`parse_group_ref` refuses it, naming the whole entry)."""
    return [item.strip() for item in raw.split(",") if item.strip()]


def parse_group_refs(raw: str | list[str] | tuple[str, ...]) -> list[GroupRef]:
    """Parse a comma-separated list (or a sequence), dropping duplicates in order.

    One malformed reference refuses the list: the :class:`GroupRefError` names every bad one.
    """
    items = split_group_refs(raw) if isinstance(raw, str) else list(raw)
    refs: dict[GroupRef, None] = {}  # ordered and O(1) per lookup (lists of 10⁵ refs)
    bad: list[str] = []
    for item in items:
        if not str(item).strip():
            continue
        try:
            ref = parse_group_ref(item)
        except GroupRefError as exc:
            bad.append(str(exc))
            continue
        refs.setdefault(ref)
    if bad:
        more = len(bad) - SHOWN_ERRORS
        tail = f"; and {more} more bad reference(s)" if more > 0 else ""
        raise GroupRefError("; ".join(bad[:SHOWN_ERRORS]) + tail)
    return list(refs)


def _from_id(group_id: int, raw: object) -> GroupRef:
    if group_id <= 0:
        raise GroupRefError(f"{_shown(raw)}: a group id must be a positive number")
    if group_id > _MAX_ID:
        raise GroupRefError(f"{_shown(raw)}: too large to be a group id")
    return GroupRef(group_id=group_id)


def _path_of(text: str) -> str:
    """Return the single path segment of a VK URL, or the text itself when it is no URL."""
    has_scheme = "://" in text
    candidate = text if has_scheme else "//" + text
    try:
        parts = urlsplit(candidate)
    except ValueError:  # e.g. an unbalanced "[" taken for an IPv6 host
        raise GroupRefError(f"{_shown(text)} is not a VK community or URL") from None
    host = (parts.hostname or "").lower()
    if host in _VK_HOSTS:
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) != 1:
            raise GroupRefError(
                f"{_shown(text)}: a VK URL must name one community, like vk.com/apiclub"
            )
        return segments[0]
    if has_scheme or "/" in text:
        raise GroupRefError(f"{_shown(text)} is not a vk.com or vk.ru URL")
    return text
