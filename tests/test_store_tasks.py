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
        "run": 1,
        "posts": 0,
        "comments": 0,
        "errors": [],
        "groups_total": 3,
        "groups_done": 0,
        "posts_expected": 0,
        "comments_expected": 0,
        "requests": 0,
        "groups": {},
    }
    assert task.job_id is None
    assert task.started_at is None and task.finished_at is None
    assert task.created_at.tzinfo is not None and task.updated_at >= task.created_at
    assert store.get_task(task_id + 1000) is None


def test_job_id_and_request_counts_survive_the_run_steps(store):
    task_id = store.create_task([5])
    store.set_job(task_id, "job-a", {"VK_API_URL": "http://127.0.0.1:1/method/"})
    task = store.begin_run(task_id)  # without a job id: the one recorded stays
    assert task.job_id == "job-a"
    assert task.job_settings == {"VK_API_URL": "http://127.0.0.1:1/method/"}
    store.add_requests(task_id, 7)
    store.add_requests(task_id, 5)
    store.refresh_counts(task_id)
    store.add_error(task_id, "boom", group=5)
    task = store.get_task(task_id)
    assert task.metrics["requests"] == 12
    store.finish_task(task_id)
    task = store.begin_run(task_id, job_id="job-b")  # a fresh run counts from zero
    assert task.job_id == "job-b"
    assert task.metrics["requests"] == 0
    assert task.metrics["history"][-1]["requests"] == 12
    with pytest.raises(StoreError, match="task 999 does not exist"):
        store.add_requests(999, 1)


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


def test_resolve_task_groups_keeps_unresolved_and_collapses_duplicates(store):
    task_id = store.create_task(["apiclub", 1, "other", "dup"])
    store.add_progress(task_id, group_id="apiclub", group_status="failed", group_done=True)
    groups = store.resolve_task_groups(task_id, {"apiclub": 5, "dup": 1})
    task = store.get_task(task_id)
    assert groups == task.groups == [5, 1, "other"]  # "dup" is group 1 again
    assert task.metrics["groups_total"] == 3
    assert "apiclub" not in task.metrics["groups"]  # now known as 5


def test_begin_run_resumes_an_unfinished_task(store):
    task_id = store.create_task([1, 2])
    first = store.begin_run(task_id)
    assert first.status == "in_progress" and first.started_at is not None
    store.add_progress(task_id, group_id=1, posts_expected=3, group_done=True)
    store.add_error(task_id, "group 2: boom", group=2)
    again = store.begin_run(task_id)  # interrupted, run again: a resume
    assert again.started_at == first.started_at
    assert again.metrics["run"] == 1
    assert again.metrics["groups"]["1"]["done"] is True
    assert again.metrics["errors"] == ["group 2: boom"]


def test_begin_run_of_a_finished_task_starts_afresh_with_history(store, make_post):
    task_id = store.create_task([1])
    first = store.begin_run(task_id)
    store.upsert_posts(task_id, [make_post(1)])
    store.add_progress(task_id, group_id=1, posts_expected=1, group_done=True)
    store.add_error(task_id, "group 1: boom", group=1)
    store.refresh_counts(task_id)
    assert store.finish_task(task_id) == "failed"
    time.sleep(0.002)
    second = store.begin_run(task_id)
    m = second.metrics
    assert second.status == "in_progress" and second.finished_at is None
    assert second.started_at > first.started_at
    assert (m["run"], m["errors"], m["posts_expected"], m["groups_done"]) == (2, [], 0, 0)
    assert m["groups"] == {} and m["groups_total"] == 1
    (old,) = m["history"]
    assert (old["run"], old["status"], old["errors"], old["posts"]) == (
        1, "failed", ["group 1: boom"], 1,
    )  # fmt: skip
    assert "groups" not in old and old["finished_at"] is not None
    assert store.task_results(task_id, "posts") == []  # this run has seen nothing yet
    assert store.finish_task(task_id) == "completed"
    assert len(store.begin_run(task_id).metrics["history"]) == 2


