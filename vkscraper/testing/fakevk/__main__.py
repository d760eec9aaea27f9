"""Run the VK API emulator: ``python -m vkscraper.testing.fakevk --port 0 [options]``.

Prints exactly one line, ``http://127.0.0.1:PORT/method/``, once the socket listens, then
serves until SIGTERM or SIGINT. Parents (``FakeVk``, scripts) read that line to find the port.
See :mod:`vkscraper.testing.fakevk.server` for the behaviour and ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from .dataset import generate_dataset, load_dataset, save_dataset
from .server import FakeVkServer, ServerConfig, parse_faults

logger = logging.getLogger("vkscraper.testing.fakevk")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vkscraper.testing.fakevk",
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
    p.add_argument("--closed-groups", type=int, default=0)
    p.add_argument("--big-post", action="store_true")
    p.add_argument("--no-nul", action="store_true", help="no NUL byte in generated texts")
    p.add_argument("--save-dataset", metavar="FILE", help="also write the dataset used here")
    p.add_argument("--tokens", default="test-token", help="comma-separated valid tokens")
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
    p.add_argument("--log", metavar="FILE", help="append one JSON line per request")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    data: dict[str, Any]
    if args.dataset:
        data = load_dataset(args.dataset)
    else:
        data = generate_dataset(
            seed=1 if args.generate is None else args.generate,
            groups=args.groups,
            posts_per_group=args.posts_per_group,
            min_comments=args.min_comments,
            max_comments=args.max_comments,
            max_replies=args.max_replies,
            big_post=args.big_post,
            closed_groups=args.closed_groups,
            nul=not args.no_nul,
        )
    if args.save_dataset:
        save_dataset(data, args.save_dataset)
    config = ServerConfig(
        tokens=frozenset(t.strip() for t in args.tokens.split(",") if t.strip()),
        rate_limit=args.rate_limit,
        faults=parse_faults(args.faults),
        seed=args.seed,
        retry_after=args.retry_after,
        slow_seconds=args.slow_seconds,
        max_faults_per_request=args.max_faults_per_request,
        drift=args.drift,
        log_path=args.log,
    )
    server = FakeVkServer((args.host, args.port), data, config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # serve_forever runs in a thread: shutdown() from the main thread would deadlock otherwise.
    thread = threading.Thread(target=server.serve_forever, name="fakevk", daemon=True)
    thread.start()
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    logger.info("serving %(url)s", {"url": server.url})
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
