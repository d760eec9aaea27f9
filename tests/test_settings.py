"""Settings tell the truth: `scrapy settings` shows what a crawl uses, the add-on registers the
``VK_*`` defaults for projects that only enable it, and values VK cannot honour are refused."""

from __future__ import annotations

import argparse
import ast
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from vkscraper import defaults
from vkscraper._periodic import Periodic
from vkscraper.addon import VkAddon, rate_window
from vkscraper.commands.settings import Command as SettingsCommand
from vkscraper.connections import database_url, redis_url

REPO = Path(__file__).resolve().parents[1]


def scrapy_settings(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "scrapy", "settings", *args],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout.strip()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("VK_POSTS_PER_GROUP", "10"),
        ("VK_EXECUTE_CALLS", "25"),
        ("VK_API_URL", "https://api.vk.ru/method/"),
        ("RETRY_TIMES", "3"),
        ("AUTOTHROTTLE_START_DELAY", "0.35000000000000003"),
        ("LIMITS", "None"),  # helper constants of vkscraper are not settings
        ("DOWNLOAD_DELAY", "0.35000000000000003"),
        ("CONCURRENT_REQUESTS_PER_DOMAIN", "4"),
        ("REMOTE_CONTROL_ENABLED", "False"),
    ],
)
def test_scrapy_settings_shows_what_the_crawl_uses(name, shown):
    assert scrapy_settings("--get", name) == shown


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["-s", "VK_REQUESTS_PER_SECOND=1"], "1.05"),  # follows the rate, as the crawl does
        (["-s", "DOWNLOAD_DELAY=0"], "0.35000000000000003"),  # never faster than the limit
        (["-s", "DOWNLOAD_DELAY=2"], "2.0"),
    ],
)
def test_scrapy_settings_shows_the_delay_the_crawl_uses(args, shown):
    assert scrapy_settings("--get", "DOWNLOAD_DELAY", *args) == shown


@pytest.mark.integration
def test_scrapy_settings_shows_the_default_database(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert scrapy_settings("--get", "DATABASE_URL") == "sqlite:///vkscraper.sqlite3"


@pytest.mark.integration
def test_scrapy_settings_shows_database_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.sqlite3")
    assert scrapy_settings("--get", "DATABASE_URL") == "sqlite:///elsewhere.sqlite3"


@pytest.mark.integration
def test_vk_api_url_from_the_environment_is_every_crawls_default(monkeypatch):
    """The operator's VK_API_URL (a worker's, scrapyd's, a shell's) replaces the project's
    value; -s (cmdline: scrapyd's setting=, a worker's -s) still wins."""
    from scrapy.crawler import Crawler
    from scrapy.settings import Settings
    from scrapy.spiders import Spider

    emulator = "http://127.0.0.1:8765/method/"
    monkeypatch.delenv("VKSCRAPER_API_URLS")  # trusted because the operator set it
    monkeypatch.setenv("VK_API_URL", emulator)
    crawler = get_crawler(settings_dict={"ADDONS": {VkAddon: 0}})
    assert crawler.settings["VK_API_URL"] == emulator
    crawler = get_crawler(settings_dict={"ADDONS": {VkAddon: 0}, "VK_API_URL": "x"})
    assert crawler.settings["VK_API_URL"] == emulator  # over the project's
    settings = Settings({"ADDONS": {VkAddon: 0}})
    settings.set("VK_API_URL", "https://api.vk.com/method/", "cmdline")
    crawler = Crawler(Spider, settings)
    crawler._apply_settings()
    assert crawler.settings["VK_API_URL"] == "https://api.vk.com/method/"
    assert scrapy_settings("--get", "VK_API_URL") == emulator


def settings_command(name: str, **cmdline: object) -> str:
    """What ``scrapy settings --get NAME -s …`` prints, in this process."""
    settings = Settings()
    settings.setmodule("vkscraper.settings", priority="project")
    settings.update(cmdline, "cmdline")
    command = SettingsCommand()
    command.settings = settings
    parser = argparse.ArgumentParser()
    command.add_options(parser)
    out = subprocess_free_stdout(lambda: command.run([], parser.parse_args(["--get", name])))
    return out.strip()


def subprocess_free_stdout(fn) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        fn()
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(defaults.all_defaults()))
def test_scrapy_settings_shows_every_vk_default_and_its_override(name):
    value = defaults.all_defaults()[name]
    assert settings_command(name) == str(value)
    extra: dict[str, object] = {}
    if isinstance(value, bool):
        other: object = not value
        extra = {"REDIS_URL": "redis://127.0.0.1:6379/0"}  # the shared limit needs it
    elif isinstance(value, int):
        other = value - 1  # within VK's ranges
    elif isinstance(value, float):
        other = value * 2
    elif name == "VK_API_URL":
        other = "https://api.vk.com/method/"  # must stay a URL the operator allows
    else:
        other = f"{value}x"
    assert settings_command(name, **{name: other}, **extra) == str(other)


