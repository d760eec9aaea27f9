"""VkAddon: wire vkscraper's components and derive Scrapy settings from ``VK_*`` ones.

Runs before the settings freeze, so ``-s VK_REQUESTS_PER_SECOND=2`` on the command line still
sets the download delay. It registers every ``VK_*`` default (:mod:`vkscraper.defaults`),
takes ``VK_API_URL`` from the environment when set there (the operator's default, below
``-s``), resolves ``DATABASE_URL`` and ``REDIS_URL`` (:mod:`vkscraper.connections`), refuses
settings that cannot work (:func:`check_settings`) and settings that would undo the token's
and the rate limit's guards (:func:`check_wiring`: Scrapy's consoles stay off unless the
operator allows them), installs the log scrubber for the tokens, and sets the Scrapy settings
this crawler needs unless a user chose them (retries, per-token concurrency, AutoThrottle,
feed encoding and fields, the cache policy).

Pacing: a fixed delay of ``VK_RATE_MARGIN / VK_REQUESTS_PER_SECOND`` (0.35 s for 3/s) with no
jitter, one download slot per token (set by
:class:`~vkscraper.downloadermiddlewares.auth.VkAuthMiddleware`), and the download handler's
limit per token (:func:`rate_window`). A user may slow the crawl down with ``DOWNLOAD_DELAY``
or AutoThrottle, never speed it past the limit. A value a user chose is told from this add-on's
by its priority: anything above Scrapy's "default" (a project's settings module, ``-s``, a
spider's ``custom_settings``) is the user's.
"""

from __future__ import annotations

import math
import os
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from scrapy.settings import SETTINGS_PRIORITIES
from scrapy.utils.conf import build_component_list

from vkscraper import defaults
from vkscraper.connections import database_url, redis_url
from vkscraper.items import VkComment, VkPost
from vkscraper.tokens.access import load_tokens
from vkscraper.tokens.logscrub import install_log_scrubber
from vkscraper.tokens.trust import MAX_RPS_ENV, check_api_url, max_rps, operator_api_url

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

HANDLERS = {
    "http": "vkscraper.downloadhandlers.ratelimit.VkDownloadHandler",
    "https": "vkscraper.downloadhandlers.ratelimit.VkDownloadHandler",
}
COMPONENTS = {
    "DOWNLOADER_MIDDLEWARES": {
        "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
        # Above every built-in one (HttpCacheMiddleware is the highest, 900): the token is
        # added last before the download and stripped first after it, so no other middleware
        # sees it (the cache would store it, redirects and retries would copy it).
        "vkscraper.downloadermiddlewares.auth.VkAuthMiddleware": 990,
        # Below HttpCompressionMiddleware (590): the body is decompressed when this runs.
        "vkscraper.downloadermiddlewares.retry.VkRetryMiddleware": 550,
    },
    # normalize → (a user's filter or enrichment) → store → (a second sink); a page is done
    # for its group when Scrapy's item signals say it is through (VkTaskExtension).
    "ITEM_PIPELINES": {
        "vkscraper.pipelines.normalize.VkNormalizePipeline": 100,
        "vkscraper.pipelines.store.VkStorePipeline": 300,
    },
    "EXTENSIONS": {
        "vkscraper.extensions.task.VkTaskExtension": 500,
        # worker mode only (VK_DISTRIBUTED, set by `python -m vkscraper worker`)
        "vkscraper.distributed.extension.VkDistributed": 510,
        # The task's alert sent as it ends (VK_ALERT_*; vkscraper.alerts).
        "vkscraper.extensions.alerts.VkAlertsExtension": 530,
        # Prometheus counters, from the stats (vkscraper.extensions.metrics)
        "vkscraper.extensions.metrics.VkMetricsExtension": 520,
        # Feeds of rows, not of pages (vkscraper.extensions.feedexport).
        "scrapy.extensions.feedexport.FeedExporter": None,
        "vkscraper.extensions.feedexport.VkFeedExporter": 0,
    },
    # Scrapy's HTTP/1.1 handler plus the per-token limit (in Redis with VK_SHARED_RATE_LIMIT),
    # which must gate the request after the download slot's delay.
    "DOWNLOAD_HANDLERS": HANDLERS,
}


