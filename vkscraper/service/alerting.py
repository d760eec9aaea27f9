"""The service's alert dispatcher: a loop beside scrapyd (:class:`vkscraper.alerts.dispatch.
DispatchLoop`) that sends the outbox of the service's database — the alerts of its crawls, of
the workers it feeds and of the schedules. Configured by the scrapyd process's environment or
the project's settings module, never by a request (:data:`~vkscraper.service.core.
OPERATOR_ONLY`)."""

from __future__ import annotations

import logging

from vkscraper.alerts.config import alert_config
from vkscraper.alerts.dispatch import DispatchLoop, start_loop

logger = logging.getLogger(__name__)


def start_alerts() -> DispatchLoop | None:
    """Start the loop when webhooks are configured (a daemon thread: it ends with the
    process; a delivery it held then is retried once its claim lapses)."""
    from scrapy.utils.project import get_project_settings

    try:
        config = alert_config(get_project_settings())
    except ValueError as exc:
        logger.error("Alerts off: %(error)s", {"error": exc})
        return None
    return start_loop(config)
