"""Execute benchmark: `scrapy crawl vk` in execute mode against the emulator enforcing 3/s.

    python -m benchmarks.bench_execute [--shape heavy|small|huge] [--plain] [--postgres]
                                       [--rate-limit N]   (0: no limit, to measure ingest)

``heavy``: 3 groups × 10 posts with ~31,000 comments and replies (posts of 2,400 and 1,200
top-level comments, threads of 100-400 replies). ``small``: 200 groups of 10 posts with at
most 40 top-level comments and branches of up to 10 replies each. Prints what bench_crawl
prints, plus the fewest requests the dataset needs with 25 calls per execute, comments/s and
groups/s (over the crawl's requests and over the whole process, start-up included).
``huge``: one post with 100,000 comments and replies (the memory check: peak RSS).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

from vkscraper.testing.fakevk import generate_dataset, heavy_dataset
from vkscraper.testing.offline import crawl_offline, minimum_requests, print_summary
from vkscraper.testing.pg import temporary_database

PG_ADMIN_URL = os.environ.get("VK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["heavy", "small", "huge"], default="heavy")
    parser.add_argument("--scale", type=float, default=28, help="huge: 28 is ~120,000 comments")
    parser.add_argument("--plain", action="store_true", help="VK_EXECUTE=False, to compare")
    parser.add_argument("--rate-limit", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="a temporary PostgreSQL database")
    args = parser.parse_args()
    if args.shape == "heavy":
        dataset = heavy_dataset(seed=7, groups=3)
    elif args.shape == "huge":
        dataset = heavy_dataset(seed=7, groups=1, scale=0)
        big = heavy_dataset(seed=8, groups=1, scale=args.scale)["groups"][0]["posts"][-2]
        dataset["groups"][0]["posts"][-2]["comments"] = big["comments"]
    else:
        dataset = generate_dataset(
            seed=11, groups=200, posts_per_group=10, max_comments=40, max_replies=10,
            author_groups=0,
        )  # fmt: skip
        for group in dataset["groups"]:  # a clean run: no post with comments closed
            for post in group["posts"]:
                post["comments_closed"] = False
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
            dataset, rate_limit=args.rate_limit, database_url=url, workdir=Path.cwd(),
            extra_settings=settings,
        )  # fmt: skip
    print_summary(result, limit=args.rate_limit, json_line=False)
    calls = minimum_requests(dataset) - 1  # every call but groups.getById
    fewest = 1 + math.ceil(calls / 25)
    print(f"minimum with execute    {fewest} (groups.getById + {calls} calls / 25)")
    span = result["span_seconds"]
    comments, groups = result["expected_comments"], result["expected_groups"]
    print(f"comments/s              {comments / span:.0f} over the requests ({span:.1f} s), "
          f"{comments / result['wall_seconds']:.0f} over the process")  # fmt: skip
    cpu = result["crawler_cpu_seconds"]
    print(f"crawler CPU             {cpu:.1f} s, start-up included: it could take "
          f"{comments / cpu:.0f} comments/s on one core")  # fmt: skip
    print(f"groups/s                {groups / span:.2f} over the requests, "
          f"{groups / result['wall_seconds']:.2f} over the process")  # fmt: skip


if __name__ == "__main__":
    main()
