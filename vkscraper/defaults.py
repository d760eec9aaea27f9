"""Every ``VK_*`` default, once (their meaning and ranges: docs/reference/settings.md).

The add-on registers them at Scrapy's "default" priority
(:func:`vkscraper.addon.register_defaults`), so components read settings without fallbacks of
their own and ``scrapy settings --get VK_…`` shows them. The VK layer (:mod:`vkscraper.vk`)
takes its defaults from here too, without Scrapy. :data:`LIMITS` holds the range VK accepts
for a setting; the add-on refuses a value outside it (VK would silently answer less). Only the
``VK_*`` names are settings.
"""

from __future__ import annotations

VK_API_URL = "https://api.vk.ru/method/"
VK_API_VERSION = "5.199"

# Rate limit per token. VK allows 3 requests/s for user and service tokens; the interval gets a
# 5 % margin because spacing at exactly 1/3 s still lets 4 requests into some 1-second window.
VK_REQUESTS_PER_SECOND = 3.0
VK_RATE_MARGIN = 1.05
# One limit per token across processes, in Redis (REDIS_URL): for several crawls on one token.
VK_SHARED_RATE_LIMIT = False

VK_POSTS_PER_GROUP = 10
VK_COMMENTS_PAGE_SIZE = 100  # VK's maximum for wall.getComments
VK_THREAD_ITEMS_COUNT = 10  # replies inlined per top-level comment (VK's maximum)
VK_GROUPS_PER_REQUEST = 500  # groups.getById batch
# Pack the calls into `execute` requests (up to 25 calls each, one request against the rate
# limit). A token VK refuses execute for falls back to plain calls by itself.
VK_EXECUTE = True
VK_EXECUTE_CALLS = 25  # calls per execute; lowered by itself when answers get too big

# Retries are Scrapy's (RETRY_TIMES, RETRY_HTTP_CODES, …); the backoff between them is ours.
# The token pool (VK_ACCESS_TOKEN=t1,t2,…): a captcha parks a token, a spent daily quota parks
# it for that method; a request waits at most VK_TOKEN_MAX_WAIT for a parked token.
VK_TOKEN_PARK_SECONDS = 600.0
VK_QUOTA_PARK_SECONDS = 86_400.0
VK_TOKEN_MAX_WAIT = 600.0

# Worker mode (`python -m vkscraper worker`): the most unfinished groups one worker holds per
# task (it takes fewer: what fills its next requests, vkscraper.distributed._workload), tasks it
# runs at once, and how long after its last heartbeat its groups go to the others.
VK_WORKER_GROUPS = 100
VK_WORKER_TASKS = 4
VK_WORKER_HEARTBEAT = 15.0
# A worker's live Prometheus counters over HTTP (`worker --metrics-port`); 0: not served.
VK_WORKER_METRICS_PORT = 0
VK_WORKER_METRICS_HOST = "127.0.0.1"

VK_BACKOFF_BASE = 1.0  # seconds; 0 disables waiting (tests)
VK_BACKOFF_MAX = 30.0

VK_STORE_BATCH_SIZE = 500
VK_STORE_FLUSH_INTERVAL = 2.0  # seconds between flushes of a partial batch
VK_STORE_MAX_BUFFER = 50_000  # items held while the database is down; more go to a file
VK_METRICS_INTERVAL = 2.0  # seconds between task-metrics refreshes (the task page polls at 2 s)
VK_UNSAVED_DIR = "."  # where items go when the database stays down at close

# Schedules (vkscraper.schedules): seconds between two looks for due schedules; how long a
# task of another process counts as running after its last update; how long a run may stay
# claimed but not launched (its process died) before another runner launches it.
VK_SCHEDULE_TICK = 10.0
VK_SCHEDULE_STALE_AFTER = 600.0
VK_SCHEDULE_CLAIM_GRACE = 60.0
# Webhook alerts (vkscraper.alerts), the operator's only: each also read from the environment
# variable of the same name. Webhook URLs are comma-separated; VK_ALERT_ON names the events
# (failed, completed, stopped, skipped); a delivery is retried after each delay in turn (the
# last one repeats) up to VK_ALERT_MAX_ATTEMPTS; VK_PUBLIC_URL is where links to the task page
# point.
VK_ALERT_WEBHOOKS = None
VK_ALERT_SLACK_WEBHOOKS = None
VK_ALERT_ON = "failed,stopped,skipped"
VK_ALERT_SKIPPED_AFTER = 3  # a schedule skipped this many times in a row
VK_ALERT_MAX_ATTEMPTS = 8
VK_ALERT_RETRY_DELAYS = "5,30,120,600"  # seconds
VK_ALERT_TIMEOUT = 10.0  # seconds per POST; also bounds a crawl's own delivery at its end
VK_ALERT_INTERVAL = 5.0  # seconds between passes of the service's and workers' dispatchers
VK_PUBLIC_URL = None

# Ranges VK accepts (wall.get count ≤ 100 and we ask one more than we keep).
LIMITS = {
    "VK_POSTS_PER_GROUP": (1, 99),
    "VK_COMMENTS_PAGE_SIZE": (2, 100),  # an anchored page of 1 only repeats its anchor
    "VK_THREAD_ITEMS_COUNT": (0, 10),
    "VK_GROUPS_PER_REQUEST": (1, 500),
    "VK_EXECUTE_CALLS": (1, 25),
}


def all_defaults() -> dict[str, object]:
    """Every ``VK_*`` setting's default, by name."""
    return {name: value for name, value in globals().items() if name.startswith("VK_")}
