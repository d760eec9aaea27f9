"""The backoff delay and Retry-After parsing, without sleeping."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from vkscraper.vk.backoff import backoff_delay, parse_retry_after


def test_delay_grows_exponentially_within_jitter_bounds():
    rng = random.Random(1)
    for attempt, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8), (8, 16)]):
        for _ in range(50):
            d = backoff_delay(attempt, base=1.0, cap=30.0, rng=rng)
            assert low <= d <= high


def test_delay_is_capped_and_jittered():
    rng = random.Random(2)
    delays = {backoff_delay(10, base=1.0, cap=30.0, rng=rng) for _ in range(20)}
    assert max(delays) <= 30.0 and min(delays) >= 15.0
    assert len(delays) > 1  # jitter spreads retries out


def test_retry_after_is_a_floor_but_capped():
    assert backoff_delay(0, base=1.0, cap=30.0, retry_after=5) == 5
    assert backoff_delay(0, base=1.0, cap=30.0, retry_after=100) == 30


def test_zero_base_means_no_wait():
    assert backoff_delay(3, base=0, cap=30, retry_after=5) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"3", 3.0), ("2.5", 2.5), (b"-4", 0.0), (None, None), (b"", None), (b"soon", None)],
)
def test_parse_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(datetime(2026, 1, 1, 12, 0, 7, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(7.0)
