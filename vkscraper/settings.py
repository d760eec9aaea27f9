"""Scrapy settings of vkscraper; ``VK_*`` defaults come from :mod:`vkscraper.defaults`.
Every setting, its default and meaning: docs/reference/settings.md.

Change a setting with ``-s NAME=value``. ``DATABASE_URL`` and ``REDIS_URL`` are also read from
the environment. The access token is read from ``VK_ACCESS_TOKEN`` in the environment by the
auth middleware and is never a setting (settings get logged).
"""

from __future__ import annotations

import os

from vkscraper.defaults import *  # noqa: F403  (every VK_* default, visible to `scrapy settings`)
from vkscraper.defaults import AUTOTHROTTLE_TARGET, CONCURRENCY_PER_TOKEN, DEFAULT_INTERVAL
from vkscraper.store.backends import DEFAULT_SQLITE_FILE

BOT_NAME = "vkscraper"
SPIDER_MODULES = ["vkscraper.spiders"]
NEWSPIDER_MODULE = "vkscraper.spiders"

ADDONS = {"vkscraper.addon.VkAddon": 0}
COMMANDS_MODULE = "vkscraper.commands"  # `crawl` with argument checks and exit statuses

ROBOTSTXT_OBEY = False  # an API, not a site
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False  # runs code sent to a local port, in a process holding the token
DOWNLOAD_TIMEOUT = 10
CONCURRENT_REQUESTS = 16  # requests sleeping in backoff hold these; keep it above the slot's
LOG_LEVEL = "INFO"
USER_AGENT = "vkscraper/0.1"

# Shown by `scrapy settings`; the add-on keeps the delay at or above the rate limit.
DOWNLOAD_DELAY = DEFAULT_INTERVAL
CONCURRENT_REQUESTS_PER_DOMAIN = CONCURRENCY_PER_TOKEN  # per token: one download slot each
RETRY_TIMES = 3
# Slow answers slow a token down; its floor is DOWNLOAD_DELAY, so nothing speeds it past the
# limit. It starts at the limit (not Scrapy's 5 s).
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = DEFAULT_INTERVAL
AUTOTHROTTLE_TARGET_CONCURRENCY = AUTOTHROTTLE_TARGET

# The database (and Redis) are where the process runs, as usual for services: read from the
# environment when this module loads; -s DATABASE_URL=… overrides it.
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_FILE}"
REDIS_URL = os.environ.get("REDIS_URL")
