"""``task watch`` and ``export``: real ``python -m vkscraper`` processes on both backends."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import queue
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from vkscraper.cli import exitcodes, watch
from vkscraper.exceptions import StoreError
from vkscraper.store import export, open_store

REPO = Path(__file__).resolve().parents[1]
# No colour or terminal overrides from the developer's shell: stdout is a pipe here.
ENV = {
    k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR")
}


def vkscraper(*args: str) -> list[str]:
    return [sys.executable, "-m", "vkscraper", *args]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        vkscraper(*args), cwd=REPO, capture_output=True, timeout=60, env=env or ENV
    )


class Watcher:
    """A ``task watch`` subprocess whose stdout lines are read as they come."""

    def __init__(self, url: str, task_id: int, interval: str = "0.1") -> None:
        self.proc = subprocess.Popen(
            vkscraper(
                "--database-url", url, "task", "watch", str(task_id), "--interval", interval
            ),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=ENV,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first new line matching ``pattern``; fails with everything read so far."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line = ""
                if time.monotonic() > deadline:
                    pytest.fail(f"no line matched {pattern!r} in time; got:\n" + self.output())
            if line is None:
                pytest.fail(f"watch ended before {pattern!r}; got:\n" + self.output())
            if line:
                self.lines.append(line)
                m = re.search(pattern, line)
                if m:
                    return m

    def finish(self) -> tuple[int, list[str], str]:
        """Exit status, the lines not consumed by :meth:`expect`, stderr."""
        code = self.proc.wait(timeout=30)
        rest = []
        while (line := self._queue.get(timeout=10)) is not None:
            rest.append(line)
        assert self.proc.stderr is not None
        return code, rest, self.proc.stderr.read()

    def output(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=10)  # EOF once the process is gone
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def watcher():
    started: list[Watcher] = []

    def start(url: str, task_id: int, interval: str = "0.1") -> Watcher:
        started.append(Watcher(url, task_id, interval))
        return started[-1]

    yield start
    for w in started:
        w.close()


# ------------------------------------------------------------------------------------ watch


@pytest.mark.integration
def test_watch_follows_a_run_until_it_fails(store, store_url, watcher, make_post, make_comment):
    task = store.create_task([1, 2])
    w = watcher(store_url, task)
    # Not started yet: the watcher waits (a line per refresh) instead of exiting.
    w.expect(rf"task {task} created run 1  groups 0/2  posts 0/0  comments 0/0  rate -")
    w.expect(rf"task {task} created")

    store.begin_run(task)
    w.expect(rf"task {task} in_progress run 1  groups 0/2 ")

    store.add_progress(task, group_id=1, posts_expected=2, comments_expected=6)
    store.upsert_posts(task, [make_post(1), make_post(2)])
    store.upsert_comments(task, [make_comment(i, post_vk_id=1) for i in (1, 2, 3)])
    store.refresh_counts(task)
    store.add_progress(task, group_id=1, group_done=True)
    m = w.expect(
        r"groups 1/2  posts 2/2  comments 3/6  rate ([0-9.]+) comments/s  errors 0  "
        r"left (\d+:\d\d:\d\d)"
    )
    assert float(m.group(1)) > 0  # three comments appeared between two refreshes

    store.add_error(task, "wall of 2 is closed (VK error 15)", group=2)
    store.add_progress(task, group_id=2, group_status="failed", group_done=True)
    w.expect(r"groups 2/2  posts 2/2  comments 3/6  .*  errors 1  ")

    assert store.finish_task(task) == "failed"
    w.expect(rf"task {task} failed run 1  groups 2/2 .* errors 1  left 0:00:00$")
    code, rest, err = w.finish()
    assert code == exitcodes.TASK_FAILED, (rest, err)
    assert rest == ["error: wall of 2 is closed (VK error 15)"]
    assert err == ""


@pytest.mark.integration
def test_watch_exits_0_when_the_task_completes(store, store_url, watcher):
    task = store.create_task([7])
    store.begin_run(task)
    w = watcher(store_url, task)
    w.expect(rf"task {task} in_progress run 1  groups 0/1 ")
    store.add_progress(task, group_id=7, group_done=True)
    store.refresh_counts(task)
    w.expect(r"groups 1/1 ")
    assert store.finish_task(task) == "completed"
    w.expect(rf"task {task} completed ")
    code, rest, err = w.finish()
    assert (code, rest, err) == (exitcodes.OK, [], "")


@pytest.mark.integration
def test_watch_of_an_ended_task_exits_at_once_with_its_status(store, store_url):
    done = store.create_task([1])
    store.begin_run(done)
    store.finish_task(done)
    result = run_cli("--database-url", store_url, "task", "watch", str(done), "--interval", "60")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"\S+ task {done} completed run 1 .*\n", result.stdout.decode())

    failed = store.create_task([1])
    store.begin_run(failed)
    store.add_error(failed, "boom\nsecond line")
    store.finish_task(failed)
    result = run_cli("--database-url", store_url, "task", "watch", str(failed))
    assert result.returncode == 1
    assert result.stdout.decode().splitlines()[1:] == ["error: boom second line"]


@pytest.mark.integration
def test_watch_stops_on_ctrl_c_with_130(store, store_url, watcher):
    task = store.create_task([1])
    w = watcher(store_url, task)
    w.expect(rf"task {task} created ")
    w.proc.send_signal(signal.SIGINT)
    code, _, err = w.finish()
    assert (code, err) == (130, "")
    assert store.get_task(task).status == "created"  # watching never touches the task


@pytest.mark.integration
def test_watch_of_a_missing_task_exits_2(sqlite_url):
    result = run_cli("--database-url", sqlite_url, "task", "watch", "42")
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == "vkscraper: error: task 42 does not exist\n"


@pytest.mark.integration
def test_watch_database_error_exits_3_not_failed():
    result = run_cli("--database-url", "postgresql://postgres@127.0.0.1:1/x", "task", "watch", "1")
    assert result.returncode == 3
    assert len(result.stderr.decode().strip().splitlines()) == 1


def test_watch_rate_time_left_and_fresh_run(store):
    """In process with a fake clock: exact rate and time left, and a fresh run (the previous
    one ended between two refreshes) starts the rate afresh instead of reading the drop in
    counts as progress."""
    task = store.create_task([1])
    store.begin_run(task)
    store.add_progress(task, group_id=1, comments_expected=400)
    now = [0.0]
    steps = iter(
        [
            lambda: _set_comments(store, task, 100),
            lambda: _set_comments(store, task, 250),
            # Run 1 ends and run 2 starts between two refreshes; run 2 has stored more by
            # the next one than run 1 had: still not 50 comments in 10 s.
            lambda: (
                store.finish_task(task),
                store.begin_run(task),
                _set_comments(store, task, 300),
            ),
            lambda: store.finish_task(task),
        ]
    )

    def sleep(seconds: float) -> None:
        assert seconds == 5
        now[0] += 10
        next(steps)()

    out = io.StringIO()
    code = watch.watch(store, store.get_task(task), interval=5, out=out, clock=lambda: now[0],
                       sleep=sleep)  # fmt: skip
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert code == 0
    assert lines == [
        f"task {task} in_progress run 1  groups 0/1  posts 0/0  comments 0/400  rate -  "
        "errors 0  left ?",
        f"task {task} in_progress run 1  groups 0/1  posts 0/0  comments 100/400  "
        "rate 10.0 comments/s  errors 0  left 0:00:30",
        f"task {task} in_progress run 1  groups 0/1  posts 0/0  comments 250/400  "
        "rate 12.5 comments/s  errors 0  left 0:00:12",
        f"task {task} in_progress run 2  groups 0/1  posts 0/0  comments 300/0  rate -  "
        "errors 0  left ?",
        f"task {task} completed run 2  groups 0/1  posts 0/0  comments 300/0  "
        "rate 0.0 comments/s  errors 0  left 0:00:00",
    ]


def _set_comments(store, task_id: int, n: int) -> None:
    # What refresh_counts writes after a crawl stored n comments, without storing them.
    metrics = {**store.get_task(task_id).metrics, "comments": n}
    sql = store._db.sql("UPDATE tasks SET metrics = {json} WHERE id = %s")
    store._run("test", lambda cur: cur.execute(sql, (store._db.json(metrics), task_id)))


class _FlakyStore:
    """The store, but ``get_task`` fails ``outage`` times (a database restart) first."""

    def __init__(self, store, outage: int) -> None:
        self.store, self.outage = store, outage

    def get_task(self, task_id):
        if self.outage:
            self.outage -= 1
            raise StoreError("PostgreSQL at 127.0.0.1:5432/vk: connection refused")
        return self.store.get_task(task_id)


def test_watch_rides_out_a_short_outage_and_gives_up_on_a_long_one(store):
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        assert now[0] < 1000, "the watcher neither recovered nor gave up"

    task = store.create_task([1])
    store.begin_run(task)
    running = store.get_task(task)
    store.finish_task(task)  # what the watcher reads once the database is back
    out = io.StringIO()
    flaky = _FlakyStore(store, outage=3)  # failures at 20, 40 and 60 s: 40 s long, back at 80
    code = watch.watch(flaky, running, interval=20, out=out, clock=lambda: now[0], sleep=sleep)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    unavailable = (
        f"task {task} database unavailable (PostgreSQL at 127.0.0.1:5432/vk: connection "
        "refused); retrying"
    )
    assert code == 0
    assert lines[0].startswith(f"task {task} in_progress run 1 ")
    assert lines[1:] == [unavailable] * 3 + lines[4:]
    assert lines[4].startswith(f"task {task} completed run 1 ") and len(lines) == 5

    store.begin_run(task)
    flaky = _FlakyStore(store, outage=4)  # the 4th failure comes 60 s after the 1st: give up
    with pytest.raises(StoreError, match="connection refused"):
        watch.watch(flaky, store.get_task(task), interval=20, out=io.StringIO(),
                    clock=lambda: now[0], sleep=sleep)  # fmt: skip


def test_rate_meter_window():
    meter = watch.RateMeter(window=30)
    assert meter.rate() is None
    meter.observe(0, 0)
    assert meter.rate() is None
    meter.observe(10, 100)
    assert meter.rate() == 10
    for t in range(20, 70, 10):  # stalled for 50 s: the window forgets the old climb
        meter.observe(t, 100)
    assert meter.rate() == 0
    meter.observe(70, 400)
    assert meter.rate() == 300 / 30
    meter.observe(80, 50)  # counts went down: a fresh start
    assert meter.rate() is None
    assert watch.format_duration(3 * 3600 + 62.4) == "3:01:02"


def on_terminal(args: list[str], columns: int, meanwhile=lambda: None) -> tuple[int, bytes, str]:
    """Run ``args`` with stdout on a pseudo-terminal ``columns`` wide (its window size, as a
    terminal emulator sets it; no $COLUMNS), calling ``meanwhile()`` once it runs: exit
    status, stderr, and what it drew as plain text."""
    main_fd, tty_fd = pty.openpty()
    fcntl.ioctl(tty_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in ENV.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        stdout=tty_fd,
        stderr=subprocess.PIPE,
        env={**env, "TERM": "xterm-256color"},
    )
    os.close(tty_fd)
    chunks: list[bytes] = []

    def read() -> None:  # all along: a full terminal buffer would block the child
        while True:
            try:
                data = os.read(main_fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        meanwhile()
        _, err = proc.communicate(timeout=30)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main_fd)
    screen = b"".join(chunks).decode()
    assert "\x1b[" in screen  # escape sequences: a rich display, not plain lines
    # Cursor moves and erasures (between frames) end a line; colours and modes go.
    plain = re.sub(r"\x1b\[[0-9;?]*[ABCDGHJK]", "\n", screen).replace("\r", "")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", plain)
    return proc.returncode, err, plain


@pytest.mark.integration
@pytest.mark.parametrize("columns", [80, 120])
def test_watch_draws_a_live_bar_on_a_terminal(sqlite_url, columns):
    """The live display of a running task at 80 and 120 columns: every label and count whole
    (the bars give way), nothing but the last error's text cut."""
    with open_store(sqlite_url) as store:
        store.migrate()
        task = store.create_task([1, 2, 3])
        store.begin_run(task)
        store.add_progress(task, group_id=1, group_done=True, comments_expected=1234567)
        store.add_progress(task, group_id=2, posts_expected=30000)
        store.add_error(task, "closed wall " * 12, group=2)

        def crawl() -> None:  # comments stored between refreshes: a rate and a time left
            for n in (1447, 14470, 144700):
                time.sleep(0.6)
                _set_comments(store, task, n)
            time.sleep(0.6)
            store.finish_task(task)

        code, err, plain = on_terminal(
            vkscraper(
                "--database-url", sqlite_url, "task", "watch", str(task), "--interval", "0.2"
            ),
            columns,
            crawl,
        )
    assert (code, err) == (1, b"")
    assert "groups 1/3  posts" not in plain  # … and not the plain line format
    lines = [line.rstrip() for line in plain.splitlines() if line.strip()]
    display, listed = lines[:-1], lines[-1]  # the errors, listed in full after the end
    assert all(len(line) <= columns for line in display), lines
    assert not [line for line in display if "…" in line and "last error" not in line], lines
    assert re.search(rf"^task {task}\s+in_progress\s+run 1\s+errors 1$", plain, re.M)
    assert re.search(rf"^task {task}\s+failed\s+run 1\s+errors 1$", plain, re.M)
    assert re.search(r"^groups\s+━+.*\s1/3$", plain, re.M)
    assert re.search(r"^posts\s+.*\s0/30000$", plain, re.M)
    assert re.search(r"^comments\s+.*\s144700/1234567$", plain, re.M)
    assert re.search(r"^rate [0-9.]+ comments/s  left [0-9]+:[0-9]{2}:[0-9]{2}$", plain, re.M)
    assert re.search(r"^last error: closed wall closed wall .*…$", plain, re.M)
    assert listed == "error: " + ("closed wall " * 12).strip()


