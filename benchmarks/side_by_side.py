"""Side by side: the same benchmark against a baseline's package and this checkout's.

    python -m benchmarks.side_by_side --baseline REF [--runs N] [--current DIR]
                                      -- [benchmarks.bench_execute arguments]

REF (a branch, tag or commit) is checked out into a temporary ``git worktree``, removed
afterwards. The harness — benchmarks/, the emulator and testkit/offline.py — is always
this checkout's; only the package under test changes: ``bench_execute --tree`` runs
``task create``, ``scrapy crawl vk`` and ``task show`` in that tree (its ``scrapy.cfg``, its
``vkscraper`` first on ``PYTHONPATH``), and each run prints the ``vkscraper.__file__`` those
commands import. The runs alternate (baseline, current, then current, baseline, …) so that
a machine getting busier does not favour one side. The table shows each side's median and the
ratio current / baseline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HARNESS = Path(__file__).resolve().parent.parent
BENCH = "benchmarks.bench_execute"

# (key in bench_execute's JSON, label, format of one value)
ROWS: list[tuple[str, str, Callable[[float], str]]] = [
    ("comments_per_second", "comments/s, first to last request", "{:.0f}".format),
    ("comments_per_second_process", "comments/s, whole process", "{:.0f}".format),
    ("cpu_us_per_comment", "crawler CPU µs per comment", "{:.0f}".format),
    ("crawler_cpu_seconds", "crawler CPU s", "{:.2f}".format),
    ("startup_cpu_seconds", "start-up CPU s (empty crawl)", "{:.2f}".format),
    ("cpu_us_per_comment_beyond_startup", "CPU µs per comment beyond start-up", "{:.0f}".format),
    ("rate_share", "share of the rate used", lambda v: f"{100 * v:.0f}%"),
    ("longest_gap_seconds", "longest gap without a request, s", "{:.2f}".format),
    ("requests", "requests", "{:.0f}".format),
    ("max_per_token_in_any_1s_window", "max per token in any 1 s", "{:.0f}".format),
    ("error_6", "error 6 answers", "{:.0f}".format),
    ("stored_comments", "comments stored", "{:.0f}".format),
    ("peak_rss_mb", "crawler peak RSS, MB", "{:.0f}".format),
    ("wall_seconds", "wall time, s", "{:.1f}".format),
    ("exit_code", "scrapy crawl exit code", "{:.0f}".format),
]


def git(*args: str, cwd: Path = HARNESS) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def describe(tree: Path) -> str:
    commit = git("rev-parse", "--short", "HEAD", cwd=tree)
    dirty = git("status", "--porcelain", "--untracked-files=no", cwd=tree)
    return commit + (" + uncommitted changes" if dirty else "")


def run_once(tree: Path, bench_args: list[str], label: str) -> dict[str, Any]:
    """One benchmark run crawling with ``tree``'s package; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, "-m", BENCH, *bench_args, "--tree", str(tree), "--json", str(out)]
        print(f"\n=== {label}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, cwd=HARNESS, capture_output=True, text=True)
        lines = proc.stdout.splitlines()
        # the figures, not the task's metrics JSON that `task show` prints first
        start = next((i for i, line in enumerate(lines) if line.startswith("crawled package")), 0)
        print("\n".join(lines[start:]), flush=True)
        if proc.returncode or not out.exists():
            sys.exit(f"{label}: the benchmark failed (exit {proc.returncode}):\n{proc.stderr}")
        figures: dict[str, Any] = json.loads(out.read_text())
    package = Path(figures["package_file"])
    if not package.is_relative_to(tree):
        sys.exit(f"{label}: the crawl imported {package}, not the package in {tree}")
    return figures


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def print_table(sides: dict[str, list[dict[str, Any]]]) -> None:
    base, cur = sides["baseline"], sides["current"]
    title = f"median (range) of {len(base)} runs" if len(base) > 1 else ""
    print(f"\n{title:34} "
          f"{'baseline':>20} {'current':>20} {'current/baseline':>17}")  # fmt: skip
    for key, label, fmt in ROWS:
        b, c = median(base, key), median(cur, key)
        if b is None and c is None:
            continue
        ratio = f"{c / b:.2f}" if b and c is not None else "-"
        print(f"{label:34} {cell(base, key, fmt):>20} {cell(cur, key, fmt):>20} {ratio:>17}")


def cell(runs: list[dict[str, Any]], key: str, fmt: Callable[[float], str]) -> str:
    """The median, and the range when there are several runs."""
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="python -m benchmarks.side_by_side --baseline REF [--runs N] -- [bench args]",
    )
    parser.add_argument("--baseline", required=True, help="git ref of the baseline")
    parser.add_argument("--runs", type=int, default=1, help="runs of each side, alternating")
    parser.add_argument("--current", type=Path, default=HARNESS, help="default: this checkout")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    bench_args = args.bench_args[1:] if args.bench_args[:1] == ["--"] else args.bench_args
    if any(a.split("=")[0] in ("--tree", "--json") for a in bench_args):
        parser.error("--tree and --json are the runner's")
    current = args.current.resolve()
    commit = git("rev-parse", "--verify", f"{args.baseline}^{{commit}}")
    tmp = Path(tempfile.mkdtemp(prefix="vkbench-baseline-"))
    baseline = tmp / "tree"
    git("worktree", "add", "--detach", "--quiet", str(baseline), commit)
    try:
        # bytecode first, so the baseline's first run does not pay for it in its start-up
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(baseline / "vkscraper")],
                       check=True)  # fmt: skip
        trees = {"baseline": baseline, "current": current}
        print(f"harness   {HARNESS} ({describe(HARNESS)})")
        print(f"baseline  {baseline} ({args.baseline} = {describe(baseline)})")
        print(f"current   {current} ({describe(current)})")
        sides: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
        for n in range(args.runs):
            order = ["baseline", "current"] if n % 2 == 0 else ["current", "baseline"]
            for side in order:
                label = f"{side} run {n + 1}/{args.runs}"
                sides[side].append(run_once(trees[side], bench_args, label))
        print_table(sides)
    finally:
        try:
            git("worktree", "remove", "--force", str(baseline))
        except subprocess.CalledProcessError:
            git("worktree", "prune")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
