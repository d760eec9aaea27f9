"""A task's shared work in Redis, for worker mode (:mod:`vkscraper.distributed.worker`).

Workers find tasks in a feed (``vkscraper:tasks``, filled by ``task create --enqueue`` and by
the HTTP service). The worker that takes a task from the feed *opens* it: it begins the run
and resolves the groups, then queues one *entry* per group — a request that starts that
group's crawl — through scrapy-redis's scheduler (:class:`EntryQueue` is its queue class).
Every worker joins every open task and takes entries; a worker crawls a group it took from
its first request to its last, so execute batching, the group's bookkeeping and its "done"
all stay in one process.

Taking an entry does not remove it: ``LMOVE`` moves it into the taker's ``owner`` list (the
reliable-queue pattern), and it leaves only when the group is finished — rows written and its
status recorded — which is the *ack*. A worker whose heartbeat key expired (``kill -9``, a
lost machine) has its entries put back at the head of the queue by the others
(:meth:`TaskQueue.reap`), and the group is crawled again from its start: rows are upserted,
so none is lost and none duplicated. A worker that stops (SIGTERM) puts back what it holds.

The task is finished exactly once: each ack removes its entry id from ``pending`` and, in the
same script, the ack (or the opener's "all queued") that leaves ``pending`` empty while the
task is ``open`` sets ``state`` to ``done:<worker>``; that worker alone finalizes the task,
then sets ``final`` (the task leaves ``active``). If it dies first, another worker takes the
finalizing over (:meth:`TaskQueue.take_over`).

Keys (a task's share one Redis Cluster slot through ``{task:N}``); nothing holds a token:

* ``vkscraper:tasks``: the feed of task ids (LPUSH; taken oldest first with BLMOVE)
* ``vkscraper:opening:<worker>``: the task a worker is opening, back to the feed if it dies
* ``vkscraper:active``: tasks open for every worker to join
* ``vkscraper:worker:<worker>``: heartbeat, expires ``VK_WORKER_HEARTBEAT`` s after a beat
* ``vkscraper:{task:N}:queue``: serialized entry requests waiting, oldest first
* ``vkscraper:{task:N}:owner:<worker>`` / ``…:owners``: entries taken, and by whom
* ``vkscraper:{task:N}:pending``: ids of entries not acked
* ``vkscraper:{task:N}:state``: ``opening:<worker>``, ``open``, ``done:<worker>``, ``final``
  or ``cancelled``
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy_redis.queue import Base

from vkscraper._internals import decode_request, encode_request

if TYPE_CHECKING:
    from collections.abc import Iterable

    import redis
    from scrapy import Request, Spider

logger = logging.getLogger(__name__)

PREFIX = "vkscraper"
FEED = f"{PREFIX}:tasks"
ACTIVE = f"{PREFIX}:active"
ENDED_TTL = 86400  # seconds a task's keys stay in Redis after it ended (final or cancelled)
# An entry is answered in the worker (a data: URL), not by VK: it goes through a download slot
# of its own without the tokens' delay (vkscraper.distributed.worker sets it), or a worker could
# start at most one group per DOWNLOAD_DELAY, fewer than one execute's worth per request.
ENTRY_SLOT = "vkscraper-entries"


def task_prefix(task_id: int) -> str:
    return f"{PREFIX}:{{task:{task_id}}}"


def heartbeat_key(worker: str) -> str:
    return f"{PREFIX}:worker:{worker}"


def opening_key(worker: str) -> str:
    return f"{PREFIX}:opening:{worker}"


# A task collected again after a cancel runs again; KEYS: state, feed; ARGV: task.
_ENQUEUE = """
if redis.call('GET', KEYS[1]) == 'cancelled' then redis.call('DEL', KEYS[1]) end
redis.call('LPUSH', KEYS[2], ARGV[1])
"""


def enqueue(server: redis.Redis, task_id: int) -> None:
    """Put a task in the feed: a worker opens it, every worker joins."""
    server.register_script(_ENQUEUE)([f"{task_prefix(task_id)}:state", FEED], [task_id])


def task_states(server: redis.Redis) -> dict[int, str]:
    """The tasks the workers know: ``pending`` in the feed (or being opened), ``running``
    while workers crawl them. Raises redis.RedisError / OSError when Redis is away."""
    queued = server.lrange(FEED, 0, -1)
    for key in server.scan_iter(opening_key("*")):
        queued += server.lrange(key, 0, -1)
    states = {int(t): "pending" for t in queued}
    states.update({int(t): "running" for t in server.smembers(ACTIVE)})
    return states


@dataclass(frozen=True)
class Fleet:
    tasks_queued: int  # in the feed, or taken by a worker that is opening them
    groups_queued: int  # entries of open tasks waiting for a worker
    workers: int  # with a live heartbeat


def fleet(server: redis.Redis) -> Fleet:
    """What the workers have before them, read from Redis (for metrics)."""
    tasks = server.llen(FEED)
    for key in server.scan_iter(opening_key("*")):
        tasks += server.llen(key)
    groups = sum(server.llen(f"{task_prefix(int(t))}:queue") for t in server.smembers(ACTIVE))
    workers = sum(1 for _ in server.scan_iter(heartbeat_key("*")))
    return Fleet(int(tasks), int(groups), workers)


def redis_location(url: str) -> str:
    """``host:port/db`` of a Redis URL, without a password, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


