"""The service's alert dispatcher: a loop beside scrapyd (:class:`vkscraper.alerts.dispatch.
DispatchLoop`) that sends the outbox of the service's database — the alerts of its crawls, of
the workers it feeds and of the schedules. Configured by the scrapyd process's environment or
the project's settings module, never by a request (:data:`~vkscraper.service.core.
OPERATOR_ONLY`)."""

from __future__ import annotations

import logging
import os

from vkscraper.alerts.config import alert_config
from vkscraper.alerts.dispatch import DispatchLoop, start_loop

logger = logging.getLogger(__name__)


def start_alerts() -> DispatchLoop | None:
    """Start the loop when webhooks are configured (a daemon thread: it ends with the
    process; a delivery it held then is retried once its claim lapses)."""
    from scrapy.utils.project import ENVVAR, get_project_settings

    before = os.environ.get(ENVVAR)
    settings = None  # the environment alone, when the project's settings cannot be read
    try:
        settings = get_project_settings()
    except Exception as exc:  # an unimportable settings module must not stop scrapyd
        logger.warning("Alerts read from the environment only: %(error)s", {"error": exc})
    finally:  # it names the project's module in the environment: scrapyd's jobs set their own
        if before is None:
            os.environ.pop(ENVVAR, None)
    try:
        config = alert_config(settings)
    except ValueError as exc:
        logger.error("Alerts off: %(error)s", {"error": exc})
        return None
    return start_loop(config)
