"""Shared pytest fixtures.

Store fixtures run against the REAL services: PostgreSQL at ``VK_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``; each test gets a fresh database, dropped
afterwards) and SQLite files in ``tmp_path``. An unreachable PostgreSQL fails the tests
loudly instead of skipping them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg2
import pytest

from testkit.pg import admin_execute, temporary_database
from tests.helpers.isolation import servers_refused
from vkscraper.items import VkComment, VkPost
from vkscraper.store import Store, open_store

# The worker-mode fixtures (``server``, ``workers``) live with the worker harness.
pytest_plugins = ["tests.helpers.workers"]

# ----------------------------------------------------------------------------- tiers
#
# `make test-fast` runs `pytest -m "not integration"`, `make test` runs everything. A test is
# `integration` when it needs a server or a child process: it says so itself (a mark on the test,
# `pytestmark` on its module) or it uses PostgreSQL through the fixtures below (marked here).
# Every other test runs with PostgreSQL, Redis and child processes refused, in both tiers.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgresql = callspec is not None and callspec.params.get("store_url") == "postgresql"
        if on_postgresql or "pg_admin_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@contextlib.contextmanager
def _unit_isolation(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("integration"):
        yield
        return
    with servers_refused() as refused:
        yield
    if refused:
        pytest.fail(f"a unit test reached for {', '.join(refused)}: mark it `integration`")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _unit_isolation(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _unit_isolation(item):
        return (yield)


# ----------------------------------------------------------------------------- trust

LOCAL_API_URLS = "http://127.0.0.1:*"  # the emulators, on whatever port each one got
TEST_MAX_RPS = "1000"  # the tests' crawls run unpaced against them


@pytest.fixture(autouse=True)
def operator_trusts_the_emulators(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's environment of every crawl a test starts, in-process or a child
    process: the token may go to a local emulator, at any rate (vkscraper.tokens.trust). A test
    of the rule itself sets or deletes these variables."""
    monkeypatch.setenv("VKSCRAPER_API_URLS", LOCAL_API_URLS)
    monkeypatch.setenv("VKSCRAPER_MAX_RPS", TEST_MAX_RPS)
    # The operator's default API (trusted, and the default of every crawl): a developer's
    # shell must not point the tests' crawls elsewhere.
    monkeypatch.delenv("VK_API_URL", raising=False)


# ----------------------------------------------------------------------------- store

PG_ADMIN_URL = os.environ.get("VK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The maintenance database URL; fails (never skips) when PostgreSQL is unreachable."""
    try:
        admin_execute(PG_ADMIN_URL, "SELECT 1")
    except psycopg2.Error as exc:
        pytest.fail(
            f"PostgreSQL for the tests is unreachable at {PG_ADMIN_URL} "
            f"(set VK_TEST_PG_URL): {str(exc).strip()}",
            pytrace=False,
        )
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped (WITH FORCE) after the test."""
    with temporary_database(pg_admin_url, "vkst") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """URL of a not yet existing SQLite file in ``tmp_path``."""
    return f"sqlite:///{tmp_path / 'store.sqlite3'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs twice: on a fresh PostgreSQL database and on an SQLite file."""
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An opened and migrated store (both backends), closed after the test."""
    s = open_store(store_url)
    try:
        s.migrate()
        yield s
    finally:
        s.close()


@pytest.fixture
def make_post() -> Callable[..., VkPost]:
    """Factory for :class:`VkPost` with defaults: ``make_post(1, group_id=5, likes=3)``."""

    def factory(vk_post_id: int, group_id: int = 1, **fields: object) -> VkPost:
        values: dict = {
            "vk_post_id": vk_post_id,
            "owner_id": -group_id,
            "group_id": group_id,
            "text": f"post {vk_post_id}",
            "date": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        }
        values.update(fields)
        return VkPost(**values)

    return factory


@pytest.fixture
def make_comment() -> Callable[..., VkComment]:
    """Factory for :class:`VkComment`: ``make_comment(10, post_vk_id=1, group_id=5)``."""

    def factory(
        vk_comment_id: int, post_vk_id: int = 1, group_id: int = 1, **fields: object
    ) -> VkComment:
        values: dict = {
            "vk_comment_id": vk_comment_id,
            "post_vk_id": post_vk_id,
            "owner_id": -group_id,
            "parent_id": None,
            "thread_count": 0,
            "author_id": 100 + vk_comment_id,
            "author_name": f"user {vk_comment_id}",
            "text": f"comment {vk_comment_id}",
            "date": datetime(2024, 5, 1, 13, 0, tzinfo=UTC),
        }
        values.update(fields)
        return VkComment(**values)

    return factory
