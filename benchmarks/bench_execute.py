"""Execute benchmark: `scrapy crawl vk` in execute mode against the emulator enforcing 3/s.

    python -m benchmarks.bench_execute [--shape heavy|small|huge] [--plain] [--postgres]
                                       [--rate-limit N]   (0: no limit, to measure ingest)
                                       [--tokens N] [--tree DIR] [--json FILE] [--profile FILE]

``heavy``: 3 groups × 10 posts with ~31,000 comments and replies (posts of 2,400 and 1,200
top-level comments, threads of 100-400 replies). ``small``: 200 groups of 10 posts with at
most 40 top-level comments and branches of up to 10 replies each. ``huge``: one post with
100,000 comments and replies (the memory check: peak RSS under 300 MB).

Prints what bench_crawl prints, plus the fewest requests the dataset needs with 25 calls per
execute, comments/s and groups/s (over the crawl's requests and over the whole process,
start-up included), the crawler's CPU time per comment, the share of the rate limit used
between the first and the last request, and the longest pause without a request.

``--tokens N``: a pool of N tokens, each held to the limit by the emulator. ``--tree DIR``:
crawl with the ``vkscraper`` package of another checkout (the harness stays this one; see
benchmarks.side_by_side). ``--json FILE``: the figures as JSON too. ``--profile FILE``: the
crawl process under cProfile (summarise with ``python -m benchmarks.profile_groups FILE``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import vkscraper
from fakevk import generate_dataset, heavy_dataset
from testkit.offline import crawl_offline, minimum_requests, print_summary
from testkit.pg import temporary_database

PG_ADMIN_URL = os.environ.get("VK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HUGE_RSS_LIMIT_MB = 300


def dataset_for(shape: str, scale: float) -> dict[str, Any]:
    if shape == "heavy":
        return heavy_dataset(seed=7, groups=3)
    if shape == "huge":
        dataset = heavy_dataset(seed=7, groups=1, scale=0)
        big = heavy_dataset(seed=8, groups=1, scale=scale)["groups"][0]["posts"][-2]
        dataset["groups"][0]["posts"][-2]["comments"] = big["comments"]
        return dataset
    dataset = generate_dataset(
        seed=11, groups=200, posts_per_group=10, max_comments=40, max_replies=10,
        author_groups=0,
    )  # fmt: skip
    for group in dataset["groups"]:  # a clean run: no post with comments closed
        for post in group["posts"]:
            post["comments_closed"] = False
    return dataset


def empty_dataset() -> dict[str, Any]:
    """One group of 10 posts without comments: what a crawl costs before its first comment
    (interpreter, imports, Scrapy's start, the store, the task)."""
    dataset = heavy_dataset(seed=7, groups=1, scale=0)
    for post in dataset["groups"][0]["posts"]:
        post["comments"] = []
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["heavy", "small", "huge"], default="heavy")
    parser.add_argument("--scale", type=float, default=28, help="huge: 28 is ~120,000 comments")
    parser.add_argument("--plain", action="store_true", help="VK_EXECUTE=False, to compare")
    parser.add_argument("--rate-limit", type=int, default=3, help="per token; 0: none")
    parser.add_argument("--tokens", type=int, default=1, help="a pool of this many tokens")
    parser.add_argument("--postgres", action="store_true", help="a temporary PostgreSQL database")
    parser.add_argument("--tree", type=Path, default=Path.cwd(), help="the checkout to crawl with")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--profile", type=Path, help="cProfile stats of the crawl process")
    parser.add_argument(
        "--no-startup", action="store_true", help="skip the empty crawl that measures start-up"
    )
    args = parser.parse_args()
    dataset = dataset_for(args.shape, args.scale)
    settings = {"VK_REQUESTS_PER_SECOND": str(args.rate_limit or 1000)}
    if args.plain:
        settings["VK_EXECUTE"] = "False"
    with ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(temporary_database(PG_ADMIN_URL, "vkbench"))
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        result = crawl_offline(
            dataset, rate_limit=args.rate_limit, database_url=url, workdir=args.tree,
            extra_settings=settings, tokens=args.tokens, profile=args.profile,
        )  # fmt: skip
        startup = None
        if not args.no_startup:
            # Same tree, database kind and settings; a database of its own.
            if args.postgres:
                url = stack.enter_context(temporary_database(PG_ADMIN_URL, "vkbench"))
            else:
                url = f"sqlite:///{Path(tmp) / 'startup.sqlite3'}"
            startup = crawl_offline(
                empty_dataset(), rate_limit=0, database_url=url, workdir=args.tree,
                extra_settings={**settings, "VK_REQUESTS_PER_SECOND": "1000"},
                tokens=args.tokens,
            )["crawler_cpu_seconds"]  # fmt: skip
    print_summary(result, limit=args.rate_limit * args.tokens, json_line=False)
    print(f"harness package         {vkscraper.__file__}")
    if args.tokens > 1:
        for tag, figures in result["per_token"].items():
            print(f"token {tag}          {figures['requests']} requests, "
                  f"max {figures['max_in_any_1s_window']} in any 1 s, "
                  f"longest gap {figures['longest_gap_seconds']:.2f} s")  # fmt: skip
    calls = minimum_requests(dataset) - 1  # every call but groups.getById
    fewest = 1 + math.ceil(calls / 25)
    print(f"minimum with execute    {fewest} (groups.getById + {calls} calls / 25)")
    span, wall = result["span_seconds"], result["wall_seconds"]
    comments, groups = result["expected_comments"], result["expected_groups"]
    result["comments_per_second"] = comments / span if span else 0.0
    result["comments_per_second_process"] = comments / wall
    print(f"comments/s              {result['comments_per_second']:.0f} over the requests "
          f"({span:.1f} s), {comments / wall:.0f} over the process")  # fmt: skip
    cpu = result["crawler_cpu_seconds"]
    print(f"one core could take     {comments / cpu:.0f} comments/s (the crawler's CPU time, "
          "start-up included)")  # fmt: skip
    if startup is not None:
        beyond = max(0.0, cpu - startup) / comments * 1e6 if comments else 0.0
        result["startup_cpu_seconds"] = startup
        result["cpu_us_per_comment_beyond_startup"] = beyond
        print(f"start-up CPU            {startup:.2f} s (a crawl of 10 posts, no comments); "
              f"{beyond:.0f} µs per comment beyond it")  # fmt: skip
    print(f"groups/s                {groups / span if span else 0.0:.2f} over the requests, "
          f"{groups / wall:.2f} over the process")  # fmt: skip
    if args.shape == "huge":
        ok = "ok" if result["peak_rss_mb"] < HUGE_RSS_LIMIT_MB else "OVER"
        print(f"peak RSS check          {result['peak_rss_mb']:.0f} MB "
              f"(< {HUGE_RSS_LIMIT_MB} MB: {ok})")  # fmt: skip
    if args.json:
        hidden = ("task_show", "crawl_log_tail")
        figures = {k: v for k, v in result.items() if k not in hidden}
        args.json.write_text(json.dumps({"args": _plain_args(args), **figures}, indent=1))


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


if __name__ == "__main__":
    main()
