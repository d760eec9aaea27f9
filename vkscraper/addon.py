"""VkAddon: wire vkscraper's components and derive Scrapy settings from ``VK_*`` ones.

Runs before the settings freeze, so ``-s VK_REQUESTS_PER_SECOND=2`` on the command line still
sets the download delay. Pacing follows scrapy-stack.md §1: a fixed delay of
``VK_RATE_MARGIN / VK_REQUESTS_PER_SECOND`` (0.35 s for 3/s) with no jitter, one download slot
per token (set by :class:`~vkscraper.middlewares.auth.VkAuthMiddleware`). A user may slow the
crawl down with ``DOWNLOAD_DELAY`` or AutoThrottle, never speed it past the limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.settings import SETTINGS_PRIORITIES

from vkscraper import defaults

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

COMPONENTS = {
    "DOWNLOADER_MIDDLEWARES": {
        "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
        # Above RedirectMiddleware (600): on the way back the token is stripped before any
        # other middleware can copy the request into a new one.
        "vkscraper.middlewares.auth.VkAuthMiddleware": 700,
        # Below HttpCompressionMiddleware (590): the body is decompressed when this runs.
        "vkscraper.middlewares.retry.VkRetryMiddleware": 550,
    },
    "ITEM_PIPELINES": {"vkscraper.pipelines.store.VkStorePipeline": 300},
    "EXTENSIONS": {"vkscraper.extensions.task.VkTaskExtension": 500},
}


def request_interval(settings: BaseSettings) -> float:
    rps = settings.getfloat("VK_REQUESTS_PER_SECOND", defaults.VK_REQUESTS_PER_SECOND)
    if rps <= 0:
        raise ValueError(f"VK_REQUESTS_PER_SECOND must be positive, got {rps}")
    margin = settings.getfloat("VK_RATE_MARGIN", defaults.VK_RATE_MARGIN)
    if margin < 1:
        raise ValueError(f"VK_RATE_MARGIN below 1 ({margin}) would exceed the rate limit")
    return margin / rps


class VkAddon:
    def update_settings(self, settings: BaseSettings) -> None:
        for name, components in COMPONENTS.items():
            settings[name].update(components, priority="addon")
        interval = request_interval(settings)
        # Whatever priority a lower value came with, the limit wins.
        top = SETTINGS_PRIORITIES["cmdline"]
        settings.set("DOWNLOAD_DELAY", max(settings.getfloat("DOWNLOAD_DELAY"), interval), top)
        settings.set("DOWNLOAD_DELAY_JITTER", 0, top)
        if (settings.getpriority("RANDOMIZE_DOWNLOAD_DELAY") or 0) > SETTINGS_PRIORITIES[
            "default"
        ]:
            # The deprecated switch overrides the jitter when a user sets it; turn it off.
            settings.set("RANDOMIZE_DOWNLOAD_DELAY", False, top)
        if settings.getbool("AUTOTHROTTLE_ENABLED"):
            start = max(settings.getfloat("AUTOTHROTTLE_START_DELAY"), interval)
            settings.set("AUTOTHROTTLE_START_DELAY", start, top)
        settings.set(
            "CONCURRENT_REQUESTS_PER_DOMAIN",
            settings.getint("VK_CONCURRENCY_PER_TOKEN", defaults.VK_CONCURRENCY_PER_TOKEN),
            "addon",
        )
