"""Storage for vkscraper: PostgreSQL in production, an SQLite file when nothing is configured.

``open_store()`` picks the backend from ``DATABASE_URL`` (``postgresql://…``/``postgres://…``
or ``sqlite:///path``; unset means ``sqlite:///vkscraper.sqlite3`` in the working directory)
and returns a thread-safe :class:`Store`. Call :meth:`Store.migrate` before first use.
"""

from __future__ import annotations

from vkscraper.store.content import UpsertResult
from vkscraper.store.core import Store, open_store
from vkscraper.store.schedules import Schedule, ScheduleRun
from vkscraper.store.tasks import Task

__all__ = ["Schedule", "ScheduleRun", "Store", "Task", "UpsertResult", "open_store"]
