"""Worker processes (`python -m vkscraper worker`, started as the README says) and the Redis
database they share, for the tests of worker mode. The fixtures ``server`` (that Redis
database, emptied before and after) and ``workers`` (a factory of worker processes on a fresh
PostgreSQL database, stopped after the test) are registered by tests/conftest.py."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from fakevk import generate_dataset
from tests.helpers.crawl import task_of

A = "token-a-5f2b9c-0123456789"
B = "token-b-77aa31-0123456789"
# A Redis database of its own: the tests empty it.
REDIS_URL = os.environ.get("VK_TEST_WORKER_REDIS_URL", "redis://127.0.0.1:6379/7")
ROOT = Path(__file__).resolve().parents[2]


# Tests not about the rate: the emulator enforces none and the workers run at twice VK's pace,
# which keeps a crawl short yet long enough to act in its middle.
FAST = ("-s", "VK_REQUESTS_PER_SECOND=6")


def dataset(seed: int, groups: int = 6, **kw):
    # Comments open everywhere: a complete crawl ends "completed".
    return generate_dataset(seed=seed, groups=groups, posts_per_group=6, max_comments=30,
                            max_replies=12, author_groups=0, closed_comments=False,
                            **kw)  # fmt: skip


def refs(data, only=None):
    groups = [g for g in data["groups"] if only is None or g["id"] in only]
    return ",".join(g["screen_name"] for g in groups)


@contextmanager
def redis_db_of_our_own(url: str) -> Iterator[redis.Redis]:
    """The Redis database ``url``, emptied, for one test at a time on this machine: the worker
    tests flush it, so two test runs at once (two checkouts) wait for each other here."""
    safe = re.sub(r"\W", "_", url)
    with open(Path(tempfile.gettempdir()) / f"vkscraper-tests-{safe}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = redis.Redis.from_url(url)
        r.flushdb()
        try:
            yield r
        finally:
            r.flushdb()


@pytest.fixture
def server():
    with redis_db_of_our_own(REDIS_URL) as r:
        yield r


class Workers:
    """Worker processes and their logs."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env, self.procs, self.files = tmp, env, [], []

    def start(self, n: int, *settings: str) -> None:
        for _ in range(n):
            i = len(self.procs)
            log = open(self.tmp / f"worker{i}.log", "w")  # noqa: SIM115
            self.files.append(log)
            cmd = [sys.executable, "-m", "vkscraper", "worker", *settings]
            self.procs.append(subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log,
                                               stderr=subprocess.STDOUT))  # fmt: skip

    def log(self, i: int) -> str:
        return (self.tmp / f"worker{i}.log").read_text()

    def logs(self) -> str:
        return "\n".join(self.log(i) for i in range(len(self.procs)))

    def wait_until(self, condition, timeout: float, poll: float = 0.05):
        """Poll ``condition()`` until it is truthy (returned); fail with the logs after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not (result := condition()):
            assert time.monotonic() < deadline, self.logs()[-3000:]
            time.sleep(poll)
        return result

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not all("waiting for tasks" in self.log(i) for i in range(len(self.procs))):
            assert time.monotonic() < deadline, self.logs()[-3000:]
            for p in self.procs:
                assert p.poll() is None, self.logs()[-3000:]
            time.sleep(0.1)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self.files:
            f.close()


@pytest.fixture
def workers(tmp_path, pg_url, server):
    def make(tokens, vk_url):
        env = {**os.environ, "VK_ACCESS_TOKEN": ",".join(tokens), "REDIS_URL": REDIS_URL,
               "DATABASE_URL": pg_url}  # fmt: skip
        made.append(Workers(tmp_path, env))
        made[-1].vk_url = vk_url
        return made[-1]

    made: list[Workers] = []
    yield make
    for w in made:
        w.stop()


def cli(env, *args, check=True):
    out = subprocess.run([sys.executable, "-m", "vkscraper", *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    if check:
        assert out.returncode == 0, out.stderr
    return out


def wait_done(url, task_id, timeout, workers=None):
    deadline = time.monotonic() + timeout
    while (task := task_of(url, task_id)).status not in ("completed", "failed"):
        assert time.monotonic() < deadline, (task.status, workers and workers.logs()[-4000:])
        time.sleep(0.25)
    return task


def took(workers: Workers) -> list[int]:
    """How many groups each worker took."""
    return [workers.log(i).count("took group") for i in range(len(workers.procs))]
