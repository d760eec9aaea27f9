"""Where the access token may go and how fast: the operator's rules, read from the environment.

One rule for every way a crawl starts (``scrapy crawl``, scrapyd's ``schedule.json``, our
``collect.json``, the workers), because settings can come from anyone who can reach scrapyd
while the environment is the operator's:

- :func:`check_api_url`: the token goes only to VK's own API (``https://api.vk.ru`` and
  ``https://api.vk.com``), to an origin the operator lists in ``VKSCRAPER_API_URLS``
  (comma-separated URLs; ``http://127.0.0.1:*`` means any port of that host), or to the
  origin of ``VK_API_URL`` in the environment: that is the operator's default API for every
  crawl of the process (:func:`operator_api_url`, applied by the add-on). URLs are
  compared by parsed scheme, host and port, never as strings: ``http://127.0.0.1:@evil/``
  (user-info) and ``http://host:80.evil/`` (a prefix) are refused.
- :func:`max_rps`: a crawl never sends more than 3 requests/s per token (VK's limit) unless
  the operator raises the ceiling with ``VKSCRAPER_MAX_RPS`` (e.g. for an emulator).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

API_URLS_ENV = "VKSCRAPER_API_URLS"
API_URL_ENV = "VK_API_URL"  # the operator's default API (e.g. an emulator): trusted as well
MAX_RPS_ENV = "VKSCRAPER_MAX_RPS"
VK_RPS = 3.0  # VK's limit per token: error 6 above it
DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_PORT = -1
# VK's own API hosts (api.vk.com is the older name of the same API).
VK_ORIGINS = frozenset({("https", "api.vk.ru", 443), ("https", "api.vk.com", 443)})

Origin = tuple[str, str, int]
# What an authority (a URL's, a Host header's) may hold: a name or IPv4 address, or [IPv6],
# then :port. No "@": user-info is refused.
_AUTHORITY = re.compile(
    r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}|\*))?"
)


def split_authority(text: str) -> tuple[str, str | None] | None:
    """``(host, port as written or None)`` of ``host[:port]``, the host lower-cased without a
    trailing dot; None when it is anything else. Shared by the token's rule and the service's
    Host check, so both read an authority alike."""
    match = _AUTHORITY.fullmatch(text)
    if match is None:
        return None
    return match["host"].lower().rstrip("."), match["port"]


def parse_origin(url: str, *, wildcard: bool = False) -> Origin:
    """``(scheme, host, port)`` of an http(s) URL, the default port filled in; ValueError for
    anything else: user-info, an empty or odd host, a malformed port, whitespace. With
    ``wildcard``, a ``*`` port is :data:`ANY_PORT`."""
    if not isinstance(url, str) or url != url.strip() or any(c <= " " for c in url):
        raise ValueError("not a plain URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("not an http(s) URL")
    authority = split_authority(parts.netloc)
    if authority is None or (authority[1] == "*" and not wildcard):
        raise ValueError("not a host[:port] URL")
    host, port = authority
    if not host.strip("[]"):
        raise ValueError("no host")
    if port == "*":
        return scheme, host, ANY_PORT
    number = int(port) if port else DEFAULT_PORTS[scheme]
    if not 0 < number < 65536:
        raise ValueError("port out of range")
    return scheme, host, number


def operator_api_url(environ: Mapping[str, str] | None = None) -> str | None:
    """``VK_API_URL`` from the environment (the default API of every crawl of the process),
    or None when unset or blank; ValueError naming the variable when it is not a URL."""
    env = os.environ if environ is None else environ
    url = env.get(API_URL_ENV, "").strip()
    if not url:
        return None
    try:
        parse_origin(url)
    except ValueError as exc:
        raise ValueError(
            f"{API_URL_ENV} (environment): {url[:80]!r} is not a URL ({exc})"
        ) from None
    return url


def allowed_origins(environ: Mapping[str, str] | None = None) -> set[Origin]:
    """VK's own origins, the operator's ``VKSCRAPER_API_URLS`` and the origin of the
    environment's ``VK_API_URL``; ValueError naming an entry that is not a URL (a typo must
    not silently allow less, or more)."""
    env = os.environ if environ is None else environ
    origins = set(VK_ORIGINS)
    # The environment is the operator's: the API it names for every crawl is trusted.
    if (default := operator_api_url(env)) is not None:
        origins.add(parse_origin(default))
    for entry in (e.strip() for e in env.get(API_URLS_ENV, "").split(",")):
        if entry:
            try:
                origins.add(parse_origin(entry, wildcard=True))
            except ValueError as exc:
                raise ValueError(f"{API_URLS_ENV}: {entry[:80]!r} is not a URL ({exc})") from None
    return origins


def api_url_allowed(url: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the token may be sent to ``url``."""
    try:
        scheme, host, port = parse_origin(url)
    except ValueError:
        return False
    allowed = allowed_origins(environ)
    return (scheme, host, port) in allowed or (scheme, host, ANY_PORT) in allowed


def check_api_url(url: str, environ: Mapping[str, str] | None = None) -> None:
    """ValueError unless the token may be sent to ``url`` (the message names the variable
    that allows more; it shows the URL, which is a setting and never holds the token)."""
    if not api_url_allowed(url, environ):
        raise ValueError(
            f"VK_API_URL {str(url)[:100]!r} is not VK's API nor allowed by the operator: the "
            f"access token is sent there. List it in the {API_URLS_ENV} environment variable "
            "of the crawl (comma-separated URLs; http://127.0.0.1:* allows any local port), "
            f"or make it the default with {API_URL_ENV} in that environment"
        )


def max_rps(environ: Mapping[str, str] | None = None) -> float:
    """The highest ``VK_REQUESTS_PER_SECOND`` a crawl may run at: ``VKSCRAPER_MAX_RPS``, else
    VK's 3."""
    env = os.environ if environ is None else environ
    raw = env.get(MAX_RPS_ENV, "").strip()
    if not raw:
        return VK_RPS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{MAX_RPS_ENV} must be a positive number, got {raw[:40]!r}")
    return value
