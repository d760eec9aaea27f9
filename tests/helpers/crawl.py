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

from fakevk import expected_rows, generate_dataset
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


# ----------------------------------------------------------------------------- datasets and checks

T0 = 1_700_000_000


def expected(dataset, posts_per_group=10):
    posts, comments = expected_rows(dataset, posts_per_group, nul_replacement="")
    return comparable(posts, POST_KEYS), comparable(comments, COMMENT_KEYS)


def task_of(url, task_id):
    with open_store(url) as store:
        return store.get_task(task_id)


def last_task(url):
    with open_store(url) as store:
        return store.list_tasks(limit=1)[0]


def assert_stored_equals(url, task_id, dataset, posts_per_group=10, only=None):
    """The task's rows equal the oracle's for the dataset (or its groups ``only``)."""
    if only is not None:
        # The other groups give no rows, but still their names to the comments they wrote.
        groups = [g if g["id"] in only else {**g, "wall": 0} for g in dataset["groups"]]
        dataset = {**dataset, "groups": groups}
    posts, comments = stored_rows(url, task_id)
    want_posts, want_comments = expected(dataset, posts_per_group)
    got_posts, got_comments = comparable(posts, POST_KEYS), comparable(comments, COMMENT_KEYS)
    assert got_posts.keys() == want_posts.keys()
    assert got_posts == want_posts
    assert got_comments.keys() == want_comments.keys()
    assert got_comments == want_comments
    return got_posts, got_comments


def open_all_comments(data):
    for group in data["groups"]:
        for post in group["posts"]:
            post["comments_closed"] = False


# The generator closes one post's comments; the happy path wants none closed.
DATASET = edited(
    generate_dataset(seed=7, groups=3, posts_per_group=12, max_comments=30, big_post=True),
    open_all_comments,
)


def group_refs(dataset):
    return ",".join(
        g["screen_name"] if i % 2 else str(g["id"])
        for i, g in enumerate(g for g in dataset["groups"] if not g.get("author_only"))
    )


def small_dataset():
    def post(pid, date, **kw):
        return {"id": pid, "date": date, "text": f"post {pid}", "likes": pid, "comments": [], **kw}

    def comment(cid, date, replies=()):
        return {"id": cid, "from_id": 1, "date": date, "text": f"c{cid}", "likes": 1,
                "replies": list(replies)}  # fmt: skip

    return {
        "profiles": [{"id": 1, "first_name": "Ann", "last_name": "Lee"}],
        "groups": [
            {   # recent pinned post: it is among the 10 newest, so it counts
                "id": 10, "screen_name": "pinnedrecent", "name": "Pinned recent",
                "posts": [post(1, T0 + 10_000, is_pinned=True)]
                + [post(i, T0 + i) for i in range(2, 15)],
            },
            {   # only three posts
                "id": 11, "screen_name": "threeposts", "name": "Three posts",
                "posts": [post(i, T0 + i, comments=[comment(10 + i, T0 + 50)])
                          for i in range(1, 4)],
            },
            {   # an old pinned post that must not be counted
                "id": 12, "screen_name": "pinnedold", "name": "Pinned old",
                "posts": [post(1, T0 - 10_000, is_pinned=True)]
                + [post(i, T0 + i) for i in range(2, 14)],
            },
        ],
    }  # fmt: skip
