"""Schedule specs: parsing, intervals, cron in a time zone (DST), no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vkscraper.schedules import ScheduleError, next_due, parse_every, parse_spec

HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), (" 2H ", 7200)],
)
def test_every(raw, seconds):
    assert parse_every(raw) == seconds


@pytest.mark.parametrize("raw", ["", "0", "-5", "1w", "1.5h", "h", True, 10**9])
def test_bad_every(raw):
    with pytest.raises(ScheduleError, match="every"):
        parse_every(raw)


def test_parse_spec():
    spec = parse_spec(name=" daily ", groups="vk.com/apiclub, club5, 5", cron="0  3 * * *")
    assert spec.name == "daily" and spec.groups == ["apiclub", 5]
    assert spec.cron == "0 3 * * *" and spec.every_s is None and spec.timezone == "UTC"
    assert parse_spec(groups=[7, "apiclub"], every="1m").groups == [7, "apiclub"]
    assert parse_spec(every=5).groups is None  # the active groups at each run
    assert parse_spec(every=5, settings={"VK_POSTS_PER_GROUP": "3"}).settings == {
        "VK_POSTS_PER_GROUP": "3"
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"every": 5, "cron": "* * * * *"}, "exactly one"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * * *"}, "five fields"),
        ({"cron": "0 0 31 2 *"}, "no next time"),
        ({"every": 5, "timezone": "Mars/Olympus"}, "timezone"),
        ({"every": 5, "groups": "foo bar"}, "groups"),
        ({"every": 5, "groups": " , "}, "empty"),
        ({"every": 5, "name": "x" * 201}, "name"),
    ],
)
def test_bad_spec(kwargs, match):
    with pytest.raises(ScheduleError, match=match):
        parse_spec(**kwargs)


def test_interval_counts_from_after():
    after = datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert next_due(90, None, "UTC", after) == after + timedelta(seconds=90)


def test_cron_in_a_time_zone():
    after = datetime(2030, 1, 1, 12, tzinfo=UTC)  # 15:00 in Moscow (UTC+3)
    due = next_due(None, "0 3 * * *", "Europe/Moscow", after)
    assert due == datetime(2030, 1, 2, 0, tzinfo=UTC) and due.tzinfo == UTC


def test_cron_across_dst():
    berlin = "Europe/Berlin"
    # Spring forward (31 March 2024, 02:00 → 03:00): 02:30 does not exist that night.
    due = next_due(None, "30 2 * * *", berlin, datetime(2024, 3, 30, 12, tzinfo=UTC))
    assert due == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)  # 03:00 CEST
    # Fall back (27 October 2024, 03:00 → 02:00): a fixed-hour cron runs once that night.
    first = next_due(None, "30 2 * * *", berlin, datetime(2024, 10, 26, 12, tzinfo=UTC))
    assert first == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = next_due(None, "30 2 * * *", berlin, first)
    assert second == datetime(2024, 10, 28, 1, 30, tzinfo=UTC)  # next night, 02:30 CET
    # A wildcard hour runs in both 02:xx hours: they are different hours of real time.
    dues, t = [], datetime(2024, 10, 26, 23, 50, tzinfo=UTC)
    for _ in range(4):
        t = next_due(None, "30 * * * *", berlin, t)
        dues.append(t)
    assert [d.hour for d in dues] == [0, 1, 2, 3] and all(d.minute == 30 for d in dues)


def test_naive_after_refused():
    with pytest.raises(ValueError):
        next_due(60, None, "UTC", datetime(2030, 1, 1))


def test_an_interval_keeps_its_cadence_however_late_a_run_is_claimed():
    from vkscraper.schedules.spec import following_due

    due = datetime(2026, 1, 1, 10, 17, tzinfo=UTC)
    # Claimed 12 s late: the next is still on the minute the schedule keeps.
    assert following_due(3600, None, "UTC", due, due + timedelta(seconds=12)) == due + HOUR
    # Three days down: one run, then the first due time after now on that cadence.
    late = due + timedelta(days=3, minutes=5)
    assert following_due(3600, None, "UTC", due, late) == due + 73 * HOUR
    assert following_due(3600, None, "UTC", due, due + HOUR) == due + 2 * HOUR  # never now
    # A cron keeps to its own times.
    assert following_due(None, "0 * * * *", "UTC", due, due + timedelta(seconds=12)) == (
        datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(90, "every 90 s"), (900, "every 15 min"), (7200, "every 2 h"), (86400, "every 1 d")],
)
def test_an_interval_is_described_in_its_largest_whole_unit(seconds, text):
    from vkscraper.schedules.spec import describe_every

    assert describe_every(seconds) == text
