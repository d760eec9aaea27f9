"""VkAlertsExtension: when the task extension ends the task (``task_finished``), one pass of
the alert dispatcher in a thread of its own, bounded by ``VK_ALERT_TIMEOUT``: the alert leaves
as the crawl ends, even where no service or worker dispatches. The crawl's data is already
written by then; what this pass does not send stays in the outbox for the other dispatchers.

Settings: ``VK_ALERT_*``, ``VK_PUBLIC_URL`` (each also from the environment), ``DATABASE_URL``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured

from vkscraper import signals as vk_signals
from vkscraper.alerts.config import alert_config
from vkscraper.alerts.dispatch import deliver_soon

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class VkAlertsExtension:
    def __init__(self, crawler: Crawler) -> None:
        try:
            self.config = alert_config(crawler.settings)
        except ValueError as exc:
            logger.error("Alerts off for this crawl: %(error)s", {"error": exc})
            raise NotConfigured from None
        if not self.config.enabled:
            raise NotConfigured  # no webhook: quietly off (Scrapy warns when given a reason)
        self.database_url: str | None = crawler.settings.get("DATABASE_URL") or None
        self.thread: threading.Thread | None = None
        crawler.signals.connect(self.task_finished, signal=vk_signals.task_finished)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def task_finished(self, task_id: int, status: str, **_: Any) -> None:
        self.thread = deliver_soon(self.config, self.database_url)
