"""``python -m vkscraper export N``: a task's posts and comments as JSON lines or CSV.

The rows are those :meth:`Store.task_results` returns — the task's posts, and the comments
of those posts that its run saw — read in pages of :data:`PAGE_SIZE` by row id with a key
cursor (``after_id`` = the last id written) and written as they come, so memory stays flat
however many rows the task has. Each page is its own short read; a task still running is
exported as far as it is stored (the cursor never repeats nor skips a row it passed).

Formats (text is UTF-8, non-ASCII characters as they are):

* ``jsonl``: one JSON object per line, ``"kind": "post"`` or ``"comment"`` first, then the
  fields of :data:`FIELDS` in that order; posts first, then comments. U+2028 and U+2029 are
  written escaped (``\\u2028``) so that readers splitting on every Unicode line break
  (``str.splitlines``, JavaScript) still see one object per line.
* ``csv``: one kind per file, so ``--kind posts`` or ``--kind comments`` is required: a
  header row of :data:`FIELDS` of that kind, then one row per record; Excel dialect (RFC 4180:
  comma, fields with commas, quotes or line breaks quoted, rows end with CRLF), no BOM.
  NULL is an empty field, booleans are ``true``/``false``. A text cell starting with ``=``,
  ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'`` (OWASP's "CSV
  injection" advice): a spreadsheet would otherwise run a comment such as
  ``=HYPERLINK(…)`` as a formula. Numbers (``owner_id`` -1) are written as they are.

Timestamps are ISO 8601 in UTC with ``Z``: ``date`` and ``edited`` (VK's, whole seconds) as
``2024-05-01T12:00:00Z``, the database's own times (``created_at``, ``updated_at``,
``last_seen_at``, ``vanished_at``) with microseconds.

A row is stored once however many tasks saw it, so its ``task_id`` column names the last task
that wrote it, which may be a later one than the task exported: the exports call that field
``last_task_id`` so that a file of task 1 never reads as if its rows were task 2's. A comment's
``vanished_at`` is set once a later complete crawl of its post found it gone from VK (it is
then also ``deleted``); comments already gone when the task ended are not in its export.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from vkscraper.store import Store

Kind = Literal["posts", "comments"]
FORMATS = ("jsonl", "csv")
KINDS = ("posts", "comments", "all")
PAGE_SIZE = 1000

FIELDS: dict[Kind, tuple[str, ...]] = {
    "posts": (
        "id", "vk_post_id", "owner_id", "group_id", "date", "edited", "text", "likes",
        "reposts", "views", "comments_count", "is_pinned", "from_id", "signer_id",
        "last_task_id", "created_at", "updated_at",
    ),
    "comments": (
        "id", "vk_comment_id", "owner_id", "post_vk_id", "parent_id", "reply_to_comment",
        "reply_to_user", "thread_count", "author_id", "author_name", "date", "text", "likes",
        "deleted", "last_task_id", "created_at", "updated_at", "last_seen_at", "vanished_at",
    ),
}  # fmt: skip
_KIND_LABEL: dict[Kind, str] = {"posts": "post", "comments": "comment"}
# Timestamp columns and their precision: VK's own times are whole seconds.
_TIMESTAMPS = {
    "date": "seconds",
    "edited": "seconds",
    "created_at": "microseconds",
    "updated_at": "microseconds",
    "last_seen_at": "microseconds",
    "vanished_at": "microseconds",
}
_BOOLEANS = frozenset({"is_pinned", "deleted"})


@dataclass
class Exported:
    posts: int = 0
    comments: int = 0


def kinds_of(kind: str) -> tuple[Kind, ...]:
    return ("posts", "comments") if kind == "all" else (kind,)  # type: ignore[return-value]


def check_options(fmt: str, kind: str | None) -> str:
    """The kind to export (``all`` for JSON lines when not given); ``ValueError`` with the
    reason for a combination that cannot be written."""
    if fmt == "csv" and kind in (None, "all"):
        raise ValueError(
            "CSV holds one kind per file: pass --kind posts or --kind comments "
            "(or --format jsonl for both in one file)"
        )
    return kind or "all"


def iter_rows(
    store: Store, task_id: int, kind: Kind, page_size: int = PAGE_SIZE
) -> Iterator[dict[str, Any]]:
    """Every row of the task of one kind, in row-id order, one page in memory at a time."""
    after_id = 0
    while True:
        page = store.task_results(task_id, kind, limit=page_size, after_id=after_id)
        yield from page
        if len(page) < page_size:
            return
        after_id = page[-1]["id"]


def iso(column: str, value: datetime) -> str:
    """``2024-05-01T12:00:00Z``: UTC, with the column's precision."""
    offset = value.utcoffset()
    if offset is None:  # naive: UTC already, as the store takes it
        value = value.replace(tzinfo=UTC)
    elif offset:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec=_TIMESTAMPS.get(column, "auto")) + "Z"


