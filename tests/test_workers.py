"""Worker mode: real `python -m vkscraper worker` processes, started as
docs/topics/distributed.md says, on real Redis and PostgreSQL, against the emulator (enforcing
VK's 3 requests/s per token in the tests about the rate)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from fakevk import FakeVk
from tests.helpers.crawl import (
    COMMENT_KEYS,
    POST_KEYS,
    assert_stored_equals,
    comparable,
    stored_rows,
    task_of,
)
from tests.helpers.emulator import windows
from tests.helpers.workers import (
    FAST,
    REDIS_URL,
    ROOT,
    A,
    B,
    Workers,
    cli,
    dataset,
    redis_db_of_our_own,
    refs,
    took,
    wait_done,
)
from vkscraper.distributed import workqueue
from vkscraper.distributed.pids import is_worker

pytestmark = pytest.mark.integration


def dump(server) -> bytes:
    """Every key and value in the Redis database, as bytes."""
    out = []
    for key in server.scan_iter("*"):
        kind = server.type(key)
        out.append(key)
        if kind == b"string":
            out.append(server.get(key) or b"")
        elif kind == b"list":
            out.extend(server.lrange(key, 0, -1))
        elif kind == b"set":
            out.extend(server.smembers(key))
        elif kind == b"zset":
            out.extend(m for m, _ in server.zrange(key, 0, -1, withscores=True))
        elif kind == b"hash":
            for k, v in server.hgetall(key).items():
                out.extend((k, v))
    return b"\n".join(out)


def commands_sent(name: str, seconds: float) -> int:
    """Commands the Redis clients called ``name`` send in ``seconds`` (MONITOR): one process's
    own, whatever else uses the same Redis meanwhile."""
    probe = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    names: dict[str, str | None] = {}
    sent = 0
    deadline = time.monotonic() + seconds
    with probe.monitor() as monitor:
        while time.monotonic() < deadline:
            command = monitor.next_command()  # the worker's own blocking wait ends every 2 s
            if command["client_type"] != "tcp":
                continue  # a script's own calls
            addr = f"{command['client_address']}:{command['client_port']}"
            if addr not in names:
                names.update({c["addr"]: c["name"] for c in probe.client_list()})
                names.setdefault(addr, None)
            sent += names[addr] == name
    probe.close()
    return sent


def finalized(workers: Workers, task_id: int) -> int:
    return len(re.findall(rf"Task {task_id} (?:completed|failed)\b", workers.logs()))


@pytest.mark.parametrize("tokens", [[A], [A, B]], ids=["1 token", "2 tokens"])
def test_three_workers_share_a_task_under_one_limit_per_token(workers, pg_url, server, tokens):
    data = dataset(seed=21, groups=4)
    with FakeVk(data, tokens=[A, B], rate_limit=3) as vk:
        w = workers(tokens, vk.url)
        w.start(3, "-s", f"VK_API_URL={vk.url}", "-s", "VK_EXECUTE=False")
        w.wait_started()
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        # Redis during the crawl: the task's queue, entries, rate keys — never a token.
        dumps = []
        while task_of(pg_url, task_id).status not in ("completed", "failed"):
            dumps.append(dump(server))
            time.sleep(0.5)
            assert len(dumps) < 240, w.logs()[-4000:]
        task = task_of(pg_url, task_id)
        log = vk.requests()
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(pg_url, task_id, data, posts_per_group=10)
    posts, comments = stored_rows(pg_url, task_id)
    assert len(comparable(comments, COMMENT_KEYS)) == len(comments)  # no duplicate
    assert len(comparable(posts, POST_KEYS)) == len(posts)
    assert finalized(w, task_id) == 1  # one worker finalized it, once
    assert sum(1 for n in took(w) if n) >= 2, took(w)  # the work was shared
    assert sum(took(w)) >= 4
    # The emulator's log: per token, never above 3 requests in any 1-second window.
    for tag in {r["token"] for r in log}:
        assert windows([r["t"] for r in log if r["token"] == tag]) <= 3
    assert not [r for r in log if r["outcome"] == "error:6"]
    if len(tokens) == 2:
        assert len({r["token"] for r in log}) == 2
    assert len(dumps) > 2 and b"vkscraper:{task:" in b"".join(dumps)
    for token in tokens:
        assert all(token.encode() not in d for d in dumps)
        assert token not in w.logs()


def test_a_killed_and_a_stopped_worker_lose_nothing(workers, pg_url):
    data = dataset(seed=22)
    with FakeVk(data, tokens=[A], rate_limit=0) as vk:
        w = workers([A], vk.url)
        w.start(3, "-s", f"VK_API_URL={vk.url}", "-s", "VK_EXECUTE=False",
                "-s", "VK_WORKER_HEARTBEAT=2", *FAST)  # fmt: skip
        w.wait_started()
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        # Each of two workers holds groups in the middle of the crawl: one is killed, the
        # other stopped (SIGTERM).
        w.wait_until(lambda: sum(1 for n in took(w) if n) >= 2, 30)
        time.sleep(0.75)  # some rows of their groups written (at twice VK's pace)
        holders = [i for i, n in enumerate(took(w)) if n]
        killed, stopped = holders[0], holders[1]
        w.procs[killed].kill()
        w.procs[stopped].send_signal(signal.SIGTERM)
        assert w.procs[stopped].wait(timeout=30) == 0
        task = wait_done(pg_url, task_id, 120, w)
    assert task.status == "completed", task.metrics["errors"]
    assert_stored_equals(pg_url, task_id, data, posts_per_group=10)
    assert "went back to the queue" in w.log(stopped)
    assert re.search(r"group\(s\) of a worker that stopped beating went back", w.logs())
    assert re.search(r"Worker \S+ stopped", w.log(stopped))
    assert task.metrics["groups_done"] == 6
    # Groups begun by the killed worker and crawled again are counted once.
    posts, _ = stored_rows(pg_url, task_id)
    assert task.metrics["posts_expected"] == task.metrics["posts"] == len(posts)


def test_a_finalizer_stopped_as_it_finishes_still_finalizes(workers, pg_url):
    data = dataset(seed=26, groups=2)
    with FakeVk(data, tokens=[A], rate_limit=0) as vk:
        w = workers([A], vk.url)
        w.start(1, "-s", f"VK_API_URL={vk.url}", *FAST)
        w.wait_started()
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        w.wait_until(lambda: "this worker finalizes it" in w.log(0), 60, poll=0.02)
        w.procs[0].send_signal(signal.SIGTERM)  # before its crawl closes by itself
        assert w.procs[0].wait(timeout=30) == 0
    assert "Closing spider (shutdown)" in w.log(0)
    task = task_of(pg_url, task_id)
    assert task.status == "completed", (task.status, w.log(0)[-3000:])
    assert_stored_equals(pg_url, task_id, data, posts_per_group=10)


def test_a_finalizer_killed_as_it_finishes_is_taken_over(workers, pg_url):
    data = dataset(seed=28, groups=2)
    with FakeVk(data, tokens=[A], rate_limit=0) as vk:
        w = workers([A], vk.url)
        w.start(2, "-s", f"VK_API_URL={vk.url}", "-s", "VK_WORKER_HEARTBEAT=2", *FAST)
        w.wait_started()
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        ours = w.wait_until(
            lambda: [i for i in (0, 1) if "this worker finalizes it" in w.log(i)], 60, poll=0.02
        )
        w.procs[ours[0]].kill()
        task = wait_done(pg_url, task_id, 60, w)
    assert task.status == "completed", task.metrics["errors"]
    assert "finalizing it here" in w.log(1 - ours[0])
    assert_stored_equals(pg_url, task_id, data, posts_per_group=10)


def test_an_opener_stopped_while_opening_is_taken_over(workers, pg_url, tmp_path):
    import socket

    data = dataset(seed=27, groups=3)
    hole = socket.socket()  # accepts connections, never answers: the opener stays opening
    hole.bind(("127.0.0.1", 0))
    hole.listen(50)
    with FakeVk(data, tokens=[A], rate_limit=0) as vk:
        w = workers([A], vk.url)
        w.start(1, "-s", f"VK_API_URL=http://127.0.0.1:{hole.getsockname()[1]}/method/",
                "-s", "DOWNLOAD_TIMEOUT=8", "-s", "RETRY_TIMES=0")  # fmt: skip
        w.wait_started()
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        w.wait_until(lambda: "opening it" in w.log(0), 30)
        w.start(1, "-s", f"VK_API_URL={vk.url}", *FAST)
        w.wait_started()
        w.procs[0].send_signal(signal.SIGTERM)
        assert w.procs[0].wait(timeout=30) == 0
        task = wait_done(pg_url, task_id, 60, w)
    hole.close()
    assert task.status == "completed", task.metrics["errors"]
    assert "opening it" in w.log(1)
    assert_stored_equals(pg_url, task_id, data, posts_per_group=10)


def test_two_tasks_enqueued_at_once_complete_with_their_own_metrics(workers, pg_url):
    data = dataset(seed=23)
    ids = [g["id"] for g in data["groups"]]
    halves = ids[:3], ids[3:]
    with FakeVk(data, tokens=[A], rate_limit=0) as vk:
        w = workers([A], vk.url)
        w.start(2, "-s", f"VK_API_URL={vk.url}", *FAST)
        w.wait_started()
        tasks = [
            int(cli(w.env, "task", "create", "--groups", refs(data, h), "--enqueue").stdout)
            for h in halves
        ]
        done = [wait_done(pg_url, t, 90, w) for t in tasks]
    for task, half in zip(done, halves, strict=True):
        assert task.status == "completed", task.metrics["errors"]
        assert_stored_equals(pg_url, task.id, data, posts_per_group=10, only=half)
        posts, comments = stored_rows(pg_url, task.id)
        assert task.metrics["posts"] == len(posts) > 0
        assert task.metrics["comments"] == len(comments) > 0
        assert task.metrics["groups_done"] == 3
        assert finalized(w, task.id) == 1


def test_an_idle_worker_is_quiet_and_takes_a_new_task_at_once(workers, pg_url, server):
    data = dataset(seed=24, groups=1)
    with FakeVk(data, tokens=[A], rate_limit=0) as vk:
        w = workers([A], vk.url)
        name = f"vkst-idle-{os.getpid()}"  # its connections, among other tests' on this Redis
        w.env["REDIS_URL"] = f"{REDIS_URL}?client_name={name}"
        w.start(1, "-s", f"VK_API_URL={vk.url}")
        w.wait_started()
        lines = len(w.log(0).splitlines())
        commands = commands_sent(name, 6)
        assert len(w.log(0).splitlines()) == lines  # nothing logged while idle
        # Its blocking waits (every 2 s) and heartbeats, seen; no busy polling.
        assert 0 < commands <= 30, commands
        task_id = int(cli(w.env, "task", "create", "--groups", refs(data), "--enqueue").stdout)
        sent = time.monotonic()
        while "opening it" not in w.log(0):
            assert time.monotonic() - sent < 5, w.log(0)[-2000:]
            time.sleep(0.05)
        assert wait_done(pg_url, task_id, 60, w).status == "completed"


def test_worker_mode_refuses_sqlite_and_a_missing_redis(tmp_path, server):
    env = {**os.environ, "VK_ACCESS_TOKEN": A, "REDIS_URL": REDIS_URL,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}  # fmt: skip
    out = cli(env, "worker", check=False)
    assert out.returncode == 1
    assert "worker mode needs PostgreSQL: set DATABASE_URL=postgresql://" in out.stderr
    out = cli(env, "task", "create", "--groups", "club1", "--enqueue", check=False)
    assert out.returncode == 1 and "needs PostgreSQL" in out.stderr
    env = {**env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres"}
    env.pop("REDIS_URL")
    out = cli(env, "worker", check=False)
    assert out.returncode == 2 and "export REDIS_URL=" in out.stderr
    assert not server.keys("*")
    # Crawls the add-on would refuse: said at start, before a task is taken (and ended).
    env = {**env, "REDIS_URL": REDIS_URL, "VKSCRAPER_API_URLS": ""}
    out = cli(env, "worker", "-s", "VK_API_URL=http://127.0.0.1:9/method/", check=False)
    assert out.returncode == 2, out.stderr
    assert "is not VK's API nor allowed by the operator" in out.stderr
    assert "VKSCRAPER_API_URLS" in out.stderr
    assert not server.keys("*")


# The task's queue in Redis, two workers interleaved (real Redis, no crawl).


def test_the_ack_that_empties_an_open_task_finalizes_it_once(server):
    a = workqueue.TaskQueue(server, 5, "wa")
    b = workqueue.TaskQueue(server, 5, "wb")
    server.set(workqueue.heartbeat_key("wa"), 1)
    server.set(workqueue.heartbeat_key("wb"), 1)
    assert a.begin() == 1  # a opens it
    assert b.begin() == 0  # b joins
    a.push("e0", b"data0")
    assert a.take() == b"data0"
    # Nothing pending, but the task is still opening: the opener queues more.
    assert a.ack("e0", b"data0") is False and not a.done()
    for n in (1, 2):
        a.push(f"e{n}", f"data{n}".encode())
    db = b.take()
    assert db == b"data1"
    dc = b.take()
    assert b.ack("e1", db) is False
    assert a.opened() is False  # e2 still pending
    assert b.ack("e2", dc) is True  # the last ack: b finalizes
    assert a.done() and b.done() and a.status() == "done"
    assert a.claim() is False  # nobody else ends it
    assert a.finalizing() == "wb"
    assert a.take_over("wb") is False  # b is alive: nobody takes its finalizing over
    assert server.sismember(workqueue.ACTIVE, 5)  # until it is finalized
    b.finalized()
    assert a.status() == "final" and not server.sismember(workqueue.ACTIVE, 5)


def test_a_dead_finalizer_is_taken_over_and_a_dead_opener_too(server):
    a = workqueue.TaskQueue(server, 8, "wa")
    b = workqueue.TaskQueue(server, 8, "wb")
    server.set(workqueue.heartbeat_key("wb"), 1)  # wa has no heartbeat: dead
    assert a.begin() == 1
    assert b.begin() == 1  # its opener is dead: b opens it afresh
    b.push("e0", b"data0")
    assert b.take() == b"data0"
    b.opened()
    assert b.ack("e0", b"data0") is True
    server.delete(workqueue.heartbeat_key("wb"))  # b dies before it finalized
    server.set(workqueue.heartbeat_key("wa"), 1)
    assert a.take_over("wb") is True and a.take_over("wb") is False
    a.finalized()
    assert a.status() == "final"


def test_a_dead_workers_entries_go_back_and_a_stopping_worker_gives_its_own_back(server):
    a = workqueue.TaskQueue(server, 6, "wa")
    b = workqueue.TaskQueue(server, 6, "wb")
    a.begin()
    assert b.join()
    for n in range(3):
        a.push(f"e{n}", f"data{n}".encode())
    a.opened()
    assert a.take() == b"data0"
    assert b.take() == b"data1"
    assert a.holders() == ["wa", "wb"]
    assert a.reap(["wa", "wb"]) == 1  # b has no heartbeat either, but a never reaps itself
    assert a.take() == b"data1"
    server.set(workqueue.heartbeat_key("wb"), 1)
    assert a.reap(["wb"]) == 0  # b beats again: not dead
    assert b.reap(["wa"]) == 2  # a's entries, back at the head of the queue, in their order
    assert b.take() == b"data0"
    assert b.release() == 1  # b stops: its entry back
    assert b.waiting() == 3 and not a.done()


def test_a_cancelled_task_is_dropped_until_it_is_collected_again(server):
    a = workqueue.TaskQueue(server, 7, "wa")
    workqueue.enqueue(server, 7)
    a.cancel()  # out of the feed, and a worker that took it already drops it
    assert server.llen(workqueue.FEED) == 0
    assert a.begin() == -1 and a.done()
    workqueue.enqueue(server, 7)
    assert a.begin() == 1


def test_worker_mode_is_started_with_the_worker_command_only():
    from scrapy.settings import Settings

    from vkscraper.addon import check_settings, register_defaults

    settings = Settings()
    settings.setmodule("vkscraper.settings", priority="project")
    register_defaults(settings)
    settings.set("VK_DISTRIBUTED", True, "cmdline")
    with pytest.raises(ValueError, match="start workers with `python -m vkscraper worker`"):
        check_settings(settings)


# Stopping workers precisely (`worker --pidfile`, `worker stop`): real processes.


def test_worker_stop_by_pidfile_stops_that_worker_only(workers, tmp_path, server):
    w = workers([A], None)
    a, b = tmp_path / "a.pid", tmp_path / "b.pid"
    w.start(1, "--pidfile", str(a))
    w.start(1, "--pidfile", str(b))
    w.wait_started()
    first, second = w.procs
    assert (a.read_text(), b.read_text()) == (f"{first.pid}\n", f"{second.pid}\n")
    # A third worker given a pidfile a running worker holds does not start.
    out = cli(w.env, "worker", "--pidfile", str(a), check=False)
    assert out.returncode == 2
    assert out.stderr == (
        f"vkscraper: error: {a} is held by worker {first.pid}, still running: stop it first "
        f"(`worker stop --pidfile {a}`) or give another --pidfile\n"
    )
    assert a.read_text() == f"{first.pid}\n"

    out = cli(w.env, "worker", "stop", "--pidfile", str(a))
    assert (out.stdout, out.stderr) == (f"stopped worker {first.pid}\n", "")
    assert first.poll() == 0  # `stop` returned once it had exited, cleanly
    assert re.search(r"Worker \S+ stopped", w.log(0))
    assert not a.exists()  # removed as it exited
    time.sleep(2)
    assert second.poll() is None and b.read_text() == f"{second.pid}\n"
    assert "stopped" not in w.log(1)
    assert [
        k
        for k in server.scan_iter(workqueue.heartbeat_key("*"))
        if f":{second.pid}:".encode() in k
    ]
    # Again: nobody holds it any more; a warning, and the status says the worker is stopped.
    out = cli(w.env, "worker", "stop", "--pidfile", str(a))
    assert (out.stdout, out.stderr) == ("", f"vkscraper: warning: no worker holds {a}\n")
    assert second.poll() is None


@pytest.fixture
def other_redis():
    with redis_db_of_our_own(OTHER_REDIS_URL) as r:
        yield r


OTHER_REDIS_URL = REDIS_URL.rpartition("/")[0] + "/8"


def test_worker_stop_all_stops_this_redis_workers_and_never_another_program(
    workers, tmp_path, server, other_redis
):
    w = workers([A], None)
    w.start(2)
    # A worker of another deployment (another Redis database), on this machine too.
    other = Workers(tmp_path / "other", {**w.env, "REDIS_URL": OTHER_REDIS_URL})
    (tmp_path / "other").mkdir()
    other.start(1)
    # Not a worker: a pid that a stale heartbeat key and a stale pidfile name.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        w.wait_started()
        other.wait_started()
        server.set(workqueue.heartbeat_key(f"{socket.gethostname()}:{bystander.pid}:ab12"), 1)
        stale = tmp_path / "stale.pid"
        stale.write_text(f"{bystander.pid}\n")
        out = cli(w.env, "worker", "stop", "--pidfile", str(stale))
        assert out.stderr == f"vkscraper: warning: no worker holds {stale}\n"

        out = cli(w.env, "worker", "stop", "--all")
        assert sorted(out.stdout.splitlines()) == sorted(
            f"stopped worker {p.pid}" for p in w.procs
        )
        assert [p.poll() for p in w.procs] == [0, 0]
        time.sleep(1)
        assert other.procs[0].poll() is None and bystander.poll() is None
        # Nothing of this Redis left to stop: a warning, status 0.
        out = cli(w.env, "worker", "stop", "--all")
        assert (out.returncode, out.stdout) == (0, "")
        assert "no worker of this machine is registered in this Redis" in out.stderr
        assert other.procs[0].poll() is None and bystander.poll() is None
    finally:
        other.stop()
        bystander.kill()
        bystander.wait()


def test_worker_stop_knows_a_worker_of_the_installed_command_and_nothing_else(tmp_path):
    """``worker stop`` signals a pid only if its command line is a worker: ``python -m
    vkscraper … worker`` or the console script ``vkscraper … worker`` (its interpreter runs
    ``…/bin/vkscraper``); not ``worker stop``, not another program."""
    script = tmp_path / "bin" / "vkscraper"  # stands for the installed command: it only waits
    script.parent.mkdir()
    script.write_text("import time; time.sleep(60)\n")
    wait = "import time; time.sleep(60)"
    command_lines = {
        (sys.executable, str(script), "worker"): True,
        (sys.executable, str(script), "-s", "LOG_LEVEL=INFO", "worker"): True,
        (sys.executable, str(script), "worker", "stop", "--all"): False,
        (sys.executable, str(script), "task", "list"): False,
        (sys.executable, "-c", wait, "vkscraper", "worker"): False,
        ("sleep", "60", "vkscraper", "worker"): False,
    }
    # Popen returns once the child has exec'd: /proc/PID/cmdline is the new program's.
    procs = {line: subprocess.Popen(line) for line in command_lines}
    try:
        assert {line: is_worker(p.pid) for line, p in procs.items()} == command_lines
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def default_databases() -> dict[Path, int]:
    """The default SQLite files in the checkout (``make demo`` leaves one), with their mtimes."""
    return {p: p.stat().st_mtime_ns for p in ROOT.glob("vkscraper.sqlite3*")}


def test_worker_stop_options(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    before = default_databases()
    out = cli(env, "worker", "stop", check=False)
    assert out.returncode == 2 and "one of the arguments --pidfile --all is required" in out.stderr
    out = cli(env, "worker", "stop", "--all", check=False)
    assert out.returncode == 2 and "export REDIS_URL=" in out.stderr
    out = cli(env, "worker", "--pidfile", "x", "stop", "--all", check=False)
    assert out.returncode == 2 and "`worker stop --pidfile PATH`" in out.stderr
    assert default_databases() == before  # `worker stop` opens no database


_JOIN_WITH_ENTRIES_QUEUED = """
import sys, redis
from scrapy import Spider
from scrapy_redis.scheduler import Scheduler
if sys.argv[1] == "vkscraper":
    import vkscraper.distributed.scheduler  # what a worker's crawl loads (SCHEDULER)
