"""`scrapy crawl vk` as a user (or cron, or scrapyd) runs it: bad input gets one clear line and
exit status 2 with nothing written; the exit status says whether the crawl did its job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakevk import FakeVk
from tests.helpers.crawl import TOKEN, small_dataset
from vkscraper.cli import exitcodes
from vkscraper.store import open_store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fakevk():
    data = small_dataset()
    data["groups"].append({"id": 20, "screen_name": "closedwall", "name": "Closed", "wall": 0,
                           "posts": []})  # fmt: skip
    with FakeVk(data, tokens=[TOKEN]) as vk:
        yield vk


def crawl(tmp_path, *args, token=TOKEN, database_url=None):
    env = {k: v for k, v in os.environ.items() if k not in ("VK_ACCESS_TOKEN", "DATABASE_URL")}
    if token is not None:
        env["VK_ACCESS_TOKEN"] = token
    env["DATABASE_URL"] = database_url or f"sqlite:///{tmp_path / 'vk.sqlite3'}"
    return subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "vk", "-s", "VK_BACKOFF_BASE=0",
         "-s", "VK_REQUESTS_PER_SECOND=1000", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["-a", "groups=apiclub,bad/name,x"], TOKEN, "error: -a groups: 'bad/name'"),
        (["-a", "groups=group24983,bad ref!"], TOKEN,
         "error: -a groups: 'bad ref!' has a space inside: separate references with commas"),
        (["-a", "task_id=abc"], TOKEN, "error: -a task_id must be a positive number, got 'abc'"),
        (["-a", "groups="], TOKEN, "error: -a groups= is empty"),
        (["-a", "groups=1"], None, "error: VK_ACCESS_TOKEN is not set"),
        (["-a", "groups=1"], "t", "error: VK_ACCESS_TOKEN: the token (1 characters) does not"),
        (["-a", "groups=1", "-s", "VK_ACCESS_TOKEN=abc"], TOKEN,
         "error: VK_ACCESS_TOKEN is read from the environment only"),
        (["-a", "groups=1", "-s", "VK_COMMENTS_PAGE_SIZE=200"], TOKEN,
         "error: VK_COMMENTS_PAGE_SIZE must be between 2 and 100"),
        (["-a", "groups=1", "-s", "VK_RETRY_TIMES=5"], TOKEN,
         "error: VK_RETRY_TIMES is no longer a setting: use Scrapy's RETRY_TIMES"),
        (["-a", "group=apiclub"], TOKEN, "error: unknown argument -a group: the vk spider"),
        (["-a", "groups=1", "-s", "VK_POSTS_PER_GROUP=abc"], TOKEN,
         "error: VK_POSTS_PER_GROUP must be a number, got 'abc'"),
        (["-a", "groups=1", "-s", "VK_REQUESTS_PER_SECOND=nan"], TOKEN,
         "error: VK_REQUESTS_PER_SECOND must be a finite number"),
        (["-a", "groups=1", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=0"], TOKEN,
         "error: CONCURRENT_REQUESTS_PER_DOMAIN must be at least 1"),
        (["-a", "groups=1", "-s", "VK_STORE_BATCH_SIZE=0"], TOKEN,
         "error: VK_STORE_BATCH_SIZE must be at least 1"),
        (["-a", "groups=1", "-s", "RETRY_TIMES=-1"], TOKEN,
         "error: RETRY_TIMES must be at least 0"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(tmp_path, args, token, message):
    result = crawl(tmp_path, *args, token=token)
    assert result.returncode == exitcodes.BAD_ARGUMENTS, result.stderr[-2000:]
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "vk.sqlite3").exists()  # nothing written


def test_an_unknown_task_is_one_line_and_exit_2(tmp_path, fakevk):
    crawl(tmp_path, "-a", "groups=threeposts", "-s", f"VK_API_URL={fakevk.url}")  # task 1
    result = crawl(tmp_path, "-a", "task_id=999", "-s", f"VK_API_URL={fakevk.url}")
    assert result.returncode == exitcodes.BAD_ARGUMENTS
    assert result.stderr.strip() == "error: task 999 does not exist"


def test_an_unknown_task_in_a_new_database_is_still_exit_2(tmp_path, fakevk):
    result = crawl(tmp_path, "-a", "task_id=999", "-s", f"VK_API_URL={fakevk.url}")
    assert result.returncode == exitcodes.BAD_ARGUMENTS
    assert "task 999 does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_exit_statuses_tell_whether_the_crawl_did_its_job(tmp_path, fakevk):
    api = ["-s", f"VK_API_URL={fakevk.url}"]
    assert crawl(tmp_path, "-a", "groups=threeposts", *api).returncode == exitcodes.OK
    closed = crawl(tmp_path, "-a", "groups=threeposts,closedwall", *api)
    assert closed.returncode == exitcodes.TARGET_ERRORS
    assert "VK error 15" in closed.stderr
    bad_token = crawl(tmp_path, "-a", "groups=threeposts", *api, token="x" * 40)
    assert bad_token.returncode == exitcodes.NOT_DONE
    assert "VK error 5" in bad_token.stderr
    with open_store(f"sqlite:///{tmp_path / 'vk.sqlite3'}") as store:
        # The bad token leaves its task resumable (a run with a good token goes on with it).
        assert [t.status for t in store.list_tasks()] == ["in_progress", "failed", "completed"]


def test_an_unreachable_database_is_exit_3(tmp_path, fakevk):
    result = crawl(tmp_path, "-a", "groups=threeposts", "-s", f"VK_API_URL={fakevk.url}",
                   database_url="postgresql://postgres@127.0.0.1:1/nowhere")  # fmt: skip
    assert result.returncode == exitcodes.NOT_DONE
    assert "Cannot use the database" in result.stderr


def test_no_arguments_and_no_groups_table_says_so_and_sends_nothing(tmp_path, monkeypatch):
    """What ScrapydWeb's Start (a scrapyd job without arguments) runs on an empty groups
    table: exit 2 naming the way out, and not one request, not even to the operator's API."""
    from tests.helpers.emulator import Listener

    listener = Listener()
    try:
        monkeypatch.setenv("VK_API_URL", listener.url)
        result = crawl(tmp_path)
    finally:
        listener.close()
    assert result.returncode == exitcodes.BAD_ARGUMENTS, result.stderr[-2000:]
    assert "no groups to crawl: pass -a groups=" in result.stderr
    assert listener.connections == 0
    with open_store(f"sqlite:///{tmp_path / 'vk.sqlite3'}") as store:
        assert store.list_tasks() == []
