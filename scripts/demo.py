"""`make demo`: the main job, offline.

Starts the VK emulator (rate limit enforced, 3 requests/s per token) with a small generated
dataset, runs `scrapy crawl vk` against it into the default store (DATABASE_URL, else the
SQLite file vkscraper.sqlite3 here) and prints the task's status and metrics plus the
request-rate figures the emulator measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vkscraper.testing.fakevk import generate_dataset  # noqa: E402
from vkscraper.testing.offline import crawl_offline, print_summary  # noqa: E402


def main() -> int:
    dataset = generate_dataset(seed=1, groups=3, posts_per_group=12, max_comments=25)
    print("Crawling 3 generated communities from the VK emulator at 3 requests/s …", flush=True)
    result = crawl_offline(dataset, rate_limit=3, workdir=Path.cwd())
    print_summary(result, limit=3)
    print(
        "\nThe generated data closes one post's comments on purpose: the task ends 'failed' "
        "with exactly that error, which is how per-target errors appear."
    )
    if result["exit_code"] != 0:
        print(result["crawl_log_tail"], file=sys.stderr)
    return result["exit_code"]


if __name__ == "__main__":
    raise SystemExit(main())
