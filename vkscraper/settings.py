"""Scrapy settings of the vkscraper project: what a project sets (every setting, its default
and meaning: docs/reference/settings.md).

The add-on (:mod:`vkscraper.addon`) registers the rest: every ``VK_*`` default
(:mod:`vkscraper.defaults`), ``DATABASE_URL`` and ``REDIS_URL`` (:mod:`vkscraper.connections`),
and the Scrapy settings this crawler needs other values of (retries, per-token concurrency
and pace, AutoThrottle, feeds). ``scrapy settings --get NAME`` shows them too: the project's
``settings`` command applies the add-on.

Change a setting with ``-s NAME=value``. The access token is read from ``VK_ACCESS_TOKEN`` in
the environment by the auth middleware and is never a setting (settings get logged).
"""

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
