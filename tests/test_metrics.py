"""The Prometheus metrics without processes: every label set is bounded (no token, task or group
id can become a series), the stats feed the right counters, the service's families are built
from what the database holds, and a dead database still gives a scrape that parses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vkscraper import metrics
from vkscraper.extensions.metrics import series_of
from vkscraper.service.core import RequestError
from vkscraper.service.metrics import ServiceCollector, cron_gap
from vkscraper.store.metrics import ScheduleState, Snapshot
from vkscraper.tokens.access import token_tag

TOKEN = "vk1.a.secret-token-for-the-metrics-tests"


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


@pytest.mark.parametrize(
    ("name", "given", "kept"),
    [
        ("vkscraper_vk_requests_total",
         {"method": "wall.get", "outcome": "ok", "token": token_tag(TOKEN)},
         {"method": "wall.get", "outcome": "ok", "token": token_tag(TOKEN)}),
        ("vkscraper_vk_requests_total",
         {"method": "users.get?task=7", "outcome": "task 12 failed", "token": TOKEN},
         {"method": "other", "outcome": "other", "token": "none"}),
        ("vkscraper_vk_errors_total", {"code": "group 123456"}, {"code": "other"}),
        ("vkscraper_vk_errors_total", {"code": "12345"}, {"code": "other"}),
        ("vkscraper_vk_errors_total", {"code": "29"}, {"code": "29"}),
        ("vkscraper_rate_limit_wait_seconds_total", {"token": "ABCDEF12"}, {"token": "none"}),
        ("vkscraper_posts_stored_total", {"result": "deleted"}, {"result": "other"}),
        ("vkscraper_runs_ended_total", {"outcome": "cancelled"}, {"outcome": "other"}),
        ("vkscraper_runs_ended_total", {"outcome": "failed"}, {"outcome": "failed"}),
    ],
)  # fmt: skip
def test_every_label_value_is_one_of_a_bounded_set(name, given, kept):
    assert metrics.bounded(name, given) == kept


def test_a_counter_takes_exactly_its_own_labels():
    with pytest.raises(KeyError):
        metrics.bounded("vkscraper_vk_errors_total", {"code": "6", "task": "1"})
    with pytest.raises(KeyError):
        metrics.bounded("vkscraper_tasks_by_id", {})
    # No label of any counter can name a task, a group, a post or a schedule.
    for _, rules in metrics.COUNTERS.values():
        assert not set(rules) & {"task", "task_id", "group", "group_id", "post", "schedule"}


def test_a_token_in_a_reported_label_never_reaches_the_registry():
    tag = token_tag(TOKEN)
    metrics.count("vkscraper_rate_limit_wait_seconds_total", {"token": TOKEN}, 0.5)
    metrics.count("vkscraper_rate_limit_wait_seconds_total", {"token": tag}, 0.25)
    body = generate_latest(metrics.REGISTRY).decode()
    assert TOKEN not in body
    found = samples(body)
    assert found[("vkscraper_rate_limit_wait_seconds_total", (("token", tag),))] >= 0.25
    assert ("vkscraper_rate_limit_wait_seconds_total", (("token", "none"),)) in found


def test_stats_feed_the_counters_they_name():
    assert series_of("vk/responses/abcdef12/wall.getComments/vk_error") == (
        "vkscraper_vk_requests_total",
        {"token": "abcdef12", "method": "wall.getComments", "outcome": "vk_error"},
    )
    assert series_of("vk/api_error/6") == ("vkscraper_vk_errors_total", {"code": "6"})
    assert series_of("vk/rate_limit/wait_seconds/abcdef12") == (
        "vkscraper_rate_limit_wait_seconds_total",
        {"token": "abcdef12"},
    )
    assert series_of("vk/store/comments_updated") == (
        "vkscraper_comments_stored_total",
        {"result": "updated"},
    )
    for other in ("vk/answers", "vk/rate_limit/waits", "vk/requests/wall.get", "vk/responses/x"):
        assert series_of(other) is None


def scrape(collector: ServiceCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_service_serves_the_stored_counters_rebounded_and_the_tasks():
    tag = token_tag(TOKEN)
    snap = Snapshot(
        counters=[
            (
                "vkscraper_vk_requests_total",
                metrics.canonical({"method": "wall.get", "outcome": "ok", "token": tag}),
                7.0,
            ),
            # written by hand into the table: still bounded, still no token
            (
                "vkscraper_vk_requests_total",
                json.dumps({"method": "wall.get", "outcome": "ok", "token": TOKEN}),
                2.0,
            ),
            ("vkscraper_not_ours_total", "{}", 5.0),
            ("vkscraper_vk_errors_total", "not json", 1.0),
            ("vkscraper_runs_ended_total", metrics.canonical({"outcome": "failed"}), 3.0),
        ],  # fmt: skip
        tasks={"completed": 4, "failed": 1},
    )
    body = scrape(ServiceCollector(lambda: snap))
    assert TOKEN not in body and "vkscraper_not_ours" not in body
    found = samples(body)
    request = ("vkscraper_vk_requests_total", (("method", "wall.get"), ("outcome", "ok")))
    assert found[(request[0], (*request[1], ("token", tag)))] == 7.0
    assert found[(request[0], (*request[1], ("token", "none")))] == 2.0
    assert found[("vkscraper_runs_ended_total", (("outcome", "failed"),))] == 3.0
    # present from the first scrape, so increase() sees the first run end
    assert found[("vkscraper_runs_ended_total", (("outcome", "completed"),))] == 0.0
    assert found[("vkscraper_runs_started_total", ())] == 0.0
    assert found[("vkscraper_tasks", (("status", "completed"),))] == 4
    assert found[("vkscraper_tasks", (("status", "in_progress"),))] == 0
    assert found[("vkscraper_up", (("source", "database"),))] == 1


def test_a_dead_database_still_answers_a_scrape_with_up_0(caplog):
    def dead() -> Snapshot:
        raise RequestError(503, "the database is unavailable: connection refused")

    body = scrape(ServiceCollector(dead))
    found = samples(body)
    assert found == {("vkscraper_up", (("source", "database"),)): 0.0}
    assert "connection refused" in caplog.text


def test_schedules_give_their_lag_interval_and_last_comments_time():
    now = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    due = now - timedelta(minutes=30)
    snap = Snapshot(
        schedules=[
            ScheduleState(1, 600, None, "UTC", due, due + timedelta(seconds=4), now),
            ScheduleState(2, None, "0 * * * *", "Europe/Moscow", None, None, None),
            ScheduleState(3, None, "not a cron", "UTC", None, None, None),
            # Never stored a comment: counted from its creation. Paused: no interval.
            ScheduleState(4, 60, None, "UTC", None, None, None, created_at=due),
            ScheduleState(5, 60, None, "UTC", None, None, None, paused=True, created_at=due),
        ]
    )
    found = samples(scrape(ServiceCollector(lambda: snap, clock=now.timestamp)))
    assert found[("vkscraper_schedule_lag_seconds", (("schedule", "1"),))] == 4
    assert found[("vkscraper_schedule_interval_seconds", (("schedule", "1"),))] == 600
    assert found[("vkscraper_schedule_interval_seconds", (("schedule", "2"),))] == 3600
    assert ("vkscraper_schedule_interval_seconds", (("schedule", "3"),)) not in found
    last = ("vkscraper_schedule_last_comments_timestamp_seconds", (("schedule", "1"),))
    assert found[last] == now.timestamp()
    assert ("vkscraper_schedule_lag_seconds", (("schedule", "2"),)) not in found
    # The rule "no comments in 2 intervals" fires for one that never stored any, not for one
    # that is paused.
    assert found[(last[0], (("schedule", "4"),))] == due.timestamp()
    assert found[("vkscraper_schedule_interval_seconds", (("schedule", "4"),))] == 60
    assert ("vkscraper_schedule_interval_seconds", (("schedule", "5"),)) not in found


def test_a_crons_interval_is_its_current_gap_in_its_time_zone():
    at = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert cron_gap("*/15 * * * *", "UTC", at) == 900
    # 09:00 and 18:00 on weekdays; Sunday 1 March 2026 → Friday 18:00 to Monday 09:00
    assert cron_gap("0 9,18 * * 1-5", "Europe/Berlin", at) == (2 * 24 + 15) * 3600
    assert cron_gap("0 9 * * *", "Nowhere/Else", at) is None


def test_workers_metrics_are_operator_only_settings():
    from vkscraper.service.core import CLIENT_SETTINGS, check_task_settings

    assert "VK_WORKER_METRICS_PORT" not in CLIENT_SETTINGS
    assert "VK_WORKER_METRICS_HOST" not in CLIENT_SETTINGS
    with pytest.raises(RequestError):
        check_task_settings(["VK_WORKER_METRICS_PORT=9100"])


@pytest.mark.parametrize("value", ["0", "-1", "0.0", "61", "1e9"])
def test_a_client_cannot_turn_off_or_stretch_the_task_refresh(value):
    """The refresh is the heartbeat a schedule runner reads (VK_SCHEDULE_STALE_AFTER): a task
    sent with it off would be taken for a dead one and doubled."""
    from vkscraper.service.core import check_task_settings

    with pytest.raises(RequestError, match="VK_METRICS_INTERVAL must be above 0"):
        check_task_settings([f"VK_METRICS_INTERVAL={value}"])
    assert check_task_settings(["VK_METRICS_INTERVAL=0.2"]) == {"VK_METRICS_INTERVAL": "0.2"}
