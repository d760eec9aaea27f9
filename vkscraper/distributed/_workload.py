"""The work a worker's crawl of a task has on hand, in VK calls: whether it takes another group
(worker mode; asked by :class:`~vkscraper.distributed.extension.VkDistributed`).

One process packs ``VK_EXECUTE_CALLS`` calls into nearly every ``execute`` because it holds
every group of its task. A worker holds only the groups it took, so it takes another while
what it has on hand would not fill its next requests. On hand:

* the calls waiting in the spider's planner (by their estimates);
* the calls of the requests under way: from the moment they are scheduled until the callback
  that handles their answer is over, when the units that answer leads to are in the planner
  (an execute's units, one plain call, or an entry taken: its ``wall.get`` to come);
* for every ``wall.get`` among these, ``VK_POSTS_PER_GROUP`` calls more: the first comment
  pages of the group's posts, which its answer brings.

A worker takes another group while that is below :data:`TARGET_REQUESTS` requests' worth of
calls (``VK_EXECUTE_CALLS`` each with execute, one each with plain calls). Counting a group
whose posts are not known yet at what it will bring is what keeps a worker from hoarding: it
takes a few groups, then none until their calls are spent, and the rest of the task waits in
Redis for whichever worker runs short first.

A request is followed by a weak reference: it counts as long as it lives (Scrapy holds it
until its answer is handled), and one that ends where no signal says so (a downloader
middleware's ``IgnoreRequest``) leaves with its object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from scrapy import signals

from vkscraper.vk.execute import MAX_CALLS, WallUnit

if TYPE_CHECKING:
    from collections.abc import Collection

    from scrapy import Request
    from scrapy.crawler import Crawler

# Requests' worth of calls a worker keeps on hand: the two the spider keeps under way
# (vkscraper.spiders.vk.MIN_IN_FLIGHT), those waiting for the token's slot behind the other
# workers' and what the groups just taken bring. On 200 small groups, one token, 2 and 4
# workers (benchmarks/bench_worker_packing.py): 4 made ~1.2 times one process's requests,
# 8 ~1.13, 12 1.03 to 1.08; 16 no fewer, with more groups held.
TARGET_REQUESTS = 12


class Workload:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.posts_per_group = crawler.settings.getint("VK_POSTS_PER_GROUP")
        self.page_size = crawler.settings.getint("VK_COMMENTS_PAGE_SIZE")
        # request -> (its calls, of which wall.get)
        self._under_way: WeakKeyDictionary[Request, tuple[int, int]] = WeakKeyDictionary()
        crawler.signals.connect(self._scheduled, signal=signals.request_scheduled)
        crawler.signals.connect(self._dropped, signal=signals.request_dropped)

    def room(self, held: Collection[int]) -> bool:
        """Another group would be welcome (``held``: the groups this crawl holds). Always when
        it holds none: nothing of the task can be on hand then, whatever is still counted, so
        a worker never stops taking for good."""
        if not held:
            return True
        spider = self.crawler.spider
        per_request = spider.planner.max_calls if spider.use_execute else 1  # type: ignore[union-attr]
        return self.on_hand() < TARGET_REQUESTS * per_request

    def on_hand(self) -> int:
        """The calls on hand (see the module docstring)."""
        calls, walls = self.crawler.spider.planner.pending()  # type: ignore[union-attr]
        for request_calls, request_walls in list(self._under_way.values()):
            calls += request_calls
            walls += request_walls
        return calls + walls * self.posts_per_group

    def taken(self, entry: Request) -> None:
        """A group's entry was taken: its wall.get is to come."""
        self._under_way[entry] = (1, 1)

    def _scheduled(self, request: Request) -> None:
        method = request.meta.get("vk_method")
        if method == "execute":
            units = request.cb_kwargs.get("units", ())
            estimate = sum(unit.estimate(self.page_size) for unit in units)
            calls = min(estimate, request.meta.get("vk_calls", MAX_CALLS))
            self._under_way[request] = (calls, sum(isinstance(u, WallUnit) for u in units))
        elif method in ("wall.get", "wall.getComments"):
            self._under_way[request] = (1, int(method == "wall.get"))
        # else: an entry (counted when taken) or groups.getById

    def _dropped(self, request: Request) -> None:
        self._under_way.pop(request, None)