# A task's state: opening:<worker> → open → done:<worker> (that worker finalizes it) → final;
# or cancelled (by the HTTP service) at any point. ``run`` names the run the state is about:
# a crawl of another run (cancelled and collected again, or an opener taken over) takes and
# acks nothing of this one and closes. A missing state is a task Redis lost (a restart
# without persistence): nobody finalizes it, it stays resumable from the database.

# KEYS: state, pending, queue, active, owners, run; ARGV: task, worker, heartbeat prefix,
# new run id, owner-list prefix. {1, run}: open it (a new run, or one whose opener died:
# afresh, whatever an earlier run queued or handed out is void); {0, run}: it is open or
# opening elsewhere, join it; {-1, ''}: cancelled, drop it.
_BEGIN = """
local s = redis.call('GET', KEYS[1])
if s == 'cancelled' then return {-1, ''} end
local run = redis.call('GET', KEYS[6]) or ''
if s == 'open' or (s and string.sub(s, 1, 5) == 'done:') then return {0, run} end
if s and string.sub(s, 1, 8) == 'opening:' and
    redis.call('EXISTS', ARGV[3] .. string.sub(s, 9)) == 1 then
  return {0, run}
end
for _, w in ipairs(redis.call('SMEMBERS', KEYS[5])) do redis.call('DEL', ARGV[5] .. w) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
redis.call('SET', KEYS[1], 'opening:' .. ARGV[2])
redis.call('SET', KEYS[6], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[1])
return {1, ARGV[4]}
"""

# Open with nothing pending: the caller finalizes. KEYS: state, pending; ARGV: task, worker.
_FINISH_IF_DONE = """
if redis.call('GET', KEYS[1]) == 'open' and redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], 'done:' .. ARGV[2])
  return 1
end
return 0
"""

# The opener queued every entry. KEYS: state, pending, opening; ARGV: task, worker.
_OPENED = (
    """
if redis.call('GET', KEYS[1]) == 'opening:' .. ARGV[2] then
  redis.call('SET', KEYS[1], 'open')
end
redis.call('LREM', KEYS[3], 0, ARGV[1])
"""
    + _FINISH_IF_DONE
)

# Take the oldest entry, for a crawl of the current run only.
# KEYS: run, queue, owner, owners; ARGV: run, worker.
_TAKE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('SADD', KEYS[4], ARGV[2])
return redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT')
"""

# An entry a blocking take moved: kept (1) by a crawl of the current run, else put back at
# the head of the queue (0). KEYS: run, owner, queue, owners; ARGV: run, data, worker.
_KEEP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SADD', KEYS[4], ARGV[3])
  return 1
end
if redis.call('LREM', KEYS[2], -1, ARGV[2]) == 1 then redis.call('LPUSH', KEYS[3], ARGV[2]) end
return 0
"""

# KEYS: state, pending, owner, queue, run; ARGV: task, worker, entry id, entry data, run.
# Counted only when the entry is still this worker's (or waiting, put back after this worker
# was taken for dead): one another worker took again is acked by that worker, when its crawl
# of the group is over, so the task is not finalized while a group is still being crawled.
_ACK = (
    """
if redis.call('GET', KEYS[5]) ~= ARGV[5] then
  redis.call('LREM', KEYS[3], 1, ARGV[4])
  return 0
end
if redis.call('LREM', KEYS[3], 1, ARGV[4]) == 0 and
    redis.call('LREM', KEYS[4], 1, ARGV[4]) == 0 then
  return 0
end
redis.call('SREM', KEYS[2], ARGV[3])
"""
    + _FINISH_IF_DONE
)

