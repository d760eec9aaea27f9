"""Speed and memory of ``python -m vkscraper export``: is memory flat as the rows grow?

    python -m benchmarks.bench_export [--sizes 50000,200000] [--posts 200] [--url URL]
                                      [--no-analyze]

Fills one task with ``--posts`` posts and, step by step, comments up to each of ``--sizes``
(text of ~150 characters, Cyrillic and emoji), and after each step runs the export as a
subprocess to a file, once per format (``jsonl``; ``csv`` with ``--kind comments``). For each
run it reports rows/s and the subprocess's peak RSS (``os.wait4`` → ``ru_maxrss``). The first
line is a baseline: ``task show`` of the same task (interpreter, imports, one query). Streamed
export means the peak RSS stays near the baseline and does not grow with the rows.

After each fill step the database is ``ANALYZE``d, as autovacuum does shortly after a bulk
load. ``--no-analyze`` measures an export right after the load instead: PostgreSQL then has
no statistics for the new rows and may plan each page as "join all the task's remaining
comments, sort, take 1000", which makes the export time grow with the square of the rows.

Without ``--url`` it uses a temporary PostgreSQL database on ``VK_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), dropped afterwards; with ``--url`` that
database as is (the rows it writes stay there).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2

from testkit.pg import temporary_database
from vkscraper.exceptions import StoreError
from vkscraper.items import VkComment, VkPost
from vkscraper.store import Store, open_store
from vkscraper.store.backends import sqlite_path

PG_ADMIN_URL = os.environ.get("VK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REPO = Path(__file__).resolve().parents[1]
BATCH = 1000
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def add_posts(store: Store, task: int, posts: int) -> None:
    store.upsert_posts(
        task,
        [
            VkPost(vk_post_id=i, owner_id=-1, group_id=1, text=f"пост {i} 📰", date=BASE)
            for i in range(1, posts + 1)
        ],
    )


def add_comments(store: Store, task: int, start: int, stop: int, posts: int) -> None:
    for first in range(start, stop, BATCH):
        store.upsert_comments(
            task,
            [
                VkComment(
                    vk_comment_id=i,
                    post_vk_id=1 + i % posts,
                    owner_id=-1,
                    parent_id=None if i % 3 else i - 1,
                    thread_count=i % 4,
                    author_id=1000 + i,
                    author_name=f"Автор {i} 😀",
                    text=f"комментарий {i}, «цитата»\n" + "текст 👍 " * 15,
                    date=BASE + timedelta(seconds=i),
                    likes=i % 100,
                )
                for i in range(first, min(first + BATCH, stop))
            ],
        )


def analyze(url: str) -> None:
    """Refresh the planner's statistics, as autovacuum would after a bulk load."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(url))
        try:
            conn.execute("ANALYZE")
        finally:
            conn.close()
        return
    pg = psycopg2.connect(url)
    try:
        pg.autocommit = True
        with pg.cursor() as cur:
            cur.execute("ANALYZE")
    finally:
        pg.close()


def measure(url: str, args: list[str]) -> tuple[float, int]:
    """Run ``python -m vkscraper --database-url URL *args``; (seconds, peak RSS in KiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vkscraper", "--database-url", url, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"bench_export: {' '.join(args)} exited {proc.returncode}: {err}")
    return elapsed, usage.ru_maxrss  # KiB on Linux


def bench(url: str, sizes: list[int], posts: int, fresh: bool) -> None:
    with open_store(url) as store, tempfile.TemporaryDirectory() as tmp:
        store.migrate()
        task = store.create_task([1])
        add_posts(store, task, posts)
        _, rss = measure(url, ["task", "show", str(task)])
        stats = "no ANALYZE after loading" if fresh else "ANALYZE after loading"
        print(f"{store.backend}, one task with {posts} posts, {stats}")
        print(f"{'comments':>9}  format  seconds    rows/s   peak RSS  output")
        print(f"{'baseline':>9}  {'(task show)':<26}  {rss / 1024:>6.1f} MiB")
        stored = 0
        for size in sizes:
            add_comments(store, task, stored + 1, size + 1, posts)
            stored = size
            if not fresh:
                analyze(url)
            out = Path(tmp) / "export"
            for fmt, extra in (("jsonl", []), ("csv", ["--kind", "comments"])):
                rows = size + posts if fmt == "jsonl" else size
                elapsed, rss = measure(
                    url,
                    ["export", str(task), "--format", fmt, *extra, "--out", str(out)],
                )
                mib = out.stat().st_size / 2**20
                print(
                    f"{size:>9,}  {fmt:<6}  {elapsed:>7.2f}  {rows / elapsed:>8,.0f}  "
                    f"{rss / 1024:>5.1f} MiB  {mib:,.0f} MiB"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_export")
    parser.add_argument("--url", help="benchmark this database only")
    parser.add_argument("--sizes", default="50000,200000", help="comment counts, ascending")
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument(
        "--no-analyze", action="store_true", help="export right after loading, no statistics"
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes: comma-separated numbers")
    if sizes != sorted(sizes) or sizes[0] < 1 or args.posts < 1:
        parser.error("--sizes must be positive and ascending, --posts positive")
    try:
        if args.url:
            bench(args.url, sizes, args.posts, args.no_analyze)
            return 0
        with temporary_database(PG_ADMIN_URL, "vkbench") as pg_url:
            bench(pg_url, sizes, args.posts, args.no_analyze)
    except (StoreError, psycopg2.Error) as exc:
        print(f"bench_export: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
