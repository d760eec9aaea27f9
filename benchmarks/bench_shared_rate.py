"""Several crawl processes on one token with the shared limit in Redis, against the emulator
enforcing 3 requests/s per token.

    python -m benchmarks.bench_shared_rate [--processes 2] [--no-shared] [--groups 12]

Each process crawls its share of the groups (plain calls, so there are many requests). Prints
the token's aggregate requests/s, the most requests seen in any 1-second window and the error-6
answers. ``--no-shared`` runs the same without the shared limit (each process paces only
itself). Needs Redis at ``REDIS_URL`` (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fakevk import FakeVk, generate_dataset
from testkit.offline import DEMO_TOKEN, operator_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--groups", type=int, default=12)
    parser.add_argument("--no-shared", action="store_true")
    args = parser.parse_args()
    data = generate_dataset(seed=42, groups=args.groups, posts_per_group=10, max_comments=40,
                            closed_comments=False)  # fmt: skip
    names = [g["screen_name"] for g in data["groups"] if not g.get("author_only")]
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeVk(data, tokens=[DEMO_TOKEN], rate_limit=3) as vk,
    ):
        procs = []
        shared = f"VK_SHARED_RATE_LIMIT={not args.no_shared}"
        for n in range(args.processes):
            share = ",".join(names[n :: args.processes])
            database = f"sqlite:///{Path(tmp) / f'p{n}.sqlite3'}"
            env = {**os.environ, "VK_ACCESS_TOKEN": DEMO_TOKEN, "REDIS_URL": redis_url,
                   "DATABASE_URL": database, **operator_env(vk.url)}  # fmt: skip
            cmd = [sys.executable, "-m", "scrapy", "crawl", "vk", "-a", f"groups={share}",
                   "-s", f"VK_API_URL={vk.url}", "-s", "VK_EXECUTE=False", "-s", shared,
                   "-s", "LOG_LEVEL=WARNING"]  # fmt: skip
            procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL))
        codes = [p.wait() for p in procs]
        log = vk.requests()
    times = sorted(r["t"] for r in log)
    rate = (len(times) - 1) / (times[-1] - times[0])
    busiest = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    print(f"processes               {args.processes} on one token, shared limit "
          f"{'off' if args.no_shared else 'on'}; exit codes {codes}")  # fmt: skip
    print(f"requests                {len(log)}")
    print(f"requests/s              {rate:.2f} ({100 * rate / 3:.0f}% of the token's 3/s)")
    print(f"max in any 1 s window   {busiest}")
    print(f"error 6 answers         {sum(1 for r in log if r['outcome'] == 'error:6')}")


if __name__ == "__main__":
    main()
