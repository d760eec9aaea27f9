"""The pure VK API layer: build method calls, parse the envelope, nothing Scrapy-specific.

A call is a form-encoded POST to ``<VK_API_URL><method>`` with ``v`` set. The access token is
deliberately *not* part of a call: it is added at download time (``Authorization`` header) so
that queued requests never hold it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from vkscraper import defaults
from vkscraper.exceptions import VkMalformedResponse, api_error_for

ParamValue = str | int | bool | Sequence[str | int] | None


@dataclass(frozen=True)
class VkCall:
    method: str
    url: str
    params: dict[str, str]  # form fields of the POST


def owner_id_for_group(group_id: int) -> int:
    """The wall ``owner_id`` of a community: the only place where the sign flips."""
    if group_id <= 0:
        raise ValueError(f"group ids are positive, got {group_id}")
    return -group_id


def build_call(
    method: str,
    params: Mapping[str, ParamValue],
    *,
    api_url: str = defaults.VK_API_URL,
    version: str = defaults.VK_API_VERSION,
) -> VkCall:
    """Build a call: ``None`` params are dropped, booleans become 0/1, lists are comma-joined."""
    encoded: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if key == "access_token":
            raise ValueError("the access token is added at download time, not in call params")
        encoded[key] = _encode(value)
    encoded["v"] = version
    return VkCall(method=method, url=api_url.rstrip("/") + "/" + method, params=encoded)


def _encode(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str | int):
        return str(value)
    return ",".join(str(v) for v in value)  # type: ignore[union-attr]


def parse_response(body: bytes | str, method: str = "") -> Any:
    """Return the ``response`` of a VK envelope or raise the matching :mod:`exceptions` class.

    A body that is not a JSON object with ``response`` or ``error`` is a
    :class:`VkMalformedResponse` (transient: truncated or HTML answers come from overloaded
    servers). The echoed ``request_params`` of an error are never copied anywhere.
    """
    return parse_envelope(body, method)["response"]


def parse_envelope(body: bytes | str, method: str = "") -> dict[str, Any]:
    """The checked envelope: ``response``, and for ``execute`` its ``execute_errors``."""
    try:
        data = _loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VkMalformedResponse(
            f"malformed VK response{_in(method)}: not JSON ({len(body)} bytes)"
        ) from exc
    if not isinstance(data, dict):
        raise VkMalformedResponse(f"malformed VK response{_in(method)}: not a JSON object")
    if "error" in data:
        error = data["error"]
        if not isinstance(error, dict) or not isinstance(error.get("error_code"), int):
            raise VkMalformedResponse(f"malformed VK error envelope{_in(method)}")
        message = str(error.get("error_msg") or "no message")
        raise api_error_for(error["error_code"], message, method)
    if "response" not in data:
        raise VkMalformedResponse(f"malformed VK response{_in(method)}: no 'response' key")
    return data


def _loads(body: bytes | str) -> Any:
    """orjson (several times faster on comment pages); what it refuses (a lone surrogate,
    NaN) is parsed by :mod:`json`, lone surrogates then replaced. An integer beyond 64 bits
    comes out as a float, which no id or counter check accepts; one between 2**63 and
    2**64 - 1 as an int, which the id checks of :mod:`vkscraper.vk.normalize` refuse."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _no_surrogates(json.loads(body))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(value: Any) -> Any:
    """A lone surrogate (VK cuts text inside an emoji's pair) becomes U+FFFD: no UTF-8
    encoder, so no database driver, takes it."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_no_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    return value


def _in(method: str) -> str:
    return f" in {method}" if method else ""


# Parameters of the calls the collector makes (VK API reference: wall.get, wall.getComments,
# groups.getById). No ``offset``: the crawl reads a wall's first page only and pages comments
# by ``start_comment_id``; VK's default offset is 0, as in the execute script's calls.


def wall_get_params(group_id: int, *, count: int) -> dict[str, ParamValue]:
    return {"owner_id": owner_id_for_group(group_id), "count": count}


def wall_get_comments_params(
    group_id: int,
    post_id: int,
    *,
    count: int = defaults.VK_COMMENTS_PAGE_SIZE,
    comment_id: int | None = None,
    start_comment_id: int | None = None,
    thread_items_count: int = defaults.VK_THREAD_ITEMS_COUNT,
) -> dict[str, ParamValue]:
    """Top-level page (``comment_id`` None) or a page of one thread's replies.

    ``preview_length=0`` because VK truncates text to 90 characters by default; ``need_likes=1``
    because likes are absent otherwise; ``extended=1`` for author names. ``start_comment_id``
    anchors a page on a comment already seen, so deletions before it cannot shift the page.
    """
    return {
        "owner_id": owner_id_for_group(group_id),
        "post_id": post_id,
        "count": count,
        "sort": "asc",
        "preview_length": 0,
        "need_likes": 1,
        "extended": 1,
        "comment_id": comment_id,
        "start_comment_id": start_comment_id,
        # Inline replies only make sense on the top level.
        "thread_items_count": thread_items_count if comment_id is None else None,
    }


def groups_get_by_id_params(refs: Sequence[int | str]) -> dict[str, ParamValue]:
    return {"group_ids": [str(r) for r in refs], "fields": "wall,fixed_post,members_count"}
