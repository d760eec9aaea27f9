"""The exception hierarchy, grouped by how a caller must react.

    VkscraperError
    ├── StoreError                  the database is unreachable or refused a statement
    └── VkError                     anything that went wrong talking to VK
        ├── VkTransientError        retry with backoff (same token)
        │   ├── VkMalformedResponse non-JSON, truncated or unexpected body
        │   └── VkApiTransientError codes 1, 6, 9, 10, 36 (also a VkApiError)
        └── VkApiError              ``{"error": …}`` envelope: ``code``, ``message``, ``method``
            ├── VkApiTransientError
            ├── VkQuotaError        29: daily quota of this method for this token
            ├── VkCaptchaError      14: a human must solve a captcha; park the token
            ├── VkTargetError       15, 18, 19, 30, 100, 104, 113, 125, 203, 210-212:
            │                       this group or post is unavailable; record it, go on
            └── VkFatalError        5, 7, 8, 17, 27, 28, 1117 …: bad token or configuration;
                                    stop the crawl

An unknown VK code raises the plain :class:`VkApiError`, which callers treat like a target
error. Messages never contain the access token nor VK's echoed ``request_params``.
"""

from __future__ import annotations


class VkscraperError(Exception):
    """Root of every error this project raises on purpose."""


class StoreError(VkscraperError):
    """The database could not be reached or rejected a statement."""


class VkError(VkscraperError):
    """Root of the VK API errors."""


class VkTransientError(VkError):
    """Worth retrying with backoff."""


class VkMalformedResponse(VkTransientError):
    """The body is not a VK envelope (HTML error page, truncated JSON, wrong shape)."""


class VkApiError(VkError):
    """VK answered ``{"error": {...}}``."""

    def __init__(self, code: int, message: str, method: str = "") -> None:
        self.code = code
        self.message = message
        self.method = method
        where = f" in {method}" if method else ""
        super().__init__(f"VK error {code}{where}: {message}")


class VkApiTransientError(VkApiError, VkTransientError):
    """1 unknown, 6 too many requests per second, 9 flood control, 10 internal, 36 timeout."""


class VkQuotaError(VkApiError):
    """29: the daily quota of this method is spent for this token."""


class VkCaptchaError(VkApiError):
    """14: VK wants a captcha solved; only a human can go on with this token."""


class VkTargetError(VkApiError):
    """The group, wall or post is unavailable (closed, deleted, comments off, not found)."""


class VkFatalError(VkApiError):
    """The token or the configuration is wrong; nothing else will work until it is fixed."""


TRANSIENT_CODES = frozenset({1, 6, 9, 10, 36})
QUOTA_CODES = frozenset({29})
CAPTCHA_CODES = frozenset({14})
TARGET_CODES = frozenset({15, 18, 19, 30, 100, 104, 113, 125, 203, 210, 211, 212})
FATAL_CODES = frozenset({3, 5, 7, 8, 12, 17, 27, 28, 1117, 9999})

_CLASS_BY_CODE: dict[int, type[VkApiError]] = {
    **dict.fromkeys(TRANSIENT_CODES, VkApiTransientError),
    **dict.fromkeys(QUOTA_CODES, VkQuotaError),
    **dict.fromkeys(CAPTCHA_CODES, VkCaptchaError),
    **dict.fromkeys(TARGET_CODES, VkTargetError),
    **dict.fromkeys(FATAL_CODES, VkFatalError),
}


def api_error_for(code: int, message: str, method: str = "") -> VkApiError:
    """Build the exception class that matches a VK error code."""
    return _CLASS_BY_CODE.get(code, VkApiError)(code, message, method)
