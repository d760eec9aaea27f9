"""Run a real ``scrapy crawl vk`` against the emulator and measure it (demo and benchmark).

The crawl is a subprocess exactly as a user runs it; only ``VK_API_URL`` points at the
emulator, which the operator's environment allows (:func:`operator_env`). The numbers come
from the emulator's request log, i.e. what the "server" saw.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vkscraper.testing.fakevk import FakeVk, expected_rows, wall_readable
from vkscraper.trust import API_URLS_ENV, MAX_RPS_ENV, VK_RPS

# Long enough for the crawler's token check (vkscraper.tokens.MIN_TOKEN_LENGTH).
DEMO_TOKEN = "demo-token-0123456789abcdef"


def operator_env(api_url: str, settings: dict[str, Any] | None = None) -> dict[str, str]:
    """What an operator exports for a crawl of the emulator (vkscraper.trust): the token may
    go to ``api_url``, and at the ``VK_REQUESTS_PER_SECOND`` of ``settings`` if it asks for
    more than VK's 3/s (the fast runs)."""
    env = {API_URLS_ENV: api_url}
    rps = (settings or {}).get("VK_REQUESTS_PER_SECOND")
    if rps is not None and float(rps) > VK_RPS:
        env[MAX_RPS_ENV] = str(rps)
    return env


def minimum_requests(dataset: dict[str, Any], posts_per_group: int = 10) -> int:
    """Fewest plain (non-execute) requests a complete crawl needs: one groups.getById, one
    wall.get per readable group, one page per 100 top-level comments of a post that has any,
    one page per 100 replies beyond the 10 that come inline."""
    total = 1
    for group in dataset["groups"]:
        if not wall_readable(group):
            continue
        total += 1
        newest = sorted(group["posts"], key=lambda p: (p["date"], p["id"]), reverse=True)
        for post in newest[:posts_per_group]:
            tops = [c for c in post.get("comments", []) if _visible_top(c)]
            if post.get("comments_closed") or not tops:
                continue
            total += math.ceil(len(tops) / 100)
            for top in tops:
                replies = [r for r in top.get("replies", []) if not r.get("deleted")]
                if len(replies) > 10:
                    total += math.ceil((len(replies) - 10) / 100)
    return total


def _visible_top(comment: dict[str, Any]) -> bool:
    replies = [r for r in comment.get("replies", []) if not r.get("deleted")]
    return not comment.get("deleted") or bool(replies)