server = redis.Redis.from_url(sys.argv[2])
server.rpush("test:queue", b"an entry")
scheduler = Scheduler(server, persist=True, queue_key="test:queue", dupefilter=object(),
                      queue_cls="scrapy_redis.queue.FifoQueue")
scheduler.open(Spider("vk"))  # "Resuming crawl (1 requests scheduled)"
print("opened")
Spider("vk").log("our own call")
"""


@pytest.mark.parametrize("loaded", ["vkscraper", "scrapy-redis alone"])
def test_the_scrapy_redis_deprecation_warning_of_a_joining_worker_is_muted(server, loaded):
    """scrapy-redis's Scheduler.open() calls the deprecated Spider.log() when a worker joins
    a task with entries queued; with warnings as errors: muted once vkscraper's scheduler is
    loaded, and nothing else with it (our own call still warns)."""
    cmd = [sys.executable, "-W", "error", "-c", _JOIN_WITH_ENTRIES_QUEUED, loaded, REDIS_URL]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "ScrapyDeprecationWarning: Spider.log() is deprecated" in out.stderr
    if loaded == "vkscraper":
        assert out.stdout == "opened\n" and "scrapy_redis" not in out.stderr
        own = _JOIN_WITH_ENTRIES_QUEUED.splitlines().index('Spider("vk").log("our own call")')
        assert f'File "<string>", line {own + 1}, in <module>' in out.stderr
    else:
        assert out.stdout == "" and "scrapy_redis/scheduler.py" in out.stderr
