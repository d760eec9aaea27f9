"""Where the token may go and how fast (vkscraper.tokens.trust): the rule itself, the task
service's use of it, and a real ``scrapy crawl`` that must refuse before sending anything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.crawl import TOKEN
from tests.helpers.emulator import Listener
from tests.helpers.scrapyd import REPO
from vkscraper.service.core import RequestError, check_task_settings
from vkscraper.tokens.trust import api_url_allowed, check_api_url, max_rps, operator_api_url


@pytest.mark.parametrize(
    ("allowed", "url", "ok"),
    [
        ("", "https://api.vk.ru/method/", True),
        ("", "https://api.vk.com/method/", True),
        ("", "https://API.VK.RU:443/method/", True),
        ("", "http://api.vk.ru/method/", False),  # VK over plain HTTP: not VK's origin
        ("", "https://api.vk.ru:8443/method/", False),
        ("", "https://api.vk.ru.evil.example/method/", False),
        ("", "https://user@api.vk.ru/method/", False),
        ("", "http://127.0.0.1:8765/method/", False),
        ("http://127.0.0.1:8765/method/", "http://127.0.0.1:8765/method/", True),
        ("http://127.0.0.1:8765/method/", "http://127.0.0.1:8765/other/", True),  # an origin
        ("http://127.0.0.1:8765/method/", "http://127.0.0.1:8766/method/", False),
        ("http://127.0.0.1:8765/method/", "https://127.0.0.1:8765/method/", False),
        # an exact entry never allows what it prefixes (the host is then another one)
        ("http://host:80", "http://host:80.evil.example/method/", False),
        ("http://host", "http://host.evil.example/method/", False),
        ("http://host:80/method", "http://host:80/method.evil/", True),  # same origin
        ("http://127.0.0.1:*", "http://127.0.0.1:1/method/", True),
        ("http://127.0.0.1:*", "http://127.0.0.1/method/", True),
        ("http://127.0.0.1:*", "https://127.0.0.1:1/method/", False),
        ("http://127.0.0.1:*", "http://127.0.0.2:1/method/", False),
        # user-info: the host is what follows the "@" (issue 17, MEDIUM 6)
        ("http://127.0.0.1:*", "http://127.0.0.1:@evil.example/method/", False),
        ("http://127.0.0.1:*", "http://127.0.0.1@evil.example/method/", False),
        ("http://127.0.0.1:*", "http://127.0.0.1:1@evil.example/method/", False),
        ("http://127.0.0.1:*", "http://127.0.0.1:1\\@evil.example/method/", False),
        ("http://127.0.0.1:*", "http://127.0.0.1:1 /method/", False),
        ("http://127.0.0.1:*", "http://127.0.0.1:99999/method/", False),
        ("http://127.0.0.1:*", "file:///etc/passwd", False),
        (" http://a:1/ , http://b:2/ ", "http://b:2/method/", True),
    ],
)
def test_the_token_goes_only_to_vk_and_the_operators_origins(allowed, url, ok):
    assert api_url_allowed(url, {"VKSCRAPER_API_URLS": allowed}) is ok


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:8765/method/", True),
        ("http://127.0.0.1:8765/other/", True),  # an origin, as for VKSCRAPER_API_URLS
        ("http://127.0.0.1:8766/method/", False),
        ("https://127.0.0.1:8765/method/", False),
        ("http://127.0.0.1:8765@evil.example/method/", False),
        ("https://api.vk.ru/method/", True),  # VK's own stay allowed
    ],
)
def test_the_operators_default_api_url_is_trusted(url, ok):
    """``VK_API_URL`` in the environment is the operator's: the token may go there (and only
    to that origin), without listing it again in VKSCRAPER_API_URLS."""
    environ = {"VK_API_URL": "http://127.0.0.1:8765/method/"}
    assert api_url_allowed(url, environ) is ok
    assert api_url_allowed("http://127.0.0.1:8765/method/", {}) is False


def test_a_malformed_default_api_url_is_an_error_naming_the_variable():
    for bad in ("127.0.0.1:8765", "http://a:b@c/", "ftp://host/"):
        with pytest.raises(ValueError, match=r"VK_API_URL \(environment\)"):
            check_api_url("https://api.vk.ru/method/", {"VK_API_URL": bad})
    assert operator_api_url({"VK_API_URL": "  "}) is None


def test_a_malformed_allowlist_entry_is_an_error_not_a_silent_rule():
    with pytest.raises(ValueError, match="VKSCRAPER_API_URLS: 'http://a:b@c' is not a URL"):
        check_api_url("https://api.vk.ru/method/", {"VKSCRAPER_API_URLS": "http://a:b@c"})


def test_the_refusal_names_the_variable():
    with pytest.raises(ValueError, match="VKSCRAPER_API_URLS environment variable"):
        check_api_url("http://evil.example/method/", {})


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:@evil.example/method/", "http://host:80.evil.example/method/"],
)
def test_the_task_service_refuses_what_the_rule_refuses(monkeypatch, url):
    """The service uses the same rule: an exact entry allows no URL it prefixes, and the
    wildcard no user-info URL (issue 17's mutation sample and MEDIUM 6)."""
    monkeypatch.setenv("VKSCRAPER_API_URLS", "http://127.0.0.1:*,http://host:80")
    assert check_task_settings({"VK_API_URL": "http://host:80/method/"})
    with pytest.raises(RequestError, match="VK_API_URL: not an allowed URL") as refused:
        check_task_settings({"VK_API_URL": url})
    assert refused.value.status == 400


def test_the_rate_ceiling_is_vks_unless_the_operator_raises_it(monkeypatch):
    assert max_rps({}) == 3
    assert max_rps({"VKSCRAPER_MAX_RPS": "20"}) == 20
    for bad in ("0", "-1", "nan", "inf", "fast"):
        with pytest.raises(ValueError, match="VKSCRAPER_MAX_RPS"):
            max_rps({"VKSCRAPER_MAX_RPS": bad})


def test_a_client_may_only_slow_the_crawl_down(monkeypatch):
    """MEDIUM 4: a task's settings cannot lift the per-token rate."""
    monkeypatch.delenv("VKSCRAPER_MAX_RPS")
    for pair in ({"VK_REQUESTS_PER_SECOND": "1000"}, {"VK_REQUESTS_PER_SECOND": "3.5"}):
        with pytest.raises(RequestError, match="VKSCRAPER_MAX_RPS"):
            check_task_settings(pair)
    for pair in ({"VK_RATE_MARGIN": "1"}, {"VK_RATE_MARGIN": "0.5"}):
        with pytest.raises(RequestError, match="VK_RATE_MARGIN below 1.05"):
            check_task_settings(pair)
    # slower is fine
    assert check_task_settings({"VK_REQUESTS_PER_SECOND": "2", "VK_RATE_MARGIN": "1.5"})
    # the operator's ceiling, not the client, decides how fast
    monkeypatch.setenv("VKSCRAPER_MAX_RPS", "20")
    assert check_task_settings({"VK_REQUESTS_PER_SECOND": "20"})
    with pytest.raises(RequestError, match="above 20"):
        check_task_settings({"VK_REQUESTS_PER_SECOND": "21"})


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def crawl(tmp_path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "vk", "-a", "groups=1", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**env, "VK_ACCESS_TOKEN": TOKEN,
             "DATABASE_URL": f"sqlite:///{tmp_path / 'vk.sqlite3'}"},
    )  # fmt: skip