def request_interval(settings: BaseSettings) -> float:
    rps = _number(settings, "VK_REQUESTS_PER_SECOND", float)
    if not rps > 0:
        raise ValueError(f"VK_REQUESTS_PER_SECOND must be positive, got {rps}")
    # A setting may come from any client of scrapyd: only the operator's environment lifts
    # the ceiling (VK answers error 6 above 3/s per token).
    if rps > (ceiling := max_rps()):
        raise ValueError(
            f"VK_REQUESTS_PER_SECOND {rps:g} is above {ceiling:g} per token: the operator "
            f"allows more with the {MAX_RPS_ENV} environment variable"
        )
    margin = _number(settings, "VK_RATE_MARGIN", float)
    if not margin >= 1:
        raise ValueError(f"VK_RATE_MARGIN below 1 ({margin}) would exceed the rate limit")
    return margin / rps


def rate_window(settings: BaseSettings) -> tuple[int, float]:
    """The limit per token the download handler keeps: at most ``count`` requests in any
    ``window`` seconds, ``count`` intervals of :func:`request_interval` (3/s with the 1.05
    margin: 3 in any 1.05 s; 2.5/s: 2 in any 0.84 s)."""
    interval = request_interval(settings)
    count = max(1, int(_number(settings, "VK_REQUESTS_PER_SECOND", float)))
    return count, count * interval


# Settings that were ours and are now Scrapy's: refused with the new name.
RENAMED = {
    "VK_RETRY_TIMES": "RETRY_TIMES",
    "VK_RETRY_HTTP_CODES": "RETRY_HTTP_CODES",
    "VK_CONCURRENCY_PER_TOKEN": "CONCURRENT_REQUESTS_PER_DOMAIN",
}

# Settings that only make sense from a lower bound: (name, type, lowest value allowed).
_AT_LEAST: list[tuple[str, type, float]] = [
    ("CONCURRENT_REQUESTS", int, 1),
    ("CONCURRENT_REQUESTS_PER_DOMAIN", int, 1),
    ("RETRY_TIMES", int, 0),
    ("VK_STORE_BATCH_SIZE", int, 1),
    ("VK_STORE_MAX_BUFFER", int, 1),
    ("VK_STORE_FLUSH_INTERVAL", float, 0),
    ("VK_METRICS_INTERVAL", float, 0),
    ("VK_BACKOFF_BASE", float, 0),
    ("VK_WORKER_GROUPS", int, 1),
    ("VK_WORKER_TASKS", int, 1),
    ("VK_WORKER_HEARTBEAT", float, 1),
    ("VK_BACKOFF_MAX", float, 0),
    ("VK_TOKEN_PARK_SECONDS", float, 0),
    # a spent quota is asked again after each park: not more than once a minute
    ("VK_QUOTA_PARK_SECONDS", float, 60),
    ("VK_TOKEN_MAX_WAIT", float, 0),
]


