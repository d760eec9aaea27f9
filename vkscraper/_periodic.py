"""Run a coroutine every few seconds, skipping a tick while the previous run still goes on.

Scrapy's looping call refuses coroutine functions, and starting a new run on every tick lets
runs pile up when each one waits on a slow or dead database (flushes, metrics refreshes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from scrapy.utils.asyncio import create_looping_call


class Periodic:
    def __init__(self, func: Callable[[], Coroutine[Any, Any, Any]], interval: float) -> None:
        self.func = func
        self.interval = interval
        self.skipped = 0
        self._running: asyncio.Task[Any] | None = None
        self._loop: Any = None

    def start(self) -> None:
        if self.interval > 0:
            self._loop = create_looping_call(self._tick)
            self._loop.start(self.interval, now=False)

    def _tick(self) -> None:
        if self._running is not None and not self._running.done():
            self.skipped += 1
            return
        self._running = asyncio.ensure_future(self.func())

    async def stop(self) -> None:
        """Stop ticking and wait for a run in progress."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._running is not None and not self._running.done():
            await asyncio.wait([self._running])
