"""The execute planner: units waiting for a request, packed into batches. Pure bookkeeping.

Units come in as callbacks discover them (a group's wall, a post's first page, a thread, a
cursor the last request did not finish) and leave in batches of up to ``max_calls`` calls. A
batch is *full* when its units probably need all its calls (by their estimates) or when it
holds one unit per call; the spider sends full batches at once and a partial one only when
fewer than a couple of requests are in flight, so a request waiting for its slot is filled as
far as the crawl allows and the slot never idles for want of a request.

The call budget shrinks when VK refuses an answer as too big (error 13 at ``n`` calls: at most
``n // 2`` from then on) and follows the largest answer per call seen, so the next script stays
under VK's 5 MB.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from vkscraper.vk.execute import MAX_CALLS, Unit, WallUnit

ANSWER_LIMIT = 5 * 1024 * 1024  # VK's execute answer limit
SAFE_SHARE = 0.8  # of the limit an answer is planned to fill


class Planner:
    def __init__(self, page_size: int, max_calls: int = MAX_CALLS) -> None:
        self.page_size = page_size
        self.ceiling = max_calls  # lowered by error 13
        self.largest_call = 0  # bytes: the largest answer per call seen
        self._ready: deque[Unit] = deque()
        self._later: list[tuple[float, int, Unit]] = []  # (due, seq, unit): backing off
        self._seq = itertools.count()

    @property
    def max_calls(self) -> int:
        if self.largest_call:
            by_size = int(ANSWER_LIMIT * SAFE_SHARE // self.largest_call)
            return max(1, min(self.ceiling, by_size))
        return self.ceiling

    def add(self, unit: Unit, *, due: float = 0.0) -> None:
        if due:
            heapq.heappush(self._later, (due, next(self._seq), unit))
        else:
            self._ready.append(unit)

    def __len__(self) -> int:
        return len(self._ready) + len(self._later)

    def pending(self) -> tuple[int, int]:
        """(calls, of which ``wall.get``) the units here probably need, due or not: what a
        worker weighs before taking another group (:mod:`vkscraper.distributed._workload`)."""
        units = list(itertools.chain(self._ready, (u for _, _, u in self._later)))
        walls = sum(1 for u in units if isinstance(u, WallUnit))
        return sum(u.estimate(self.page_size) for u in units), walls

    def next_due(self) -> float | None:
        return self._later[0][0] if self._later else None

    def take(self, now: float, *, partial: bool) -> list[list[Unit]]:
        """Full batches of the units due by ``now``; with ``partial``, the rest as well."""
        while self._later and self._later[0][0] <= now:
            self._ready.append(heapq.heappop(self._later)[2])
        batches: list[list[Unit]] = []
        limit = self.max_calls
        while self._ready:
            batch: list[Unit] = []
            calls = walls = 0
            for unit in self._ready:
                # wall.get calls come first in the script and each takes exactly one call
                if (
                    len(batch) >= limit
                    or calls >= limit
                    or (isinstance(unit, WallUnit) and walls >= limit)
                ):
                    break
                batch.append(unit)
                calls += unit.estimate(self.page_size)
                walls += isinstance(unit, WallUnit)
            full = calls >= limit or len(batch) >= limit
            if not full and not partial:
                break
            for _ in batch:
                self._ready.popleft()
            batches.append(batch)
        return batches

    def drain(self) -> list[Unit]:
        """Every unit, due or not (the crawl goes on without execute)."""
        units = list(self._ready) + [u for _, _, u in sorted(self._later)]
        self._ready.clear()
        self._later.clear()
        return units

    def too_big(self, calls: int) -> None:
        """VK refused an answer of ``calls`` calls as too big."""
        self.ceiling = max(1, min(self.ceiling, calls // 2))

    def answered(self, size: int, calls: int) -> None:
        if calls:
            self.largest_call = max(self.largest_call, size // calls + 1)