SOURCE = REPO / "vkscraper"
# Scrapy settings the add-on sets (unless a user chose them): defined there, and only there.
ADDON_SCRAPY_SETTINGS = (
    "RETRY_TIMES", "CONCURRENT_REQUESTS_PER_DOMAIN", "DOWNLOAD_DELAY", "AUTOTHROTTLE_ENABLED",
    "AUTOTHROTTLE_START_DELAY", "AUTOTHROTTLE_TARGET_CONCURRENCY", "DATABASE_URL", "REDIS_URL",
)  # fmt: skip


def assignments() -> dict[str, list[str]]:
    """Every name assigned at the top level of a module of the package: the modules."""
    found: dict[str, list[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = (
                node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            )
            for target in targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, []).append(str(path.relative_to(REPO)))
    return found


def test_every_vk_default_is_assigned_once_in_the_defaults_module():
    found = assignments()
    for name in defaults.all_defaults():
        assert found[name] == ["vkscraper/defaults.py"], name


def test_the_project_settings_hold_only_what_a_project_sets():
    tree = ast.parse((SOURCE / "settings.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assigned = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets}  # type: ignore[union-attr]
    assert not assigned & set(ADDON_SCRAPY_SETTINGS)
    assert not [n for n in assigned if n.startswith("VK_")]
    for path in SOURCE.rglob("*.py"):  # no star import anywhere: nothing becomes a setting by it
        tree = ast.parse(path.read_text(encoding="utf-8"))
        stars = [
            n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.names[0].name == "*"
        ]
        assert not stars, path


def test_database_and_redis_urls_are_read_from_the_environment_in_one_place():
    readers = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                where = ast.unparse(node.func.value)
                arg = node.args[0] if node.args else None
            elif isinstance(node, ast.Subscript):
                where, arg = ast.unparse(node.value), node.slice
            else:
                continue
            if (
                isinstance(arg, ast.Constant)
                and arg.value in ("DATABASE_URL", "REDIS_URL")
                and ("environ" in where or where in ("env", "os"))
            ):
                readers.add(str(path.relative_to(REPO)))
    assert readers == {"vkscraper/connections.py"}


def test_the_run_value_beats_the_environment_which_beats_the_default():
    env = {"DATABASE_URL": "postgresql://env/db", "REDIS_URL": "redis://env:6379/0"}
    assert database_url("sqlite:///given.sqlite3", env) == "sqlite:///given.sqlite3"
    assert database_url(None, env) == "postgresql://env/db"
    assert database_url(None, {}) == "sqlite:///vkscraper.sqlite3"
    assert redis_url("redis://given:6379/1", env) == "redis://given:6379/1"
    assert redis_url(None, env) == "redis://env:6379/0"
    assert redis_url(None, {}) is None


def test_a_crawl_takes_the_urls_by_the_same_rule(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "sqlite:///env.sqlite3")
    monkeypatch.setenv("REDIS_URL", "redis://env:6379/0")
    crawler = get_crawler(settings_dict={"ADDONS": {VkAddon: 0}})
    assert crawler.settings["DATABASE_URL"] == "sqlite:///env.sqlite3"
    assert crawler.settings["REDIS_URL"] == "redis://env:6379/0"
    settings = {"ADDONS": {VkAddon: 0}, "DATABASE_URL": "sqlite:///s.sqlite3"}
    assert get_crawler(settings_dict=settings).settings["DATABASE_URL"] == "sqlite:///s.sqlite3"
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.delenv("REDIS_URL")
    crawler = get_crawler(settings_dict={"ADDONS": {VkAddon: 0}})
    assert crawler.settings["DATABASE_URL"] == "sqlite:///vkscraper.sqlite3"
    assert crawler.settings["REDIS_URL"] is None


@pytest.mark.parametrize(
    ("rate", "margin", "count", "window"),
    [(3, 1.05, 3, 1.05), (2.5, 1.05, 2, 0.84), (0.5, 1.05, 1, 2.1), (6, 1.2, 6, 1.2)],
)
def test_the_rate_window_is_computed_once_and_the_handler_uses_it(rate, margin, count, window):
    from vkscraper.downloadhandlers.ratelimit import VkDownloadHandler

    crawler = get_crawler(
        settings_dict={
            "ADDONS": {VkAddon: 0},
            "VK_REQUESTS_PER_SECOND": rate,
            "VK_RATE_MARGIN": margin,
        }
    )
    assert rate_window(crawler.settings) == (count, pytest.approx(window))
    handler = VkDownloadHandler(crawler)
    assert (handler.limit.limit, handler.limit.window) == rate_window(crawler.settings)
    assert crawler.settings.getfloat("DOWNLOAD_DELAY") == pytest.approx(window / count)


def test_the_addon_alone_registers_every_default():
    crawler = get_crawler(settings_dict={"ADDONS": {VkAddon: 0}})
    for name, value in defaults.all_defaults().items():
        assert crawler.settings[name] == value, name
    assert crawler.settings.getfloat("DOWNLOAD_DELAY") == pytest.approx(0.35)
    assert crawler.settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == 4


def test_the_project_delay_follows_the_rate_both_ways():
    from scrapy.crawler import Crawler
    from scrapy.settings import Settings
    from scrapy.utils.spider import DefaultSpider

    def delay(**cmdline):
        # As `scrapy crawl -s` builds them (flattened to a dict, Scrapy's *_BASE settings
        # would sit at the project's priority and win over the add-on's components).
        settings = Settings()
        settings.setmodule("vkscraper.settings", priority="project")
        settings.update(cmdline, "cmdline")
        crawler = Crawler(DefaultSpider, settings)
        crawler._apply_settings()
        return crawler.settings.getfloat("DOWNLOAD_DELAY")

    assert delay() == pytest.approx(0.35)
    assert delay(VK_REQUESTS_PER_SECOND=1000) == pytest.approx(0.00105)
    assert delay(VK_REQUESTS_PER_SECOND=2) == pytest.approx(0.525)
    assert delay(DOWNLOAD_DELAY=0.1) == pytest.approx(0.35)  # never faster than the limit
    assert delay(DOWNLOAD_DELAY=2) == 2


def test_a_delay_a_user_chose_is_told_by_its_priority_not_its_value():
    """A project's DOWNLOAD_DELAY equal to the default interval is the user's all the same: a
    faster rate does not lower it. Scrapy's own default (priority "default") follows the rate."""
    from scrapy.crawler import Crawler
    from scrapy.utils.spider import DefaultSpider

    def delay(priority: str, value: float) -> float:
        settings = Settings({"ADDONS": {VkAddon: 0}})
        settings.set("DOWNLOAD_DELAY", value, priority)
        settings.set("VK_REQUESTS_PER_SECOND", 1000, "cmdline")
        crawler = Crawler(DefaultSpider, settings)
        crawler._apply_settings()
        return crawler.settings.getfloat("DOWNLOAD_DELAY")

    assert delay("default", 0.35) == pytest.approx(0.00105)
    assert delay("project", 1.05 / 3) == pytest.approx(1.05 / 3)
    assert delay("cmdline", 1.05 / 3) == pytest.approx(1.05 / 3)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VK_COMMENTS_PAGE_SIZE", 200),
        ("VK_COMMENTS_PAGE_SIZE", 1),
        ("VK_THREAD_ITEMS_COUNT", 11),
        ("VK_POSTS_PER_GROUP", 100),
        ("VK_GROUPS_PER_REQUEST", 501),
    ],
)
def test_values_vk_cannot_honour_are_refused(name, value):
    with pytest.raises(ValueError, match=f"{name} must be between"):
        get_crawler(settings_dict={"ADDONS": {VkAddon: 0}, name: value})


def test_an_empty_api_url_is_refused_before_anything_starts():
    """Not a traceback at the first request (where the token would go is checked as given)."""
    with pytest.raises(ValueError, match="VK_API_URL '' is not VK's API"):
        get_crawler(settings_dict={"ADDONS": {VkAddon: 0}, "VK_API_URL": ""})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "AUTOTHROTTLE_TARGET_CONCURRENCY must be positive"),
        ("-1", "AUTOTHROTTLE_TARGET_CONCURRENCY must be positive"),
        ("abc", "AUTOTHROTTLE_TARGET_CONCURRENCY must be a number"),
    ],
)
def test_a_target_concurrency_autothrottle_cannot_use_is_refused(value, message):
    """AutoThrottle is on unless a user turns it off (the add-on turns it on): a target it
    cannot use is refused before the crawl, not left to switch AutoThrottle off silently
    (Scrapy's NotConfigured) or to fail inside it."""
    from scrapy.crawler import Crawler
    from scrapy.utils.spider import DefaultSpider

    from vkscraper.service.core import RequestError, check_task_settings

    settings = Settings()
    settings.setmodule("vkscraper.settings", priority="project")
    settings.set("AUTOTHROTTLE_TARGET_CONCURRENCY", value, "cmdline")
    with pytest.raises(ValueError, match=message):
        Crawler(DefaultSpider, settings)._apply_settings()
    with pytest.raises(RequestError, match=message):
        check_task_settings({"AUTOTHROTTLE_TARGET_CONCURRENCY": value})
    # A user who turns AutoThrottle off may leave any value there.
    settings = Settings()
    settings.setmodule("vkscraper.settings", priority="project")
    settings.set("AUTOTHROTTLE_TARGET_CONCURRENCY", value, "cmdline")
    settings.set("AUTOTHROTTLE_ENABLED", False, "cmdline")
    Crawler(DefaultSpider, settings)._apply_settings()


