"""Worker mode when Redis misbehaves or a task is cancelled and collected again at once: real
`python -m vkscraper worker` processes on a real `redis-server` of the test's own (a free
port, stopped by its PID and started again, with or without its data) and PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from fakevk import FakeVk, generate_dataset
from testkit.offline import crawl_offline
from tests.helpers.crawl import (
    COMMENT_KEYS,
    POST_KEYS,
    assert_stored_equals,
    comparable,
    stored_rows,
    task_of,
)
from tests.helpers.workers import FAST, ROOT, A, Workers, cli, dataset, refs, took, wait_done
from vkscraper.distributed import workqueue
from vkscraper.extensions._tracking import GroupTracker

pytestmark = pytest.mark.integration


class RedisServer:
    """A redis-server process on a free port; ``persist``: it keeps its data (AOF, every
    write synced) across a restart, else a restart empties it."""

    def __init__(self, tmp: Path, *, persist: bool) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.persist = persist
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        data = (["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
                if self.persist else ["--save", "", "--appendonly", "no"])  # fmt: skip
        with open(self.dir / "log", "a") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.dir),
                    *data,
                ],  # fmt: skip
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, (self.dir / "log").read_text()
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """Killed (SIGKILL, by its PID): only what it had written survives."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def own_redis(tmp_path):
    made: list[RedisServer] = []

    def make(persist: bool = True) -> RedisServer:
        made.append(RedisServer(tmp_path, persist=persist))
        made[-1].start()
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def workers_on(tmp_path, pg_url):
    made: list[Workers] = []

    def make(redis_url: str, tokens=(A,)) -> Workers:
        env = {**os.environ, "VK_ACCESS_TOKEN": ",".join(tokens), "REDIS_URL": redis_url,
               "DATABASE_URL": pg_url}  # fmt: skip
        made.append(Workers(tmp_path, env))
        return made[-1]

    yield make
    for w in made:
        w.stop()


def assert_exact(pg_url, task, data):
    """Completed; every row once; the metrics are the database's."""
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(pg_url, task.id, data, posts_per_group=10)
    posts, comments = stored_rows(pg_url, task.id)
    assert len(comparable(posts, POST_KEYS)) == len(posts)  # no duplicate
    assert len(comparable(comments, COMMENT_KEYS)) == len(comments)
    m = task.metrics
    assert m["groups_done"] == m["groups_total"] == len(data["groups"])
    assert m["posts"] == len(posts) and m["comments"] == len(comments), m
    assert m["posts_expected"] == len(posts), m


def groups_done(pg_url, task_id) -> int:
    return int(task_of(pg_url, task_id).metrics.get("groups_done", 0))


# Paced at 6 requests/s (the workers' own limit, the emulator enforces none): a task of 8
# small groups lasts some 8 s, long enough to act in its middle.
CRAWL = ("-s", "VK_EXECUTE=False", "-s", "VK_WORKER_GROUPS=1", *FAST)


def test_cancel_and_an_immediate_collect_again_complete_the_task(own_redis, workers_on, pg_url):
    data = dataset(seed=41, groups=8)
    server = own_redis()
    r = server.client()
    with FakeVk(data, tokens=[A], rate_limit=0) as vk:
        w = workers_on(server.url)
        w.start(2, "-s", f"VK_API_URL={vk.url}", *CRAWL)
        w.wait_started()
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        w.wait_until(lambda: groups_done(pg_url, task_id) >= 2, 40)
        w.wait_until(lambda: all("took group" in w.log(i) for i in (0, 1)), 20)
        # What the HTTP service does on cancel, then on collect with task_id, at once.
        workqueue.TaskQueue(r, task_id, "service").cancel()
        workqueue.enqueue(r, task_id)
        task = wait_done(pg_url, task_id, 60, w)
    assert_exact(pg_url, task, data)
    logs = w.logs()
    # The cancelled run's crawls closed; no worker ran two crawls of the task at once.
    assert logs.count("this worker's part is over (cancelled)") >= 1, logs[-3000:]
    for i in (0, 1):
        log = w.log(i)
        starts = [m.start() for m in re.finditer(rf"Task {task_id}: (opening|joining) it", log)]
        over = rf"Task {task_id}: this worker's part is over|Task {task_id} (completed|failed)\b"
        ends = [m.start() for m in re.finditer(over, log)]
        for n, start in enumerate(starts[1:]):
            assert any(starts[n] < end < start for end in ends), log[-3000:]