def json_record(row: dict[str, Any], kind: Kind) -> dict[str, Any]:
    """A stored row as the JSON object of the exports and the task API: ``kind`` first,
    then :data:`FIELDS` in order, timestamps as :func:`iso`."""
    obj: dict[str, Any] = {"kind": _KIND_LABEL[kind]}
    for f in FIELDS[kind]:
        value = row[f]
        obj[f] = iso(f, value) if f in _TIMESTAMPS and value is not None else value
    return obj


def _json_rows(rows: Iterator[dict[str, Any]], kind: Kind) -> Iterator[str]:
    for row in rows:
        line = json.dumps(json_record(row, kind), ensure_ascii=False)
        if "\u2028" in line or "\u2029" in line:
            line = line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        yield line + "\n"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula


def csv_cell(value: Any) -> Any:
    """A text value made inert for spreadsheets (see the module docstring)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_rows(rows: Iterator[dict[str, Any]], kind: Kind) -> Iterator[list[Any]]:
    # csv writes None as an empty field already; booleans and times need spelling out.
    fields = FIELDS[kind]
    stamps = [(i, f) for i, f in enumerate(fields) if f in _TIMESTAMPS]
    flags = [i for i, f in enumerate(fields) if f in _BOOLEANS]
    for row in rows:
        values = [csv_cell(row[f]) for f in fields]
        for i, f in stamps:
            if values[i] is not None:
                values[i] = iso(f, values[i])
        for i in flags:
            values[i] = "true" if values[i] else "false"
        yield values


def export(
    store: Store,
    task_id: int,
    *,
    fmt: str,
    kind: str,
    out: TextIO,
    page_size: int = PAGE_SIZE,
) -> Exported:
    """Write the task's rows to ``out`` (opened with ``newline=""``); return the counts."""
    kind = check_options(fmt, kind)
    counts = Exported()
    for k in kinds_of(kind):
        rows = iter_rows(store, task_id, k, page_size)
        n = 0
        if fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(FIELDS[k])
            for values in _csv_rows(rows, k):
                writer.writerow(values)
                n += 1
        else:
            for line in _json_rows(rows, k):
                out.write(line)
                n += 1
        setattr(counts, k, n)
    return counts


def export_to(
    store: Store,
    task_id: int,
    *,
    fmt: str,
    kind: str,
    path: str | None,
    page_size: int = PAGE_SIZE,
) -> Exported:
    """:func:`export` to the file ``path`` or, when None, to stdout (as UTF-8 whatever the
    locale). A file is written as ``PATH.part`` and renamed when complete, so ``PATH`` never
    holds a partial export; an existing ``PATH`` is replaced."""
    if path is None:
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(encoding="utf-8", newline="")
        counts = export(store, task_id, fmt=fmt, kind=kind, out=sys.stdout, page_size=page_size)
        sys.stdout.flush()
        return counts
    target = Path(path)
    part = target.with_name(target.name + ".part")
    try:
        with open(part, "w", encoding="utf-8", newline="") as out:
            counts = export(store, task_id, fmt=fmt, kind=kind, out=out, page_size=page_size)
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return counts