def test_reset_group_forgets_an_earlier_runs_verdict_and_keeps_its_counts(store):
    """A group crawled again keeps its expected and stored counts (progress never drops on
    resume) until its new wall answer replaces the expected ones; its done flag, status and
    errors go."""
    task_id = store.create_task([1, 2])
    store.add_progress(task_id, group_id=1, posts_expected=4, comments_expected=9,
                       group_status="in_progress")  # fmt: skip
    store.add_progress(task_id, group_id=2, posts_expected=1, group_done=True)
    store.add_error(task_id, "group 1: closed", group=1)
    store.add_error(task_id, "group 2: fine but noted", group=2)
    store.add_error(task_id, "a task-wide error")
    store.reset_group(task_id, 1)
    store.reset_group(task_id, 2)
    store.reset_group(task_id, 3)  # nothing recorded: nothing to do
    m = store.get_task(task_id).metrics
    assert m["errors"] == ["a task-wide error"]
    assert (m["posts_expected"], m["comments_expected"], m["groups_done"]) == (5, 9, 0)
    assert m["groups"] == {
        "1": {"posts_expected": 4, "comments_expected": 9},
        "2": {"posts_expected": 1, "comments_expected": 0},
    }
    # The new run's wall answer for group 1: set, not added; the totals move by the change.
    store.add_progress(task_id, group_id=1, posts_expected=5, comments_expected=7,
                       group_status="in_progress", replace_expected=True)  # fmt: skip
    m = store.get_task(task_id).metrics
    assert (m["posts_expected"], m["comments_expected"]) == (6, 7)
    assert m["groups"]["1"] == {"posts_expected": 5, "comments_expected": 7,
                                "status": "in_progress"}  # fmt: skip
    # A first wall answer (no entry yet) is added as before.
    store.add_progress(task_id, group_id=3, posts_expected=2, comments_expected=1,
                       replace_expected=True)  # fmt: skip
    m = store.get_task(task_id).metrics
    assert (m["posts_expected"], m["comments_expected"]) == (8, 8)


def test_reset_group_touches_only_that_group(store):
    """Resetting one group leaves the others; a message shared by two groups is removed
    once."""
    task_id = store.create_task([1, 2])
    store.add_progress(task_id, group_id=1, posts_expected=4, comments_expected=9, group_done=True)
    store.add_progress(task_id, group_id=2, posts_expected=3, comments_expected=5, group_done=True)
    store.add_error(task_id, "same words", group=1)
    store.add_error(task_id, "same words", group=2)
    store.reset_group(task_id, 1)
    m = store.get_task(task_id).metrics
    assert (m["posts_expected"], m["comments_expected"], m["groups_done"]) == (7, 14, 1)
    assert m["errors"] == ["same words"]
    assert m["groups"]["1"] == {"posts_expected": 4, "comments_expected": 9}
    assert m["groups"]["2"]["errors"] == ["same words"]
    store.add_error(task_id, "group 3: not found", group=3)  # an entry without counts
    store.reset_group(task_id, 3)
    m = store.get_task(task_id).metrics
    assert (m["posts_expected"], m["comments_expected"], m["groups_done"]) == (7, 14, 1)
    assert m["errors"] == ["same words"]


def test_resolve_task_groups_keeps_the_entries_of_groups_still_there(store):
    task_id = store.create_task(["apiclub", 1, "other"])
    store.add_progress(task_id, group_id=1, posts_expected=2, group_done=True)
    store.add_progress(task_id, group_id="other", group_status="failed", group_done=True)
    store.resolve_task_groups(task_id, {"apiclub": 5})
    groups = store.get_task(task_id).metrics["groups"]
    assert set(groups) == {"1", "other"}
    assert groups["1"]["posts_expected"] == 2


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


# -- concurrency -------------------------------------------------------------------------------
#
# Every metrics change must be ONE atomic UPDATE computed from the current row. A Store
# serialises its own calls with a threading.Lock, so several threads sharing ONE Store cannot
# catch a read-modify-write; the tests below give every thread (or process) its own Store and
# connection, so the database itself has to serialise them.

