"""Connections and the few dialect differences between PostgreSQL (psycopg2) and SQLite.

Everything above this module writes SQL once, in psycopg2's style (``%s`` and ``%(name)s``
placeholders) with two tokens, ``{now}`` and ``{json}``; :meth:`Backend.sql` turns that into
what the driver in use understands. The differences that cannot be spelled the same (JSON
functions, ``RETURNING (xmax = 0)``) live next to their callers as two short statements.

Values cross the boundary through :meth:`Backend.ts` / :meth:`Backend.from_ts` (timezone-aware
UTC datetimes out, ``timestamptz`` or ISO-8601 UTC text in) and :meth:`Backend.from_json`.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from vkscraper.connections import DEFAULT_SQLITE_FILE
from vkscraper.exceptions import StoreError

logger = logging.getLogger(__name__)

# ON CONFLICT upserts need 3.24, json_insert(…, '$[#]', …) needs 3.31.
MIN_SQLITE = (3, 31)
# SQLite text timestamps all have this fixed width so that text order is time order.
_SQLITE_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_NAMED_PARAM = re.compile(r"%\((\w+)\)s")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for logs and error messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # e.g. a non-numeric port: never echo the raw URL
        return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of a driver message, or the exception's class name."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def utc(dt: datetime) -> datetime:
    """``dt`` as an aware UTC datetime; naive values are taken to be UTC already."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def clean_text(value: str | None) -> str | None:
    """Drop NUL characters: PostgreSQL rejects them in text and jsonb."""
    if value is None:
        return None
    return value.replace("\x00", "") if "\x00" in value else value


