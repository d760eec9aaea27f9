"""The alert settings, the operator's only: the Scrapy settings (a settings module, ``-s`` of a
crawl or a worker), else the environment variable of the same name, else the default.

Webhook URLs are secrets (a Slack URL is its own credential): they are never logged nor
stored; a delivery row names its webhook by :attr:`Webhook.tag`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vkscraper import defaults

KINDS = ("failed", "completed", "stopped", "skipped")
SHAPES = ("generic", "slack")
# The names read here (each with an environment fallback), for the service's refusal lists.
NAMES = (
    "VK_ALERT_WEBHOOKS",
    "VK_ALERT_SLACK_WEBHOOKS",
    "VK_ALERT_ON",
    "VK_ALERT_SKIPPED_AFTER",
    "VK_ALERT_MAX_ATTEMPTS",
    "VK_ALERT_RETRY_DELAYS",
    "VK_ALERT_TIMEOUT",
    "VK_ALERT_INTERVAL",
    "VK_PUBLIC_URL",
)


@dataclass(frozen=True)
class Webhook:
    shape: str  # "generic" or "slack"
    url: str = field(repr=False)

    @property
    def tag(self) -> str:
        """How the database and the logs name this webhook: its shape and a hash of its URL."""
        return f"{self.shape}:{hashlib.sha256(self.url.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class AlertConfig:
    webhooks: tuple[Webhook, ...] = ()
    on: frozenset[str] = frozenset({"failed", "skipped"})
    skipped_after: int = 3
    max_attempts: int = 8
    retry_delays: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)
    timeout: float = 10.0
    interval: float = 5.0
    public_url: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.webhooks) and bool(self.on)

    def retry_delay(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones (the last delay
        repeats)."""
        return self.retry_delays[min(attempts, len(self.retry_delays)) - 1]

    def task_link(self, task_id: int) -> str | None:
        return f"{self.public_url}/tasks/{task_id}" if self.public_url else None


def _raw(name: str, settings: Any, environ: Mapping[str, str]) -> Any:
    """The value set for this run (above Scrapy's "default" priority), else the environment's,
    else the default."""
    if settings is not None and (settings.getpriority(name) or 0) > 0:
        return settings.get(name)
    if name in environ:
        return environ[name]
    if settings is not None and settings.get(name) is not None:
        return settings.get(name)
    return getattr(defaults, name)


def _list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.replace("\n", ",").split(",")
    return [str(v).strip() for v in value or () if str(v).strip()]


def alert_config(settings: Any = None, environ: Mapping[str, str] | None = None) -> AlertConfig:
    """The configuration from Scrapy ``settings`` (or None) and the environment; a malformed
    value raises ValueError naming the setting (never its value: it may be a URL)."""
    env = os.environ if environ is None else environ

    def get(name: str) -> Any:
        return _raw(name, settings, env)

    hooks = [Webhook("generic", u) for u in _list(get("VK_ALERT_WEBHOOKS"))]
    hooks += [Webhook("slack", u) for u in _list(get("VK_ALERT_SLACK_WEBHOOKS"))]
    for hook in hooks:
        if not hook.url.startswith(("http://", "https://")):
            raise ValueError(f"{hook.shape} webhook {hook.tag}: not an http(s) URL")
    on = frozenset(k.lower() for k in _list(get("VK_ALERT_ON")))
    if unknown := on - set(KINDS):
        raise ValueError(f"VK_ALERT_ON: unknown {sorted(unknown)} (known: {', '.join(KINDS)})")
    try:
        delays = tuple(float(d) for d in _list(get("VK_ALERT_RETRY_DELAYS")))
        numbers = {
            "VK_ALERT_SKIPPED_AFTER": int(get("VK_ALERT_SKIPPED_AFTER")),
            "VK_ALERT_MAX_ATTEMPTS": int(get("VK_ALERT_MAX_ATTEMPTS")),
        }
        timeout = float(get("VK_ALERT_TIMEOUT"))
        interval = float(get("VK_ALERT_INTERVAL"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"alert settings: not a number ({exc})") from None
    for name, number in numbers.items():
        if number < 1:
            raise ValueError(f"{name} must be at least 1")
    if not delays or min(delays) < 0 or timeout <= 0 or interval <= 0:
        raise ValueError(
            "VK_ALERT_RETRY_DELAYS needs one or more seconds >= 0; VK_ALERT_TIMEOUT and "
            "VK_ALERT_INTERVAL must be above 0"
        )
    return AlertConfig(
        webhooks=tuple(dict.fromkeys(hooks)),
        on=on,
        skipped_after=numbers["VK_ALERT_SKIPPED_AFTER"],
        max_attempts=numbers["VK_ALERT_MAX_ATTEMPTS"],
        retry_delays=delays,
        timeout=timeout,
        interval=interval,
        public_url=str(get("VK_PUBLIC_URL") or "").strip().rstrip("/"),
    )
