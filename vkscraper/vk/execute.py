"""``execute`` batching, the pure part: the units of work, the VKScript that runs them, and the
mapping of its answer back to one result per call. Nothing Scrapy-specific.

A *unit* is the next call a target needs: a ``wall.get`` of one group (:class:`WallUnit`), or a
``wall.getComments`` cursor (:class:`CommentsUnit`): a post's top level or one thread,
positioned after the comments already read. One ``execute`` request carries up to 25 calls
(:data:`MAX_CALLS`) for any mix of units. A cursor is walked *inside* the script: each page
is anchored on the last comment of the page before (``start_comment_id``), as the plain
crawl does, so one request can read 25 pages of one big post, or first pages of 25 posts.

The script first makes one call per unit (wall.get of every group, then the next page of every
cursor), then spends the calls left on continuing the cursors in order. Whether a cursor goes
on is decided in the script by the plain crawl's rule (a full page, something new on it, and not
everything VK announced seen with an unchanged count); the spider replays every page with that
rule too and is the judge: a page the script read past the spider's end is ignored, and a
cursor the script stopped early continues in a later request.

Only integers are written into the code (ids, counts, anchors, formatted by ``int``), so no
input can change the script; nothing else is sent (the ``Args`` stay empty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from vkscraper.exceptions import VkApiError, VkError, VkMalformedResponse, api_error_for
from vkscraper.vk.api import owner_id_for_group

MAX_CALLS = 25  # API calls VK allows in one execute
# VK error codes that mean execute cannot be used here (28: the token type may not call it; 3:
# the method is unknown to this endpoint; 12: VK could not compile the script, which should
# never happen; 29: the daily quota of execute itself is spent). Plain calls go on.
REFUSED_CODES = frozenset({3, 12, 28, 29})
RUNTIME_ERROR = (
    13  # e.g. "Runtime error occurred during code invocation: response size is too big"
)


@dataclass(frozen=True)
class WallUnit:
    """``wall.get`` of a group: its newest posts."""

    group_id: int
    serial: int = 0  # the task's bookkeeping number (see tracking.GroupTracker)
    retries: int = 0  # inner transient errors so far

    method = "wall.get"

    @property
    def post_id(self) -> None:
        return None

    def estimate(self, page_size: int) -> int:
        return 1

    def describe(self) -> str:
        return f"wall.get {self.where()}"

    def where(self) -> str:
        """The target, as errors name it."""
        return f"group {self.group_id}"


@dataclass(frozen=True)
class CommentsUnit:
    """The next page of a post's top level (``comment_id`` None) or of one thread.

    ``anchor`` is the last comment read (None: from the beginning); ``seen`` the comments of
    this level read so far; ``first_level_count`` the level's count on its first page (None
    before it); ``hint`` how many comments the level may still hold, for planning only.
    """

    group_id: int
    post_id: int
    comment_id: int | None = None
    anchor: int | None = None
    seen: int = 0
    first_level_count: int | None = None
    hint: int = 0
    serial: int = 0
    retries: int = 0
    method = "wall.getComments"

    def estimate(self, page_size: int) -> int:
        """Calls this cursor probably needs (at least 1; ``hint`` may over-count)."""
        return max(1, math.ceil(self.hint / page_size))

    def describe(self) -> str:
        return f"wall.getComments {self.where()}"

    def where(self) -> str:
        """The target, as errors name it."""
        thread = f" thread {self.comment_id}" if self.comment_id else ""
        return f"group {self.group_id} post {self.post_id}{thread}"


Unit = WallUnit | CommentsUnit


@dataclass(frozen=True)
class PageParams:
    """The fixed parameters of every call, as the plain crawl sends them."""

    posts_per_group: int
    page_size: int
    thread_items: int


def build_script(units: list[Unit], params: PageParams, max_calls: int = MAX_CALLS) -> str:
    """The VKScript for ``units`` (walls first, then cursors), at most ``max_calls`` calls.

    It returns ``{"w": [wall answers], "c": [[pages of cursor i]], "e": [failed call refs]}``:
    a failed call is ``false`` in place and its unit's ref (``-1 - wall index`` or the cursor
    index) goes into ``e``, so the n-th ``execute_errors`` entry belongs to ``e[n]``.
    """
    if not 1 <= max_calls <= MAX_CALLS:
        raise ValueError(f"an execute makes 1 to {MAX_CALLS} calls, not {max_calls}")
    walls = [u for u in units if isinstance(u, WallUnit)]
    cursors = [u for u in units if isinstance(u, CommentsUnit)]
    w = ",".join(str(int(owner_id_for_group(u.group_id))) for u in walls)
    c = ",".join(
        f"[{owner_id_for_group(u.group_id):d},{u.post_id:d},{u.comment_id or 0:d},"
        f"{u.anchor or 0:d},{u.seen:d},{_or_minus_one(u.first_level_count):d}]"
        for u in cursors
    )
    page, inline, count = int(params.page_size), int(params.thread_items), params.posts_per_group
    # fmt: off
    return (
        f"var W=[{w}];var C=[{c}];var B={int(max_calls)};var n=0;var E=[];var out=[];var P=[];"
        "var S=[];var i=0;"
        "while(i<W.length&&n<B){var g=API.wall.get({\"owner_id\":W[i],"
        f"\"count\":{int(count) + 1}}});n=n+1;if(!g){{E.push(-1-i);}}out.push(g);i=i+1;}}"
        "i=0;while(i<C.length){P.push([]);S.push([C[i][3],C[i][4],C[i][5],1]);i=i+1;}"
        "var j=0;var deep=0;"
        "while(n<B&&j<C.length){var k=C[j];var s=S[j];"
        "if(s[3]){var q={\"owner_id\":k[0],\"post_id\":k[1],"
        f"\"count\":{page},\"sort\":\"asc\",\"preview_length\":0,\"need_likes\":1,"
        "\"extended\":1};"
        f"if(k[2]){{q.comment_id=k[2];}}else{{q.thread_items_count={inline};}}"
        "if(s[0]){q.start_comment_id=s[0];}"
        "var r=API.wall.getComments(q);n=n+1;P[j].push(r);s[3]=0;"
        "if(!r){E.push(j);}else{var m=r.items.length;var nw=m;"
        "if(s[0]&&m>0){if(r.items[0].id==s[0]){nw=m-1;}}"
        "s[1]=s[1]+nw;var lv=r.current_level_count;if(s[2]<0){s[2]=lv;}"
        f"if(m>={page}&&nw>0&&!(s[1]>=lv&&lv==s[2])){{s[0]=r.items[m-1].id;s[3]=1;}}}}}}"
        "if(deep){if(!s[3]){j=j+1;}}else{j=j+1;if(j==C.length){deep=1;j=0;}}}"
        "return {\"w\":out,\"c\":P,\"e\":E};"
    )
    # fmt: on


def _or_minus_one(value: int | None) -> int:
    return -1 if value is None else value


@dataclass
class UnitResult:
    """What the script got for one unit: its answers in call order (a page's data, or the
    :class:`VkApiError` of a failed call, which is always last), or nothing (not reached)."""

    unit: Unit
    answers: list[Any] = field(default_factory=list)


def map_answer(units: list[Unit], data: Any, execute_errors: Any) -> list[UnitResult]:
    """Split an execute answer into one :class:`UnitResult` per unit, in ``units``' order;
    raises :class:`VkMalformedResponse` when the answer does not fit the script."""
    walls = [u for u in units if isinstance(u, WallUnit)]
    cursors = [u for u in units if isinstance(u, CommentsUnit)]
    if not (
        isinstance(data, dict)
        and isinstance(data.get("w"), list)
        and isinstance(data.get("c"), list)
        and isinstance(data.get("e"), list)
        and len(data["w"]) <= len(walls)
        and len(data["c"]) == len(cursors)
        and all(isinstance(p, list) for p in data["c"])
    ):
        raise VkMalformedResponse("malformed VK response in execute: not the script's shape")
    errors = execute_errors if isinstance(execute_errors, list) else []
    refs = data["e"]
    if len(errors) != len(refs):
        raise VkMalformedResponse(
            f"malformed VK response in execute: {len(refs)} failed calls but "
            f"{len(errors)} execute_errors"
        )
    failures: dict[int, VkError] = {}
    for ref, entry in zip(refs, errors, strict=True):
        if not isinstance(ref, int) or not isinstance(entry, dict):
            raise VkMalformedResponse("malformed execute_errors entry")
        code, message = entry.get("error_code"), str(entry.get("error_msg") or "no message")
        method = str(entry.get("method") or "")
        error = (
            api_error_for(code, message, method)
            if isinstance(code, int)
            else VkMalformedResponse(f"malformed execute_errors entry in {method or 'execute'}")
        )
        failures[ref] = error  # a unit's calls stop at its first failure: one per ref

    results: dict[int, UnitResult] = {}
    for i, answer in enumerate(data["w"]):
        results[id(walls[i])] = UnitResult(walls[i], [_failed(answer, failures.get(-1 - i))])
    for i, pages in enumerate(data["c"]):
        answers = list(pages)
        if answers and answers[-1] is False:
            answers[-1] = _failed(False, failures.get(i))
        results[id(cursors[i])] = UnitResult(cursors[i], answers)
    return [results.get(id(u)) or UnitResult(u) for u in units]


def _failed(answer: Any, error: VkError | None) -> Any:
    if answer is not False:
        return answer
    return error or VkMalformedResponse("malformed VK response in execute: false, no error")


def retried(unit: Unit) -> Unit:
    return replace(unit, retries=unit.retries + 1)


def is_refusal(exc: VkError) -> bool:
    """The token may not use execute: go on with plain calls."""
    return isinstance(exc, VkApiError) and exc.code in REFUSED_CODES


def is_runtime_error(exc: VkError) -> bool:
    """Error 13: the answer would exceed VK's 5 MB, or the script failed on an answer it did
    not expect. Either way the batch is split, down to plain calls for a single unit."""
    return isinstance(exc, VkApiError) and exc.code == RUNTIME_ERROR


def is_too_big(exc: VkError) -> bool:
    return is_runtime_error(exc) and "size" in str(getattr(exc, "message", ""))
