"""Settings tell the truth: `scrapy settings` shows what a crawl uses, the add-on registers the
``VK_*`` defaults for projects that only enable it, and values VK cannot honour are refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from vkscraper import defaults
from vkscraper._periodic import Periodic
from vkscraper.addon import VkAddon

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
        ("VK_API_URL", "https://api.vk.ru/method/"),
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
