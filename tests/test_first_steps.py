"""A newcomer's first steps, run as the docs show them.

* The emulator command of the docs' emulator page prints what the page shows: its URL on the
  first line alone, the token it accepts, its groups and a copy-paste first crawl; that crawl,
  pasted as printed, exits 0 and its task is ``completed``.
* ``make demo`` (``scripts/demo.py``) ends ``completed``; ``make demo-errors`` ends ``failed``
  with exactly a closed post, a closed wall and an unknown name, each explained.

Everything runs as subprocesses, as a user would run it; ``.venv/bin/X`` becomes
``sys.executable -m X`` so the tests use the interpreter that runs them.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vkscraper.store import open_store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
EMULATOR_PAGE = REPO / "docs" / "topics" / "emulator.md"
START_TIMEOUT = 10.0
LAST_LINE = "Ctrl-C stops the emulator."
URL_LINE = re.compile(r"http://127\.0\.0\.1:(\d+)/method/")
# The emulator page's dataset crawls in ~3 s at 3 requests/s; the crawl test uses a smaller one.
SMALL = ["--groups", "1", "--posts-per-group", "4", "--max-comments", "5"]


def emulator_page() -> str:
    return EMULATOR_PAGE.read_text(encoding="utf-8")


def fenced_blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def docs_emulator_command() -> list[str]:
    """The first command of the emulator page, as a user would paste it."""
    block = fenced_blocks(emulator_page(), "sh")[0]
    line = next(x for x in block.splitlines() if "-m fakevk" in x)
    argv = shlex.split(line)
    assert argv[0] == ".venv/bin/python", line
    return [sys.executable, *argv[1:]]


def with_port_zero(argv: list[str]) -> list[str]:
    argv = list(argv)
    argv[argv.index("--port") + 1] = "0"
    return argv


def clean_env(**extra: str) -> dict[str, str]:
    # a newcomer's shell: only what the emulator prints (the tests' trust is not theirs)
    drop = ("VK_ACCESS_TOKEN", "DATABASE_URL", "VK_API_URL", "VKSCRAPER_API_URLS",
            "VKSCRAPER_MAX_RPS")  # fmt: skip
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


@contextmanager
def emulator(argv: list[str]) -> Iterator[list[str]]:
    """Start the emulator command and yield its start-up output (every line up to the last
    one it prints on start); stop it afterwards."""
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=clean_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)  # EOF

    threading.Thread(target=pump, daemon=True).start()
    out: list[str] = []
    try:
        while not out or out[-1] != LAST_LINE:
            try:
                line = lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no {LAST_LINE!r} in time:\n" + "\n".join(out)) from None
            if line is None:
                proc.wait(timeout=10)
                raise AssertionError("emulator exited:\n" + "\n".join(out) + stderr.read())
            out.append(line)
        yield out
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        stdout.close()
        stderr.close()


def test_the_docs_emulator_command_prints_what_the_readme_shows():
    argv = docs_emulator_command()
    with emulator(with_port_zero(argv)) as out:
        pass
    port = URL_LINE.fullmatch(out[0])
    assert port, f"the first line must be the URL alone (FakeVk reads it): {out[0]!r}"
    shown_port = argv[argv.index("--port") + 1]
    printed = "\n".join(out).replace(f":{port.group(1)}/", f":{shown_port}/") + "\n"
    shown = fenced_blocks(emulator_page(), "text")[0]
    assert printed == shown, "docs/topics/emulator.md must show the emulator's real output"
    # What a newcomer needs, named outright.
    text = "\n".join(out)
    assert "VK_API_URL" in text
    assert "token it accepts" in text and "fakevk-token-0123456789abcdef" in text
    assert re.search(r"groups: 5 communities, 3 with a readable wall", text)
    assert re.search(r"^\s+\d+\s+group\d+\s+12 posts$", text, flags=re.M)
    assert "  export VK_ACCESS_TOKEN=fakevk-token-0123456789abcdef" in out
    assert "  export VK_API_URL=http://127.0.0.1:8765/method/" in printed.splitlines()
    assert any(line.startswith("  .venv/bin/scrapy crawl vk -a groups=") for line in out)
    # The page's own copy-paste block is that crawl.
    crawl_block = fenced_blocks(emulator_page(), "sh")[1]
    for line in crawl_block.splitlines()[:2]:
        assert f"  {line}" in printed.splitlines(), line


def test_help_shows_the_default_token():
    result = subprocess.run(
        [sys.executable, "-m", "fakevk", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0
    assert "(default: fakevk-token-0123456789abcdef)" in " ".join(result.stdout.split())


def run_printed_crawl(out: list[str], database: str) -> subprocess.CompletedProcess[str]:
    """The first crawl the emulator printed, pasted as shown, into ``database``."""
    url = out[0]
    export = next(x.strip() for x in out if x.strip().startswith("export VK_ACCESS_TOKEN="))
    api = next(x.strip() for x in out if x.strip().startswith("export VK_API_URL="))
    assert api == f"export VK_API_URL={url}"  # the default API, trusted: nothing else
    crawl = next(x.strip() for x in out if x.strip().startswith(".venv/bin/scrapy crawl"))
    token = export.split("=", 1)[1]
    argv = shlex.split(crawl)
    assert argv[0] == ".venv/bin/scrapy"
    return subprocess.run(
        [sys.executable, "-m", "scrapy", *argv[1:]],
        cwd=REPO,
        env=clean_env(VK_ACCESS_TOKEN=token, DATABASE_URL=database, VK_API_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_printed_first_crawl_completes(tmp_path):
    database = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    with emulator(with_port_zero(docs_emulator_command()) + SMALL) as out:
        result = run_printed_crawl(out, database)
    assert result.returncode == 0, result.stderr[-3000:]
    with open_store(database) as store:
        [task] = store.list_tasks()
    assert task.status == "completed", task.metrics["errors"]
    assert task.metrics["errors"] == []
    assert task.metrics["posts"] == 4 and task.metrics["comments"] > 0


def run_demo(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    database = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    result = subprocess.run(
        [sys.executable, "scripts/demo.py", "--fast", *args],
        cwd=REPO,
        env=clean_env(DATABASE_URL=database),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The demo points to the repository (docs, make targets), never to the outside.
    assert "https://" not in result.stdout and "vk.com" not in result.stdout
    return result, database


def test_the_default_demo_ends_completed(tmp_path):
    result, database = run_demo(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open_store(database) as store:
        [task] = store.list_tasks()
    assert task.status == "completed"
    assert task.metrics["errors"] == []
    assert task.metrics["posts"] == 30
    assert f"Result: task {task.id} is 'completed'" in result.stdout
    assert "make demo-errors" in result.stdout


def test_the_error_demo_ends_failed_with_each_error_explained(tmp_path):
    result, database = run_demo(tmp_path, "--with-errors")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open_store(database) as store:
        [task] = store.list_tasks()
    assert task.status == "failed"
    errors = sorted(task.metrics["errors"])
    assert len(errors) == 3, errors
    assert any("VK error 212 in wall.getComments" in e for e in errors), errors
    assert any("VK error 15 in wall.get:" in e for e in errors), errors
    assert any("no_such_community" in e and "not found" in e for e in errors), errors
    out = result.stdout
    assert f"Result: task {task.id} is 'failed', as intended" in out
    assert "scrapy crawl exited with 1" in out
    for error in errors:
        assert f"\n  {error}\n" in out  # every recorded error is shown …
    for kind in ("comments closed", "closed wall", "unknown name"):
        assert f"-> {kind}:" in out  # … and explained


def test_the_first_crawl_after_the_demo_finds_the_demos_data(tmp_path):
    """The docs' order: `make demo`, then the emulator's first crawl, both into the default
    store. They serve one dataset, so the crawl stores every comment it expects (with two
    datasets a comment id sat on another post and the task ended `completed` at 496/1447)."""
    demo, database = run_demo(tmp_path)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    with emulator(with_port_zero(docs_emulator_command())) as out:
        result = run_printed_crawl(out, database)
    assert result.returncode == 0, result.stderr[-3000:]
    with open_store(database) as store:
        first, again = sorted(store.list_tasks(), key=lambda t: t.id)
    assert again.status == "completed"
    assert again.metrics["comments"] == again.metrics["comments_expected"] > 0
    assert again.metrics["comments"] == first.metrics["comments"]
