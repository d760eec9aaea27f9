"""Which requests and items of each group are still outstanding — pure bookkeeping.

A group is finished when every request made for it has an outcome (its callback ran to the
end, its errback ran, or the scheduler dropped it) and every item yielded for it has left the
item pipelines. Requests are counted when the spider builds them, so a request that something
silently discards before it reaches the scheduler (a spider middleware such as
``DepthMiddleware``) keeps its group open; :meth:`GroupTracker.causes` then names what happened.

Posts are tracked the same way, so that a post whose every comment page was read without an
error is known to be completely crawled (its vanished comments can then be marked deleted).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import count


@dataclass
class _Group:
    requests: int = 0
    items: int = 0
    failed: bool = False
    posts: Counter[int] = field(default_factory=Counter)  # post -> open requests
    failed_posts: set[int] = field(default_factory=set)
    finished: bool = False


class GroupTracker:
    def __init__(self) -> None:
        self._serials = count(1)
        self._groups: dict[int, _Group] = defaultdict(_Group)
        self._open: dict[int, tuple[int, int | None]] = {}  # serial -> (group, post)
        self._scheduled: set[int] = set()
        self._dropped: Counter[int] = Counter()  # group -> requests the scheduler refused

    # requests

    def add_request(self, group: int, post: int | None = None) -> int:
        """Count a request about to be yielded; returns its serial (put it in its meta)."""
        serial = next(self._serials)
        self._open[serial] = (group, post)
        g = self._groups[group]
        g.requests += 1
        if post is not None:
            g.posts[post] += 1
        return serial

    def add_post(self, group: int, post: int) -> None:
        """A post of the group: complete once its comment requests (if any) all succeed."""
        self._groups[group].posts[post] += 0

    def scheduled(self, serial: int) -> None:
        if serial in self._open:
            self._scheduled.add(serial)

    def dropped(self, serial: int) -> int | None:
        """The scheduler refused the request: it will never run. Returns its group."""
        if serial not in self._open:
            return None
        group, post = self._open[serial]
        self._dropped[group] += 1
        self.fail(group, post)
        self.request_done(serial)
        return group

    def request_done(self, serial: int) -> int | None:
        """The request's callback or errback finished. Returns its group (None if unknown
        or already done: a retried request keeps its serial and finishes once)."""
        entry = self._open.pop(serial, None)
        if entry is None:
            return None
        self._scheduled.discard(serial)
        group, post = entry
        g = self._groups[group]
        g.requests -= 1
        if post is not None:
            g.posts[post] -= 1
        return group

    def request_failed(self, serial: int) -> int | None:
        """The request ended without its data (an error, a crash in its callback)."""
        entry = self._open.get(serial)
        if entry is None:
            return None
        self.fail(*entry)
        return self.request_done(serial)

    # items

    def add_item(self, group: int) -> None:
        self._groups[group].items += 1

    def item_done(self, group: int) -> None:
        self._groups[group].items -= 1

    # outcome

    def fail(self, group: int, post: int | None = None) -> None:
        g = self._groups[group]
        g.failed = True
        if post is not None:
            g.failed_posts.add(post)

    def failed(self, group: int) -> bool:
        return self._groups[group].failed

    def settled(self, group: int) -> bool:
        """Nothing of the group is outstanding (and it has not been reported yet)."""
        g = self._groups.get(group)
        return g is not None and not g.finished and g.requests == 0 and g.items == 0

    def finish(self, group: int) -> None:
        self._groups[group].finished = True

    def restart(self, group: int) -> None:
        """The group is crawled again from its start (worker mode: a second entry for it,
        replayed after a worker was taken for dead). A finished group opens afresh, so it can
        finish again; one still being crawled stays as it is and settles once both crawls'
        requests and items are over."""
        g = self._groups.get(group)
        if g is not None and g.finished:
            self._groups[group] = _Group()
            self._dropped.pop(group, None)

    def open_groups(self) -> list[int]:
        """Groups being crawled now."""
        return sorted(gid for gid, g in self._groups.items() if not g.finished)

    def complete_posts(self, group: int) -> list[int]:
        """Posts of a settled group whose every request succeeded."""
        g = self._groups[group]
        return sorted(p for p, n in g.posts.items() if n == 0 and p not in g.failed_posts)

    def causes(self, group: int) -> list[str]:
        """Why a group is still open (for the task's error at close)."""
        g = self._groups.get(group)
        if g is None:
            return ["never started"]
        causes = []
        if self._dropped[group]:
            causes.append(f"{self._dropped[group]} request(s) dropped by the scheduler")
        mine = [s for s, (gid, _) in self._open.items() if gid == group]
        lost = [s for s in mine if s not in self._scheduled]
        if lost:
            causes.append(
                f"{len(lost)} request(s) never reached the scheduler (a spider middleware "
                "dropped them, e.g. DEPTH_LIMIT)"
            )
        if len(mine) > len(lost):
            causes.append(f"{len(mine) - len(lost)} request(s) still queued or downloading")
        if g.items:
            causes.append(f"{g.items} item(s) still in the item pipelines")
        return causes or ["unknown"]
