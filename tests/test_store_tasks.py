"""Tasks: status transitions, atomic metrics (threads and processes), refresh_counts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vkscraper.exceptions import StoreError
from vkscraper.store import Task, open_store

REPO = Path(__file__).resolve().parents[1]


def test_create_task_initial_state(store):
    task_id = store.create_task([5, "apiclub", "7", 5])
    task = store.get_task(task_id)
    assert isinstance(task, Task)
    assert task.status == "created"
    assert task.groups == [5, "apiclub", 7]
    assert task.metrics == {
        "posts": 0,
        "comments": 0,
        "errors": [],
        "groups_total": 3,
        "groups_done": 0,
        "posts_expected": 0,
        "comments_expected": 0,
        "groups": {},
    }
    assert task.started_at is None and task.finished_at is None
    assert task.created_at.tzinfo is not None and task.updated_at >= task.created_at
    assert store.get_task(task_id + 1000) is None


def test_status_transitions_and_resume_keeps_started_at(store):
    task_id = store.create_task([1])
    store.start_task(task_id)
    started = store.get_task(task_id)
    assert started.status == "in_progress" and started.started_at is not None
    assert store.finish_task(task_id) == "completed"
    done = store.get_task(task_id)
    assert done.status == "completed" and done.finished_at >= done.started_at

    time.sleep(0.002)
    store.start_task(task_id)  # resume
    resumed = store.get_task(task_id)
    assert resumed.status == "in_progress"
    assert resumed.started_at == started.started_at
    assert resumed.finished_at is None
    assert resumed.updated_at > done.updated_at

    store.add_error(task_id, "group 5: access denied")
    assert store.finish_task(task_id) == "failed"
    assert store.get_task(task_id).status == "failed"


def test_missing_task_raises_store_error(store):
    with pytest.raises(StoreError, match="task 999 does not exist"):
        store.start_task(999)
    with pytest.raises(StoreError):
        store.add_progress(999, posts_expected=1)


def test_set_task_groups(store):
    task_id = store.create_task(["apiclub", 1])
    store.set_task_groups(task_id, [1, 22, 333])
    task = store.get_task(task_id)
    assert task.groups == [1, 22, 333]
    assert task.metrics["groups_total"] == 3


def test_add_progress_per_group_and_done_counted_once(store):
    task_id = store.create_task([1, 2])
    store.add_progress(task_id, group_id=1, posts_expected=10, comments_expected=30)
    store.add_progress(task_id, group_id=2, posts_expected=5, group_status="in_progress")
    store.add_progress(task_id, posts_expected=1)
    store.add_progress(task_id, group_id=1, group_done=True)
    store.add_progress(task_id, group_id=1, group_done=True)  # a resumed crawl finishing again
    store.add_progress(task_id, group_id=2, group_done=True, group_status="failed")
    m = store.get_task(task_id).metrics
    assert (m["posts_expected"], m["comments_expected"], m["groups_done"]) == (16, 30, 2)
    assert m["groups"]["1"] == {
        "posts_expected": 10,
        "comments_expected": 30,
        "status": "done",
        "done": True,
    }
    assert m["groups"]["2"]["status"] == "failed"
    assert m["groups"]["2"]["posts_expected"] == 5
    with pytest.raises(StoreError):
        store.add_progress(task_id, group_done=True)


def test_errors_append_and_nul_removed(store):
    task_id = store.create_task([1])
    store.add_error(task_id, "first")
    store.add_error(task_id, "sec\x00ond 😀")
    store.add_error(task_id, "x" * 5000)
    errors = store.get_task(task_id).metrics["errors"]
    assert errors[:2] == ["first", "second 😀"]
    assert len(errors[2]) <= 2000


def _hammer(store, task_id: int, n: int) -> None:
    for i in range(n):
        store.add_progress(task_id, group_id=1 + i % 2, posts_expected=1, comments_expected=2)
        if i % 5 == 0:
            store.add_error(task_id, f"{threading.get_ident()}:{i}")


def test_metrics_from_many_threads_add_up(store):
    task_id = store.create_task([1, 2])
    threads = [threading.Thread(target=_hammer, args=(store, task_id, 40)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = store.get_task(task_id).metrics
    assert m["posts_expected"] == 8 * 40
    assert m["comments_expected"] == 8 * 40 * 2
    assert m["groups"]["1"]["posts_expected"] == m["groups"]["2"]["posts_expected"] == 160
    assert len(m["errors"]) == 8 * 8
    assert len(set(m["errors"])) == 8 * 8


_WORKER = """
import sys
from vkscraper.store import open_store
url, task_id, n, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = open_store(url)
for i in range(n):
    store.add_progress(task_id, group_id=1 + i % 2, posts_expected=1, comments_expected=2)
    if i % 5 == 0:
        store.add_error(task_id, f"{tag}:{i}")
    if i % 10 == 0:
        store.add_progress(task_id, group_id=3 + i // 10, group_done=True)
store.close()
"""


@pytest.mark.parametrize("url_fixture", ["pg_url", "sqlite_url"])
def test_metrics_from_several_processes_add_up(request, url_fixture):
    url = request.getfixturevalue(url_fixture)
    with open_store(url) as store:
        store.migrate()
        task_id = store.create_task([1, 2])
    n, procs = 60, 4
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, str(task_id), str(n), f"p{k}"],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(procs)
    ]
    for w in workers:
        _, err = w.communicate(timeout=60)
        assert w.returncode == 0, err
    with open_store(url) as store:
        m = store.get_task(task_id).metrics
    assert m["posts_expected"] == procs * n
    assert m["comments_expected"] == procs * n * 2
    assert m["groups"]["1"]["comments_expected"] == procs * n  # half of the calls, x2
    assert len(m["errors"]) == procs * (n // 5)
    # groups 3..8 were each finished by every process, but count once
    assert m["groups_done"] == n // 10


def test_refresh_counts(store, make_post, make_comment):
    first = store.create_task([1, 2])
    store.upsert_posts(first, [make_post(1, group_id=1), make_post(2, group_id=1)])
    store.upsert_posts(first, [make_post(1, group_id=2)])
    store.upsert_comments(
        first,
        [
            make_comment(10, post_vk_id=1, group_id=1),
            make_comment(11, post_vk_id=1, group_id=1),
            make_comment(12, post_vk_id=2, group_id=1),
            make_comment(10, post_vk_id=1, group_id=2),
        ],
    )
    store.add_progress(first, group_id=1, posts_expected=2, group_done=True)
    store.refresh_counts(first)
    m = store.get_task(first).metrics
    assert (m["posts"], m["comments"]) == (3, 4)
    assert m["groups"]["1"] == {
        "posts_expected": 2,
        "comments_expected": 0,
        "status": "done",
        "done": True,
        "posts": 2,
        "comments": 3,
    }
    assert (m["groups"]["2"]["posts"], m["groups"]["2"]["comments"]) == (1, 1)

    # A later task re-crawls post 2 of group 1 and adds a comment to it.
    second = store.create_task([1])
    store.upsert_posts(second, [make_post(2, group_id=1, likes=3)])
    store.upsert_comments(second, [make_comment(13, post_vk_id=2, group_id=1)])
    store.refresh_counts(second)
    store.refresh_counts(first)
    m2 = store.get_task(second).metrics
    assert (m2["posts"], m2["comments"]) == (1, 2)
    assert m2["groups"] == {"1": {"posts": 1, "comments": 2}}
    m1 = store.get_task(first).metrics
    assert (m1["posts"], m1["comments"]) == (3, 5)  # post 2 is still one of task 1's

    empty = store.create_task([9])
    store.refresh_counts(empty)
    assert store.get_task(empty).metrics["posts"] == 0


def test_refresh_counts_of_some_groups(store, make_post, make_comment):
    task = store.create_task([1, 2])
    store.upsert_posts(task, [make_post(1, group_id=1), make_post(1, group_id=2)])
    store.upsert_comments(task, [make_comment(5, group_id=1), make_comment(5, group_id=2)])
    store.refresh_counts(task, [2])
    m = store.get_task(task).metrics
    assert m["groups"] == {"2": {"posts": 1, "comments": 1}}  # group 1 not looked at
    assert (m["posts"], m["comments"]) == (1, 1)  # totals are the groups' sum
    store.upsert_comments(task, [make_comment(6, group_id=2)])
    store.refresh_counts(task, [1])
    m = store.get_task(task).metrics
    assert m["groups"]["1"] == {"posts": 1, "comments": 1}
    assert m["groups"]["2"] == {"posts": 1, "comments": 1}  # not refreshed yet
    assert (m["posts"], m["comments"]) == (2, 2)
    store.refresh_counts(task, [])
    store.refresh_counts(task)
    assert store.get_task(task).metrics["comments"] == 3


def test_list_tasks_newest_first(store):
    ids = [store.create_task([i]) for i in range(1, 5)]
    assert [t.id for t in store.list_tasks()] == ids[::-1]
    assert [t.id for t in store.list_tasks(limit=2)] == ids[:1:-1]