# End the task now (a fatal error): 1 if this worker finalizes it. Never a task of another
# run, nor one whose state Redis lost (the database keeps it resumable).
# KEYS: state, run; ARGV: worker, run.
_CLAIM = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
local s = redis.call('GET', KEYS[1])
if not s or s == 'final' or s == 'cancelled' or string.sub(s, 1, 5) == 'done:' then
  return 0
end
redis.call('SET', KEYS[1], 'done:' .. ARGV[1])
return 1
"""

# A finalizer found dead (ARGV[3]) before it finished: this worker takes the finalizing over.
# KEYS: state; ARGV: worker, heartbeat prefix, the dead finalizer.
_TAKE_OVER = """
if ARGV[3] ~= ARGV[1] and redis.call('GET', KEYS[1]) == 'done:' .. ARGV[3] and
    redis.call('EXISTS', ARGV[2] .. ARGV[3]) == 0 then
  redis.call('SET', KEYS[1], 'done:' .. ARGV[1])
  return 1
end
return 0
"""

# The finalizer finished it: a final task's keys expire ENDED_TTL s later.
# KEYS: state, active, pending, queue, owners, run; ARGV: task, worker, owner-list prefix, ttl.
_FINALIZED = """
local s = redis.call('GET', KEYS[1])
if s == 'done:' .. ARGV[2] then
  redis.call('SET', KEYS[1], 'final')
  s = 'final'
end
redis.call('SREM', KEYS[2], ARGV[1])
if s == 'final' then
  for _, w in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    redis.call('EXPIRE', ARGV[3] .. w, ARGV[4])
  end
  for _, key in ipairs({KEYS[1], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}) do
    redis.call('EXPIRE', key, ARGV[4])
  end
end
"""

# The HTTP service cancels it: its keys expire ENDED_TTL s later.
# KEYS: state, active, feed, pending, queue, owners, run; ARGV: task, owner-list prefix, ttl.
_CANCEL = """
redis.call('LREM', KEYS[3], 0, ARGV[1])
redis.call('SET', KEYS[1], 'cancelled')
redis.call('SREM', KEYS[2], ARGV[1])
for _, w in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  redis.call('EXPIRE', ARGV[2] .. w, ARGV[3])
end
for _, key in ipairs({KEYS[1], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}) do
  redis.call('EXPIRE', key, ARGV[3])
end
"""

# Entries in this worker's owner list that its crawl does not hold (ARGV[2]…) go back at the
# head of the queue: a take whose answer Redis lost (a connection dropped after the move) would
# else stay owned by a live worker that never crawls it. KEYS: run, owner, queue; ARGV: run, held…
_RESTORE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local held = {}
for i = 2, #ARGV do held[ARGV[i]] = true end
local moved = 0
for _, data in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if not held[data] then
    redis.call('LREM', KEYS[2], 1, data)
    redis.call('LPUSH', KEYS[3], data)
    moved = moved + 1
  end
end
return moved
"""

# A worker stops: its entries go back at the head of the queue (an ended run's are void).
# KEYS: owners, queue, run, owner; ARGV: worker, run.
_RELEASE = """
local moved = 0
if redis.call('GET', KEYS[3]) == ARGV[2] then
  while redis.call('LMOVE', KEYS[4], KEYS[2], 'RIGHT', 'LEFT') do moved = moved + 1 end
end
redis.call('DEL', KEYS[4])
redis.call('SREM', KEYS[1], ARGV[1])
return moved
"""

# Put back the entries of workers found dead (ARGV[3]…), unless they beat again meanwhile.
# KEYS: owners, queue; ARGV: owner-list prefix, heartbeat prefix, dead workers.
_REAP = """
local moved = 0
for i = 3, #ARGV do
  local w = ARGV[i]
  if redis.call('SISMEMBER', KEYS[1], w) == 1 and redis.call('EXISTS', ARGV[2] .. w) == 0 then
    while redis.call('LMOVE', ARGV[1] .. w, KEYS[2], 'RIGHT', 'LEFT') do
      moved = moved + 1
    end
    redis.call('SREM', KEYS[1], w)
  end
end
return moved
"""


