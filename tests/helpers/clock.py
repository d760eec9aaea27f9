"""A clock for code that takes one (``clock=``, ``sleep=``): time moves only when someone waits
on it, so a test of waits and windows is exact and instant on any machine."""

from __future__ import annotations


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.start = self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    @property
    def elapsed(self) -> float:
        return self.now - self.start
