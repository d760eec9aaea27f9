"""Throughput of ``Store.upsert_comments``: fresh inserts, then the same rows as updates.

    python -m benchmarks.bench_upsert [--url URL] [--rows 10000] [--batch 500]

Without ``--url`` it measures both backends: PostgreSQL in a temporary database created on
``VK_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped
afterwards, and SQLite in a temporary file. With ``--url`` it uses that database as is
(the rows it writes stay there).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2

from testkit.pg import temporary_database
from vkscraper.exceptions import StoreError
from vkscraper.items import VkComment
from vkscraper.store import open_store

PG_ADMIN_URL = os.environ.get("VK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def make_comments(rows: int, round_: int) -> list[VkComment]:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        VkComment(
            vk_comment_id=i,
            post_vk_id=i // 50,
            owner_id=-(1 + i % 20),
            parent_id=None if i % 3 else i - 1,
            thread_count=i % 4,
            author_id=1000 + i,
            author_name=f"Author {i} 😀",
            text=f"comment {i} round {round_} " + "текст " * 20,
            date=base + timedelta(seconds=i),
            likes=i % 100 + round_,
        )
        for i in range(rows)
    ]


def bench(url: str, rows: int, batch: int) -> list[tuple[str, float, str]]:
    results = []
    with open_store(url) as store:
        store.migrate()
        task = store.create_task([1])
        for round_, label in ((0, "insert"), (1, "update")):
            comments = make_comments(rows, round_)
            start = time.perf_counter()
            counts = [0, 0]
            for i in range(0, rows, batch):
                result = store.upsert_comments(task, comments[i : i + batch])
                counts[0] += result.inserted
                counts[1] += result.updated
            elapsed = time.perf_counter() - start
            results.append((label, rows / elapsed, f"inserted={counts[0]} updated={counts[1]}"))
    return results


def report(name: str, url: str, rows: int, batch: int) -> None:
    for label, rate, detail in bench(url, rows, batch):
        print(f"{name:<10} {label:<6} {rows} rows, batch {batch}: {rate:>9,.0f} rows/s ({detail})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_upsert")
    parser.add_argument("--url", help="benchmark this database only")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.batch < 1:
        parser.error("--rows and --batch must be positive")
    try:
        if args.url:
            report(args.url.split(":", 1)[0], args.url, args.rows, args.batch)
            return 0
        with temporary_database(PG_ADMIN_URL, "vkbench") as pg_url:
            report("postgresql", pg_url, args.rows, args.batch)
        with tempfile.TemporaryDirectory() as tmp:
            report("sqlite", f"sqlite:///{Path(tmp) / 'bench.sqlite3'}", args.rows, args.batch)
    except (StoreError, psycopg2.Error) as exc:
        print(f"bench_upsert: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
