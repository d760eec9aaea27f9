"""`make demo` / `make demo-errors`: the main job, offline.

Starts the VK emulator (rate limit enforced, 3 requests/s per token) with a small generated
dataset, runs `scrapy crawl vk` against it into the default store (DATABASE_URL, else the
SQLite file vkscraper.sqlite3 here) and prints the task's status and metrics plus the
request-rate figures the emulator measured.

    scripts/demo.py                 every post open: the task ends 'completed'
    scripts/demo.py --with-errors   a post with closed comments, a closed wall and an unknown
                                    name: the task ends 'failed' with those three errors

The exit status is 0 when the task ended as the demo intends (including 'failed' with exactly
the intended errors under --with-errors), 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fakevk.__main__ import build_parser as build_fakevk_parser  # noqa: E402
from fakevk.__main__ import dataset_from_args  # noqa: E402
from testkit.offline import crawl_offline, print_summary  # noqa: E402
from vkscraper.store import open_store  # noqa: E402

RATE_LIMIT = 3
WIDTH = 96
UNKNOWN_NAME = "no_such_community"

# Each intended error of --with-errors: how to recognise its line, and what it means.
EXPECTED_ERRORS = {
    "comments closed": (
        "VK error 212",
        "the community closed this post's comments: VK answers error 212 to wall.getComments; "
        "the post itself and the group's other posts and comments are stored",
    ),
    "closed wall": (
        "VK error 15",
        "the community's wall cannot be read (disabled, members only or blocked): VK answers "
        "error 15 to wall.get, so nothing of that group is stored",
    ),
    "unknown name": (
        UNKNOWN_NAME,
        "groups.getById does not know this name (a typo, or a community renamed or deleted); "
        "the next run of the task looks it up again",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/demo.py",
        description="Crawl generated communities from the bundled VK emulator (offline).",
    )
    p.add_argument(
        "--with-errors",
        action="store_true",
        help="also crawl a post with closed comments, a closed wall and an unknown name: "
        "the task ends 'failed' and the demo explains each error (make demo-errors)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="for tests: no rate limit in the emulator or the crawler (real VK would answer "
        "error 6 at this speed)",
    )
    return p


def demo_dataset(with_errors: bool) -> dict[str, Any]:
    """The emulator's own dataset: what `fakevk --generate 1` serves, or with
    `--closed-comments --closed-groups 1` for the errors. The demo and the first crawl of
    docs/topics/emulator.md write to the same database, so one comment id must sit on one
    post in both."""
    extra = ["--closed-comments", "--closed-groups", "1"] if with_errors else []
    return dataset_from_args(build_fakevk_parser().parse_args(["--generate", "1", *extra]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dataset = demo_dataset(args.with_errors)
    rate = 0 if args.fast else RATE_LIMIT
    extra = {"VK_REQUESTS_PER_SECOND": "1000", "VK_BACKOFF_BASE": "0"} if args.fast else {}
    if args.with_errors:
        what = (
            "3 generated communities (one post with comments closed), one with a closed wall "
            f"and the unknown name {UNKNOWN_NAME!r}"
        )
    else:
        what = "3 generated communities"
    speed = (
        "without a rate limit (--fast)"
        if args.fast
        else f"at {RATE_LIMIT} requests/s (a few seconds)"
    )
    say(f"Crawling {what} from the VK emulator {speed} ...")
    result = crawl_offline(
        dataset,
        rate_limit=rate,
        workdir=Path.cwd(),
        extra_settings=extra,
        extra_groups=[UNKNOWN_NAME] if args.with_errors else [],
    )
    print_summary(result, limit=rate, json_line=False)
    with open_store() as store:
        task = store.get_task(result["task_id"])
        where = store.url
    ok = task is not None and (
        explain_errors(task.id, task.status, task.metrics, result["exit_code"])
        if args.with_errors
        else explain_success(task.id, task.status, task.metrics, result["exit_code"])
    )
    say(
        f"\nStored in {where} (DATABASE_URL chooses another database); "
        f"`.venv/bin/python -m vkscraper task show {result['task_id']}` shows the task again."
    )
    if args.with_errors:
        say("More in the docs (make docs): docs/usage/errors.md and docs/reference/cli.md.")
    else:
        say(
            "Next: `make demo-errors` shows how errors appear; docs/topics/emulator.md starts the "
            "emulator for a crawl by hand and docs/usage/quickstart.md crawls VK with your token."
        )
    if not ok:
        print("\nThe demo did not end as intended; the end of the crawl log:", file=sys.stderr)
        print(result["crawl_log_tail"], file=sys.stderr)
        return 1
    return 0


def say(text: str, indent: str = "") -> None:
    """Print a paragraph wrapped for a terminal (a leading newline is kept)."""
    if text.startswith("\n"):
        print()
        text = text[1:]
    wrapped = textwrap.fill(
        text, WIDTH, initial_indent=indent, subsequent_indent=indent, break_long_words=False
    )
    print(wrapped, flush=True)


def explain_success(task_id: int, status: str, metrics: dict[str, Any], exit_code: int) -> bool:
    say(
        f"\nResult: task {task_id} is {status!r}: {metrics.get('posts')} posts and "
        f"{metrics.get('comments')} comments stored, {len(metrics.get('errors', []))} errors; "
        f"scrapy crawl exited with {exit_code}."
    )
    return status == "completed" and exit_code == 0 and not metrics.get("errors")


def explain_errors(task_id: int, status: str, metrics: dict[str, Any], exit_code: int) -> bool:
    errors: list[str] = metrics.get("errors", [])
    say(
        f"\nResult: task {task_id} is {status!r}, as intended: every group was handled but "
        f"{len(errors)} target(s) could not be read, so scrapy crawl exited with {exit_code} "
        "(1 = the task ended 'failed'). Each error is one line of the task's metrics.errors "
        "and an ERROR line of the crawl log:"
    )
    found: set[str] = set()
    for line in errors:
        kinds = [kind for kind, (mark, _) in EXPECTED_ERRORS.items() if mark in line]
        print(f"\n  {line}")
        for kind in kinds:
            found.add(kind)
            say(f"-> {kind}: {EXPECTED_ERRORS[kind][1]}", indent="     ")
        if not kinds:
            print("     -> not one of the demo's intended errors")
    missing = set(EXPECTED_ERRORS) - found
    if missing:
        print(f"\n  missing (not recorded): {', '.join(sorted(missing))}")
    return status == "failed" and exit_code == 1 and not missing and len(errors) == len(found)


if __name__ == "__main__":
    raise SystemExit(main())