def crawl_offline(
    dataset: dict[str, Any],
    *,
    rate_limit: int = 3,
    database_url: str | None = None,
    workdir: Path = Path("."),
    extra_settings: dict[str, str] | None = None,
    extra_groups: Sequence[str] = (),
    tokens: int = 1,
) -> dict[str, Any]:
    """Create a task for every group of the dataset that has a wall (readable or not) and
    ``extra_groups`` (e.g. names VK does not know), crawl it, return the measured figures."""
    refs = ",".join(
        [g["screen_name"] for g in dataset["groups"] if not g.get("author_only")]
        + list(extra_groups)
    )
    pool = [DEMO_TOKEN] + [f"{DEMO_TOKEN}-{n}" for n in range(2, tokens + 1)]
    env = {**os.environ, "VK_ACCESS_TOKEN": ",".join(pool)}
    if database_url:
        env["DATABASE_URL"] = database_url
    with FakeVk(dataset, tokens=pool, rate_limit=rate_limit) as vk:
        created = subprocess.run(
            [sys.executable, "-m", "vkscraper", "-q", "task", "create", "--groups", refs],
            env=env, cwd=workdir, check=True, capture_output=True, text=True,
        )  # fmt: skip
        task_id = int(created.stdout.split()[-1])
        cmd = [sys.executable, "-m", "scrapy", "crawl", "vk", "-a", f"task_id={task_id}"]
        cmd += ["-s", "LOG_LEVEL=INFO", "-s", f"VK_API_URL={vk.url}"]
        env.update(operator_env(vk.url, extra_settings))
        for name, value in (extra_settings or {}).items():
            cmd += ["-s", f"{name}={value}"]
        started = time.monotonic()
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=err, stderr=err, text=True)
            peak_kb, status, usage = _wait_measured(proc)
            proc.returncode = os.waitstatus_to_exitcode(status)
            err.seek(0)
            crawl_log = err.read()
        wall = time.monotonic() - started
        log = vk.requests()
    shown = subprocess.run(
        [sys.executable, "-m", "vkscraper", "-q", "task", "show", str(task_id)],
        env=env, cwd=workdir, capture_output=True, text=True,
    )  # fmt: skip
    times = sorted(r["t"] for r in log)
    span = (times[-1] - times[0]) if len(times) > 1 else 0.0
    _, comments = expected_rows(dataset)
    return {
        "task_id": task_id,
        "exit_code": proc.returncode,
        "crawl_log_tail": crawl_log[-3000:],
        "peak_rss_mb": peak_kb / 1024,
        "crawler_cpu_seconds": usage.ru_utime + usage.ru_stime,
        "task_show": shown.stdout + shown.stderr,
        "requests": len(log),
        "minimum_requests": minimum_requests(dataset),
        "requests_per_second": (len(log) - 1) / span if span else 0.0,
        "max_in_any_1s_window": _max_in_window(times),
        "per_token": {
            tag: {
                "requests": len(ts),
                "requests_per_second": (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 else 0.0,
                "max_in_any_1s_window": _max_in_window(ts),
            }
            for tag in sorted({r["token"] for r in log})
            for ts in [sorted(r["t"] for r in log if r["token"] == tag)]
        },
        "error_6": sum(1 for r in log if r["outcome"] == "error:6"),
        "errors": sorted({r["outcome"] for r in log if r["outcome"] != "ok"}),
        "expected_comments": len(comments),
        "expected_groups": sum(1 for g in dataset["groups"] if wall_readable(g)),
        "span_seconds": span,
        "wall_seconds": wall,
    }


def _max_in_window(times: list[float]) -> int:
    return max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)


def _wait_measured(proc: subprocess.Popen[str]) -> tuple[int, int, Any]:
    """Wait for the crawl: its peak RSS in kB, its wait status, its own resource usage.

    The peak is the process's ``VmHWM``, read every 50 ms until it exits (the last reading
    misses at most the final 50 ms), not ``ru_maxrss``: that survives ``execve``, so a child
    forked from this process (which holds the whole dataset) would report this one's size.
    ``wait4`` gives the CPU time of this child alone (the emulator is a child too).
    """
    peak = 0
    while True:
        try:
            with open(f"/proc/{proc.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return peak, wait_status, usage
        time.sleep(0.05)


def print_summary(result: dict[str, Any], limit: float, *, json_line: bool = True) -> None:
    """The task as ``task show`` prints it, then the figures; ``limit`` 0 means no limit."""
    print(result["task_show"].rstrip())
    print()
    print(f"scrapy crawl exit code  {result['exit_code']}")
    print(f"requests                {result['requests']} "
          f"(minimum for this dataset without execute: {result['minimum_requests']})")  # fmt: skip
    rps = result["requests_per_second"]
    share = f"{100 * rps / limit:.0f}% of the {limit:g}/s limit" if limit else "no limit"
    print(f"requests/s              {rps:.2f} ({share})")
    print(f"max in any 1 s window   {result['max_in_any_1s_window']}")
    print(f"error 6 answers         {result['error_6']}")
    print(f"wall time               {result['wall_seconds']:.1f} s")
    print(f"crawler peak RSS        {result['peak_rss_mb']:.0f} MB")
    if json_line:
        hidden = ("task_show", "crawl_log_tail")
        print(json.dumps({k: v for k, v in result.items() if k not in hidden}))