@pytest.mark.integration
def test_scrapy_crawl_refuses_an_api_url_the_operator_did_not_allow(
    tmp_path, listener, monkeypatch
):
    monkeypatch.delenv("VKSCRAPER_API_URLS")
    result = crawl(tmp_path, "-s", f"VK_API_URL={listener.url}", env=dict(os.environ))
    assert result.returncode != 0
    assert "VKSCRAPER_API_URLS" in result.stderr, result.stderr[-2000:]
    assert TOKEN not in result.stdout + result.stderr
    assert listener.connections == 0 and listener.received == b""
    # the operator's environment allows it: the token goes there (the listener answers 500)
    monkeypatch.setenv("VKSCRAPER_API_URLS", listener.url)
    crawl(tmp_path, "-s", f"VK_API_URL={listener.url}", "-s", "RETRY_ENABLED=False",
          env=dict(os.environ))  # fmt: skip
    assert f"Bearer {TOKEN}".encode() in listener.received


@pytest.mark.integration
def test_scrapy_crawl_refuses_a_rate_above_the_operators_ceiling(tmp_path, monkeypatch):
    monkeypatch.delenv("VKSCRAPER_MAX_RPS")
    result = crawl(tmp_path, "-s", "VK_REQUESTS_PER_SECOND=20", env=dict(os.environ))
    assert result.returncode != 0
    assert "VK_REQUESTS_PER_SECOND 20 is above 3" in result.stderr, result.stderr[-2000:]
    assert "VKSCRAPER_MAX_RPS" in result.stderr


@pytest.mark.integration
def test_scrapy_crawl_uses_and_trusts_the_operators_default_api_url(
    tmp_path, listener, monkeypatch
):
    """No -s VK_API_URL: the crawl goes to the environment's VK_API_URL, which needs no
    VKSCRAPER_API_URLS entry; -s still overrides it (and is checked as ever)."""
    monkeypatch.delenv("VKSCRAPER_API_URLS")
    monkeypatch.setenv("VK_API_URL", listener.url)
    crawl(tmp_path, "-s", "RETRY_ENABLED=False", env=dict(os.environ))
    assert f"Bearer {TOKEN}".encode() in listener.received
    assert b"POST /method/" in listener.received
    # a client's -s wins over the default: refused here, since only the default is trusted
    other = Listener()
    try:
        result = crawl(tmp_path, "-s", f"VK_API_URL={other.url}", env=dict(os.environ))
        assert result.returncode != 0 and "VKSCRAPER_API_URLS" in result.stderr
        assert other.connections == 0
    finally:
        other.close()