class TaskQueue:
    """The Redis side of one task's entries, for one worker (see the module docstring);
    ``run``: the run its crawl takes part in (set by :meth:`begin` or :meth:`join`)."""

    def __init__(self, server: redis.Redis, task_id: int, worker: str, run: str = "") -> None:
        self.server = server
        self.task_id = task_id
        self.worker = worker
        self.run = run
        p = task_prefix(task_id)
        self.state, self.pending, self.queue = f"{p}:state", f"{p}:pending", f"{p}:queue"
        self.owners, self.owner_prefix = f"{p}:owners", f"{p}:owner:"
        self.owner = self.owner_prefix + worker
        self.run_key = f"{p}:run"
        self.scripts = {
            name: server.register_script(code)
            for name, code in (
                ("begin", _BEGIN), ("opened", _OPENED), ("take", _TAKE), ("keep", _KEEP),
                ("ack", _ACK), ("claim", _CLAIM), ("take_over", _TAKE_OVER),
                ("finalized", _FINALIZED), ("cancel", _CANCEL), ("release", _RELEASE),
                ("reap", _REAP), ("restore", _RESTORE),
            )
        }  # fmt: skip

    def begin(self) -> int:
        """Taken from the feed: 1 open it (this worker, a new run), 0 join it, -1 drop it
        (cancelled)."""
        keys = [self.state, self.pending, self.queue, ACTIVE, self.owners, self.run_key]
        argv: list[str | int] = [self.task_id, self.worker, heartbeat_key(""),
                                 secrets.token_hex(6), self.owner_prefix]  # fmt: skip
        code, run = self.scripts["begin"](keys, argv)
        self.run = run.decode() if isinstance(run, bytes) else str(run)
        return int(code)

    def join(self) -> bool:
        """Take part in the current run; False: nothing to join (no run open or opening)."""
        with self.server.pipeline(transaction=True) as pipe:
            pipe.get(self.state)
            pipe.get(self.run_key)
            state, run = pipe.execute()
        self.run = run.decode() if run is not None else ""
        return state is not None and state.decode().split(":", 1)[0] in ("open", "opening")

    def push(self, entry_id: str, data: bytes) -> None:
        with self.server.pipeline(transaction=True) as pipe:
            pipe.sadd(self.pending, entry_id)
            pipe.rpush(self.queue, data)
            pipe.execute()

    def take(self, timeout: int = 0) -> bytes | None:
        """The oldest entry, moved into this worker's owner list; waits up to ``timeout``.
        None when none came, or when the run this crawl is part of has ended."""
        if timeout <= 0:
            keys = [self.run_key, self.queue, self.owner, self.owners]
            taken: bytes | None = self.scripts["take"](keys, [self.run, self.worker])
            return taken  # bytes: the client does not decode
        if not self.current():
            return None
        self.server.sadd(self.owners, self.worker)  # before the move: a reaper must see it
        data: bytes | None = self.server.blmove(  # type: ignore[assignment]
            self.queue, self.owner, timeout, "LEFT", "RIGHT"
        )
        if data is None:
            return None
        keys = [self.run_key, self.owner, self.queue, self.owners]
        kept = self.scripts["keep"](keys, [self.run, data, self.worker])
        return data if kept else None

    def opened(self) -> bool:
        """Every entry is queued. True: nothing was pending, this worker finalizes."""
        keys = [self.state, self.pending, opening_key(self.worker)]
        return bool(self.scripts["opened"](keys, [self.task_id, self.worker]))

    def ack(self, entry_id: str, data: bytes) -> bool:
        """The entry's group is finished. True: it was the task's last, this worker
        finalizes."""
        keys = [self.state, self.pending, self.owner, self.queue, self.run_key]
        argv: list[str | int | bytes] = [self.task_id, self.worker, entry_id, data, self.run]
        return bool(self.scripts["ack"](keys, argv))

    def claim(self) -> bool:
        """End the task now (the crawl cannot go on); True: this worker finalizes it."""
        return bool(self.scripts["claim"]([self.state, self.run_key], [self.worker, self.run]))

    def finalizing(self) -> str | None:
        """The worker finalizing the task (state ``done:<worker>``), if any."""
        state: bytes | None = self.server.get(self.state)  # type: ignore[assignment]
        if state is None or not state.startswith(b"done:"):
            return None
        return state[5:].decode()

    def take_over(self, dead: str) -> bool:
        """True: ``dead``, found dead, was to finalize the task and had not; this worker
        does."""
        argv = [self.worker, heartbeat_key(""), dead]
        return bool(self.scripts["take_over"]([self.state], argv))

    def finalized(self) -> None:
        """Finalized: off the active tasks; its keys expire after ``ENDED_TTL``."""
        keys = [self.state, ACTIVE, self.pending, self.queue, self.owners, self.run_key]
        argv: list[str | int] = [self.task_id, self.worker, self.owner_prefix, ENDED_TTL]
        self.scripts["finalized"](keys, argv)

    def cancel(self) -> None:
        """Out of the feed and of every worker: their crawls of it close (resumable)."""
        keys = [self.state, ACTIVE, FEED, self.pending, self.queue, self.owners, self.run_key]
        self.scripts["cancel"](keys, [self.task_id, self.owner_prefix, ENDED_TTL])

    def restore(self, held: Iterable[bytes]) -> int:
        """Put back at the head of the queue the entries this worker owns but does not hold
        (``held``: the data of every entry its crawl took and has not acked); their number."""
        keys = [self.run_key, self.owner, self.queue]
        return int(self.scripts["restore"](keys, [self.run, *held]))

    def release(self) -> int:
        """Put back every entry this worker holds (it stops); returns how many."""
        keys = [self.owners, self.queue, self.run_key, self.owner]
        return int(self.scripts["release"](keys, [self.worker, self.run]))

    def holders(self) -> list[str]:
        """The workers holding entries of the task."""
        members: set[bytes] = self.server.smembers(self.owners)  # type: ignore[assignment]
        return sorted(w.decode() for w in members)

    def reap(self, dead: Iterable[str]) -> int:
        """Put back the entries of the workers ``dead`` (found dead by the caller: no
        heartbeat for ``VK_WORKER_HEARTBEAT``; never this worker); returns how many."""
        dead = [w for w in dead if w != self.worker]
        if not dead:
            return 0
        argv = [self.owner_prefix, heartbeat_key(""), *dead]
        return int(self.scripts["reap"]([self.owners, self.queue], argv))

    def status(self) -> str:
        """``opening``, ``open``, ``done`` (being finalized), ``final``, ``cancelled``,
        ``ended`` (a crawl of a run that has ended) or ``lost`` (Redis lost the task's state:
        its data went away with a restart; or the keys of an old task expired)."""
        with self.server.pipeline(transaction=True) as pipe:
            pipe.get(self.state)
            pipe.get(self.run_key)
            state, run = pipe.execute()
        if state is None:
            return "lost"
        status: str = state.decode().split(":", 1)[0]
        if self.run and status in ("opening", "open", "done") and run != self.run.encode():
            return "ended"
        return status

    def current(self) -> bool:
        """The run this crawl takes part in goes on (others may still take its entries)."""
        return self.status() in ("opening", "open")

    def done(self) -> bool:
        """No more work for this crawl: the task is finished (or being finalized),
        cancelled, its run ended, or Redis lost it."""
        return not self.current()

    def waiting(self) -> int:
        return int(self.server.llen(self.queue))


