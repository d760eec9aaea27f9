"""A task's shared work in Redis, for worker mode (:mod:`vkscraper.worker`).

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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy_redis.queue import Base

if TYPE_CHECKING:
    import redis
    from scrapy import Request, Spider

logger = logging.getLogger(__name__)

PREFIX = "vkscraper"
FEED = f"{PREFIX}:tasks"
ACTIVE = f"{PREFIX}:active"


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


def redis_location(url: str) -> str:
    """``host:port/db`` of a Redis URL, without a password, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


# A task's state: opening:<worker> → open → done:<worker> (that worker finalizes it) → final;
# or cancelled (by the HTTP service) at any point.

# KEYS: state, pending, queue, active; ARGV: task, worker, heartbeat prefix.
# 1: open it (a new run, or one whose opener died: afresh, its entries are queued again);
# 0: it is open or opening elsewhere, join it; -1: cancelled, drop it.
_BEGIN = """
local s = redis.call('GET', KEYS[1])
if s == 'cancelled' then return -1 end
if s == 'open' or (s and string.sub(s, 1, 5) == 'done:') then return 0 end
if s and string.sub(s, 1, 8) == 'opening:' and
    redis.call('EXISTS', ARGV[3] .. string.sub(s, 9)) == 1 then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SET', KEYS[1], 'opening:' .. ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
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

# KEYS: state, pending, owner; ARGV: task, worker, entry id, entry data.
_ACK = (
    """
redis.call('LREM', KEYS[3], 1, ARGV[4])
redis.call('SREM', KEYS[2], ARGV[3])
"""
    + _FINISH_IF_DONE
)

# End the task now (a fatal error): 1 if this worker finalizes it. KEYS: state; ARGV: worker.
_CLAIM = """
local s = redis.call('GET', KEYS[1])
if s == 'final' or s == 'cancelled' or (s and string.sub(s, 1, 5) == 'done:') then
  return 0
end
redis.call('SET', KEYS[1], 'done:' .. ARGV[1])
return 1
"""

# A finalizer that died before it finished: this worker takes the finalizing over.
# KEYS: state; ARGV: worker, heartbeat prefix.
_TAKE_OVER = """
local s = redis.call('GET', KEYS[1])
if s and string.sub(s, 1, 5) == 'done:' and string.sub(s, 6) ~= ARGV[1] and
    redis.call('EXISTS', ARGV[2] .. string.sub(s, 6)) == 0 then
  redis.call('SET', KEYS[1], 'done:' .. ARGV[1])
  return 1
end
return 0
"""

# The finalizer finished it. KEYS: state, active; ARGV: task, worker.
_FINALIZED = """
if redis.call('GET', KEYS[1]) == 'done:' .. ARGV[2] then
  redis.call('SET', KEYS[1], 'final')
end
redis.call('SREM', KEYS[2], ARGV[1])
"""

# The HTTP service cancels it. KEYS: state, active, feed; ARGV: task.
_CANCEL = """
redis.call('LREM', KEYS[3], 0, ARGV[1])
redis.call('SET', KEYS[1], 'cancelled')
redis.call('SREM', KEYS[2], ARGV[1])
"""

# Put back the entries of dead workers (or of ARGV[2] itself). KEYS: owners, queue;
# ARGV: owner-list prefix, the worker releasing its own ('' when reaping), heartbeat prefix,
# the worker reaping (never reaped by itself).
_REQUEUE = """
local moved = 0
for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if w == ARGV[2] or (ARGV[2] == '' and w ~= ARGV[4] and
                      redis.call('EXISTS', ARGV[3] .. w) == 0) then
    while redis.call('LMOVE', ARGV[1] .. w, KEYS[2], 'RIGHT', 'LEFT') do
      moved = moved + 1
    end
    redis.call('SREM', KEYS[1], w)
  end
