"""Throwaway PostgreSQL databases for tests and benchmarks (real server, no mocks)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg2


def database_url(admin_url: str, dbname: str) -> str:
    """``admin_url`` pointing at another database on the same server."""
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{dbname}"))


def admin_execute(admin_url: str, sql: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
    conn = psycopg2.connect(admin_url, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextmanager
def temporary_database(admin_url: str, prefix: str = "vktmp") -> Iterator[str]:
    """URL of a fresh, empty database, dropped (WITH FORCE) afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin_execute(admin_url, f"CREATE DATABASE {name}")
    try:
        yield database_url(admin_url, name)
    finally:
        admin_execute(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