class EntryQueue(Base):
    """scrapy-redis queue class (``SCHEDULER_QUEUE_CLASS``) of a task's entries: requests are
    serialized by scrapy-redis (no token: it is added at download time), pushed with their
    entry id into ``pending``, and taken reliably (see :class:`TaskQueue`)."""

    def __init__(self, server: redis.Redis, spider: Spider, key: str, serializer: Any = None):
        super().__init__(server, spider, key, serializer)
        settings = spider.crawler.settings
        task_id = spider.task_id_arg  # type: ignore[attr-defined]  # the vk spider's
        worker, run = settings.get("VK_WORKER_ID"), settings.get("VK_WORKER_RUN", "")
        self.task_queue = TaskQueue(server, task_id, worker, run)

    def __len__(self) -> int:
        return self.task_queue.waiting()

    def push(self, request: Request) -> None:
        self.task_queue.push(request.meta["vk_entry"], encode_request(self, request))

    def pop(self, timeout: float = 0) -> Request | None:
        data = self.task_queue.take(int(timeout))
        return None if data is None else self.entry(data)

    def entry(self, data: bytes) -> Request:
        """The request of a taken entry."""
        request = decode_request(self, data)
        request.meta["vk_entry_data"] = data  # what the ack removes from the owner list
        request.meta["download_slot"] = ENTRY_SLOT
        request.meta["autothrottle_dont_adjust_delay"] = True
        return request

    def clear(self) -> None:  # never: the queue is every worker's (SCHEDULER_PERSIST)
        pass
