"""Summarise a cProfile of the crawl (``bench_execute --profile FILE``) by where the time goes.

    python -m benchmarks.profile_groups FILE [--top 30]

Prints the top functions by cumulative and by own time, each tagged with its group, then the
groups: ``self`` is the time spent in the group's own code, builtins and small stdlib helpers
(``isinstance``, ``abc``, ``inspect`` …) counted to the groups of their callers, so the groups
add up to 100%; ``inclusive`` the time from entering the group from outside it until it
returns, callees in other groups included (these overlap: the Scrapy per-item path includes
the pipelines that call normalization; "-" where re-entry makes the sum meaningless). Times
are wall clock: "idle" is the main thread waiting in epoll, and the shares are also given of
the busy time (the rest). FILE.threads, when there, is the pool threads' work (the store's
writes), summarised after.
"""

from __future__ import annotations

import argparse
import pstats
from collections import defaultdict
from pathlib import Path
from typing import Any

Func = tuple[str, int, str]

# First match wins: (group, substrings of the file name or of the C function's name).
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("idle (waiting in epoll)", ("'poll' of 'select.epoll'",)),
    ("normalization", ("vkscraper/vk/normalize.py", "vkscraper/pipelines/normalize.py")),
    (
        "database",
        ("psycopg2", "vkscraper/store/", "vkscraper/pipelines/store.py", "sqlite3"),
    ),
    (
        "tracking/bookkeeping",
        (
            "vkscraper/extensions/_tracking.py",
            "vkscraper/extensions/task.py",
            "vkscraper/pipelines/metrics.py",
            "vkscraper/signals.py",
        ),
    ),
    ("JSON decoding", ("json/decoder.py", "json/__init__.py:loads")),
    ("JSON encoding", ("json/encoder.py", "json/__init__.py:dumps", "_json.encode")),
    ("logging", ("logging/", "vkscraper/tokens/logscrub.py", "vkscraper/logformatter.py")),
    (
        "Scrapy per-item path",
        (
            "scrapy/core/scraper.py",
            "scrapy/core/spidermw.py",
            "scrapy/middleware.py",
            "scrapy/pipelines/",
            "scrapy/spidermiddlewares/",
            "scrapy/utils/defer.py",
            "scrapy/utils/signal.py",
            "scrapy/signalmanager.py",
            "scrapy/utils/asyncgen.py",
            "scrapy/utils/python.py",
            "scrapy/logformatter.py",
            "scrapy/item.py",
            "itemadapter/",
            "pydispatch/",
            "vkscraper/items.py",
        ),
    ),
    (
        "spider/requests",
        (
            "vkscraper/spiders/",
            "vkscraper/vk/execute.py",
            "vkscraper/vk/planner.py",
            "vkscraper/vk/api.py",
            "vkscraper/downloadermiddlewares/",
            "vkscraper/tokens/pool.py",
            "vkscraper/vk/backoff.py",
            "vkscraper/downloadhandlers/ratelimit.py",
        ),
    ),
    ("twisted/asyncio", ("twisted/", "asyncio/", "selectors.py", "zope/")),
    ("Scrapy other (engine, downloader, http)", ("scrapy/", "w3lib/", "parsel/", "lxml")),
    (
        "start-up (imports)",
        ("<frozen importlib", "importlib/", "pkg_resources", "marshal.loads", "_imp."),
    ),
]  # fmt: skip
OTHER = "other"
# Groups whose inclusive time is worth showing: the others re-enter themselves through
# callees of other groups (the event loop, imports), which cProfile's cumulative counts twice.
WHOLE = ("Scrapy per-item path", "normalization", "database", "tracking/bookkeeping",
         "JSON decoding", "JSON encoding", "logging", "spider/requests")  # fmt: skip
# Counted to their callers' groups: C functions (file "~") and stdlib helpers of no group.
HELPERS = ("<frozen abc>", "/inspect.py", "/typing.py", "/functools.py", "/enum.py",
           "/weakref.py", "/_weakrefset.py", "/contextlib.py", "/collections/", "/copy.py",
           "/dataclasses.py", "/re/", "/types.py")  # fmt: skip


def group_of(func: Func) -> str:
    filename, _, name = func
    where = f"{filename}:{name}" if filename != "~" else name
    for group, needles in GROUPS:
        if any(n in where for n in needles):
            return group
    return OTHER


def is_helper(func: Func) -> bool:
    return group_of(func) == OTHER and (func[0] == "~" or any(h in func[0] for h in HELPERS))


