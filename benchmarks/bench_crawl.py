"""Crawl benchmark: `scrapy crawl vk` against the emulator with the 3 requests/s limit on.

    python -m benchmarks.bench_crawl [--groups 6] [--tokens 1] [--plain]
                                     [--postgres | --database-url URL]

Prints requests, requests/s (and the share of the limit), the most requests seen in any
1-second window, error-6 answers, the minimum number of requests a plain crawl of the dataset
needs, comments stored per second, wall time and the crawler's peak RSS. The database is a
temporary SQLite file, a temporary PostgreSQL database on 127.0.0.1 with --postgres, or
--database-url.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

from fakevk import generate_dataset
from testkit.offline import crawl_offline, print_summary
from testkit.pg import temporary_database

PG_ADMIN_URL = os.environ.get("VK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=6)
    parser.add_argument("--max-comments", type=int, default=40)
    parser.add_argument("--rate-limit", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=1, help="a pool of this many tokens")
    parser.add_argument("--plain", action="store_true", help="VK_EXECUTE=False")
    parser.add_argument("--database-url")
    parser.add_argument(
        "--postgres", action="store_true", help="a temporary database on 127.0.0.1"
    )
    args = parser.parse_args()
    dataset = generate_dataset(
        seed=42, groups=args.groups, posts_per_group=12, max_comments=args.max_comments,
        big_post=True,
    )  # fmt: skip
    with ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(temporary_database(PG_ADMIN_URL, "vkbench"))
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        settings = {"VK_REQUESTS_PER_SECOND": str(args.rate_limit)}
        if args.plain:
            settings["VK_EXECUTE"] = "False"
        result = crawl_offline(
            dataset,
            rate_limit=args.rate_limit,
            database_url=url,
            workdir=Path.cwd(),
            extra_settings=settings,
            tokens=args.tokens,
        )
    print_summary(result, limit=args.rate_limit * args.tokens)
    for tag, figures in result["per_token"].items():
        print(f"token {tag}          {figures['requests']} requests, "
              f"{figures['requests_per_second']:.2f}/s, "
              f"max {figures['max_in_any_1s_window']} in any 1 s")  # fmt: skip
    print(f"comments/s              {result['expected_comments'] / result['wall_seconds']:.0f}")


if __name__ == "__main__":
    main()
