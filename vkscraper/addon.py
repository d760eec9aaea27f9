"""VkAddon: wire vkscraper's components and derive Scrapy settings from ``VK_*`` ones.

Runs before the settings freeze, so ``-s VK_REQUESTS_PER_SECOND=2`` on the command line still
sets the download delay. Pacing: a fixed delay of
``VK_RATE_MARGIN / VK_REQUESTS_PER_SECOND`` (0.35 s for 3/s) with no jitter, one download slot
per token (set by :class:`~vkscraper.middlewares.auth.VkAuthMiddleware`). A user may slow the
crawl down with ``DOWNLOAD_DELAY`` or AutoThrottle, never speed it past the limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.settings import SETTINGS_PRIORITIES

from vkscraper import defaults
from vkscraper.logscrub import install_log_scrubber
from vkscraper.tokens import load_tokens

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

COMPONENTS = {
    "DOWNLOADER_MIDDLEWARES": {
        "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
        # Above every built-in one (HttpCacheMiddleware is the highest, 900): the token is
        # added last before the download and stripped first after it, so no other middleware
        # sees it (the cache would store it, redirects and retries would copy it).
        "vkscraper.middlewares.auth.VkAuthMiddleware": 990,
        # Below HttpCompressionMiddleware (590): the body is decompressed when this runs.
        "vkscraper.middlewares.retry.VkRetryMiddleware": 550,
    },
    "ITEM_PIPELINES": {"vkscraper.pipelines.store.VkStorePipeline": 300},
    "EXTENSIONS": {"vkscraper.extensions.task.VkTaskExtension": 500},
}


def request_interval(settings: BaseSettings) -> float:
    rps = settings.getfloat("VK_REQUESTS_PER_SECOND")
    if rps <= 0:
        raise ValueError(f"VK_REQUESTS_PER_SECOND must be positive, got {rps}")
    margin = settings.getfloat("VK_RATE_MARGIN")
    if margin < 1:
        raise ValueError(f"VK_RATE_MARGIN below 1 ({margin}) would exceed the rate limit")
    return margin / rps


def check_limits(settings: BaseSettings) -> None:
    """Refuse values VK would not honour: it answers less than asked, silently."""
    for name, (low, high) in defaults.LIMITS.items():
        value = settings.getint(name)
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high} (VK's range), got {value}")


class VkAddon:
    def update_settings(self, settings: BaseSettings) -> None:
        for name, value in defaults.all_defaults().items():
            settings.setdefault(name, value, "default")
        check_limits(settings)
        install_log_scrubber(load_tokens())
        if (settings.getpriority("REMOTE_CONTROL_ENABLED") or 0) <= SETTINGS_PRIORITIES["project"]:
            # Scrapy's remote control runs code sent to a local port, in a process that holds
            # the token; only an explicit -s REMOTE_CONTROL_ENABLED=True (or higher) keeps it.
            settings.set("REMOTE_CONTROL_ENABLED", False, "project")
        for name, components in COMPONENTS.items():
            settings[name].update(components, priority="addon")
        interval = request_interval(settings)
        # Whatever priority a lower value came with, the limit wins. settings.py's own value
        # is the default limit's interval: it follows VK_REQUESTS_PER_SECOND, both ways.
        top = SETTINGS_PRIORITIES["cmdline"]
        delay = settings.getfloat("DOWNLOAD_DELAY")
        if (settings.getpriority("DOWNLOAD_DELAY") or 0) <= SETTINGS_PRIORITIES[
            "project"
        ] and delay == defaults.DEFAULT_INTERVAL:
            delay = 0.0
        settings.set("DOWNLOAD_DELAY", max(delay, interval), top)
        settings.set("DOWNLOAD_DELAY_JITTER", 0, top)
        if (settings.getpriority("RANDOMIZE_DOWNLOAD_DELAY") or 0) > SETTINGS_PRIORITIES[
            "default"
        ]:
            # The deprecated switch overrides the jitter when a user sets it; turn it off.
            settings.set("RANDOMIZE_DOWNLOAD_DELAY", False, top)
        if settings.getbool("AUTOTHROTTLE_ENABLED"):
            start = max(settings.getfloat("AUTOTHROTTLE_START_DELAY"), interval)
            settings.set("AUTOTHROTTLE_START_DELAY", start, top)
        if (settings.getpriority("CONCURRENT_REQUESTS_PER_DOMAIN") or 0) <= SETTINGS_PRIORITIES[
            "default"
        ]:
            settings.set("CONCURRENT_REQUESTS_PER_DOMAIN", defaults.CONCURRENCY_PER_TOKEN, "addon")