async def until(condition, timeout: float = 30) -> None:
    """Poll ``condition()`` on the reactor's loop; ``timeout`` only bounds a failure."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@deferred_f_from_coro_f
async def test_periodic_skips_a_tick_while_the_last_run_goes_on():
    running: list[int] = []
    peak: list[int] = []
    release = asyncio.Event()

    async def slow():
        running.append(1)
        peak.append(len(running))
        await release.wait()  # as long as the test says: a run on a slow database
        running.pop()

    periodic = Periodic(slow, 0.02)
    periodic.start()
    await until(lambda: periodic.skipped >= 5)  # ticks come, the first run goes on
    assert peak == [1]  # never two at once, however slow the run
    release.set()
    await until(lambda: len(peak) >= 2)  # the next tick after the run ended starts one
    release.clear()
    await until(lambda: running == [1])
    stopping = asyncio.ensure_future(periodic.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # stop() waits for the run in progress
    release.set()
    await stopping
    assert max(peak) == 1
    assert running == []


def test_the_spider_reads_its_settings_once_the_addon_has_run(monkeypatch):
    """Scrapy creates the spider before the add-ons run: what the add-on registers or
    derives (the VK_* defaults, RETRY_TIMES, the delay) reaches the spider when it opens."""
    from pydispatch import dispatcher
    from scrapy import signals
    from scrapy.crawler import Crawler

    from vkscraper.spiders.vk import VkSpider

    monkeypatch.setenv("VK_ACCESS_TOKEN", "t1,t2")
    settings = Settings({"ADDONS": {VkAddon: 0}})
    settings.set("VK_REQUESTS_PER_SECOND", 2, "cmdline")
    crawler = Crawler(VkSpider, settings)
    spider = crawler._create_spider(groups="club1")
    assert not hasattr(spider, "groups_per_request")  # nothing read before the add-on
    opened = dispatcher.liveReceivers(
        dispatcher.getAllReceivers(crawler.signals.sender, signals.spider_opened)
    )
    assert spider._read_settings in list(opened)  # read when the spider opens
    crawler._apply_settings()
    spider._read_settings()
    assert spider.groups_per_request == defaults.VK_GROUPS_PER_REQUEST
    assert spider.max_retries == 3
    assert spider.interval == pytest.approx(0.525)
    assert spider.tokens == 2


def test_a_worker_process_reads_its_own_settings_with_the_defaults(monkeypatch):
    """The worker reads VK_WORKER_* from the project's settings, before any crawl (and its
    add-on) starts."""
    import scrapy.crawler

    from vkscraper.distributed.worker import Worker

    monkeypatch.setattr(scrapy.crawler, "configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(scrapy.crawler, "log_scrapy_info", lambda *a, **k: None)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")  # never connected to here
    settings = Settings()
    settings.setmodule("vkscraper.settings", priority="project")
    settings.set("VK_WORKER_TASKS", 2, "cmdline")
    worker = Worker(settings)
    assert worker.heartbeat_ttl == defaults.VK_WORKER_HEARTBEAT
    assert worker.max_tasks == 2
    assert worker.redis.connection_pool.connection_kwargs["db"] == 15