def check_settings(settings: BaseSettings) -> None:
    """Refuse settings that cannot work, with a message naming the setting (ValueError)."""
    if settings.get("VK_ACCESS_TOKEN") is not None:
        raise ValueError(
            "VK_ACCESS_TOKEN is read from the environment only (settings are logged, and "
            "scrapyd stores them): export VK_ACCESS_TOKEN=… instead of -s"
        )
    for old, new in RENAMED.items():
        if settings.get(old) is not None:
            raise ValueError(f"{old} is no longer a setting: use Scrapy's {new}")
    api_url = settings.get("VK_API_URL")  # "" too is checked: it is where the token goes
    check_api_url(defaults.VK_API_URL if api_url is None else api_url)
    request_interval(settings)
    if settings.getbool("VK_SHARED_RATE_LIMIT") and not settings.get("REDIS_URL"):
        raise ValueError(
            "VK_SHARED_RATE_LIMIT needs Redis: export REDIS_URL=redis://host:6379/0 (or -s)"
        )
    if settings.getbool("VK_DISTRIBUTED") and not settings.get("VK_WORKER_ID"):
        raise ValueError(
            "VK_DISTRIBUTED is worker mode: start workers with `python -m vkscraper worker`"
        )
    # Values VK would not honour: it answers less than asked, silently.
    for name, (low, high) in defaults.LIMITS.items():
        value = _number(settings, name, int)
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high} (VK's range), got {value}")
    for name, kind, lowest in _AT_LEAST:
        if settings.get(name) is not None and not _number(settings, name, kind) >= lowest:
            raise ValueError(f"{name} must be at least {lowest}, got {settings.get(name)!r}")
    # On unless a user turned it off: the add-on enables it after these checks.
    autothrottle = _unset(settings, "AUTOTHROTTLE_ENABLED") or settings.getbool(
        "AUTOTHROTTLE_ENABLED"
    )
    if autothrottle and not (_number(settings, "AUTOTHROTTLE_TARGET_CONCURRENCY", float) > 0):
        raise ValueError("AUTOTHROTTLE_TARGET_CONCURRENCY must be positive")


# Scrapy's consoles run code sent to a local port, in a process that holds the token (the
# telnet console's password is in the log). Off unless the operator allows them.
CONSOLES = ("TELNETCONSOLE_ENABLED", "REMOTE_CONTROL_ENABLED")
CONSOLE_ENV = "VKSCRAPER_ALLOW_CONSOLE"
AUTH = "vkscraper.downloadermiddlewares.auth.VkAuthMiddleware"


def check_wiring(settings: BaseSettings) -> None:
    """Refuse settings that would take the token's or the rate limit's guards out of the
    crawl (ValueError naming the setting). Settings can come from whoever reaches scrapyd
    (``schedule.json`` passes any ``setting=``): the crawl checks what it is built from.

    - the download handlers of http and https stay :data:`COMPONENTS`' (the per-token limit);
    - :class:`~vkscraper.downloadermiddlewares.auth.VkAuthMiddleware`, when enabled, is the last
      downloader middleware before the download: none after it sees the token (the HTTP cache
      would store it);
    - ``DOWNLOAD_SLOTS`` leaves the per-token slots (``vk-<tag>``) alone;
    - a console is on only with ``VKSCRAPER_ALLOW_CONSOLE=1`` in the environment; Scrapy's
      own defaults for them are turned off."""
    handlers = settings.getwithbase("DOWNLOAD_HANDLERS")
    for scheme, ours in HANDLERS.items():
        if _path(handlers.get(scheme)) != ours:
            raise ValueError(
                f"DOWNLOAD_HANDLERS[{scheme!r}] must stay {ours}: the per-token rate limit "
                "is there"
            )
    order = [
        _path(c) for c in build_component_list(settings.getwithbase("DOWNLOADER_MIDDLEWARES"))
    ]
    if AUTH in order and order[-1] != AUTH:
        raise ValueError(
            f"DOWNLOADER_MIDDLEWARES: {order[-1]} would come after {AUTH} and see the access "
            "token; the auth middleware must be the last before the download"
        )
    slots = [
        str(k) for k in (settings.getdict("DOWNLOAD_SLOTS") or {}) if str(k).startswith("vk-")
    ]
    if slots:
        raise ValueError(
            f"DOWNLOAD_SLOTS: {slots[0]!r} is a token's download slot, paced by the crawl itself"
        )
    allowed = os.environ.get(CONSOLE_ENV, "").strip().lower() in ("1", "true", "yes")
    for name in CONSOLES:
        if not settings.getbool(name) or allowed:
            continue
        if (settings.getpriority(name) or 0) <= SETTINGS_PRIORITIES["project"]:
            settings.set(name, False, "project")  # Scrapy's default (or a project file's)
        else:
            raise ValueError(
                f"{name}: a console runs code in the process that holds the access token; "
                f"the operator allows it with {CONSOLE_ENV}=1 in the environment"
            )


def _path(component: Any) -> str | None:
    """A component's import path, whether given as a path or as the class."""
    if component is None or isinstance(component, str):
        return component
    return f"{component.__module__}.{component.__qualname__}"


def _number(settings: BaseSettings, name: str, kind: type) -> Any:
    """The setting as a finite number, or a ValueError that names it."""
    raw = settings.get(name)
    try:
        value = settings.getint(name) if kind is int else settings.getfloat(name)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {raw!r}")
    return value


def export_fields() -> list[str]:
    """``kind``, then the fields of a post, then those only comments have."""
    names = ["kind"]
    for item_class in (VkPost, VkComment):
        names += [f.name for f in fields(item_class) if f.name not in names]
    return names


def _unset(settings: BaseSettings, name: str) -> bool:
    return (settings.getpriority(name) or 0) <= SETTINGS_PRIORITIES["default"]


def register_defaults(settings: BaseSettings) -> None:
    """Every ``VK_*`` default (:mod:`vkscraper.defaults`), at Scrapy's "default" priority."""
    for name, value in defaults.all_defaults().items():
        settings.setdefault(name, value, "default")


class VkAddon:
    def update_settings(self, settings: BaseSettings) -> None:
        register_defaults(settings)
        if (api_url := operator_api_url()) is not None:
            # The operator's default API for every crawl this process starts (scrapyd's
            # jobs, workers, `scrapy crawl`), like DATABASE_URL: it replaces the project's
            # value, while -s / scrapyd's setting= (cmdline) and a spider's own still win.
            settings.set("VK_API_URL", api_url, "project")
        for name, resolve in (("DATABASE_URL", database_url), ("REDIS_URL", redis_url)):
            if not settings.get(name):
                settings.set(name, resolve(), "default")  # the environment's, else the default
        check_settings(settings)
        # Scrapy settings whose value differs for this crawler, unless a user chose one.
        for name, value in (
            ("RETRY_TIMES", 3),  # Scrapy's is 2
            # Each token is one download slot (vk-<tag>): requests in flight per token.
            ("CONCURRENT_REQUESTS_PER_DOMAIN", 4),
            # Slow answers slow a token down; its floor is DOWNLOAD_DELAY, so nothing speeds
            # it past the limit.
            ("AUTOTHROTTLE_ENABLED", True),
            # AutoThrottle aims at this many requests in flight per token: answers slower than
            # 2 × the interval (0.7 s) slow the token down, faster ones leave it at the limit.
            ("AUTOTHROTTLE_TARGET_CONCURRENCY", 2.0),
            # Feeds: UTF-8 text (not \u escapes), and one column set for posts and comments,
            # so a CSV holds every field of both (blank where a kind has no such field).
            ("FEED_EXPORT_ENCODING", "utf-8"),
            ("FEED_EXPORT_FIELDS", export_fields()),
            (
                "HTTPCACHE_POLICY",
                "vkscraper.extensions.httpcache.VkCachePolicy",
            ),  # never caches VK errors
            # no per-item "Scraped from" record unless LOG_LEVEL shows it
            ("LOG_FORMATTER", "vkscraper.logformatter.VkLogFormatter"),
        ):
            if _unset(settings, name):
                settings.set(name, value, "addon")
        install_log_scrubber(load_tokens())
        for name, components in COMPONENTS.items():
            settings[name].update(components, priority="addon")
        check_wiring(settings)
        interval = request_interval(settings)
        # Whatever priority a lower value came with, the limit wins. Unless a user chose a
        # delay, it is the limit's interval and follows VK_REQUESTS_PER_SECOND, both ways.
        top = SETTINGS_PRIORITIES["cmdline"]
        delay = 0.0 if _unset(settings, "DOWNLOAD_DELAY") else settings.getfloat("DOWNLOAD_DELAY")
        settings.set("DOWNLOAD_DELAY", max(delay, interval), top)
        settings.set("DOWNLOAD_DELAY_JITTER", 0, top)
        if not _unset(settings, "RANDOMIZE_DOWNLOAD_DELAY"):
            # The deprecated switch overrides the jitter when a user sets it; turn it off.
            settings.set("RANDOMIZE_DOWNLOAD_DELAY", False, top)
        if settings.getbool("AUTOTHROTTLE_ENABLED"):
            name = "AUTOTHROTTLE_START_DELAY"
            # Start at the limit (not Scrapy's 5 s) unless a user chose a slower start.
            start = 0.0 if _unset(settings, name) else settings[name]
            settings.set(name, max(float(start), interval), top)