def attributed(stats: dict[Func, Any]) -> dict[str, float]:
    """Own time per group, a helper's own time shared among its callers' groups by the
    time spent in it on behalf of each caller (followed up through helpers calling
    helpers)."""
    memo: dict[Func, dict[str, float]] = {}

    def shares(func: Func, seen: frozenset[Func]) -> dict[str, float]:
        if func in memo:
            return memo[func]
        if not is_helper(func) or func in seen or func not in stats:
            return {group_of(func): 1.0}
        callers = stats[func][4]
        weights = {c: v[3] for c, v in callers.items()}
        total = sum(weights.values())
        if not total:
            return {OTHER: 1.0}
        out: dict[str, float] = defaultdict(float)
        for caller, weight in weights.items():
            for group, share in shares(caller, seen | {func}).items():
                out[group] += share * weight / total
        memo[func] = out
        return out

    own: dict[str, float] = defaultdict(float)
    for func, (_, _, tt, _, _) in stats.items():
        for group, share in shares(func, frozenset()).items():
            own[group] += tt * share
    return own


def label(func: Func) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    for marker in ("site-packages/", "lib/python3.11/", "/vkscraper/"):
        if marker in filename:
            prefix = "vkscraper/" if marker == "/vkscraper/" else ""
            filename = prefix + filename.split(marker, 1)[1]
            break
    return f"{filename}:{line}({name})"


def inclusive_by_group(stats: dict[Func, Any]) -> dict[str, float]:
    """Per group, the cumulative time of the calls into it from functions of other groups."""
    totals: dict[str, float] = defaultdict(float)
    for func, (_, _, _, _, callers) in stats.items():
        group = group_of(func)
        for caller, (_, _, _, ct) in callers.items():
            if group_of(caller) != group:
                totals[group] += ct
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    ps = pstats.Stats(args.file)
    stats: dict[Func, Any] = ps.stats  # type: ignore[attr-defined]
    total = ps.total_tt  # type: ignore[attr-defined]
    own = attributed(stats)
    idle = own.get(GROUPS[0][0], 0.0)
    busy = total - idle
    print(f"main thread: {total:.2f} s profiled (the profiler slows the crawl down), "
          f"{idle:.2f} s of it idle in epoll, {busy:.2f} s busy\n")  # fmt: skip
    for title, index in (("cumulative", 3), ("own time (tottime)", 2)):
        print(f"top {args.top} by {title} (% of the busy time):")
        print(
            f"{'cum s':>7} {'cum %':>6} {'own s':>7} {'own %':>6} {'calls':>9}  function [group]"
        )
        ranked = sorted(stats.items(), key=lambda kv: kv[1][index], reverse=True)
        for func, (_, nc, tt, ct, _) in ranked[: args.top]:
            print(f"{ct:7.2f} {100 * ct / busy:5.1f}% {tt:7.2f} {100 * tt / busy:5.1f}% "
                  f"{nc:9d}  {label(func)} [{group_of(func)}]")  # fmt: skip
        print()
    inclusive = inclusive_by_group(stats)
    print(f"{'group':42} {'self s':>7} {'% busy':>7} {'% all':>6} {'incl. s':>8} {'% busy':>7}")
    for group in sorted(own, key=own.__getitem__, reverse=True):
        inc = inclusive.get(group, 0.0)
        inc_cells = (f"{inc:8.2f} {100 * inc / busy:6.1f}%" if group in WHOLE
                     else f"{'-':>8} {'-':>7}")  # fmt: skip
        share_busy = "" if group == GROUPS[0][0] else f"{100 * own[group] / busy:6.1f}%"
        print(f"{group:42} {own[group]:7.2f} {share_busy:>7} {100 * own[group] / total:5.1f}% "
              f"{inc_cells}")  # fmt: skip
    threads_file = Path(f"{args.file}.threads")
    if threads_file.exists():
        summarise_threads(threads_file, args.top)


def summarise_threads(path: Path, top: int) -> None:
    ps = pstats.Stats(str(path))
    stats: dict[Func, Any] = ps.stats  # type: ignore[attr-defined]
    total = ps.total_tt  # type: ignore[attr-defined]
    print(f"\npool threads (work items only, wall clock): {total:.2f} s")
    print(f"{'cum s':>7} {'own s':>7} {'calls':>9}  function [group]")
    ranked = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)
    for func, (_, nc, tt, ct, _) in ranked[: top // 2]:
        print(f"{ct:7.2f} {tt:7.2f} {nc:9d}  {label(func)} [{group_of(func)}]")
    own = attributed(stats)
    for group in sorted(own, key=own.__getitem__, reverse=True):
        print(f"  {group:40} {own[group]:7.2f} s {100 * own[group] / total:5.1f}%")


if __name__ == "__main__":
    main()