N_CALLS = 40  # per worker
DONE_GROUPS = range(3, 3 + N_CALLS // 10)  # every worker finishes each of these once


def _hammer(store, task_id: int, n: int, tag: str) -> None:
    """What each worker does; the totals it leads to are checked by :func:`_assert_totals`."""
    for i in range(n):
        store.add_progress(task_id, group_id=1 + i % 2, posts_expected=1, comments_expected=2)
        if i % 5 == 0:
            store.add_error(task_id, f"{tag}:{i}")
        if i % 10 == 0:
            store.add_progress(task_id, group_id=3 + i // 10, group_done=True)
        if i % 8 == 4:
            store.refresh_counts(task_id)


_WORKER = """
import sys
from vkscraper.store import open_store
url, task_id, n, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = open_store(url)
print("ready", flush=True)
sys.stdin.readline()  # the go signal: all workers start together
for i in range(n):
    store.add_progress(task_id, group_id=1 + i % 2, posts_expected=1, comments_expected=2)
    if i % 5 == 0:
        store.add_error(task_id, f"{tag}:{i}")
    if i % 10 == 0:
        store.add_progress(task_id, group_id=3 + i // 10, group_done=True)
    if i % 8 == 4:
        store.refresh_counts(task_id)
store.close()
"""


def _seed_rows(store, make_post, make_comment) -> int:
    """A task with stored rows (group 1: 2 posts, 3 comments; group 2: 1 post, 1 comment),
    so that concurrent refresh_counts calls write real numbers next to add_progress."""
    task_id = store.create_task([1, 2])
    store.upsert_posts(task_id, [make_post(1, group_id=1), make_post(2, group_id=1)])
    store.upsert_posts(task_id, [make_post(1, group_id=2)])
    store.upsert_comments(
        task_id,
        [
            make_comment(10, post_vk_id=1, group_id=1),
            make_comment(11, post_vk_id=1, group_id=1),
            make_comment(12, post_vk_id=2, group_id=1),
            make_comment(10, post_vk_id=1, group_id=2),
        ],
    )
    return task_id


def _assert_totals(metrics: dict, workers: list[str], n: int) -> None:
    calls = len(workers) * n
    assert metrics["posts_expected"] == calls
    assert metrics["comments_expected"] == calls * 2
    for gid in ("1", "2"):  # half of the calls each
        assert metrics["groups"][gid]["posts_expected"] == calls // 2
        assert metrics["groups"][gid]["comments_expected"] == calls
    expected_errors = {f"{tag}:{i}" for tag in workers for i in range(0, n, 5)}
    assert len(metrics["errors"]) == len(expected_errors)
    assert set(metrics["errors"]) == expected_errors
    # every worker finished each of these groups; each is counted once
    assert metrics["groups_done"] == len(DONE_GROUPS)
    for gid in DONE_GROUPS:
        assert metrics["groups"][str(gid)]["done"] is True
    # refresh_counts ran concurrently with everything above and lost nothing either
    assert (metrics["posts"], metrics["comments"]) == (3, 4)
    assert (metrics["groups"]["1"]["posts"], metrics["groups"]["1"]["comments"]) == (2, 3)
    assert (metrics["groups"]["2"]["posts"], metrics["groups"]["2"]["comments"]) == (1, 1)


def test_metrics_from_threads_with_their_own_stores_add_up(
    store, store_url, make_post, make_comment
):
    """Threads, each with its own Store (own connection), hammer one task at the same time."""
    task_id = _seed_rows(store, make_post, make_comment)
    workers = [f"t{k}" for k in range(6)]
    barrier = threading.Barrier(len(workers))
    failures: list[BaseException] = []

    def work(tag: str) -> None:
        try:
            with open_store(store_url) as own:
                barrier.wait(timeout=30)  # start together: the calls really overlap
                _hammer(own, task_id, N_CALLS, tag)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(tag,)) for tag in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    _assert_totals(store.get_task(task_id).metrics, workers, N_CALLS)


@pytest.mark.integration
@pytest.mark.parametrize("url_fixture", ["pg_url", "sqlite_url"])
def test_metrics_from_several_processes_add_up(request, url_fixture, make_post, make_comment):
    url = request.getfixturevalue(url_fixture)
    with open_store(url) as store:
        store.migrate()
        task_id = _seed_rows(store, make_post, make_comment)
    workers = [f"p{k}" for k in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, str(task_id), str(N_CALLS), tag],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in workers
    ]
    try:
        for proc in procs:  # every worker has its connection before any starts writing
            assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=60)[1]
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    with open_store(url) as store:
        _assert_totals(store.get_task(task_id).metrics, workers, N_CALLS)


def test_one_store_shared_by_threads(store, make_post, make_comment):
    """Scrapy calls ONE Store from worker threads: its lock keeps the shared connection's
    transactions apart. (This cannot catch a non-atomic UPDATE: the lock serialises every
    call; the tests above do.)"""
    task_id = _seed_rows(store, make_post, make_comment)
    workers = [f"s{k}" for k in range(6)]
    failures: list[BaseException] = []

    def work(tag: str) -> None:
        try:
            _hammer(store, task_id, N_CALLS, tag)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(tag,)) for tag in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    _assert_totals(store.get_task(task_id).metrics, workers, N_CALLS)


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


def test_refresh_counts_gives_empty_groups_zero_counts(store, make_post):
    task = store.create_task([1, 2, "gone"])
    store.upsert_posts(task, [make_post(1, group_id=1)])
    store.add_progress(task, group_id=2, group_done=True)  # a wall without posts
    store.add_progress(task, group_id="gone", group_status="failed", group_done=True)
    store.refresh_counts(task)
    groups = store.get_task(task).metrics["groups"]
    assert (groups["1"]["posts"], groups["1"]["comments"]) == (1, 0)
    assert (groups["2"]["posts"], groups["2"]["comments"]) == (0, 0)
    assert (groups["gone"]["posts"], groups["gone"]["comments"]) == (0, 0)
    assert groups["gone"]["status"] == "failed"


def test_list_tasks_newest_first(store):
    ids = [store.create_task([i]) for i in range(1, 5)]
    assert [t.id for t in store.list_tasks()] == ids[::-1]
    assert [t.id for t in store.list_tasks(limit=2)] == ids[:1:-1]
