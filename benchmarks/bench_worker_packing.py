"""Worker mode packs like one process: requests and groups/s of one `scrapy crawl vk` and of
1, 2 and 4 `python -m vkscraper worker` processes, on the same task, execute mode, one token,
the emulator enforcing VK's 3 requests/s.

    python -m benchmarks.bench_worker_packing [--groups 200] [--workers 1,2,4]

The dataset is bench_execute's ``small`` shape (groups of 10 posts, at most 40 top-level
comments with up to 10 replies each, comments open). Prints, per run, the emulator's request
count, the calls per execute (the dataset's calls over the requests but groups.getById)
and groups/s (over the emulator's requests, first to
last, and from the task's creation to its end), then the ratios to one process. Needs
PostgreSQL (``VK_BENCH_PG_URL``, default the tests' server: a throwaway database per run) and
``redis-server`` (one of its own on a free port, stopped at the end). The package measured is
the one imported (``PYTHONPATH`` may point at another checkout); its processes run from there.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import vkscraper
from fakevk import FakeVk, generate_dataset, wall_readable
from testkit.offline import DEMO_TOKEN, crawl_offline, minimum_requests, operator_env
from testkit.pg import temporary_database
from vkscraper.store import open_store

ROOT = Path(vkscraper.__file__).resolve().parent.parent  # the checkout measured
PG = os.environ.get("VK_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def small_dataset(groups: int) -> dict[str, Any]:
    data = generate_dataset(seed=11, groups=groups, posts_per_group=10, max_comments=40,
                            max_replies=10, author_groups=0)  # fmt: skip
    for group in data["groups"]:  # a clean run: no post with comments closed
        for post in group["posts"]:
            post["comments_closed"] = False
    return data


class OwnRedis:
    """A redis-server of the benchmark's own (no persistence), stopped by its PID."""

    def __init__(self, tmp: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(tmp)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def one_process(data: dict[str, Any]) -> dict[str, Any]:
    with temporary_database(PG, "vkbench") as db:
        result = crawl_offline(data, rate_limit=3, database_url=db, workdir=ROOT)
    assert result["exit_code"] == 0, result["crawl_log_tail"]
    return {"requests": result["requests"], "span": result["span_seconds"],
            "wall": result["wall_seconds"], "status": result["task_show"].split("\n")[0],
            "took": None}  # fmt: skip


def workers(data: dict[str, Any], n: int, redis_url: str, tmp: Path) -> dict[str, Any]:
    names = [g["screen_name"] for g in data["groups"] if not g.get("author_only")]
    with temporary_database(PG, "vkbench") as db, FakeVk(data, tokens=[DEMO_TOKEN],
                                                         rate_limit=3) as vk:  # fmt: skip
        env = {**os.environ, "VK_ACCESS_TOKEN": DEMO_TOKEN, "REDIS_URL": redis_url,
               "DATABASE_URL": db, **operator_env(vk.url)}  # fmt: skip
        cmd = [sys.executable, "-m", "vkscraper", "worker", "-s", f"VK_API_URL={vk.url}",
               "-s", "LOG_LEVEL=INFO"]  # fmt: skip
        logs = [tmp / f"w{n}-{i}.log" for i in range(n)]
        procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("w"),
                                  stderr=subprocess.STDOUT) for log in logs]  # fmt: skip
        while not all("waiting for tasks" in log.read_text() for log in logs):
            time.sleep(0.1)
        create = [sys.executable, "-m", "vkscraper", "task", "create", "--enqueue",
                  "--groups", ",".join(names)]  # fmt: skip
        started = time.monotonic()
        task_id = int(subprocess.check_output(create, env=env, cwd=ROOT))
        with open_store(db) as store:
            while (task := store.get_task(task_id)) and task.status not in ("completed", "failed"):
                time.sleep(0.2)
        wall = time.monotonic() - started
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in procs]
        log = vk.requests()
    assert codes == [0] * n, codes
    times = sorted(r["t"] for r in log)
    trace = [len(r.get("calls", [1])) for r in sorted(log, key=lambda r: r["t"])]
    took = [f.read_text().count("took group") for f in logs]
    held = [max(map(int, re.findall(r"'vk/worker/groups_held_max': (\d+)", f.read_text())),
                default=0) for f in logs]  # fmt: skip
    return {"requests": len(log), "span": times[-1] - times[0], "wall": wall,
            "status": f"task {task_id} {task.status}", "took": took, "held": held,
            "trace": trace}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument(
        "--trace", action="store_true", help="print the workers' calls per request"
    )
    args = parser.parse_args()
    data = small_dataset(args.groups)
    groups = sum(1 for g in data["groups"] if wall_readable(g))
    calls = minimum_requests(data) - 1  # every call but groups.getById
    print(f"package {ROOT}: {groups} groups, {calls} calls; execute, 1 token at 3 requests/s")
    header = ("run", "requests", "×1 proc", "calls/req", "groups/s", "×1 proc", "(task)",
              "×1 proc")  # fmt: skip
    print("{:<12}{:>9}{:>9}{:>10}{:>9}{:>9}{:>8}{:>9}  taken per worker; status".format(*header))
    base: dict[str, Any] = {}

    def show(name: str, r: dict[str, Any]) -> None:
        base.setdefault("r", r)
        one = base["r"]
        rate, task_rate = groups / r["span"], groups / r["wall"]
        cells = (name, r["requests"], r["requests"] / one["requests"],
                 calls / (r["requests"] - 1), rate, rate * one["span"] / groups, task_rate,
                 task_rate * one["wall"] / groups)  # fmt: skip
        line = "{:<12}{:>9}{:>9.2f}{:>10.1f}{:>9.2f}{:>9.2f}{:>8.2f}{:>9.2f}".format(*cells)
        print(f"{line}  {r['took'] or '-'}; {r['status']}", flush=True)
        if "held" in r:
            print(f"  groups held at most at once, per worker: {r['held']}")
        if args.trace and "trace" in r:
            print(f"  calls of each request, in order: {r['trace']}")

    show("1 process", one_process(data))
    with tempfile.TemporaryDirectory() as tmp:
        server = OwnRedis(Path(tmp))
        try:
            for n in (int(x) for x in args.workers.split(",")):
                show(f"{n} worker(s)", workers(data, n, server.url, Path(tmp)))
        finally:
            server.stop()
    print(
        "groups/s: over the emulator's requests (first to last); (task): over the whole run "
        "(one process: `scrapy crawl`, start-up included; workers: task create to done)"
    )


if __name__ == "__main__":
    main()