def test_a_redis_outage_longer_than_the_heartbeat_reaps_no_live_worker(
    own_redis, workers_on, pg_url
):
    data = dataset(seed=42, groups=8)
    server = own_redis(persist=True)
    with FakeVk(data, tokens=[A], rate_limit=0) as vk:
        w = workers_on(server.url)
        w.start(3, "-s", f"VK_API_URL={vk.url}", "-s", "VK_WORKER_HEARTBEAT=2", *CRAWL)
        w.wait_started()
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        for outage in range(2):
            w.wait_until(lambda n=outage: groups_done(pg_url, task_id) >= 2 + 2 * n, 40)
            server.stop()
            time.sleep(3)  # every heartbeat key expires (2 s at most after the last beat)
            server.start()  # with its data
        task = wait_done(pg_url, task_id, 60, w)
    assert_exact(pg_url, task, data)
    logs = w.logs()
    assert "stopped beating" not in logs, logs[-3000:]  # every worker was alive
    taken = Counter(re.findall(r"took group (\d+)", logs))
    assert set(taken.values()) == {1}, taken  # no group crawled twice


def test_redis_losing_its_data_leaves_the_task_resumable(own_redis, workers_on, pg_url):
    data = dataset(seed=43, groups=8)
    server = own_redis(persist=False)
    with FakeVk(data, tokens=[A], rate_limit=0) as vk:
        w = workers_on(server.url)
        # Two groups held at a time: entries are still queued in Redis when it loses them
        # (a worker packing its executes would take all 8 at once and finish them unaware).
        w.start(2, "-s", f"VK_API_URL={vk.url}", "-s", "VK_WORKER_GROUPS=2", *CRAWL)
        w.wait_started()
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        w.wait_until(lambda: groups_done(pg_url, task_id) >= 3, 40)
        server.stop()
        server.start()  # empty
        # A worker holding groups then closes (redis_state_lost); one whose groups were all
        # done by then finds the task's state gone when idle and its part over (finished).
        w.wait_until(
            lambda: (
                "this worker's part is over" in w.logs()
                or task_of(pg_url, task_id).status != "in_progress"
            ),
            20,
        )
        time.sleep(3)
        task = task_of(pg_url, task_id)
        assert task.status == "in_progress" and task.finished_at is None, task.metrics
        assert not task.metrics["errors"]
        done_before = task.metrics["groups_done"]
        assert 3 <= done_before < 8
        # Collected again (what `collect` with task_id does): it resumes from the database.
        before = [len(w.log(i)) for i in (0, 1)]
        workqueue.enqueue(server.client(), task_id)
        task = wait_done(pg_url, task_id, 60, w)
    assert_exact(pg_url, task, data)
    # Only the groups not done are crawled again.
    again = sum(w.log(i)[before[i] :].count("took group") for i in (0, 1))
    assert again == 8 - done_before, (again, done_before)


def test_two_workers_on_one_token_pack_their_executes_like_one_process(
    own_redis, workers_on, pg_url
):
    """Small groups, execute mode: two workers send at most 1.25 times the requests one
    `scrapy crawl` sends for the same task (workers holding two groups each at a time sent
    3 times as many), and both take part."""
    data = generate_dataset(seed=11, groups=60, posts_per_group=10, max_comments=40,
                            max_replies=10, author_groups=0, closed_comments=False)  # fmt: skip
    settings = {"VK_REQUESTS_PER_SECOND": "6"}
    one = crawl_offline(data, rate_limit=0, database_url=pg_url, workdir=ROOT,
                        extra_settings=settings)  # fmt: skip
    assert one["exit_code"] == 0 and "completed" in one["task_show"], one["crawl_log_tail"]
    server = own_redis()
    with FakeVk(data, tokens=[A], rate_limit=0) as vk:
        w = workers_on(server.url)
        w.start(2, "-s", f"VK_API_URL={vk.url}", *FAST)
        w.wait_started()
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        task = wait_done(pg_url, task_id, 90, w)
        requests = len(vk.requests())
    assert_exact(pg_url, task, data)
    assert requests <= 1.25 * one["requests"], (requests, one["requests"])
    assert all(n > 0 for n in took(w)), took(w)
    # metrics.requests counts VK's answers, not the entries each worker answers itself (a
    # worker that is not the finalizer adds its count as its crawl closes: poll for it).
    deadline = time.monotonic() + 15
    while (counted := task_of(pg_url, task.id).metrics["requests"]) != requests:
        assert time.monotonic() < deadline, (counted, requests)
        time.sleep(0.2)


