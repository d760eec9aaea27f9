"""The retry delay: exponential with jitter, capped, honouring ``Retry-After``. Pure."""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    "Equal jitter": half of ``base * 2**attempt`` is fixed, half random, so retries of many
    requests spread out yet never come back at once. A server's ``Retry-After`` is a floor.
    Everything is capped at ``cap``; ``base=0`` means no waiting at all (tests).
    """
    if base <= 0:
        return 0.0
    exp = min(cap, base * 2**attempt)
    delay = exp / 2 + (rng or random).uniform(0, exp / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(cap, delay)


def parse_retry_after(value: bytes | str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))
