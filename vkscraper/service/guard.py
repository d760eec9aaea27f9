"""scrapyd's web root with our guards on every route, scrapyd's own included
(``scrapyd.conf``: ``webroot = vkscraper.service.guard.GuardedRoot``).

scrapyd's own routes have no cross-site guard: a form POST from any page the operator opens
reaches ``schedule.json``, ``cancel.json`` or ``delproject.json``, and a DNS-rebinding page can
read every route. Here each request goes through
:func:`~vkscraper.service.resources.check_origin` (Host is a name of ours; a POST's Origin is
ours) before scrapyd routes it; basic auth, when configured, still runs first.

The root also refuses to start listening beyond the loopback interface without credentials:
scrapyd runs code it is sent (``addversion.json``, ``schedule.json``'s settings) with the
operator's token in its environment.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from scrapyd.webservice import Schedule
from scrapyd.website import Root
from twisted.web import error, resource
from twisted.web.server import Request

from vkscraper.exceptions import VkscraperError
from vkscraper.service.alerting import start_alerts
from vkscraper.service.core import RequestError, check_task_settings
from vkscraper.service.resources import check_origin, json_response


class OpenServerRefused(VkscraperError):
    """scrapyd would listen beyond the loopback interface without credentials."""


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: Any) -> None:
    """Refuse a non-loopback ``bind_address`` unless ``username`` and ``password`` are set
    (scrapyd's own precedence: ``SCRAPYD_*`` environment variables, then the file)."""
    bind = os.getenv("SCRAPYD_BIND_ADDRESS") or config.get("bind_address", "127.0.0.1")
    username = os.getenv("SCRAPYD_USERNAME") or config.get("username", "")
    password = os.getenv("SCRAPYD_PASSWORD") or config.get("password", "")
    port = os.getenv("SCRAPYD_HTTP_PORT") or config.get("http_port", "6800")
    if bind and port and not is_loopback(bind) and not (username and password):
        raise OpenServerRefused(
            f"scrapyd would listen on {bind} without credentials: anyone who reaches it could "
            "run code with the access token. Set username and password in scrapyd.conf (or "
            "SCRAPYD_USERNAME / SCRAPYD_PASSWORD), or bind_address = 127.0.0.1"
        )


class Refused(resource.Resource):
    isLeaf = True

    def __init__(self, error: RequestError) -> None:
        super().__init__()
        self.error = error

    def render(self, request: Request) -> bytes:
        return json_response(
            request, self.error.status, {"status": "error", "message": self.error.message}
        )


class GuardedRoot(Root):
    def __init__(self, config: Any, app: Any) -> None:
        check_exposure(config)
        super().__init__(config, app)
        self.alerts = start_alerts()

    def getChildWithDefault(self, path: bytes, request: Request) -> resource.Resource:  # noqa: N802
        try:
            check_origin(request)
        except RequestError as exc:
            return Refused(exc)
        return super().getChildWithDefault(path, request)


class GuardedSchedule(Schedule):
    """scrapyd's ``schedule.json`` (``[services]``) taking only the settings our own
    ``collect.json`` takes (:func:`~vkscraper.service.core.check_task_settings`). scrapyd's
    own passes any ``setting=`` to the crawl as ``-s``: the telnet console
    (``TELNETCONSOLE_*``) would let whoever reaches the port read the token from the crawl's
    memory, ``DOWNLOADER_MIDDLEWARES`` could put the HTTP cache after the token, and
    ``DOWNLOAD_HANDLERS`` could take the rate limit out. Refused with a 400 naming the setting,
    like scrapyd's other errors (``{"status": "error", "message": …}``)."""

    def render_POST(self, txrequest: Request) -> Any:  # noqa: N802
        raw = (txrequest.args or {}).get(b"setting", [])
        try:
            check_task_settings([value.decode() for value in raw])
        except UnicodeDecodeError:
            raise error.Error(400, b"'setting' is not valid UTF-8") from None
        except RequestError as exc:  # scrapyd's render answers it as its own errors
            raise error.Error(exc.status, exc.message.encode()) from None
        return super().render_POST(txrequest)