def test_the_live_display_fits_80_columns_with_large_figures():
    """The widest figures a long crawl shows, at 80 columns: nothing cut."""
    figures = watch.Figures(
        task_id=123456, status="in_progress", run=12, groups_done=99999, groups_total=100000,
        posts=9999999, posts_expected=10000000, comments=123456789, comments_expected=987654321,
        errors=("x",) * 100, rate=12345.6, seconds_left=360000,
    )  # fmt: skip
    console = Console(width=80, file=io.StringIO(), force_terminal=False)
    console.print(figures.render())
    lines = console.file.getvalue().splitlines()
    assert [line.split()[0] for line in lines[1:5]] == ["groups", "posts", "comments", "rate"]
    assert lines[3].endswith(" 123456789/987654321")
    assert lines[4] == "rate 12345.6 comments/s  left 100:00:00"
    assert not [line for line in lines if "…" in line or len(line) > 80], lines


# ----------------------------------------------------------------------------------- export

POST_TEXT = 'Привет, мир! 😀🇷🇺 "quoted", comma\nsecond line\r\nthird\u2028sep'


@pytest.fixture
def results(store, make_post, make_comment):
    """A finished task with awkward text, and another task whose rows must stay out."""
    task = store.create_task([1])
    store.begin_run(task)
    posts = [make_post(1, text=POST_TEXT + "\x00", likes=5, is_pinned=True)]
    posts += [make_post(i, text=f"пост {i}") for i in range(2, 6)]
    store.upsert_posts(task, posts)
    comments = [
        make_comment(10, text='Ответ 👍\nс переносом, и "кавычками"', author_name="Иван 🐱"),
        make_comment(11, parent_id=10, reply_to_user=110, reply_to_comment=10, text="a\x00b"),
        make_comment(12, author_id=None, author_name=None, text="", deleted=True),
    ]
    comments += [make_comment(i, post_vk_id=2 + i % 3, text=f"к{i}") for i in range(13, 20)]
    store.upsert_comments(task, comments)
    store.finish_task(task)

    other = store.create_task([2])
    store.begin_run(other)
    store.upsert_posts(other, [make_post(1, group_id=2)])
    store.upsert_comments(other, [make_comment(10, group_id=2, text="other wall")])
    store.finish_task(other)
    return task


