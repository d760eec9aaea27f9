"""Every ``VK_*`` default, once. Components pass these as the fallback of each settings getter,
so they behave the same under a bare ``get_crawler()`` as under ``settings.py``."""

from __future__ import annotations

VK_API_URL = "https://api.vk.ru/method/"
VK_API_VERSION = "5.199"

# Rate limit per token. VK allows 3 requests/s for user and service tokens; the interval gets a
# 5 % margin because spacing at exactly 1/3 s still lets 4 requests into some 1-second window
# (scrapy-stack.md §1).
VK_REQUESTS_PER_SECOND = 3.0
VK_RATE_MARGIN = 1.05
VK_CONCURRENCY_PER_TOKEN = 4  # overlaps slow answers; the delay, not this, sets the rate

VK_POSTS_PER_GROUP = 10
VK_COMMENTS_PAGE_SIZE = 100  # VK's maximum for wall.getComments
VK_THREAD_ITEMS_COUNT = 10  # replies inlined per top-level comment (VK's maximum)
VK_GROUPS_PER_REQUEST = 500  # groups.getById batch

VK_RETRY_TIMES = 3
VK_BACKOFF_BASE = 1.0  # seconds; 0 disables waiting (tests)
VK_BACKOFF_MAX = 30.0
VK_RETRY_HTTP_CODES = [408, 429, 500, 502, 503, 504, 522, 524]

VK_STORE_BATCH_SIZE = 500
VK_STORE_FLUSH_INTERVAL = 2.0  # seconds between flushes of a partial batch
VK_METRICS_INTERVAL = 5.0  # seconds between task-metrics refreshes
VK_UNSAVED_DIR = "."  # where items go when the database stays down at close
