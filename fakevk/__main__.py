"""Run the VK API emulator: ``python -m fakevk --port 0 [options]``.

Once the socket listens, the FIRST line on stdout is exactly the URL,
``http://127.0.0.1:PORT/method/``: parents (``FakeVk``, scripts) read that one line to find the
port. The lines after it are for people: the token(s) the emulator accepts, its communities
and a copy-paste first crawl (``export VK_ACCESS_TOKEN=… VK_API_URL=<url>`` and ``scrapy
crawl vk -a groups=…``). Then it serves until SIGTERM or SIGINT. See
:mod:`fakevk.server` for the behaviour and ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from .dataset import Dataset, generate_dataset, load_dataset, save_dataset, wall_readable
from .server import FakeVkServer, ServerConfig, parse_faults

logger = logging.getLogger("fakevk")

# The crawler refuses tokens shorter than this (vkscraper.tokens.access.MIN_TOKEN_LENGTH); the
# default token must pass that check so that the printed first crawl works as it is.
DEFAULT_TOKEN = "fakevk-token-0123456789abcdef"
MIN_CRAWLER_TOKEN_LENGTH = 16
GROUPS_SHOWN = 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fakevk",
        description="A faithful VK API emulator for tests.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="dataset JSON file")
    src.add_argument(
        "--generate",
        type=int,
        metavar="SEED",
        help="generate a dataset with this seed (the default is seed 1)",
    )
    p.add_argument("--groups", type=int, default=3)
    p.add_argument("--posts-per-group", type=int, default=12)
    p.add_argument("--min-comments", type=int, default=0)
    p.add_argument("--max-comments", type=int, default=40)
    p.add_argument("--max-replies", type=int, default=25)
    p.add_argument(
        "--closed-groups",
        type=int,
        default=0,
        help="extra communities whose wall cannot be read (VK error 15)",
    )
    p.add_argument(
        "--closed-comments",
        action="store_true",
        help="keep the generator's one post with closed comments (VK error 212); by default "
        "every generated post is open, so the printed first crawl ends 'completed'",
    )
    p.add_argument("--big-post", action="store_true")
    p.add_argument("--no-nul", action="store_true", help="no NUL byte in generated texts")
    p.add_argument("--save-dataset", metavar="FILE", help="also write the dataset used here")
    p.add_argument(
        "--tokens",
        default=DEFAULT_TOKEN,
        help="comma-separated tokens it accepts; any other gets VK error 5 (default: %(default)s)",
    )
    p.add_argument(
        "--rate-limit",
        type=int,
        default=3,
        help="requests per second per token, 0 = off (default 3)",
    )
    p.add_argument("--faults", default="", help='e.g. "500:0.05,drop:0.05,slow:0.05"')
    p.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After of 429 (seconds)")
    p.add_argument("--slow-seconds", type=float, default=2.0)
    p.add_argument("--max-faults-per-request", type=int, default=2)
    p.add_argument(
        "--drift",
        type=int,
        default=0,
        help="delete this many comments of a post right after its first page is served",
    )
    p.add_argument(
        "--no-execute-tokens",
        default="",
        metavar="T[,T…]",
        help="tokens for which execute fails with error 28 (as VK does for some token types)",
    )
    p.add_argument(
        "--token-errors",
        default="",
        metavar="T:CODE[:METHOD][,…]",
        help="token T gets VK error CODE (5, 14, 29 …) for METHOD (default: every method), "
        "inside execute too",
    )
    p.add_argument(
        "--execute-max-bytes",
        type=int,
        default=5 * 1024 * 1024,
        help="execute answers above this size fail with error 13 (VK: 5 MB)",
    )
    p.add_argument("--log", metavar="FILE", help="append one JSON line per request")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def parse_token_errors(spec: str) -> dict[str, tuple[int, str | None]]:
    """``T:CODE[:METHOD],…`` → {token: (code, method or None)}."""
    out: dict[str, tuple[int, str | None]] = {}
    for part in filter(None, spec.split(",")):
        token, code, *method = part.split(":")
        out[token] = (int(code), method[0] if method else None)
    return out


def dataset_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The dataset the emulator serves for these options (``make demo`` builds its own with
    this too, so the demo and ``--generate 1`` are one dataset and may share a database)."""
    if args.dataset:
        return load_dataset(args.dataset)
    return generate_dataset(
        seed=1 if args.generate is None else args.generate,
        groups=args.groups,
        posts_per_group=args.posts_per_group,
        min_comments=args.min_comments,
        max_comments=args.max_comments,
        max_replies=args.max_replies,
        big_post=args.big_post,
        closed_groups=args.closed_groups,
        nul=not args.no_nul,
        closed_comments=args.closed_comments,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    data = dataset_from_args(args)
    if args.save_dataset:
        save_dataset(data, args.save_dataset)
    tokens = list(dict.fromkeys(t.strip() for t in args.tokens.split(",") if t.strip()))
    config = ServerConfig(
        tokens=frozenset(tokens),
        rate_limit=args.rate_limit,
        faults=parse_faults(args.faults),
        seed=args.seed,
        retry_after=args.retry_after,
        slow_seconds=args.slow_seconds,
        max_faults_per_request=args.max_faults_per_request,
        drift=args.drift,
        log_path=args.log,
        no_execute_tokens=frozenset(t for t in args.no_execute_tokens.split(",") if t),
        execute_max_bytes=args.execute_max_bytes,
        token_errors=parse_token_errors(args.token_errors),
    )
    server = FakeVkServer((args.host, args.port), data, config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # serve_forever runs in a thread: shutdown() from the main thread would deadlock otherwise.
    thread = threading.Thread(target=server.serve_forever, name="fakevk", daemon=True)
    thread.start()
    # The URL line comes first and alone: FakeVk reads exactly one line.
    sys.stdout.write(server.url + "\n")
    sys.stdout.write(start_message(server.url, data, tokens, args.rate_limit, args.log))
    sys.stdout.flush()
    logger.info("serving %(url)s", {"url": server.url})
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


def _group_kind(group: dict[str, Any]) -> str:
    if group.get("author_only"):
        # Its wall is empty (a crawl of it ends done with 0 posts): it exists as an author.
        return "no posts: it only comments on the walls above"
    if group.get("deactivated"):
        return f"{group['deactivated']}: VK error 15"
    if int(group.get("is_closed", 0)):
        return "members only: VK error 15"
    if not int(group.get("wall", 1)):
        return "wall disabled: VK error 15"
    closed = sum(1 for p in group.get("posts", []) if p.get("comments_closed"))
    posts = f"{len(group.get('posts', []))} posts"
    return f"{posts}, {closed} with comments closed: VK error 212" if closed else posts


def start_message(
    url: str, data: Dataset, tokens: list[str], rate_limit: int, log_path: str | None
) -> str:
    """What a person needs after the URL line: the token(s), the groups and a first crawl."""
    groups = data.get("groups", [])
    # Readable walls first, then unreadable ones, then comment authors; stable otherwise.
    ordered = sorted(groups, key=lambda g: 2 if g.get("author_only") else not wall_readable(g))
    readable = [g for g in groups if wall_readable(g)]
    # The first crawl should end 'completed': leave out walls with a post closed to comments.
    clean = [g for g in readable if not any(p.get("comments_closed") for p in g["posts"])]
    left_out = [g for g in readable if g not in clean] if clean else []
    lines = [
        "  ^ the emulator's URL: export VK_API_URL=<url> makes it the API of every crawl",
        "    started from that environment (scrapy crawl, scrapyd, workers), and the token",
        "    may go there; -s VK_API_URL=<url> needs VKSCRAPER_API_URLS=<url> for that",
        f"token{'s' if len(tokens) > 1 else ''} it accepts (--tokens; any other gets VK error "
        f"5): {', '.join(tokens) if tokens else '(none)'}",
    ]
    short = [t for t in tokens if len(t) < MIN_CRAWLER_TOKEN_LENGTH]
    if short:
        lines.append(
            f"  note: the crawler refuses tokens under {MIN_CRAWLER_TOKEN_LENGTH} characters: "
            + ", ".join(short)
        )
    limit = f"{rate_limit} requests/s per token" if rate_limit else "off"
    lines.append(f"rate limit: {limit} (--rate-limit)")
    lines.append(
        f"groups: {len(groups)} communities, {len(readable)} with a readable wall "
        "(id, screen name, what a crawl finds):"
    )
    for group in ordered[:GROUPS_SHOWN]:
        lines.append(f"  {group['id']:>8}  {group['screen_name']:<16} {_group_kind(group)}")
    if len(ordered) > GROUPS_SHOWN:
        lines.append(f"  ... and {len(ordered) - GROUPS_SHOWN} more")
    usable = [t for t in tokens if t not in short]
    if readable and usable:
        names = ",".join(g["screen_name"] for g in (clean or readable)[:GROUPS_SHOWN])
        lines += [
            "",
            "First crawl: in another terminal, at the root of the repository:",
            "",
            f"  export VK_ACCESS_TOKEN={usable[0]}",
            f"  export VK_API_URL={url}",
            f"  .venv/bin/scrapy crawl vk -a groups={names}",
            "",
            "It stores into DATABASE_URL (default: vkscraper.sqlite3 in that directory);",
            "`.venv/bin/python -m vkscraper task list` then shows the task.",
        ]
        if left_out:
            lines += [
                "Left out of it: " + ", ".join(g["screen_name"] for g in left_out),
                "  (comments closed: with it the task ends 'failed' with VK error 212)",
            ]
        elif not clean:
            lines.append("Some posts have comments closed: the task ends 'failed' (VK error 212).")
    if log_path:
        lines.append(f"request log (one JSON line per request): {log_path}")
    lines.append("Ctrl-C stops the emulator.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
