"""The task page in a real browser: Debian's Chromium (``make browser``) driven by Playwright,
against a real scrapyd crawling the rate-limited emulator. The page must load without a
console error, show the running task's bar moving, and end with the database's counts.
Screenshots go to ``test-artifacts/`` (git-ignored)."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.crawl import TOKEN
from tests.scrapyd import REPO, Scrapyd
from vkscraper.store import open_store
from vkscraper.testing.fakevk import FakeVk, expected_rows, generate_dataset
from vkscraper.testing.pg import temporary_database

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def open_dataset() -> dict:
    data = generate_dataset(seed=11, groups=2, posts_per_group=10, min_comments=80,
                            max_comments=160, max_replies=5)  # fmt: skip
    for group in data["groups"]:
        for post in group["posts"]:
            post["comments_closed"] = False
    return data


def drive(base: str, task_id: int) -> dict:
    """Open the task's page and read it until the task ends (what a user sees)."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(
            viewport={"width": 1280, "height": 900},
            http_credentials={"username": "ops", "password": "pw"},
        )
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
        offsite: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(base) else offsite.append(r.url))

        page.goto(f"{base}/tasks/{task_id}")
        bar = page.locator(f"progress[data-task='{task_id}']")
        seen: list[float] = []
        deadline = time.monotonic() + 150
        shot_mid = False
        while time.monotonic() < deadline:
            # The page refreshes itself: no reload here, only reading what it shows.
            seen.append(float(bar.get_attribute("value") or 0))
            if not shot_mid and 20 < seen[-1] < 80:
                page.screenshot(path=str(ARTIFACTS / "task-page-running.png"), full_page=True)
                shot_mid = True
            if page.locator(".badge.completed, .badge.failed").count():
                # The refresh may have landed between the two reads: the bar as it ends.
                seen.append(float(bar.get_attribute("value") or 0))
                break
            time.sleep(0.4)
        badge = page.locator("h1 .badge").inner_text()
        page.screenshot(path=str(ARTIFACTS / "task-page-completed.png"), full_page=True)
        comments_shown = page.locator("[data-figure='Comments stored']").inner_text()
        posts_shown = page.locator("[data-figure='Posts stored']").inner_text()
        group_rows = {
            row.get_attribute("data-group"): row.locator("td.num").nth(1).inner_text()
            for row in page.locator("tr[data-group]").all()
        }
        page.goto(f"{base}/tasks")
        page.screenshot(path=str(ARTIFACTS / "task-list.png"), full_page=True)
        listed = page.locator(f"a[href='/tasks/{task_id}']").count()
        browser.close()
    return {
        "badge": badge, "seen": seen, "problems": problems, "offsite": offsite,
        "comments": comments_shown, "posts": posts_shown, "groups": group_rows,
        "listed": listed,
    }  # fmt: skip


@pytest.mark.rate
def test_the_task_page_follows_a_running_task_to_the_database_counts(tmp_path, pg_admin_url):
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make browser`"
    ARTIFACTS.mkdir(exist_ok=True)
    data = open_dataset()
    posts_expected, comments_expected = expected_rows(data, nul_replacement="")
    with (
        temporary_database(pg_admin_url, "vkpage") as url,
        FakeVk(data, tokens=[TOKEN], rate_limit=3) as vk,
        Scrapyd(tmp_path, database_url=url, token=TOKEN, auth=("ops", "pw")) as server,
    ):
        groups = ",".join(str(g["id"]) for g in data["groups"][:2])
        # One call per execute: as slow as plain calls, so the page sees the task running.
        settings = [("setting", f"VK_API_URL={vk.url}"), ("setting", "VK_EXECUTE_CALLS=1")]
        status, answer = server.call("POST", "/collect.json", data=[("groups", groups), *settings])
        assert status == 200, answer
        task_id = answer["task_id"]

        # Playwright's sync API refuses a thread with an asyncio loop (pytest-twisted's).
        with ThreadPoolExecutor(1) as pool:
            shown = pool.submit(drive, server.url, task_id).result(timeout=200)
        with open_store(url) as store:
            task = store.get_task(task_id)
            rows = store.task_results(task_id, "comments", limit=100_000)

    seen = shown["seen"]
    assert shown["badge"] == "completed", seen
    assert not shown["problems"], shown["problems"]
    assert not shown["offsite"], shown["offsite"]
    moving = sorted({v for v in seen if 0 < v < 100})
    assert len(moving) >= 3, f"the bar should move while the task runs: {seen}"
    assert seen == sorted(seen), f"the bar never goes back: {seen}"
    assert seen[-1] == 100.0
    assert task is not None and task.status == "completed"
    n = len(rows)
    assert n == len(comments_expected)
    assert shown["comments"].replace("\u202f", "") == f"{n} / {n}"
    assert shown["posts"] == f"{len(posts_expected)} / {len(posts_expected)}"
    per_group: dict[str, int] = {}
    for r in rows:
        per_group[str(-r["owner_id"])] = per_group.get(str(-r["owner_id"]), 0) + 1
    assert {g: text.replace("\u202f", "") for g, text in shown["groups"].items()} == {
        g: f"{c}/{c}" for g, c in per_group.items()
    }
    assert shown["listed"] == 1
