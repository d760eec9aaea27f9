"""Stopping workers precisely: the pidfile a worker holds while it runs, and ``worker stop``.

``worker --pidfile PATH`` writes the worker's pid to PATH as it starts (refusing to start
while a running worker holds PATH) and removes it as it exits. ``worker stop --pidfile PATH``
sends SIGTERM to that worker only; ``worker stop --all`` to the workers of this machine that
beat a heartbeat in this Redis (their ids are ``host:pid:random``, see
:mod:`vkscraper.distributed.worker`). Either way a pid is signalled only if its
``/proc/PID/cmdline`` is a worker (``python -m vkscraper worker`` or the installed
``vkscraper worker``): a stale pidfile or heartbeat may name a pid that another program has
since reused.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vkscraper.distributed import workqueue


class PidfileError(Exception):
    """The pidfile is held by a running worker, or cannot be written."""


def is_worker(pid: int) -> bool:
    """``pid`` is a live ``python -m vkscraper [options] worker`` process, or the installed
    command's ``python …/bin/vkscraper [options] worker`` (not ``worker stop``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    rest: list[str] | None = None
    for i in range(len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] == "vkscraper":
            rest = argv[i + 2 :]
            break
    else:
        # The console script: its interpreter runs it (the shebang), its path comes next.
        if (
            argv[1:]
            and Path(argv[0]).name.startswith("python")
            and Path(argv[1]).name == "vkscraper"
        ):
            rest = argv[2:]
    return rest is not None and "worker" in rest and "stop" not in rest[rest.index("worker") + 1 :]


def read_pid(path: Path) -> int | None:
    """The pid in ``path``; None when there is no such file or it holds no pid."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidfileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return int(text) if text.isdigit() else None


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold ``path`` with this process's pid while the block runs, then remove it."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            pid = read_pid(path)
            if pid is not None and is_worker(pid):
                raise PidfileError(
                    f"{path} is held by worker {pid}, still running: stop it first "
                    f"(`worker stop --pidfile {path}`) or give another --pidfile"
                ) from None
            path.unlink(missing_ok=True)  # stale: its worker is gone
        except OSError as exc:
            raise PidfileError(f"cannot write {path}: {exc.strerror or exc}") from None
    else:  # another worker took it between the unlink and the open
        raise PidfileError(f"{path} is held by another worker starting now")
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        if read_pid(path) == os.getpid():
            path.unlink(missing_ok=True)


def registered(server: Any) -> list[int]:
    """Pids of this machine's workers that beat a heartbeat in this Redis."""
    host = socket.gethostname()
    pids = set()
    prefix = workqueue.heartbeat_key("")
    for key in server.scan_iter(prefix + "*"):
        worker_host, _, rest = key.decode()[len(prefix) :].rpartition(":")[0].rpartition(":")
        if worker_host == host and rest.isdigit():
            pids.add(int(rest))
    return sorted(pids)


def stop(pids: list[int], timeout: float) -> list[int]:
    """SIGTERM each pid that is a worker and wait until they have exited (they put back what
    they hold first); returns those still running after ``timeout`` seconds."""
    signalled = []
    for pid in pids:
        if is_worker(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            signalled.append(pid)
    deadline = time.monotonic() + timeout
    while (running := [p for p in signalled if is_worker(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running