end
return moved
"""


class TaskQueue:
    """The Redis side of one task's entries, for one worker (see the module docstring)."""

    def __init__(self, server: redis.Redis, task_id: int, worker: str) -> None:
        self.server = server
        self.task_id = task_id
        self.worker = worker
        p = task_prefix(task_id)
        self.state, self.pending, self.queue = f"{p}:state", f"{p}:pending", f"{p}:queue"
        self.owners, self.owner_prefix = f"{p}:owners", f"{p}:owner:"
        self.owner = self.owner_prefix + worker
        self.scripts = {
            name: server.register_script(code)
            for name, code in (
                ("begin", _BEGIN), ("opened", _OPENED), ("ack", _ACK), ("claim", _CLAIM),
                ("take_over", _TAKE_OVER), ("finalized", _FINALIZED), ("cancel", _CANCEL),
                ("requeue", _REQUEUE),
            )
        }  # fmt: skip

    def begin(self) -> int:
        """Taken from the feed: 1 open it (this worker), 0 join it, -1 drop it (cancelled)."""
        keys = [self.state, self.pending, self.queue, ACTIVE]
        return int(self.scripts["begin"](keys, [self.task_id, self.worker, heartbeat_key("")]))

    def push(self, entry_id: str, data: bytes) -> None:
        with self.server.pipeline(transaction=True) as pipe:
            pipe.sadd(self.pending, entry_id)
            pipe.rpush(self.queue, data)
            pipe.execute()

    def take(self, timeout: int = 0) -> bytes | None:
        """The oldest entry, moved into this worker's owner list; waits up to ``timeout``."""
        self.server.sadd(self.owners, self.worker)  # before the move: a reaper must see it
        if timeout > 0:
            data = self.server.blmove(self.queue, self.owner, timeout, "LEFT", "RIGHT")
        else:
            data = self.server.lmove(self.queue, self.owner, "LEFT", "RIGHT")
        return data  # type: ignore[return-value]  # bytes: the client does not decode

    def opened(self) -> bool:
        """Every entry is queued. True: nothing was pending, this worker finalizes."""
        keys = [self.state, self.pending, opening_key(self.worker)]
        return bool(self.scripts["opened"](keys, [self.task_id, self.worker]))

    def ack(self, entry_id: str, data: bytes) -> bool:
        """The entry's group is finished. True: it was the task's last, this worker
        finalizes."""
        keys = [self.state, self.pending, self.owner]
        return bool(self.scripts["ack"](keys, [self.task_id, self.worker, entry_id, data]))

    def claim(self) -> bool:
        """End the task now (the crawl cannot go on); True: this worker finalizes it."""
        return bool(self.scripts["claim"]([self.state], [self.worker]))

    def take_over(self) -> bool:
        """True: the worker that was to finalize the task died first; this one does."""
        return bool(self.scripts["take_over"]([self.state], [self.worker, heartbeat_key("")]))

    def finalized(self) -> None:
        self.scripts["finalized"]([self.state, ACTIVE], [self.task_id, self.worker])

    def cancel(self) -> None:
        """Out of the feed and of every worker: their crawls of it close (resumable)."""
        self.scripts["cancel"]([self.state, ACTIVE, FEED], [self.task_id])

    def release(self) -> int:
        """Put back every entry this worker holds (it stops); returns how many."""
        argv = [self.owner_prefix, self.worker, heartbeat_key(""), self.worker]
        return int(self.scripts["requeue"]([self.owners, self.queue], argv))

    def reap(self) -> int:
        """Put back the entries of workers whose heartbeat expired; returns how many."""
        argv = [self.owner_prefix, "", heartbeat_key(""), self.worker]
        return int(self.scripts["requeue"]([self.owners, self.queue], argv))

    def status(self) -> str:
        """``opening``, ``open``, ``done`` (being finalized), ``final``, ``cancelled`` or
        ``none``."""
        state: bytes | None = self.server.get(self.state)  # type: ignore[assignment]
        return "none" if state is None else state.decode().split(":", 1)[0]

    def done(self) -> bool:
        """No more work for anyone: finished (or being finalized), or cancelled."""
        return self.status() in ("none", "done", "final", "cancelled")

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
        self.tasks = TaskQueue(server, task_id, settings.get("VK_WORKER_ID"))

    def __len__(self) -> int:
        return self.tasks.waiting()

    def push(self, request: Request) -> None:
        self.tasks.push(request.meta["vk_entry"], self._encode_request(request))

    def pop(self, timeout: float = 0) -> Request | None:
        data = self.tasks.take(int(timeout))
        return None if data is None else self.entry(data)

    def entry(self, data: bytes) -> Request:
        """The request of a taken entry."""
        request = self._decode_request(data)
        request.meta["vk_entry_data"] = data  # what the ack removes from the owner list
        return request

    def clear(self) -> None:  # never: the queue is every worker's (SCHEDULER_PERSIST)
        pass
