"""Where the access token must never end up: scrubbing, log records, the HTTP cache, and the
remote-control port Scrapy would open in the process that holds it.

The crawl tests put the token where a careless component would leak it (a middleware that logs
request headers after the token was added) and check that it still does not reach the log.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.extensions.remote_control import RemoteControl
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.spider import DefaultSpider
from scrapy.utils.test import get_crawler

from fakevk import FakeVk, generate_dataset
from tests.helpers.crawl import TOKEN, run_crawl
from vkscraper.addon import VkAddon
from vkscraper.tokens.access import scrub, token_tag
from vkscraper.tokens.logscrub import ScrubbingRecordFactory, install_log_scrubber

SHORT, LONG = "abc123", "abc123xyz789"


def tag(token: str) -> str:
    return f"<token {token_tag(token)}>"


# ----------------------------------------------------------------------------- scrub


@pytest.mark.parametrize("tokens", [[SHORT, LONG], [LONG, SHORT]])
def test_scrub_prefix_tokens_in_any_order(tokens):
    text = f"a {LONG} b {SHORT} c {LONG}{SHORT}"
    assert scrub(text, tokens) == f"a {tag(LONG)} b {tag(SHORT)} c {tag(LONG)}{tag(SHORT)}"


def test_scrub_overlapping_tokens_leave_nothing():
    out = scrub("x abcdef y", ["abcd", "cdef"])
    assert "ab" not in out and "ef" not in out and out.startswith("x <token ")


@pytest.mark.parametrize(
    "encode",
    [
        quote,
        lambda t: quote(t, safe=""),
        quote_plus,
        lambda t: quote_plus(t).lower(),  # lower-case escapes (and a lower-case token here)
    ],
)
def test_scrub_percent_encoded_forms(encode):
    token = "vk1.a/b+c d=é"
    encoded = encode(token)
    assert encoded != token
    assert scrub(f"GET /x?access_token={encoded}&v=5", [token]) == (
        f"GET /x?access_token={tag(token)}&v=5"
    )


@pytest.mark.parametrize("tokens", [[], [""], ["absent"]])
def test_scrub_leaves_other_text_alone(tokens):
    text = "nothing secret here: 100% ok"
    assert scrub(text, tokens) is text


# ----------------------------------------------------------------------------- log records


@pytest.fixture
def record_factory():
    """Put logging's record factory back after the test (the add-on replaces it for good)."""
    original = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(original)


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)
    return TOKEN


@pytest.mark.usefixtures("record_factory", "token_env")
def test_every_log_record_is_scrubbed_once_the_addon_ran(caplog):
    get_crawler(settings_dict={"ADDONS": {VkAddon: 0}})
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("some.lib")  # a child logger: root filters would not see it
    message = f"in the message {TOKEN}"  # pre-rendered, as some libraries log
    log.debug(message)
    log.info("in the args %(token)s, encoded %(enc)s", {"token": TOKEN, "enc": quote_plus(TOKEN)})
    try:
        raise RuntimeError(f"in the exception Bearer {TOKEN}")
    except RuntimeError:
        log.exception("request failed")
    assert len(caplog.records) == 3
    assert TOKEN not in caplog.text
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert caplog.text.count(tag(TOKEN)) == 4
    assert "RuntimeError: in the exception Bearer <token" in caplog.text


@pytest.mark.usefixtures("record_factory", "token_env")
def test_installing_twice_does_not_wrap_twice():
    get_crawler(settings_dict={"ADDONS": {VkAddon: 0}})
    first = logging.getLogRecordFactory()
    get_crawler(settings_dict={"ADDONS": {VkAddon: 0}})
    factory = logging.getLogRecordFactory()
    assert isinstance(factory, ScrubbingRecordFactory) and factory is first
    assert not isinstance(factory.wrapped, ScrubbingRecordFactory)
    assert factory.tokens == [TOKEN]
    install_log_scrubber(["other"])  # a later install replaces the tokens
    assert logging.getLogRecordFactory() is factory and factory.tokens == ["other"]


# ----------------------------------------------------------------------------- crawls

DATASET = generate_dataset(seed=3, groups=2, posts_per_group=3, max_comments=4, max_replies=2)
GROUPS = ",".join(str(g["id"]) for g in DATASET["groups"] if not g.get("author_only"))

leaky_logger = logging.getLogger("leaky.component")


class LeakyHeadersMiddleware:
    """A careless component that sees the request as it enters the downloader, after the
    auth middleware (no middleware may come after it: the add-on refuses that): it logs what
    it sees, token included."""

    saw_token = 0

    @classmethod
    def from_crawler(cls, crawler):
        leaky = cls()
        crawler.signals.connect(leaky.process_request, signal=signals.request_reached_downloader)
        return leaky

    def process_request(self, request, spider=None):
        auth = request.headers.get(b"Authorization")
        if auth:
            type(self).saw_token += 1
            leaky_logger.debug(
                "Sending %(url)s with headers %(headers)s (%(encoded)s)",
                {"url": request.url, "headers": request.headers, "encoded": quote_plus(auth)},
            )
            try:
                raise ValueError(f"refusing {auth.decode()}")
            except ValueError:
                leaky_logger.exception("Leaky component failed")