class Backend:
    """One database kind: how to connect, begin/commit, spell SQL and convert values."""

    name: ClassVar[str]
    label: ClassVar[str]
    supports_multiprocess: ClassVar[bool]
    driver_error: ClassVar[type[Exception]]
    # Replacements applied to every statement by :meth:`sql`.
    tokens: ClassVar[dict[str, str]]

    def __init__(self, url: str) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self._sql_cache: dict[str, str] = {}

    def sql(self, text: str) -> str:
        cached = self._sql_cache.get(text)
        if cached is None:
            cached = text
            for token, value in self.tokens.items():
                cached = cached.replace(token, value)
            cached = self._placeholders(cached)
            self._sql_cache[text] = cached
        return cached

    def _placeholders(self, text: str) -> str:
        return text

    def connect(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def transaction(self, conn: Any, *, write: bool) -> Iterator[Any]:
        raise NotImplementedError
        yield  # pragma: no cover

    def is_disconnect(self, exc: BaseException, conn: Any) -> bool:
        return False

    def close(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:  # closing a broken connection must never mask the real error
            logger.debug("closing the %s connection failed", self.label, exc_info=True)

    def where(self) -> str:
        """Where the data lives, without secrets, for messages."""
        return self.safe_url

    # value conversion -------------------------------------------------------------------
    def ts(self, dt: datetime | None) -> Any:
        raise NotImplementedError

    def from_ts(self, value: Any) -> datetime | None:
        raise NotImplementedError

    def from_json(self, value: Any) -> Any:
        return value

    def json(self, value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)


class PostgresBackend(Backend):
    name = "postgresql"
    label = "PostgreSQL"
    supports_multiprocess = True
    driver_error = psycopg2.Error
    tokens: ClassVar[dict[str, str]] = {"{now}": "now()", "{json}": "CAST(%s AS jsonb)"}

    def where(self) -> str:
        try:
            params = psycopg2.extensions.parse_dsn(self.url)
        except psycopg2.Error:
            return self.safe_url
        host = params.get("host", "localhost")
        port = params.get("port", "5432")
        return f"{host}:{port}/{params.get('dbname', params.get('user', ''))}"

    def connect(self) -> Any:
        try:
            params = psycopg2.extensions.parse_dsn(self.url)
        except psycopg2.Error as exc:
            raise StoreError(
                f"PostgreSQL: invalid DATABASE_URL {self.safe_url}: {first_line(exc)}"
            ) from None
        extra: dict[str, Any] = {"application_name": "vkscraper"}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = 10  # an unreachable host must not hang the crawl
        try:
            conn = psycopg2.connect(self.url, **extra)
            with conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
            conn.commit()
        except psycopg2.Error as exc:
            raise StoreError(
                f"PostgreSQL at {self.where()}: cannot connect: {first_line(exc)}"
            ) from None
        return conn

    @contextmanager
    def transaction(self, conn: Any, *, write: bool) -> Iterator[Any]:
        # psycopg2 opens the transaction on the first statement; commit/rollback end it.
        cur = conn.cursor()
        try:
            yield cur
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        finally:
            if not cur.closed and not conn.closed:
                cur.close()

    def is_disconnect(self, exc: BaseException, conn: Any) -> bool:
        return isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError) and bool(
            conn.closed
        )

    def execute_values(
        self, cur: Any, sql: str, rows: list[tuple[Any, ...]], template: str
    ) -> list[tuple[Any, ...]]:
        """One multi-row statement for the whole batch (page_size = batch size)."""
        return psycopg2.extras.execute_values(
            cur, sql, rows, template=template, page_size=max(len(rows), 1), fetch=True
        )

    def ts(self, dt: datetime | None) -> datetime | None:
        return None if dt is None else utc(dt)

    def from_ts(self, value: Any) -> datetime | None:
        return None if value is None else utc(value)


class SqliteBackend(Backend):
    name = "sqlite"
    label = "SQLite"
    supports_multiprocess = False
    driver_error = sqlite3.Error
    tokens: ClassVar[dict[str, str]] = {"{now}": "vk_now()", "{json}": "json(%s)"}

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path = sqlite_path(url)
        self._tx_now: str | None = None

    def _now(self) -> str:
        # Like PostgreSQL's now(): one timestamp for the whole transaction.
        return self._tx_now or _sqlite_now()

    def where(self) -> str:
        return self.path

    def _placeholders(self, text: str) -> str:
        return _NAMED_PARAM.sub(r":\1", text).replace("%s", "?")

    def connect(self) -> Any:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old: vkscraper needs "
                f"{'.'.join(map(str, MIN_SQLITE))}+ (upsert, JSON functions); use PostgreSQL"
            )
        try:
            if self.path != ":memory:":
                parent = Path(self.path).parent
                if not parent.is_dir():
                    raise StoreError(
                        f"SQLite at {self.path}: cannot open: directory {parent} does not exist"
                    )
            # One connection shared by threads under the Store's lock; we BEGIN ourselves.
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.create_function("vk_now", 0, self._now)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            try:
                # WAL lets `task show` read while a crawl writes; not all filesystems allow it.
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                logger.debug("SQLite WAL mode unavailable: %s", exc)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite at {self.path}: cannot open: {first_line(exc)}") from None
        return conn

    @contextmanager
    def transaction(self, conn: Any, *, write: bool) -> Iterator[Any]:
        # IMMEDIATE takes the write lock up front, so read-then-write statements in one
        # transaction never fail half-way with SQLITE_BUSY.
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        self._tx_now = _sqlite_now()
        cur = conn.cursor()
        try:
            yield cur
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            cur.close()
            self._tx_now = None

    def ts(self, dt: datetime | None) -> str | None:
        return None if dt is None else utc(dt).strftime(_SQLITE_TS_FORMAT)

    def from_ts(self, value: Any) -> datetime | None:
        if value is None:
            return None
        return utc(datetime.fromisoformat(value))

    def from_json(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


def _sqlite_now() -> str:
    return datetime.now(UTC).strftime(_SQLITE_TS_FORMAT)


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path`` → ``rel/path``; ``sqlite:////abs/path`` → ``/abs/path``."""
    rest = url[len("sqlite://") :]
    if not rest.startswith("/") or rest == "/":
        raise StoreError(
            f"SQLite: bad URL {redact_url(url)}: use sqlite:///relative/path or "
            "sqlite:////absolute/path"
        )
    path = unquote(rest[1:].split("?", 1)[0])
    return path or DEFAULT_SQLITE_FILE


def backend_for(url: str) -> Backend:
    """Pick the backend by URL scheme; an unknown scheme is a :class:`StoreError`."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return PostgresBackend(url)
    if scheme == "sqlite":
        return SqliteBackend(url)
    raise StoreError(
        f"unsupported DATABASE_URL {redact_url(url)!r}: use postgresql://user@host:5432/db "
        "or sqlite:///path/to/file.sqlite3"
    )
