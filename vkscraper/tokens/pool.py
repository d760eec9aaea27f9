"""The token pool: which of the ``VK_ACCESS_TOKEN`` tokens may take the next request. Pure.

Every token has its own download slot (``vk-<tag>``), hence its own 3 requests/s; a request
goes to the usable token with the least work queued in its slot, so k tokens give about k
times the throughput. What VK says about a token changes what it may do:

* error 5, 1117 (invalid, expired), 17 (validation), 27 (community token) and 28 outside
  ``execute`` (wrong token type): the token is *dropped* for the rest of the crawl;
* error 14 (captcha): *parked* for ``VK_TOKEN_PARK_SECONDS``; a second captcha after that
  drops it (only a human can solve one);
* error 29 (daily quota of a method): parked *for that method* until VK resets quotas
  (``VK_QUOTA_PARK_SECONDS``); the token still serves other methods.

A request waits for a parked token only as long as ``VK_TOKEN_MAX_WAIT``; when no token can
take it by then, the crawl stops with :meth:`TokenPool.summary` — each token by its tag, and
why it is out — and a later run resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vkscraper.tokens.access import token_tag

DROP_CODES = frozenset({5, 17, 27, 1117})
PARK_CODES = frozenset({14})
QUOTA_CODES = frozenset({29})


@dataclass
class _Token:
    token: str
    tag: str
    dropped: str | None = None  # why, for good
    parked_until: float = 0.0
    parked_why: str = ""
    method_parks: dict[str, tuple[float, str]] = field(default_factory=dict)


def _due(at: float | None, now: float) -> bool:
    return at is not None and at <= now


def is_token_error(code: int, method: str) -> bool:
    """An error that concerns the token, not the target (28 and 29 on execute itself are the
    spider's: it goes on with plain calls)."""
    if code in (28, 29) and method == "execute":
        return False
    if code == 28:
        return True
    return code in DROP_CODES | PARK_CODES | QUOTA_CODES


class TokenPool:
    def __init__(
        self,
        tokens: Iterable[str],
        *,
        park_seconds: float = 600.0,
        quota_seconds: float = 86_400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = [_Token(t, token_tag(t)) for t in tokens]
        self.park_seconds = park_seconds
        self.quota_seconds = quota_seconds
        self.clock = clock

    def _ready_at(self, t: _Token, methods: Iterable[str]) -> float | None:
        """When the token may take a call of ``methods`` (None: never)."""
        if t.dropped is not None:
            return None
        at = t.parked_until
        for method in methods:
            if method in t.method_parks:
                at = max(at, t.method_parks[method][0])
        return at

    def pick(self, methods: Iterable[str], load: Callable[[str], int]) -> str | None:
        """The token for a request calling ``methods`` now: usable, least loaded."""
        now, methods = self.clock(), list(methods)
        ready = [t for t in self._tokens if _due(self._ready_at(t, methods), now)]
        if not ready:
            return None
        return min(ready, key=lambda t: load(t.tag)).token

    def next_ready(self, methods: Iterable[str]) -> float | None:
        """When some token can take ``methods`` (None: no token ever will)."""
        times = [at for t in self._tokens if (at := self._ready_at(t, list(methods))) is not None]
        return min(times) if times else None

    def report(self, tag: str | None, code: int, method: str, message: str) -> str | None:
        """VK answered ``code`` for the token ``tag``: drop or park it. Returns what was
        done (for the log; "" when the token was already out for this, e.g. an answer to a
        request sent before), or None when the error does not concern the token."""
        t = next((t for t in self._tokens if t.tag == tag), None)
        if t is None or not is_token_error(code, method):
            return None
        why, now = f"VK error {code} in {method}: {message}", self.clock()
        if t.dropped is not None:
            return ""
        if code in QUOTA_CODES and t.method_parks.get(method, (0.0, ""))[0] > now:
            return ""
        if code in PARK_CODES and t.parked_until > now:
            return ""
        if code in PARK_CODES and not t.parked_why:
            t.parked_until, t.parked_why = self.clock() + self.park_seconds, why
            return f"parked for {self.park_seconds:g} s ({why})"
        if code in QUOTA_CODES:
            t.method_parks[method] = (self.clock() + self.quota_seconds, why)
            return f"parked for {method} for {self.quota_seconds:g} s ({why})"
        t.dropped = why if code not in PARK_CODES else f"{why}, again after waiting"
        return f"dropped ({t.dropped})"

    def summary(self) -> str:
        """Why each token is out (or that it is usable), by tag: never the token."""
        now, parts = self.clock(), []
        for t in self._tokens:
            if t.dropped is not None:
                parts.append(f"token {t.tag}: dropped ({t.dropped})")
                continue
            out = (
                [f"parked {t.parked_until - now:.0f} s more ({t.parked_why})"]
                if (t.parked_until > now)
                else []
            )
            out += [
                f"parked for {m} {until - now:.0f} s more ({why})"
                for m, (until, why) in sorted(t.method_parks.items())
                if until > now
            ]
            parts.append(f"token {t.tag}: " + ("; ".join(out) if out else "usable"))
        return "; ".join(parts)