# The Lua scripts, the reaper and GroupTracker on their own (the test's own Redis, no crawl).


def test_a_heartbeat_missing_after_an_outage_is_not_death_until_a_heartbeat_passes(own_redis):
    from vkscraper.distributed.worker import Worker

    r = own_redis(persist=False).client()
    b = workqueue.TaskQueue(r, 9, "wb")
    assert b.begin() == 1
    b.push("e0", b"data0")
    b.opened()
    assert b.take() == b"data0"
    # Redis is back after an outage: every heartbeat key expired, wb is alive all the same.
    reaper = Worker.__new__(Worker)
    reaper.redis, reaper.id, reaper.heartbeat_ttl, reaper._missing = r, "wa", 1.0, {}
    assert reaper._reap() == []
    assert b.waiting() == 0  # not taken for dead on sight
    r.set(workqueue.heartbeat_key("wb"), 1, px=1000)  # wb beats again
    reaper._reap()
    time.sleep(1.1)  # then is killed: its key expires
    reaper._reap()
    assert b.waiting() == 0  # first seen missing now
    time.sleep(1.05)
    reaper._reap()
    assert b.waiting() == 1


def test_a_crawl_of_an_ended_run_takes_acks_and_claims_nothing(own_redis):
    r = own_redis(persist=False).client()
    for w in ("wa", "wb"):
        r.set(workqueue.heartbeat_key(w), 1)
    a = workqueue.TaskQueue(r, 3, "wa")
    b = workqueue.TaskQueue(r, 3, "wb")
    assert a.begin() == 1 and b.join() and a.run == b.run != ""
    for n in range(3):
        a.push(f"e{n}", f"data{n}".encode())
    a.opened()
    assert b.take() == b"data0"
    a.cancel()
    workqueue.enqueue(r, 3)  # collected again at once: a new run
    new = workqueue.TaskQueue(r, 3, "wa")
    assert new.begin() == 1 and new.run != b.run
    assert b.status() == "ended" and b.done() and not new.done()
    new.push("f0", b"fresh0")
    assert b.take() is None and b.take(1) is None  # the old run's crawl takes nothing
    assert r.llen(new.queue) == 1
    assert b.ack("e0", b"data0") is False and b.claim() is False
    assert b.release() == 0 and r.llen(new.queue) == 1  # nothing of the old run comes back
    new.opened()
    assert new.take() == b"fresh0" and new.ack("f0", b"fresh0") is True
    new.finalized()
    # Ended: its keys expire (a day), and nothing is left without an expiry.
    keys = r.keys(workqueue.task_prefix(3) + "*")
    assert keys and all(0 < r.ttl(k) <= workqueue.ENDED_TTL for k in keys), keys


def test_an_entry_taken_again_is_acked_by_its_new_holder_only(own_redis):
    r = own_redis(persist=False).client()
    a = workqueue.TaskQueue(r, 4, "wa")
    b = workqueue.TaskQueue(r, 4, "wb")
    assert a.begin() == 1 and b.join()
    a.push("e0", b"data0")
    a.opened()
    assert a.take() == b"data0"
    assert b.reap(["wa"]) == 1  # wa taken for dead while it crawls the group
    assert b.take() == b"data0"
    # wa finishes its crawl: not its entry any more, the task is not finalized under wb.
    assert a.ack("e0", b"data0") is False and a.status() == "open"
    assert b.ack("e0", b"data0") is True and a.status() == "done"


def test_an_entry_put_back_and_not_taken_yet_is_acked_by_its_old_holder(own_redis):
    r = own_redis(persist=False).client()
    a = workqueue.TaskQueue(r, 5, "wa")
    b = workqueue.TaskQueue(r, 5, "wb")
    assert a.begin() == 1 and b.join()
    a.push("e0", b"data0")
    a.opened()
    assert a.take() == b"data0"
    assert b.reap(["wa"]) == 1
    assert a.ack("e0", b"data0") is True  # out of the queue: nobody crawls it again
    assert b.waiting() == 0 and b.take() is None


