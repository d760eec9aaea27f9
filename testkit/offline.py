"""Run a real ``scrapy crawl vk`` against the emulator and measure it (demo and benchmark).

The crawl is a subprocess exactly as a user runs it; only ``VK_API_URL`` points at the
emulator, which the operator's environment allows (:func:`operator_env`). The numbers come
from the emulator's request log, i.e. what the "server" saw.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2

from fakevk import FakeVk, expected_rows, wall_readable
from vkscraper.store.backends import sqlite_path
from vkscraper.tokens.trust import API_URLS_ENV, MAX_RPS_ENV, VK_RPS

# Long enough for the crawler's token check (vkscraper.tokens.access.MIN_TOKEN_LENGTH).
DEMO_TOKEN = "demo-token-0123456789abcdef"


def operator_env(api_url: str, settings: dict[str, Any] | None = None) -> dict[str, str]:
    """What an operator exports for a crawl of the emulator (vkscraper.tokens.trust): the token may
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
    profile: Path | None = None,
) -> dict[str, Any]:
    """Create a task for every group of the dataset that has a wall (readable or not) and
    ``extra_groups`` (e.g. names VK does not know), crawl it, return the measured figures.

    The ``vkscraper`` commands run in ``workdir`` with it first on ``PYTHONPATH``: the package
    (and ``scrapy.cfg``) there is the one measured, whichever tree this harness comes from
    (``package_file`` in the result names it). ``tokens`` distinct tokens form the pool, each
    limited to ``rate_limit``/s by the emulator. ``profile``: run the crawl under cProfile in
    every thread (:mod:`.profiled`), writing its stats there (the CPU figures then include the
    profiler's overhead)."""
    refs = ",".join(
        [g["screen_name"] for g in dataset["groups"] if not g.get("author_only")]
        + list(extra_groups)
    )
    pool = [DEMO_TOKEN] + [f"{DEMO_TOKEN}-{n}" for n in range(2, tokens + 1)]
    workdir = workdir.resolve()
    env = {**os.environ, "VK_ACCESS_TOKEN": ",".join(pool)}
    # `python -m` puts the cwd first anyway; PYTHONPATH makes it hold for every import path
    # (scrapy.cfg only appends its directory to sys.path).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(workdir), env.get("PYTHONPATH")) if p)
    env.pop("SCRAPY_SETTINGS_MODULE", None)  # scrapy.cfg of workdir chooses the settings
    package_file = subprocess.run(
        [sys.executable, "-c", "import vkscraper; print(vkscraper.__file__)"],
        env=env, cwd=workdir, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if database_url:
        env["DATABASE_URL"] = database_url
    with FakeVk(dataset, tokens=pool, rate_limit=rate_limit) as vk:
        created = subprocess.run(
            [sys.executable, "-m", "vkscraper", "-q", "task", "create", "--groups", refs],
            env=env, cwd=workdir, check=True, capture_output=True, text=True,
        )  # fmt: skip
        task_id = int(created.stdout.split()[-1])
        cmd = [sys.executable, "-m", "scrapy", "crawl", "vk", "-a", f"task_id={task_id}"]
        if profile is not None:  # every thread's CPU time (the store writes from a thread)
            cmd[1:2] = [str(Path(__file__).with_name("profiled.py")), str(profile.resolve())]
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
    gap, gap_at = _longest_gap(times)
    _, comments = expected_rows(dataset)
    cpu = usage.ru_utime + usage.ru_stime
    # n requests make n - 1 intervals: a crawl exactly at the limit reads 1.0
    share = (len(log) - 1) / (span * rate_limit * tokens) if span and rate_limit else None
    stored = _count_rows(database_url, workdir, "comments") if database_url else None
    per_token = {
        tag: {
            "requests": len(ts),
            "requests_per_second": (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 else 0.0,
            "max_in_any_1s_window": _max_in_window(ts),
            "longest_gap_seconds": _longest_gap(ts)[0],
        }
        for tag in sorted({r["token"] for r in log if r["token"]})
        for ts in [sorted(r["t"] for r in log if r["token"] == tag)]
    }
    return {
        "task_id": task_id,
        "package_file": package_file,
        "exit_code": proc.returncode,
        "crawl_log_tail": crawl_log[-3000:],
        "peak_rss_mb": peak_kb / 1024,
        "crawler_cpu_seconds": cpu,
        "cpu_us_per_comment": 1e6 * cpu / len(comments) if comments else 0.0,
        "task_show": shown.stdout + shown.stderr,
        "requests": len(log),
        "minimum_requests": minimum_requests(dataset),
        "requests_per_second": (len(log) - 1) / span if span else 0.0,
        "rate_limit": rate_limit,
        "tokens": tokens,
        "rate_share": share,
        "longest_gap_seconds": gap,
        "longest_gap_after_seconds": gap_at,
        "max_in_any_1s_window": _max_in_window(times),
        "max_per_token_in_any_1s_window": max(
            (t["max_in_any_1s_window"] for t in per_token.values()), default=0
        ),
        "per_token": per_token,
        "error_6": sum(1 for r in log if r["outcome"] == "error:6"),
        "errors": sorted({r["outcome"] for r in log if r["outcome"] != "ok"}),
        "expected_comments": len(comments),
        "stored_comments": stored,
        "expected_groups": sum(1 for g in dataset["groups"] if wall_readable(g)),
        "span_seconds": span,
        "wall_seconds": wall,
    }


def _max_in_window(times: list[float]) -> int:
    """The most of the sorted ``times`` in any half-open window of one second."""
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def _longest_gap(times: list[float]) -> tuple[float, float]:
    """The longest pause between consecutive sorted ``times`` (seconds during which nothing
    was sent), and when it began, in seconds after the first."""
    pairs = zip(times, times[1:], strict=False)
    return max(((b - a, a - times[0]) for a, b in pairs), default=(0.0, 0.0))


def _count_rows(database_url: str, workdir: Path, table: str) -> int:
    """Rows in ``table``, read straight from the database (not from the crawl's own metrics)."""
    if urlsplit(database_url).scheme == "sqlite":
        path = (workdir / sqlite_path(database_url)).as_uri()
        conn = sqlite3.connect(f"{path}?mode=ro", uri=True)
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()
    pg = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with pg.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        pg.close()


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
    print(f"crawled package         {result['package_file']}")
    print(f"scrapy crawl exit code  {result['exit_code']}")
    print(f"requests                {result['requests']} "
          f"(minimum for this dataset without execute: {result['minimum_requests']})")  # fmt: skip
    rps = result["requests_per_second"]
    share = f"{100 * rps / limit:.0f}% of the {limit:g}/s limit" if limit else "no limit"
    print(f"requests/s              {rps:.2f} ({share})")
    if result["rate_share"] is not None:
        print(f"share of the rate used  {100 * result['rate_share']:.0f}% "
              f"({result['requests'] - 1} intervals in {result['span_seconds']:.2f} s at "
              f"{result['rate_limit']}/s x {result['tokens']} token(s))")  # fmt: skip
    print(f"longest gap             {result['longest_gap_seconds']:.2f} s without a request "
          f"(from {result['longest_gap_after_seconds']:.2f} s after the first)")  # fmt: skip
    print(f"max in any 1 s window   {result['max_in_any_1s_window']}")
    per_token = result["max_per_token_in_any_1s_window"]
    if result["rate_limit"]:
        verdict = "ok" if per_token <= result["rate_limit"] else "OVER the limit"
        per_token_line = f"{per_token} (limit {result['rate_limit']}: {verdict})"
    else:
        per_token_line = f"{per_token} (emulator without a limit)"
    print(f"max per token in 1 s    {per_token_line}")
    print(f"error 6 answers         {result['error_6']}")
    if result["stored_comments"] is not None:
        print(f"comments stored         {result['stored_comments']} "
              f"(expected {result['expected_comments']})")  # fmt: skip
    print(f"wall time               {result['wall_seconds']:.1f} s")
    print(f"crawler CPU             {result['crawler_cpu_seconds']:.2f} s, "
          f"{result['cpu_us_per_comment']:.0f} µs per comment")  # fmt: skip
    print(f"crawler peak RSS        {result['peak_rss_mb']:.0f} MB")
    if json_line:
        hidden = ("task_show", "crawl_log_tail")
        print(json.dumps({k: v for k, v in result.items() if k not in hidden}))
