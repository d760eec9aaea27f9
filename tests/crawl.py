"""Run the vk spider in-process against the emulator and read back what it stored."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from scrapy import signals
from scrapy.crawler import AsyncCrawlerRunner, Crawler
from scrapy.settings import Settings

from vkscraper import signals as vk_signals
from vkscraper.items import VkPage
from vkscraper.spiders.vk import VkSpider
from vkscraper.store import open_store

TOKEN = "test-token-5f2b9c-0123456789"

# No waiting in tests: the emulator runs without rate enforcement here, backoff is zero.
# Plain calls, one per request, so tests can read each call in the emulator's log; the
# execute mode has its own tests (test_execute_crawl.py), which compare it with this one.
FAST = {
    "VK_EXECUTE": False,
    "VK_REQUESTS_PER_SECOND": 1000,
    "VK_BACKOFF_BASE": 0,
    "VK_METRICS_INTERVAL": 0.5,
    "VK_STORE_FLUSH_INTERVAL": 0.5,
    "LOG_LEVEL": "DEBUG",
}


def crawl_settings(api_url: str, database_url: str, **overrides: Any) -> Settings:
    settings = Settings()
    settings.setmodule("vkscraper.settings", priority="project")
    settings.update({**FAST, "VK_API_URL": api_url, "DATABASE_URL": database_url}, "cmdline")
    settings.update(overrides, "cmdline")
    return settings


async def run_crawl(
    api_url: str,
    database_url: str,
    *,
    settings: dict[str, Any] | None = None,
    after_items: tuple[int, Callable[[Crawler], Any]] | None = None,
    when: tuple[Callable[[Crawler], bool], Callable[[Crawler], Any]] | None = None,
    **spider_args: Any,
) -> Crawler:
    """Crawl in-process; ``after_items=(n, action)`` runs ``action(crawler)`` once ``n`` rows
    (posts and comments) are scraped (to interrupt the crawl or break the database mid-way);
    ``when=(test, action)`` runs it once ``test(crawler)`` holds after an item."""
    runner = AsyncCrawlerRunner(crawl_settings(api_url, database_url, **(settings or {})))
    crawler = runner.create_crawler(VkSpider)
    finished = _FINISHED.setdefault(crawler, [])
    crawler.signals.connect(
        lambda group: finished.append(group), signal=vk_signals.group_finished, weak=False
    )
    if when is not None:
        test, then = when
        fired: list[bool] = []

        def check(item: Any) -> None:
            if not fired and test(crawler):
                fired.append(True)
                then(crawler)

        crawler.signals.connect(check, signal=signals.item_scraped, weak=False)
    if after_items is not None:
        n, action = after_items
        seen = [0]

        def on_item(item: Any) -> None:
            # Rows, not pages: a page carries up to a few hundred of them.
            before = seen[0]
            seen[0] += len(item.rows) if isinstance(item, VkPage) else 1
            if before < n <= seen[0]:
                action(crawler)

        crawler.signals.connect(on_item, signal=signals.item_scraped, weak=False)
    await crawler.crawl_async(**spider_args)
    return crawler


_FINISHED: WeakKeyDictionary[Crawler, list[int]] = WeakKeyDictionary()


def finished_groups(crawler: Crawler) -> list[int]:
    """The groups a crawl started by :func:`run_crawl` has recorded as finished (done or
    failed) so far, in order: the task extension's ``group_finished`` signals."""
    return _FINISHED.get(crawler, [])


def rows_scraped(stats: Any) -> int:
    """Posts and comments through the pipelines (``item_scraped_count`` counts pages)."""
    return stats.get_value("vk/items/post", 0) + stats.get_value("vk/items/comment", 0)


def close_as(reason: str) -> Callable[[Crawler], Any]:
    """An ``after_items`` action closing the crawl with ``reason`` ("shutdown" is Ctrl-C)."""
    return lambda crawler: asyncio.ensure_future(crawler.engine.close_spider_async(reason=reason))


def stored_rows(database_url: str, task_id: int) -> tuple[list[dict], list[dict]]:
    """Every post and comment of a task, as the store returns them."""
    with open_store(database_url) as store:
        out = []
        for kind in ("posts", "comments"):
            rows: list[dict] = []
            after = 0
            while True:
                page = store.task_results(task_id, kind, limit=500, after_id=after)
                if not page:
                    break
                assert page[0]["id"] > after, "the results cursor repeated a row"
                rows.extend(page)
                after = page[-1]["id"]
            out.append(rows)
        return out[0], out[1]


POST_KEYS = (
    "owner_id", "vk_post_id", "group_id", "text", "likes", "comments_count", "date",
    "from_id", "signer_id", "views", "reposts", "edited",
)  # fmt: skip
COMMENT_KEYS = (
    "owner_id", "vk_comment_id", "post_vk_id", "parent_id", "author_id", "author_name",
    "text", "likes", "deleted", "thread_count", "date", "reply_to_user", "reply_to_comment",
)  # fmt: skip


def comparable(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple[int, int], dict]:
    """Rows keyed by their natural key, dates as unix seconds, only the compared columns."""
    out = {}
    for row in rows:
        r = {k: row[k] for k in keys}
        if r["date"] is not None and not isinstance(r["date"], int):
            r["date"] = int(r["date"].timestamp())
        if "deleted" in r:
            r["deleted"] = bool(r["deleted"])
        key = (r["owner_id"], r.get("vk_post_id", r.get("vk_comment_id")))
        assert key not in out, f"duplicate row {key}"
        out[key] = r
    return out


def edited(dataset: dict, fn: Any) -> dict:
    data = copy.deepcopy(dataset)
    fn(data)
    return data