def test_a_lost_task_state_is_never_claimed_or_finalized(own_redis):
    r = own_redis(persist=False).client()
    a = workqueue.TaskQueue(r, 6, "wa")
    assert a.begin() == 1
    a.push("e0", b"data0")
    a.opened()
    assert a.take() == b"data0"
    r.flushall()  # Redis restarted without its data
    assert a.status() == "lost" and a.done()
    assert a.claim() is False and a.ack("e0", b"data0") is False
    assert r.get(a.state) is None  # nothing finalizes it: the database keeps it resumable
    workqueue.enqueue(r, 6)
    assert workqueue.TaskQueue(r, 6, "wb").begin() == 1  # collected again: a new run


def test_a_finished_group_restarted_reopens_and_finishes_again():
    t = GroupTracker()
    serial = t.add_request(7)
    t.request_done(serial)
    assert t.settled(7)
    t.finish(7)
    assert not t.settled(7)
    t.restart(7)  # a second entry for it: crawled again from its start
    assert t.open_groups() == [7]
    serial = t.add_request(7)
    assert not t.settled(7)
    t.request_done(serial)
    assert t.settled(7)


def test_a_group_restarted_while_crawled_settles_after_both_crawls():
    t = GroupTracker()
    first = t.add_request(8)
    t.restart(8)
    second = t.add_request(8)
    t.request_done(first)
    assert not t.settled(8)
    t.request_done(second)
    assert t.settled(8)


def test_entries_owned_but_not_held_go_back_to_the_head_of_the_queue(own_redis):
    r = own_redis(persist=False).client()
    a = workqueue.TaskQueue(r, 8, "wa")
    assert a.begin() == 1
    for n in range(3):
        a.push(f"e{n}", f"data{n}".encode())
    a.opened()
    assert a.take() == b"data0" and a.take() == b"data1"
    assert a.restore([b"data0"]) == 1  # data1's take lost its answer: not held
    assert r.lrange(a.owner, 0, -1) == [b"data0"]
    assert r.lrange(a.queue, 0, -1) == [b"data1", b"data2"]  # next to be taken
    assert a.restore([b"data0"]) == 0
    workqueue.TaskQueue(r, 8, "wb").cancel()
    workqueue.enqueue(r, 8)  # collected again: a new run
    assert workqueue.TaskQueue(r, 8, "wb").begin() == 1
    assert a.restore([]) == 0  # the old run's entries are void


class LosingAnswers:
    """The worker's queue of entries (real Redis) whose takes Redis carries out but whose
    answers are lost, as when a connection drops just after the command ran."""

    def __init__(self, task_queue: workqueue.TaskQueue) -> None:
        self.task_queue = task_queue
        self.lose = True

    def pop(self, timeout: float = 0):
        data = self.task_queue.take(int(timeout))
        if self.lose:
            raise redis.ConnectionError("Connection closed by server.")
        return None if data is None else self.entry(data)

    def entry(self, data: bytes):
        from scrapy import Request

        return Request("data:,", meta={"vk_entry": "e", "vk_entry_data": data,
                                       "vk_group_id": int(data[4:])})  # fmt: skip


def test_an_entry_whose_take_lost_its_answer_is_not_owned_for_good(own_redis):
    """A live worker that owned an entry it never crawls would hold the task open forever."""
    from scrapy.utils.test import get_crawler

    from vkscraper.defaults import all_defaults
    from vkscraper.distributed.extension import VkDistributed

    r = own_redis(persist=False).client()
    queue = workqueue.TaskQueue(r, 9, "wa")
    assert queue.begin() == 1
    queue.push("e0", b"data0")
    queue.opened()
    settings = {**all_defaults(), "VK_DISTRIBUTED": True, "VK_WORKER_ID": "wa"}
    crawler = get_crawler(settings_dict=settings)
    distributed = VkDistributed(crawler)
    distributed.queue = LosingAnswers(queue)  # type: ignore[assignment]
    assert distributed.take() is None  # the error is logged, not raised into the engine
    assert r.lrange(queue.owner, 0, -1) == [b"data0"]  # but Redis moved it
    distributed._restore()
    assert r.lrange(queue.queue, 0, -1) == [b"data0"] and not r.llen(queue.owner)
    distributed.queue.lose = False  # type: ignore[attr-defined]
    request = distributed.take()
    assert request is not None and request.meta["vk_entry_data"] == b"data0"
    distributed._take_failed = True  # a later failure: what is held stays owned
    distributed._restore()
    assert r.lrange(queue.owner, 0, -1) == [b"data0"] and not r.llen(queue.queue)
