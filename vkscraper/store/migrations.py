"""Versioned schema migrations: ``sql/<backend>/NNNN_name.sql`` files applied in order.

Each applied file is recorded in ``schema_migrations(version, name, applied_at)``. All pending
files run in ONE transaction, so a failing file leaves the schema as it was. Several processes
may start at once (scrapyd jobs, scrapy-redis workers, the CLI): on PostgreSQL the transaction
first takes ``pg_advisory_xact_lock``; on SQLite the caller's ``BEGIN IMMEDIATE`` holds the
database write lock. Either way the second process waits, then finds nothing left to do.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from typing import Any

from vkscraper.store.backends import Backend

logger = logging.getLogger(__name__)

# An arbitrary constant that identifies "vkscraper migrations" among advisory locks.
ADVISORY_LOCK_KEY = 0x766B_7363_6D69_67  # "vkscmig"
_FILE_NAME = re.compile(r"(\d{4})_(\w+)\.sql")
_SQL_DIRS = {"postgresql": "postgres", "sqlite": "sqlite"}

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at {ts_type} NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def available(backend_name: str) -> list[Migration]:
    """The migrations shipped for one backend, in version order."""
    folder = resources.files("vkscraper.store").joinpath("sql", _SQL_DIRS[backend_name])
    found = []
    for entry in folder.iterdir():
        m = _FILE_NAME.fullmatch(entry.name)
        if m:
            found.append(Migration(m.group(1), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    return found


def apply(backend: Backend, cur: Any) -> list[str]:
    """Apply the pending migrations inside the caller's transaction; return their versions."""
    if backend.name == "postgresql":
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        cur.execute(_CREATE_TABLE.format(ts_type="timestamptz"))
    else:
        cur.execute(_CREATE_TABLE.format(ts_type="TEXT"))
    cur.execute("SELECT version FROM schema_migrations")
    done = {row[0] for row in cur.fetchall()}
    applied: list[str] = []
    for mig in available(backend.name):
        if mig.version in done:
            continue
        logger.info("applying migration %s_%s (%s)", mig.version, mig.name, backend.label)
        if backend.name == "postgresql":
            cur.execute(mig.sql)  # no parameters, so '%' in the file needs no escaping
        else:
            # executescript() would COMMIT first; run statement by statement instead.
            for statement in split_sqlite_script(mig.sql):
                cur.execute(statement)
        cur.execute(
            backend.sql(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, {now})"
            ),
            (mig.version, mig.name),
        )
        applied.append(mig.version)
    return applied


def split_sqlite_script(script: str) -> list[str]:
    """Split a script into complete statements (semicolons inside strings are respected)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if not buffer and line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