def _task_rows(store, task, kind):
    return store.task_results(task, kind, limit=100_000)


def _as_json(row, kind):
    return {
        "kind": kind,
        **{
            f: export.iso(f, row[f]) if isinstance(row[f], datetime) else row[f]
            for f in export.FIELDS[f"{kind}s"]  # type: ignore[index]
        },
    }


def test_fields_are_what_task_results_returns(store, results):
    for kind in ("posts", "comments"):
        assert set(export.FIELDS[kind]) == set(_task_rows(store, results, kind)[0])


@pytest.mark.integration
def test_export_jsonl_to_stdout_is_the_task_rows(store, store_url, results):
    # An ASCII locale (C, without Python's coercion to C.UTF-8) gives Python an ASCII stdout:
    # the export must still be UTF-8.
    env = {**ENV, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    result = run_cli("--database-url", store_url, "export", str(results), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    raw = result.stdout.decode("utf-8")
    assert "Привет" in raw and "😀" in raw  # as is, not \\u escapes
    assert "\u2028" not in raw  # escaped, so every splitter sees one object per line
    lines = raw.splitlines()
    objects = [json.loads(line) for line in lines]
    posts = [_as_json(r, "post") for r in _task_rows(store, results, "posts")]
    comments = [_as_json(r, "comment") for r in _task_rows(store, results, "comments")]
    assert (len(posts), len(comments)) == (5, 10)
    assert objects == posts + comments
    assert list(objects[0]) == ["kind", *export.FIELDS["posts"]]
    first = objects[0]
    assert first["text"] == POST_TEXT  # NUL gone, newlines and emoji kept
    assert (first["is_pinned"], first["likes"], first["date"]) == (
        True,
        5,
        "2024-05-01T12:00:00Z",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["created_at"])
    assert datetime.fromisoformat(first["created_at"]) == _task_rows(store, results, "posts")[0][
        "created_at"
    ].astimezone(UTC)
    assert "other wall" not in raw


def test_export_pages_with_the_key_cursor(store, results):
    """Pages of 2 (odd counts: a last partial page) give exactly the rows of one big page,
    and the store is asked page by page."""
    calls = []
    real = store.task_results

    def spy(task_id, kind, limit, after_id):
        calls.append((kind, limit, after_id))
        return real(task_id, kind, limit=limit, after_id=after_id)

    store.task_results = spy
    out = io.StringIO()
    counts = export.export(store, results, fmt="jsonl", kind="all", out=out, page_size=2)
    store.task_results = real
    assert (counts.posts, counts.comments) == (5, 10)
    ids = {k: [r["id"] for r in _task_rows(store, results, k)] for k in ("posts", "comments")}
    assert [c for c in calls if c[0] == "posts"] == [
        ("posts", 2, 0),
        ("posts", 2, ids["posts"][1]),
        ("posts", 2, ids["posts"][3]),
    ]
    assert len([c for c in calls if c[0] == "comments"]) == 6  # 10 rows: 5 full pages + empty
    got = [json.loads(line) for line in out.getvalue().split("\n") if line]
    assert [o["id"] for o in got] == ids["posts"] + ids["comments"]


@pytest.mark.integration
def test_export_csv_reads_back(store, store_url, results, tmp_path):
    out = tmp_path / "comments.csv"
    result = run_cli(
        "--database-url", store_url, "export", str(results), "--format", "csv",
        "--kind", "comments", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"wrote 0 posts and 10 comments to {out}\n"
    assert not out.with_name("comments.csv.part").exists()
    raw = out.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert '"Ответ 👍\nс переносом, и ""кавычками"""'.encode() in raw  # RFC 4180 quoting
    with out.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    assert header == list(export.FIELDS["comments"])
    expected = [
        [
            "" if v is None else ("true" if v is True else "false" if v is False else
            export.iso(f, v) if isinstance(v, datetime) else str(v))
            for f, v in ((f, r[f]) for f in export.FIELDS["comments"])
        ]
        for r in _task_rows(store, results, "comments")
    ]  # fmt: skip
    assert rows == expected
    by_vk_id = {r[1]: dict(zip(header, r, strict=True)) for r in rows}
    assert by_vk_id["10"]["text"] == 'Ответ 👍\nс переносом, и "кавычками"'
    assert by_vk_id["10"]["author_name"] == "Иван 🐱"
    assert by_vk_id["11"]["text"] == "ab"
    assert (by_vk_id["11"]["parent_id"], by_vk_id["11"]["reply_to_comment"]) == ("10", "10")
    assert (by_vk_id["12"]["author_id"], by_vk_id["12"]["deleted"]) == ("", "true")
    assert by_vk_id["12"]["date"] == "2024-05-01T13:00:00Z"

    posts = tmp_path / "posts.csv"
    result = run_cli(
        "--database-url", store_url, "export", str(results), "--format", "csv",
        "--kind", "posts", "--out", str(posts),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with posts.open(newline="", encoding="utf-8") as f:
        post_rows = list(csv.DictReader(f))
    assert [r["text"] for r in post_rows][0] == POST_TEXT
    assert len(post_rows) == 5 and post_rows[0]["is_pinned"] == "true"


@pytest.mark.integration
def test_an_export_names_the_last_task_as_such_and_shows_vanished_comments(
    store, store_url, make_post, make_comment, tmp_path
):
    """Task 1's file never says its rows are task 2's (``task_id``): a row touched again by
    task 2 says ``last_task_id`` 2; a comment task 2 found gone keeps its ``vanished_at``."""
    first = store.create_task([1])
    store.begin_run(first)
    store.upsert_posts(first, [make_post(1)])
    store.upsert_comments(first, [make_comment(10), make_comment(11)])
    store.finish_task(first)
    second = store.create_task([1])
    started = store.begin_run(second).updated_at
    store.upsert_posts(second, [make_post(1, likes=7)])
    store.upsert_comments(second, [make_comment(10, likes=3)])
    assert store.mark_vanished(started, -1, [1]) == 1  # 11 is gone from VK
    store.finish_task(second)

    result = run_cli("--database-url", store_url, "export", str(first))
    assert result.returncode == 0, result.stderr
    rows = {(o["kind"], o["id"]): o for o in map(json.loads, result.stdout.decode().splitlines())}
    assert all("task_id" not in o for o in rows.values())
    by_vk = {o.get("vk_comment_id", o.get("vk_post_id")): o for o in rows.values()}
    assert (by_vk[1]["kind"], by_vk[1]["last_task_id"], by_vk[1]["likes"]) == ("post", second, 7)
    assert (by_vk[10]["last_task_id"], by_vk[10]["vanished_at"]) == (second, None)
    assert by_vk[11]["last_task_id"] == first and by_vk[11]["deleted"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", by_vk[11]["vanished_at"])

    out = tmp_path / "c.csv"
    args = ("export", str(first), "--format", "csv", "--kind", "comments", "--out", str(out))
    assert run_cli("--database-url", store_url, *args).returncode == 0
    with out.open(newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert "task_id" not in csv_rows[0]
    assert [(r["last_task_id"], bool(r["vanished_at"])) for r in csv_rows] == [
        (str(second), False),
        (str(first), True),
    ]


def test_failed_export_leaves_no_file(store, results, tmp_path, monkeypatch):
    """An export that breaks half-way removes its FILE.part and leaves FILE as it was."""
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "out.jsonl"
    target.write_text("previous export\n")
    real = store.task_results

    def second_page_fails(task_id, kind, limit, after_id):
        if after_id:
            raise StoreError("PostgreSQL error in task_results: connection lost")
        return real(task_id, kind, limit=limit, after_id=after_id)

    monkeypatch.setattr(store, "task_results", second_page_fails)
    with pytest.raises(StoreError):
        export.export_to(store, results, fmt="jsonl", kind="all", path=str(target), page_size=2)
    assert [p.name for p in target.parent.iterdir()] == ["out.jsonl"]
    assert target.read_text() == "previous export\n"


@pytest.mark.integration
def test_export_csv_needs_one_kind(store, store_url, results, tmp_path):
    out = tmp_path / "all.csv"
    for extra in ([], ["--kind", "all"]):
        result = run_cli(
            "--database-url", store_url, "export", str(results), "--format", "csv",
            "--out", str(out), *extra,
        )  # fmt: skip
        assert result.returncode == 2
        assert result.stderr.decode() == (
            "vkscraper: error: CSV holds one kind per file: pass --kind posts or --kind "
            "comments (or --format jsonl for both in one file)\n"
        )
    assert not out.exists()


@pytest.mark.integration
def test_export_kind_posts_only_and_errors(store, store_url, results, tmp_path):
    result = run_cli("--database-url", store_url, "export", str(results), "--kind", "posts")
    kinds = {json.loads(line)["kind"] for line in result.stdout.decode().splitlines()}
    assert (result.returncode, kinds) == (0, {"post"})

    result = run_cli("--database-url", store_url, "export", "999")
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == "vkscraper: error: task 999 does not exist\n"

    missing_dir = tmp_path / "nope" / "x.jsonl"
    result = run_cli(
        "--database-url", store_url, "export", str(results), "--out", str(missing_dir)
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"vkscraper: cannot write {missing_dir}: ")
    assert len(result.stderr.decode().splitlines()) == 1


@pytest.mark.integration
def test_export_of_a_running_task_warns(store, store_url, make_post):
    task = store.create_task([1])
    store.begin_run(task)
    store.upsert_posts(task, [make_post(1)])
    result = run_cli("--database-url", store_url, "export", str(task))
    assert result.returncode == 0
    assert len(result.stdout.decode().splitlines()) == 1
    assert result.stderr.decode() == (
        f"vkscraper: warning: task {task} is in progress: exporting the rows stored so far\n"
    )


FORMULAS = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+1", "-2+3", "@SUM(A1)",
            "\tTAB", "\rCR", "plain = text", " =leading space"]  # fmt: skip


def test_export_csv_neutralises_formulas(store, make_post, make_comment):
    """A text cell a spreadsheet would run as a formula gets a leading ' (OWASP); numbers,
    like the negative owner_id, stay numbers; the JSON lines keep the text as it is."""
    task = store.create_task([1])
    store.begin_run(task)
    store.upsert_posts(task, [make_post(1, text="=1+1")])
    store.upsert_comments(
        task, [make_comment(10 + i, text=t, author_name="@me") for i, t in enumerate(FORMULAS)]
    )
    store.finish_task(task)
    out = io.StringIO(newline="")
    export.export(store, task, fmt="csv", kind="comments", out=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert [r["text"] for r in rows] == ["'" + t if t[0] in "=+-@\t\r" else t for t in FORMULAS]
    assert {r["author_name"] for r in rows} == {"'@me"}
    assert {r["owner_id"] for r in rows} == {"-1"}
    out = io.StringIO(newline="")
    export.export(store, task, fmt="csv", kind="posts", out=out)
    assert next(csv.DictReader(io.StringIO(out.getvalue(), newline="")))["text"] == "'=1+1"
    out = io.StringIO()
    export.export(store, task, fmt="jsonl", kind="comments", out=out)
    assert [json.loads(line)["text"] for line in out.getvalue().splitlines()] == FORMULAS
