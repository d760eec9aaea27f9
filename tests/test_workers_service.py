"""The HTTP service in distributed mode: scrapyd (a real process, as `make serve`) with
VK_DISTRIBUTED=1 puts collected tasks into the workers' Redis feed; real workers crawl them;
the task API follows them; cancel works for a queued and for a running task."""

from __future__ import annotations

import pytest

from fakevk import FakeVk
from tests.helpers.crawl import assert_stored_equals, task_of
from tests.helpers.scrapyd import Scrapyd
from tests.helpers.workers import REDIS_URL, A, dataset, refs
from vkscraper.distributed import workqueue

pytestmark = pytest.mark.integration


def test_collect_feeds_the_workers_and_cancel_ends_a_task_for_all(
    workers,
    server,
    pg_url,
    tmp_path,
):
    data = dataset(seed=25, groups=4)
    svc = Scrapyd(tmp_path / "scrapyd", database_url=pg_url, token=A)
    svc.env.update(VK_DISTRIBUTED="1", REDIS_URL=REDIS_URL)
    # At VK's pace: each worker still holds unfinished groups when the task is cancelled (at
    # twice the pace one could finish its groups first and be idle, which the test is not about).
    with FakeVk(data, tokens=[A], rate_limit=3) as vk, svc:
        # No worker yet: the task waits in the feed; a queued task is cancelled out of it.
        status, answer = svc.call("POST", "/collect.json", data=[("groups", refs(data))])
        assert status == 200, answer
        first = answer["task_id"]
        assert answer["jobid"] == f"workers:{first}"
        assert server.lrange(workqueue.FEED, 0, -1) == [str(first).encode()]
        status, answer = svc.call("GET", f"/task.json?task_id={first}")
        assert answer["task"]["job"] == {"jobid": f"workers:{first}", "state": "pending"}
        status, answer = svc.call("POST", "/cancel-task.json", data=[("task_id", str(first))])
        assert status == 200 and answer["prevstate"] == "pending", answer
        assert server.llen(workqueue.FEED) == 0
        # Settings are the workers' own in this mode.
        status, answer = svc.call(
            "POST", "/collect.json", data=[("groups", "club1"), ("setting", "VK_EXECUTE=False")]
        )
        assert status == 400 and "distributed mode" in answer["message"], answer

        # Collected again and crawled by two workers; cancelled while they run it.
        w = workers([A], vk.url)
        w.start(2, "-s", f"VK_API_URL={vk.url}", "-s", "VK_EXECUTE=False")
        w.wait_started()
        status, answer = svc.call("POST", "/collect.json", data=[("task_id", str(first))])
        assert status == 200, answer
        w.wait_until(lambda: all("took group" in w.log(i) for i in (0, 1)), 30)  # both crawl it
        status, answer = svc.call("GET", f"/task.json?task_id={first}")
        assert answer["task"]["job"]["state"] == "running"
        status, answer = svc.call("POST", "/cancel-task.json", data=[("task_id", str(first))])
        assert status == 200 and answer["prevstate"] == "running", answer
        task = svc.wait_task(first, until=("in_progress",), timeout=30)
        assert task["resumable"] is True
        # Each worker's crawl of it closes within moments, its groups put back.
        w.wait_until(lambda: w.logs().count("this worker's part is over (cancelled)") == 2, 15)
        assert task_of(pg_url, first).status == "in_progress"

        # Collected once more: it resumes and completes with every row.
        status, answer = svc.call("POST", "/collect.json", data=[("task_id", str(first))])
        assert status == 200, answer
        task = svc.wait_task(first, timeout=120)
    assert task["status"] == "completed", task
    assert_stored_equals(pg_url, first, data, posts_per_group=10)
