"""Where the database and Redis are: one rule for every entry point (``scrapy crawl``,
``python -m vkscraper`` and its workers, scrapyd's jobs and its service, the rate limit).

Highest first:

1. the value given for this run: ``-s DATABASE_URL=…`` / ``-s REDIS_URL=…`` (a crawl, a
   worker), ``--database-url`` (``python -m vkscraper``);
2. the environment: ``DATABASE_URL``, ``REDIS_URL`` (where the process runs, as usual for
   services; scrapyd refuses them as a task's ``setting=``);
3. for the database only, the SQLite file ``vkscraper.sqlite3`` in the working directory.
   Without Redis, the modes that need it refuse to start.

The add-on resolves both into the crawl's settings, so ``scrapy settings --get DATABASE_URL``
shows what the crawl uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_SQLITE_FILE = "vkscraper.sqlite3"


def database_url(given: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The database to use: ``given``, else ``DATABASE_URL`` in the environment, else the
    SQLite file in the working directory."""
    env = os.environ if environ is None else environ
    return given or env.get("DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_FILE}"


def redis_url(given: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The Redis to use: ``given``, else ``REDIS_URL`` in the environment, else None."""
    env = os.environ if environ is None else environ
    return given or env.get("REDIS_URL") or None
