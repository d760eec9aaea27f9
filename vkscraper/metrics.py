"""The crawl's Prometheus counters: their names, labels and the one registry of this process.

Every label takes its values from a bounded set, whatever a crawl reports: a VK method the
spider does not call, an outcome not listed, a token tag not of :func:`token_tag`'s form or an
error code that is not a short number become ``other`` / ``none``. So a series can never hold
a task id, a group id or a token, and the number of series stays small.

:data:`REGISTRY` is this process's own (not prometheus_client's global one): a worker serves
it on its metrics port; every crawl adds its counts to it and to ``metric_counters`` in the
database (:mod:`vkscraper.extensions.metrics`), which the service's ``/metrics`` serves.
No Scrapy here: the service imports it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter

# VK methods the spider calls; anything else is "other".
METHODS = frozenset({"execute", "wall.get", "wall.getComments", "groups.getById"})
# How a request to VK ended (each attempt, retries included).
REQUEST_OUTCOMES = frozenset({"ok", "vk_error", "malformed", "http_error", "network_error"})
# How a task's run ended: finished (completed or failed, the task's status) or left
# in_progress to be resumed (interrupted: Ctrl-C, SIGTERM, a cancel, no usable token).
RUN_OUTCOMES = frozenset({"completed", "failed", "interrupted"})
STORE_RESULTS = frozenset({"inserted", "updated"})
_TAG = re.compile(r"[0-9a-f]{8}")  # vkscraper.tokens.access.token_tag
_CODE = re.compile(r"[0-9]{1,4}")


def _one_of(allowed: frozenset[str], other: str = "other") -> Callable[[str], str]:
    return lambda value: value if value in allowed else other


def _matching(pattern: re.Pattern[str], other: str) -> Callable[[str], str]:
    return lambda value: value if pattern.fullmatch(value) else other


_TOKEN = _matching(_TAG, "none")

# name → (help, {label: how a reported value becomes a bounded one})
COUNTERS: dict[str, tuple[str, dict[str, Callable[[str], str]]]] = {
    "vkscraper_vk_requests_total": (
        "Requests to VK's API that got an answer or failed, each attempt, by VK method, "
        "outcome and token tag",
        {
            "method": _one_of(METHODS),
            "outcome": _one_of(REQUEST_OUTCOMES),
            "token": _TOKEN,
        },
    ),
    "vkscraper_vk_errors_total": (
        "VK API errors answered to whole requests, by VK's error code",
        {"code": _matching(_CODE, "other")},
    ),
    "vkscraper_rate_limit_wait_seconds_total": (
        "Seconds requests waited for their token's rate limit, by token tag",
        {"token": _TOKEN},
    ),
    "vkscraper_posts_stored_total": (
        "Posts written to the database (inserted new, or updated)",
        {"result": _one_of(STORE_RESULTS)},
    ),
    "vkscraper_comments_stored_total": (
        "Comments written to the database (inserted new, or updated)",
        {"result": _one_of(STORE_RESULTS)},
    ),
    "vkscraper_runs_started_total": ("Task runs begun", {}),
    "vkscraper_runs_ended_total": (
        "Task runs ended, by outcome (completed, failed, interrupted)",
        {"outcome": _one_of(RUN_OUTCOMES)},
    ),
}

REGISTRY = CollectorRegistry(auto_describe=True)
_COUNTERS = {
    name: Counter(name.removesuffix("_total"), help_, list(labels), registry=REGISTRY)
    for name, (help_, labels) in COUNTERS.items()
}

Series = tuple[str, str]  # (counter name, canonical labels)


def bounded(name: str, labels: Mapping[str, str]) -> dict[str, str]:
    """The counter's labels with every value mapped into its bounded set (KeyError for a
    counter or label that does not exist)."""
    rules = COUNTERS[name][1]
    if set(labels) != set(rules):
        raise KeyError(f"{name} takes the labels {sorted(rules)}, got {sorted(labels)}")
    return {label: rules[label](str(value)) for label, value in labels.items()}


def canonical(labels: Mapping[str, str]) -> str:
    """One spelling per label set: the key of its row in ``metric_counters``."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def count(name: str, labels: Mapping[str, str], amount: float = 1.0) -> Series:
    """Add ``amount`` to the series in :data:`REGISTRY`; returns the series' key."""
    values = bounded(name, labels)
    counter = _COUNTERS[name]
    (counter.labels(**values) if values else counter).inc(amount)
    return name, canonical(values)
