"""``vkscraper schedule add | list | show | pause | resume | remove``: output, exit statuses
(0 done, 2 bad input or no such schedule) and what reaches the database."""

from __future__ import annotations

import pytest

from vkscraper.cli.main import main
from vkscraper.store import open_store

TOKEN = "vk1.a.schedule-cli-secret-0123456789"


def run(capsys, url, *args):
    try:
        code = main(["-q", "--database-url", url, *args])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'vk.sqlite3'}"


def test_a_schedule_from_add_to_remove(capsys, url):
    add = ["schedule", "add", "--groups", "apiclub,club1", "--every", "15m"]
    code, out, _ = run(capsys, url, *add, "--name", "quarterly", "-s", "VK_COMMENTS_PAGE_SIZE=50")
    assert (code, out) == (0, "1\n")
    assert run(capsys, url, "schedule", "add", "--cron", "0 3 * * *", "--timezone",
               "Europe/Moscow")[:2] == (0, "2\n")  # fmt: skip
    code, out, _ = run(capsys, url, "schedule", "list")
    assert code == 0
    first, second = out.splitlines()[1:]
    assert "quarterly" in first and "every 15 min" in first and "active" in first
    assert "cron 0 3 * * * (Europe/Moscow)" in second and "active groups" in second
    code, out, _ = run(capsys, url, "schedule", "show", "1")
    assert code == 0 and "apiclub, 1" in out and "VK_COMMENTS_PAGE_SIZE=50" in out
    assert "runs: none yet" in out
    assert run(capsys, url, "schedule", "pause", "1")[:2] == (0, "paused schedule 1\n")
    assert "paused" in run(capsys, url, "schedule", "list")[1].splitlines()[1]
    code, out, _ = run(capsys, url, "schedule", "resume", "1")
    assert code == 0 and out.startswith("resumed schedule 1: next run ")
    assert run(capsys, url, "schedule", "remove", "2")[:2] == (0, "removed schedule 2\n")
    with open_store(url) as store:
        [left] = store.list_schedules()
    assert (left.id, left.every_s, left.paused) == (1, 900, False)
    assert left.settings == {"VK_COMMENTS_PAGE_SIZE": "50"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--every", "1h", "--cron", "0 * * * *"], "not allowed with"),
        (["--cron", "61 * * * *"], "five fields"),
        (["--every", "soon"], "every"),
        (["--every", "1h", "--timezone", "Mars/Olympus"], "time zone"),
        (["--every", "1h", "--groups", "bad ref!"], "group"),
        (["--every", "1h", "-s", "ITEM_PIPELINES={}"], "ITEM_PIPELINES cannot be sent"),
        (["--every", "1h", "-s", "VK_ALERT_WEBHOOKS=http://evil.example/"], "VK_ALERT_WEBHOOKS"),
        (["--every", "1h", "-s", "VK_METRICS_INTERVAL=0"], "VK_METRICS_INTERVAL"),
        (["--every", "1h", "-s", f"VK_COMMENTS_PAGE_SIZE={TOKEN}"], "access token"),
    ],
)
def test_a_bad_schedule_is_refused_and_nothing_stored(capsys, url, monkeypatch, args, words):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)
    code, out, err = run(capsys, url, "schedule", "add", *args)
    assert code == 2, (out, err)
    assert words.lower() in err.lower(), err
    assert TOKEN not in out + err
    with open_store(url) as store:
        store.migrate()
        assert store.list_schedules() == []


@pytest.mark.parametrize("action", ["show", "pause", "resume", "remove"])
def test_no_such_schedule_is_a_usage_error(capsys, url, action):
    code, _, err = run(capsys, url, "schedule", action, "7")
    assert code == 2 and "schedule 7 does not exist" in err
