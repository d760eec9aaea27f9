"""Worker mode: N `python -m vkscraper worker` processes and k tokens on one task, against
the emulator enforcing 3 requests/s per token.

    python -m benchmarks.bench_workers [--workers 3] [--tokens 1] [--groups 12] [--execute]

Plain calls by default (many requests: the rate is what is measured). Prints, per token and
together, the requests/s over the crawl (first to last request), the most requests of a token
seen in any 1-second window and the error-6 answers; and the task's status. Needs PostgreSQL
(``VK_BENCH_PG_URL``, default the tests' server: a throwaway database is made) and Redis
(``REDIS_URL``, default redis://127.0.0.1:6379/8, emptied before and after).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from fakevk import FakeVk, generate_dataset
from testkit.offline import operator_env
from testkit.pg import temporary_database
from vkscraper.store import open_store
from vkscraper.tokens.access import token_tag

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("VK_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def busiest(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)


def rate(times: list[float]) -> float:
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=1)
    parser.add_argument("--groups", type=int, default=12)
    parser.add_argument("--execute", action="store_true", help="execute batching (default off)")
    args = parser.parse_args()
    data = generate_dataset(seed=42, groups=args.groups, posts_per_group=10, max_comments=40,
                            closed_comments=False)  # fmt: skip
    names = [g["screen_name"] for g in data["groups"] if not g.get("author_only")]
    tokens = [f"bench-token-{n}-0123456789abcdef" for n in range(args.tokens)]
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/8")
    server = redis.Redis.from_url(redis_url)
    server.flushdb()
    with (
        tempfile.TemporaryDirectory() as tmp,
        temporary_database(PG, "vkbench") as db,
        FakeVk(data, tokens=tokens, rate_limit=3) as vk,
    ):
        env = {**os.environ, "VK_ACCESS_TOKEN": ",".join(tokens), "REDIS_URL": redis_url,
               "DATABASE_URL": db, **operator_env(vk.url)}  # fmt: skip
        cmd = [sys.executable, "-m", "vkscraper", "worker", "-s", f"VK_API_URL={vk.url}",
               "-s", f"VK_EXECUTE={args.execute}", "-s", "LOG_LEVEL=INFO"]  # fmt: skip
        logs = [Path(tmp) / f"w{n}.log" for n in range(args.workers)]
        out = subprocess.STDOUT
        procs = [
            subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("w"), stderr=out)
            for log in logs
        ]
        while not all("waiting for tasks" in log.read_text() for log in logs):
            time.sleep(0.1)
        create = [sys.executable, "-m", "vkscraper", "task", "create", "--enqueue",
                  "--groups", ",".join(names)]  # fmt: skip
        task_id = int(subprocess.check_output(create, env=env, cwd=ROOT))
        with open_store(db) as store:
            while (task := store.get_task(task_id)) and task.status not in ("completed", "failed"):
                time.sleep(0.5)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in procs]
        log = vk.requests()
        took = [log_file.read_text().count("took group") for log_file in logs]
    server.flushdb()
    print(f"workers                 {args.workers} (exit codes {codes}); groups taken {took}")
    print(f"task                    {task.status}: {task.metrics.get('posts')} posts, "
          f"{task.metrics.get('comments')} comments, {len(task.metrics.get('errors', []))} "
          f"errors")  # fmt: skip
    print(f"requests                {len(log)}; error 6 answers "
          f"{sum(1 for r in log if r['outcome'] == 'error:6')}")  # fmt: skip
    total = rate([r["t"] for r in log])
    for token in tokens:
        times = [r["t"] for r in log if r["token"] == token_tag(token)]
        print(f"token {token_tag(token)}          {len(times)} requests, "
              f"{rate(times):.2f}/s ({100 * rate(times) / 3:.0f}% of 3/s), "
              f"max {busiest(times)} in any 1 s")  # fmt: skip
    print(
        f"together                {total:.2f} requests/s "
        f"({total / args.tokens:.2f} per token, {100 * total / (3 * args.tokens):.0f}%)"
    )


if __name__ == "__main__":
    main()
