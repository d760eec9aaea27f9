"""Two crawl processes on one token, started as docs/topics/rate-limiting.md says, against the
emulator enforcing VK's 3 requests/s: with the shared limit in Redis they never put more than 3
of its requests into any 1-second window, and both finish."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from scrapy.utils.defer import deferred_f_from_coro_f

from fakevk import FakeVk, generate_dataset
from tests.helpers.crawl import TOKEN, last_task, run_crawl, small_dataset
from vkscraper.store import open_store
from vkscraper.tokens.access import token_tag

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("VK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def test_two_processes_on_one_token_keep_to_its_limit_together(tmp_path):
    data = generate_dataset(seed=9, groups=4, posts_per_group=8, max_comments=40, max_replies=12)
    for group in data["groups"]:
        for post in group["posts"]:
            post["comments_closed"] = False
    names = [g["screen_name"] for g in data["groups"] if not g.get("author_only")]
    with FakeVk(data, tokens=[TOKEN], rate_limit=3) as vk:
        procs = []
        for n, half in enumerate((names[:2], names[2:])):
            env = {**os.environ, "VK_ACCESS_TOKEN": TOKEN, "REDIS_URL": REDIS_URL,
                   "DATABASE_URL": f"sqlite:///{tmp_path / f'crawl{n}.sqlite3'}"}  # fmt: skip
            cmd = [sys.executable, "-m", "scrapy", "crawl", "vk", "-a", f"groups={','.join(half)}",
                   "-s", f"VK_API_URL={vk.url}", "-s", "VK_SHARED_RATE_LIMIT=True",
                   "-s", "VK_EXECUTE=False", "-s", "LOG_LEVEL=INFO"]  # fmt: skip
            err = open(tmp_path / f"crawl{n}.log", "w")  # noqa: SIM115
            procs.append((subprocess.Popen(cmd, env=env, stderr=err, stdout=err), err))
        for proc, err in procs:
            assert proc.wait(timeout=120) == 0, (
                tmp_path / f"crawl{procs.index((proc, err))}.log"
            ).read_text()[-3000:]
            err.close()
        log = vk.requests()
    times = sorted(r["t"] for r in log)
    busiest = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    assert busiest <= 3
    assert not [r for r in log if r["outcome"] == "error:6"]
    assert len(log) > 30
    # The two together used the token's whole rate, not one process's share of it: judged on
    # their busiest 5 s (a loaded machine slows some stretches; the start and the end of a
    # crawl have one process only).
    assert max(sum(1 for t in times if s <= t < s + 5.0) for s in times) >= 12
    for n in range(2):
        with open_store(f"sqlite:///{tmp_path / f'crawl{n}.sqlite3'}") as store:
            (task,) = store.list_tasks()
            assert task.status == "completed", task.metrics["errors"]
    # Redis holds the token's tag, never the token.
    keys = redis.Redis.from_url(REDIS_URL).keys("vkscraper:*")
    assert all(TOKEN.encode() not in k for k in keys)
    assert f"vkscraper:rate:{token_tag(TOKEN)}".encode() in keys or not keys


def test_a_retry_after_holds_the_token_in_every_process(tmp_path):
    """VK answers some requests 429 with Retry-After: 2. Whichever process gets it, neither
    sends anything on the token until the 2 s are over (requests already on their way when
    the 429 came may still arrive in its first 0.5 s)."""
    data = generate_dataset(seed=4, groups=4, posts_per_group=4, max_comments=20, max_replies=5)
    for group in data["groups"]:
        for post in group["posts"]:
            post["comments_closed"] = False
    crawled = [g for g in data["groups"] if not g.get("author_only")]
    halves = (crawled[:2], crawled[2:])
    with FakeVk(data, tokens=[TOKEN], rate_limit=3, faults={"429": 0.1}, retry_after=2,
                seed=3) as vk:  # fmt: skip
        procs = []
        for n, half in enumerate(halves):
            env = {**os.environ, "VK_ACCESS_TOKEN": TOKEN, "REDIS_URL": REDIS_URL,
                   "DATABASE_URL": f"sqlite:///{tmp_path / f'crawl{n}.sqlite3'}"}  # fmt: skip
            names = ",".join(g["screen_name"] for g in half)
            cmd = [sys.executable, "-m", "scrapy", "crawl", "vk", "-a", f"groups={names}",
                   "-s", f"VK_API_URL={vk.url}", "-s", "VK_SHARED_RATE_LIMIT=True",
                   "-s", "VK_EXECUTE=False", "-s", "LOG_LEVEL=INFO"]  # fmt: skip
            err = open(tmp_path / f"crawl{n}.log", "w")  # noqa: SIM115
            procs.append((subprocess.Popen(cmd, env=env, stderr=err, stdout=err), err))
        for n, (proc, err) in enumerate(procs):
            assert proc.wait(timeout=180) == 0, (tmp_path / f"crawl{n}.log").read_text()[-3000:]
            err.close()
        log = vk.requests()
    process_of = {g["id"]: n for n, half in enumerate(halves) for g in half}

    def process(r):
        owner = r["params"].get("owner_id")
        if owner is not None:
            return process_of[-int(owner)]
        return process_of[next(g["id"] for g in crawled if g["screen_name"] in r["params"]
                               .get("group_ids", ""))]  # fmt: skip

    held = [r["t"] for r in log if r["status"] == 429]
    assert held, "no 429 drawn: change the emulator's seed"
    for t0 in held:
        during = [
            (round(r["t"] - t0, 3), process(r)) for r in log if t0 + 0.5 <= r["t"] < t0 + 1.95
        ]
        assert not during, (t0, during)
    # Both processes were at work after the first 429: each one's requests waited.
    assert {process(r) for r in log if r["t"] > held[0]} == {0, 1}
    for n in range(2):
        with open_store(f"sqlite:///{tmp_path / f'crawl{n}.sqlite3'}") as store:
            (task,) = store.list_tasks()
            assert task.status == "completed", task.metrics["errors"]
    keys = redis.Redis.from_url(REDIS_URL).keys("vkscraper:rate:*")
    assert all(TOKEN.encode() not in k for k in keys)


def test_the_shared_limit_without_redis_url_is_refused():
    import pytest
    from scrapy.settings import Settings

    from vkscraper.addon import check_settings, register_defaults

    settings = Settings()
    settings.setmodule("vkscraper.settings", priority="project")
    register_defaults(settings)
    settings.set("REDIS_URL", None, "cmdline")
    settings.set("VK_SHARED_RATE_LIMIT", True, "cmdline")
    with pytest.raises(ValueError, match="VK_SHARED_RATE_LIMIT needs Redis: export REDIS_URL"):
        check_settings(settings)


@deferred_f_from_coro_f
async def test_with_redis_down_requests_fail_with_the_reason_and_the_crawl_ends(
    sqlite_url, monkeypatch
):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)
    settings = {"VK_SHARED_RATE_LIMIT": True, "REDIS_URL": "redis://127.0.0.1:1/0",
                "DOWNLOAD_TIMEOUT": 1, "RETRY_TIMES": 0, "VK_EXECUTE": False}  # fmt: skip
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, sqlite_url, settings=settings, groups="threeposts")
        assert vk.requests() == []  # nothing went out unpaced
    task = last_task(sqlite_url)
    assert task.status == "failed"
    assert any(
        "the shared rate limit needs Redis, unreachable for 1 s" in e
        for e in task.metrics["errors"]
    ), task.metrics["errors"]
