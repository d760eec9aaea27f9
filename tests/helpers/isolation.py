"""What a unit test may not touch: PostgreSQL, Redis and child processes (the emulator, scrapyd,
a browser, the ``vkscraper`` command all run as one).

tests/conftest.py runs every test not marked ``integration`` inside :func:`servers_refused`, in
both tiers, so a test that needs a server and lacks the mark fails where it runs rather than
slowing down or breaking ``make test-fast``. SQLite files, in-process sockets and the Twisted
reactor stay allowed.
"""

from __future__ import annotations

import _posixsubprocess
import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import redis.asyncio.connection
import redis.connection


class ServerRefused(AssertionError):
    """A unit test reached for a server or a child process."""


def _refusing(what: str, seen: list[str]) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        seen.append(what)
        raise ServerRefused(f"{what} (mark the test `integration`)")

    return refuse


@contextlib.contextmanager
def servers_refused() -> Iterator[list[str]]:
    """Make PostgreSQL connections, Redis connections and process launches raise
    :class:`ServerRefused`; yields the list of what was refused (a component may catch the
    exception, the caller still fails the test)."""
    seen: list[str] = []
    patch = pytest.MonkeyPatch()
    try:
        # psycopg2.connect calls this module global: it covers every way of connecting.
        patch.setattr(psycopg2, "_connect", _refusing("a PostgreSQL connection", seen))
        for module in (redis.connection, redis.asyncio.connection):
            for cls in vars(module).values():
                if isinstance(cls, type) and "_connect" in vars(cls):
                    patch.setattr(cls, "_connect", _refusing("a Redis connection", seen))
        # Every subprocess (subprocess.run, asyncio's subprocesses, Playwright) ends here.
        patch.setattr(subprocess.Popen, "_execute_child", _refusing("a child process", seen))
        # multiprocessing's spawn and forkserver start their interpreter through this.
        patch.setattr(_posixsubprocess, "fork_exec", _refusing("a child process", seen))
        for name in ("system", "fork", "posix_spawn", "posix_spawnp"):
            patch.setattr(os, name, _refusing("a child process", seen))
        yield seen
    finally:
        patch.undo()
