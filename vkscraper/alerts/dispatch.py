"""Sending the outbox: one pass writes the due events' deliveries for this process's webhooks,
then claims, POSTs and settles them one at a time until none is due (or a deadline passes).

Any number of dispatchers may run against one database (the service, every worker, a crawl at
its end, ``vkscraper alerts deliver`` from cron): a delivery is held by the one that claimed it
(:func:`vkscraper.store.alerts.claim_delivery`) and each dispatcher sends only to the webhooks
it is configured with. A failed attempt is retried after ``VK_ALERT_RETRY_DELAYS`` up to
``VK_ALERT_MAX_ATTEMPTS``. What is stored of a failure is an HTTP status or an error class:
never the URL or a message that could hold it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from vkscraper.alerts.config import AlertConfig, Webhook
from vkscraper.alerts.payload import body_for
from vkscraper.exceptions import StoreError
from vkscraper.store import Store, open_store
from vkscraper.tokens.access import load_tokens

logger = logging.getLogger(__name__)

# Events older than this get no delivery to a webhook configured after them.
PLAN_HORIZON = timedelta(days=1)
LEASE_MARGIN = 30.0  # seconds a claim outlives the POST's timeout


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a new place to send the alert to."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, body: dict[str, Any], timeout: float) -> str | None:
    """POST ``body``; None when the webhook answered 2xx, else what went wrong: ``HTTP 500``,
    or the error's class (a message may quote the URL)."""
    data = json.dumps(body, ensure_ascii=False).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "vkscraper-alerts"},
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(65536)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
    except urllib.error.URLError as exc:
        reason = exc.reason
        return type(reason).__name__ if isinstance(reason, BaseException) else "URLError"
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed URL
        return type(exc).__name__
    return None if 200 <= status < 300 else f"HTTP {status}"


@dataclass
class PassResult:
    delivered: int = 0
    failed: int = 0


class Dispatcher:
    """Deliveries for one configuration; a store of its own, opened on first use."""

    def __init__(
        self,
        config: AlertConfig,
        database_url: str | None = None,
        store_factory: Callable[[str | None], Store] = open_store,
        send: Callable[[str, dict[str, Any], float], str | None] = post_json,
    ) -> None:
        self.config = config
        self.database_url = database_url
        self._store_factory = store_factory
        self._store: Store | None = None
        self._send = send
        self._hooks: dict[str, Webhook] = {h.tag: h for h in config.webhooks}

    def store(self) -> Store:
        if self._store is None:
            self._store = self._store_factory(self.database_url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def run_pass(self, deadline: float | None = None) -> PassResult:
        """Deliver what is due now; stop early at ``deadline`` (``time.monotonic()``)."""
        result = PassResult()
        if not self.config.enabled:
            return result
        store = self.store()
        tags = sorted(self._hooks)
        now = datetime.now(UTC)
        store.prepare_alerts(
            tags, sorted(self.config.on), now - PLAN_HORIZON, self.config.skipped_after
        )
        tokens = load_tokens()
        while deadline is None or time.monotonic() < deadline:
            timeout = self.config.timeout
            if deadline is not None:
                timeout = max(0.5, min(timeout, deadline - time.monotonic()))
            now = datetime.now(UTC)
            lease = now + timedelta(seconds=timeout + LEASE_MARGIN)
            delivery = store.claim_alert_delivery(tags, now, lease)
            if delivery is None:
                break
            hook = self._hooks[delivery.webhook]
            body = body_for(hook.shape, delivery, self.config, tokens)
            error = self._send(hook.url, body, timeout)
            if error is None:
                store.settle_alert_delivery(delivery.id, None, None)
                result.delivered += 1
                logger.info(
                    "Alert %(event)s delivered to %(webhook)s",
                    {"event": delivery.event_id, "webhook": hook.tag},
                )
                continue
            result.failed += 1
            retry_at = None
            if delivery.attempts < self.config.max_attempts:
                delay = self.config.retry_delay(delivery.attempts)
                retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            store.settle_alert_delivery(delivery.id, error, retry_at)
            logger.warning(
                "Alert %(event)s to %(webhook)s failed (%(error)s, attempt %(n)s of "
                "%(max)s)%(then)s",
                {
                    "event": delivery.event_id,
                    "webhook": hook.tag,
                    "error": error,
                    "n": delivery.attempts,
                    "max": self.config.max_attempts,
                    "then": "; retried later" if retry_at else "; given up",
                },
            )
        return result


class DispatchLoop:
    """A pass every ``VK_ALERT_INTERVAL`` seconds in a daemon thread (the service, a worker):
    never in the reactor's way. A pass cut short by the process's exit leaves its delivery
    claimed until the lease ends; another dispatcher then retries it."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vkscraper-alerts", daemon=True)
        self._failing = False

    def start(self) -> DispatchLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.dispatcher.config.interval):
            try:
                self.dispatcher.run_pass()
                if self._failing:
                    logger.info("Alert deliveries resumed")
                self._failing = False
            except StoreError as exc:  # logged once per outage; the store logs the rest
                if not self._failing:
                    logger.warning("Alert deliveries paused: %(error)s", {"error": exc})
                self._failing = True
            except Exception:
                logger.exception("Alert dispatcher pass failed")
        self.dispatcher.close()


def start_loop(config: AlertConfig, database_url: str | None = None) -> DispatchLoop | None:
    """The dispatch loop of a long-running process, or None when no webhook is configured."""
    if not config.enabled:
        return None
    logger.info(
        "Alerts: %(n)d webhook(s) for %(on)s",
        {"n": len(config.webhooks), "on": ", ".join(sorted(config.on))},
    )
    return DispatchLoop(Dispatcher(config, database_url)).start()


def deliver_soon(config: AlertConfig, database_url: str | None) -> threading.Thread | None:
    """One pass in a thread of its own, bounded by ``VK_ALERT_TIMEOUT`` (a crawl at its end:
    its alert goes out without waiting for another dispatcher; what is left stays in the
    outbox). Not a daemon: the process waits for it at exit, at most that long."""
    if not config.enabled:
        return None

    def once() -> None:
        dispatcher = Dispatcher(config, database_url)
        try:
            dispatcher.run_pass(deadline=time.monotonic() + config.timeout)
        except Exception as exc:  # StoreError and the like: another dispatcher sends it
            logger.warning("Alerts not sent from this crawl: %(error)s", {"error": exc})
        finally:
            dispatcher.close()

    thread = threading.Thread(target=once, name="vkscraper-alerts-once")
    thread.start()
    return thread
