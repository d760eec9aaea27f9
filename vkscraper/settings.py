"""Scrapy settings of vkscraper. ``VK_*`` defaults live in :mod:`vkscraper.defaults`.

Any ``VK_*`` setting, ``DATABASE_URL`` and ``REDIS_URL`` may also come from the environment;
``-s NAME=value`` overrides both. The access token is read from ``VK_ACCESS_TOKEN`` in the
environment by the auth middleware and is never a setting (settings get logged).
"""

from __future__ import annotations

import os

from vkscraper import defaults

BOT_NAME = "vkscraper"
SPIDER_MODULES = ["vkscraper.spiders"]
NEWSPIDER_MODULE = "vkscraper.spiders"

ADDONS = {"vkscraper.addon.VkAddon": 0}

ROBOTSTXT_OBEY = False  # an API, not a site
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
DOWNLOAD_TIMEOUT = 10
CONCURRENT_REQUESTS = 16  # requests sleeping in backoff hold these; keep it above the slot's
LOG_LEVEL = "INFO"
USER_AGENT = "vkscraper/0.1"

_ENV_SETTINGS = [n for n in dir(defaults) if n.startswith("VK_")] + ["DATABASE_URL", "REDIS_URL"]
for _name in _ENV_SETTINGS:
    if _name in os.environ:
        globals()[_name] = os.environ[_name]
