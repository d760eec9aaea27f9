"""The list of communities to crawl.

A group known by id lives in ``groups``. One added by screen name has no id until the spider
asks VK (``groups.getById``), so it waits in ``pending_groups``; :func:`save_resolved_groups`
moves it into ``groups``. Screen names are stored lowercased, as :mod:`vkscraper.vk.grouprefs`
returns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vkscraper.items import VkGroup
from vkscraper.store.backends import Backend, clean_text
from vkscraper.vk.grouprefs import GroupRef


def _split(refs: Sequence[GroupRef]) -> tuple[list[int], list[str]]:
    ids = [r.group_id for r in refs if r.group_id is not None]
    names = [str(r.screen_name).lower() for r in refs if r.group_id is None]
    return list(dict.fromkeys(ids)), list(dict.fromkeys(names))


def add_groups(db: Backend, cur: Any, refs: Sequence[GroupRef]) -> None:
    """Add (or reactivate) groups; a name already resolved reactivates that group instead."""
    ids, names = _split(refs)
    if ids:
        cur.executemany(
            db.sql(
                "INSERT INTO groups (id, is_active, created_at, updated_at) "
                "VALUES (%s, true, {now}, {now}) "
                "ON CONFLICT (id) DO UPDATE SET is_active = true, inactive_reason = NULL, "
                "updated_at = excluded.updated_at"
            ),
            [(i,) for i in ids],
        )
    for name in names:
        cur.execute(
            db.sql(
                "UPDATE groups SET is_active = true, inactive_reason = NULL, updated_at = {now} "
                "WHERE lower(screen_name) = %s"
            ),
            (name,),
        )
        if cur.rowcount:
            continue
        cur.execute(
            db.sql(
                "INSERT INTO pending_groups (screen_name, is_active, created_at) "
                "VALUES (%s, true, {now}) "
                "ON CONFLICT (screen_name) DO UPDATE SET is_active = true, inactive_reason = NULL"
            ),
            (name,),
        )


class GroupsRemoved(int):
    """How many rows :func:`remove_groups` deleted — an ``int``, so callers that only count
    keep working — and ``not_found``: the references that matched no group, in input order."""

    not_found: tuple[GroupRef, ...]

    def __new__(cls, removed: int, not_found: Sequence[GroupRef] = ()) -> GroupsRemoved:
        self = super().__new__(cls, removed)
        self.not_found = tuple(not_found)
        return self


def _is_listed(db: Backend, cur: Any, ref: GroupRef) -> bool:
    """Whether ``ref`` names a row of ``groups`` or ``pending_groups``."""
    if ref.group_id is not None:
        cur.execute(db.sql("SELECT 1 FROM groups WHERE id = %s"), (ref.group_id,))
    else:
        name = str(ref.screen_name).lower()
        cur.execute(
            db.sql(
                "SELECT 1 FROM pending_groups WHERE screen_name = %s "
                "UNION ALL SELECT 1 FROM groups WHERE lower(screen_name) = %s"
            ),
            (name, name),
        )
    return cur.fetchone() is not None


def remove_groups(db: Backend, cur: Any, refs: Sequence[GroupRef]) -> GroupsRemoved:
    """Delete groups (by id, or by screen name whether resolved or not); return how many rows
    went, with the references that named no group.

    Every reference is looked up before anything is deleted, so one group named twice (by id
    and by its resolved name) is found by both.
    """
    not_found = [ref for ref in dict.fromkeys(refs) if not _is_listed(db, cur, ref)]
    ids, names = _split(refs)
    removed = 0
    for gid in ids:
        cur.execute(db.sql("DELETE FROM groups WHERE id = %s"), (gid,))
        removed += cur.rowcount
    for name in names:
        cur.execute(db.sql("DELETE FROM pending_groups WHERE screen_name = %s"), (name,))
        removed += cur.rowcount
        cur.execute(db.sql("DELETE FROM groups WHERE lower(screen_name) = %s"), (name,))
        removed += cur.rowcount
    return GroupsRemoved(removed, not_found)


def list_groups(db: Backend, cur: Any) -> list[dict[str, Any]]:
    """Resolved groups by id, then pending names; each dict has ``pending``."""
    cur.execute(
        "SELECT id, screen_name, name, is_active, created_at, updated_at, inactive_reason "
        "FROM groups ORDER BY id"
    )
    out = [
        {
            "id": row[0],
            "screen_name": row[1],
            "name": row[2],
            "is_active": bool(row[3]),
            "pending": False,
            "created_at": db.from_ts(row[4]),
            "updated_at": db.from_ts(row[5]),
            "inactive_reason": row[6],
        }
        for row in cur.fetchall()
    ]
    cur.execute(
        "SELECT screen_name, is_active, created_at, inactive_reason FROM pending_groups "
        "ORDER BY screen_name"
    )
    out += [
        {
            "id": None,
            "screen_name": row[0],
            "name": None,
            "is_active": bool(row[1]),
            "pending": True,
            "created_at": db.from_ts(row[2]),
            "updated_at": db.from_ts(row[2]),
            "inactive_reason": row[3],
        }
        for row in cur.fetchall()
    ]
    return out


def active_group_refs(db: Backend, cur: Any) -> list[GroupRef]:
    cur.execute("SELECT id FROM groups WHERE is_active ORDER BY id")
    refs = [GroupRef(group_id=row[0]) for row in cur.fetchall()]
    cur.execute("SELECT screen_name FROM pending_groups WHERE is_active ORDER BY screen_name")
    refs += [GroupRef(screen_name=row[0]) for row in cur.fetchall()]
    return refs


def save_resolved_groups(db: Backend, cur: Any, groups: Sequence[VkGroup]) -> None:
    """Upsert groups by id (keeping ``is_active`` of existing rows) and drop their pending names.

    A new row takes ``is_active`` from its pending name when there is one, else false: a group
    crawled with ``-a groups=`` is remembered (its name) but does not join the list that a
    plain ``scrapy crawl vk`` crawls; ``groups add`` does that.
    """
    rows = []
    for g in {g.id: g for g in groups}.values():
        name = (clean_text(g.screen_name) or "").lower() or None
        rows.append((g.id, name, clean_text(g.name), name))
    if not rows:
        return
    cur.executemany(
        db.sql(
            "INSERT INTO groups (id, screen_name, name, is_active, created_at, updated_at) "
            "VALUES (%s, %s, %s, COALESCE((SELECT is_active FROM pending_groups "
            "WHERE screen_name = %s), false), {now}, {now}) "
            "ON CONFLICT (id) DO UPDATE SET "
            "screen_name = COALESCE(excluded.screen_name, groups.screen_name), "
            "name = COALESCE(excluded.name, groups.name), updated_at = excluded.updated_at"
        ),
        rows,
    )
    names = [r[1] for r in rows if r[1]]
    if names:
        cur.executemany(
            db.sql("DELETE FROM pending_groups WHERE screen_name = %s"), [(n,) for n in names]
        )


def deactivate_groups(db: Backend, cur: Any, reasons: dict[GroupRef, str]) -> int:
    """Switch off groups of the list that VK reports unknown or deleted, saying why; returns
    how many rows changed (references not in the list change nothing)."""
    changed = 0
    for ref, reason in reasons.items():
        text = clean_text(reason)
        if ref.group_id is not None:
            cur.execute(
                db.sql(
                    "UPDATE groups SET is_active = false, inactive_reason = %s, "
                    "updated_at = {now} WHERE id = %s AND is_active"
                ),
                (text, ref.group_id),
            )
            changed += cur.rowcount
            continue
        name = str(ref.screen_name).lower()
        cur.execute(
            db.sql(
                "UPDATE pending_groups SET is_active = false, inactive_reason = %s "
                "WHERE screen_name = %s AND is_active"
            ),
            (text, name),
        )
        changed += cur.rowcount
    return changed