@pytest.mark.integration
@pytest.mark.usefixtures("record_factory", "token_env")
@deferred_f_from_coro_f
async def test_token_never_reaches_the_log_even_from_a_leaky_component(sqlite_url, caplog):
    caplog.set_level(logging.DEBUG)
    LeakyHeadersMiddleware.saw_token = 0
    faults = {"500": 0.1, "error10": 0.1, "drop": 0.1}
    settings = {"EXTENSIONS": {LeakyHeadersMiddleware: 0}}
    with FakeVk(DATASET, tokens=[TOKEN], faults=faults, seed=5, retry_after=0) as vk:
        crawler = await run_crawl(vk.url, sqlite_url, settings=settings, groups=GROUPS)
    assert crawler.stats.get_value("finish_reason") == "finished"
    assert crawler.stats.get_value("retry/count") > 0
    assert LeakyHeadersMiddleware.saw_token > 5  # the leak was there to be scrubbed
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged
    assert "Leaky component failed" in logged and tag(TOKEN) in logged


@pytest.mark.integration
@pytest.mark.usefixtures("record_factory", "token_env")
@deferred_f_from_coro_f
async def test_http_cache_never_holds_the_token(sqlite_url, tmp_path):
    cache = tmp_path / "cache"  # absolute: a relative HTTPCACHE_DIR lands in .scrapy/
    settings = {"HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(cache)}
    with FakeVk(DATASET, tokens=[TOKEN]) as vk:
        crawler = await run_crawl(vk.url, sqlite_url, settings=settings, groups=GROUPS)
    assert crawler.stats.get_value("finish_reason") == "finished"
    files = [p for p in Path(cache).rglob("*") if p.is_file()]
    assert crawler.stats.get_value("httpcache/store") > 0
    assert any(p.name == "request_headers" for p in files)  # the cache was used
    assert [p for p in files if TOKEN.encode() in p.read_bytes()] == []


# ----------------------------------------------------------------------------- remote control


def addon_crawler(**settings: tuple[object, str]) -> Crawler:
    """A crawler with only the add-on (no vkscraper.settings): ``NAME=(value, priority)``."""
    s = Settings({"ADDONS": {VkAddon: 0}, "TELNETCONSOLE_ENABLED": False})
    for name, (value, priority) in settings.items():
        s.set(name, value, priority)
    crawler = Crawler(DefaultSpider, s)
    crawler._apply_settings()
    return crawler


@pytest.mark.usefixtures("record_factory")
@pytest.mark.parametrize("name", ["REMOTE_CONTROL_ENABLED", "TELNETCONSOLE_ENABLED"])
@pytest.mark.parametrize(
    ("priority", "allowed", "enabled"),
    [
        ("default", False, False),  # Scrapy's default is True
        ("project", False, False),
        ("cmdline", False, "refused"),  # -s …=True, e.g. from scrapyd's schedule.json
        ("spider", False, "refused"),
        ("cmdline", True, True),  # the operator's VKSCRAPER_ALLOW_CONSOLE=1
    ],
)
def test_a_console_runs_only_when_the_operator_allows_it(
    monkeypatch, name, priority, allowed, enabled
):
    """A console runs code in the process holding the token: settings (anyone's) cannot turn
    one on, only the operator's environment can."""
    if allowed:
        monkeypatch.setenv("VKSCRAPER_ALLOW_CONSOLE", "1")
    else:
        monkeypatch.delenv("VKSCRAPER_ALLOW_CONSOLE", raising=False)
    given = {name: (True, priority)}
    if name == "TELNETCONSOLE_ENABLED" and priority == "default":
        given = {}  # addon_crawler's own False; Scrapy's default (True) is below
    if enabled == "refused":
        with pytest.raises(ValueError, match=f"{name}: a console runs code"):
            addon_crawler(**given)
        return
    settings = Settings({"ADDONS": {VkAddon: 0}})
    for n, (value, prio) in given.items():
        settings.set(n, value, prio)
    crawler = Crawler(DefaultSpider, settings)
    crawler._apply_settings()
    assert crawler.settings.getbool(name) is enabled


@pytest.mark.integration
@pytest.mark.usefixtures("record_factory", "token_env")
@deferred_f_from_coro_f
async def test_a_crawl_has_no_remote_control(sqlite_url):
    with FakeVk(DATASET, tokens=[TOKEN]) as vk:
        crawler = await run_crawl(vk.url, sqlite_url, groups=GROUPS)
    assert crawler.extensions.middlewares  # extensions were built
    assert not [e for e in crawler.extensions.middlewares if isinstance(e, RemoteControl)]
