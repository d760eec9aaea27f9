"""The schedules page in a real browser (Debian's Chromium driven by Playwright, as
``test_task_page.py``) against a real scrapyd: its empty state, the list (what, how often,
next run, last task and its status, skips), a schedule's runs, and Pause / Resume clicked
through the page's own POSTs. Screenshots go to ``test-artifacts/`` (git-ignored), at 1280
and 390 px."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest
from playwright.sync_api import sync_playwright

from testkit.pg import temporary_database
from tests.helpers.crawl import TOKEN
from tests.helpers.scrapyd import REPO, Scrapyd
from vkscraper.store import open_store

pytestmark = pytest.mark.integration

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SIZES = {"1280": {"width": 1280, "height": 900}, "390": {"width": 390, "height": 844}}
NAME = "<b>nightly</b> 🌙 & more"  # shown as text, never as markup


def add(server: Scrapyd, body: dict) -> int:
    status, answer = server.call("POST", "/api/schedules", json_body=body)
    assert status == 200, answer
    return int(answer["schedule"]["scheduleId"])


def paused(server: Scrapyd, schedule_id: int) -> bool:
    status, answer = server.call("GET", f"/api/schedules/{schedule_id}")
    assert status == 200, answer
    return bool(answer["schedule"]["paused"])


def overflow(page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def row_text(page, schedule_id: int) -> list[str]:
    return [c.inner_text() for c in page.locator(f"tr[data-schedule='{schedule_id}'] td").all()]


def visit(server: Scrapyd, add_schedules) -> dict:
    base = server.url
    seen: dict = {"problems": [], "offsite": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        pages = {}
        for size, viewport in SIZES.items():
            context = browser.new_context(
                viewport=viewport, http_credentials={"username": "ops", "password": "pw"}
            )
            page = context.new_page()
            page.on(
                "console",
                lambda m: seen["problems"].append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: seen["problems"].append(str(e)))
            page.on(
                "request",
                lambda r: None if r.url.startswith(base) else seen["offsite"].append(r.url),
            )
            pages[size] = page

        desk = pages["1280"]
        desk.goto(f"{base}/tasks")  # the header links to the schedules
        desk.click("header a[href='/tasks/schedules']")
        seen["empty"] = desk.locator("main .empty").inner_text()
        desk.screenshot(path=str(ARTIFACTS / "schedules-empty-1280.png"), full_page=True)

        ids = add_schedules()
        seen["ids"] = ids
        for size, page in pages.items():
            page.goto(f"{base}/tasks/schedules")
            seen[f"list-{size}"] = {
                sid: row_text(page, sid) for name, sid in ids.items() if "task" not in name
            }
            seen[f"overflow-list-{size}"] = overflow(page)
            page.screenshot(path=str(ARTIFACTS / f"schedules-list-{size}.png"), full_page=True)
        seen["name_html"] = desk.locator(
            f"tr[data-schedule='{ids['nightly']}'] td"
        ).first.inner_html()

        # Pause the hourly one from the list; the page reloads once the POST is answered.
        hourly = ids["hourly"]
        with desk.expect_navigation():
            desk.click(f"button[data-schedule-pause='{hourly}']")
        seen["after_pause"] = row_text(desk, hourly)
        seen["paused_in_db"] = paused(server, hourly)
        desk.screenshot(path=str(ARTIFACTS / "schedules-paused-1280.png"), full_page=True)
        with desk.expect_navigation():
            desk.click(f"button[data-schedule-resume='{hourly}']")
        seen["after_resume"] = row_text(desk, hourly)
        seen["resumed_in_db"] = not paused(server, hourly)

        # One schedule's runs, from its link in the list.
        desk.click(f"tr[data-schedule='{hourly}'] a[href='/tasks/schedules/{hourly}']")
        desk.wait_for_url(f"{base}/tasks/schedules/{hourly}")
        seen["runs"] = [
            [c.inner_text() for c in row.locator("td").all()]
            for row in desk.locator("tr[data-run]").all()
        ]
        seen["facts"] = desk.locator("dl.facts").inner_text()
        for size, page in pages.items():
            page.goto(f"{base}/tasks/schedules/{hourly}")
            seen[f"overflow-detail-{size}"] = overflow(page)
            page.screenshot(path=str(ARTIFACTS / f"schedule-detail-{size}.png"), full_page=True)
        # Pause from the detail page too.
        with desk.expect_navigation():
            desk.click(f"button[data-schedule-pause='{hourly}']")
        seen["detail_after_pause"] = desk.locator("h1").inner_text()
        seen["problems"] = list(seen["problems"])  # the 404 below logs one of its own
        problems = seen["problems"]
        seen["problems"] = []
        status = desk.goto(f"{base}/tasks/schedules/999999")
        seen["missing"] = (status.status if status else None, desk.locator("main").inner_text())
        browser.close()
    seen["problems"] = problems
    return seen


def test_the_schedules_page_lists_them_and_pauses_and_resumes_one(tmp_path, pg_admin_url):
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make browser`"
    ARTIFACTS.mkdir(exist_ok=True)
    with (
        temporary_database(pg_admin_url, "vkschedpage") as url,
        Scrapyd(tmp_path, database_url=url, token=TOKEN, auth=("ops", "pw"),
                poll_interval=3600) as server,
    ):  # fmt: skip

        def add_schedules() -> dict[str, int]:
            ids = {
                "hourly": add(server, {"name": "hourly", "groups": [10, "apiclub", "club3",
                                       "durov", "https://vk.com/club5"], "every": "1h"}),
                "nightly": add(server, {"name": NAME, "cron": "30 2 * * *",
                                        "timezone": "Europe/Moscow"}),
                "odd": add(server, {"every": 90, "groups": [7]}),
            }  # fmt: skip
            with open_store(url) as store:
                first, last = store.create_task([10]), store.create_task([10])
                store.begin_run(first)
                store.finish_task(first)
            with psycopg2.connect(url) as conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO schedule_runs (schedule_id, due_at, outcome, task_id, message) "
                    "VALUES (%s, now() - interval '3 hours', 'started', %s, NULL), "
                    "(%s, now() - interval '2 hours', 'skipped', NULL, "
                    "'skipped, still running'), "
                    "(%s, now() - interval '1 hour', 'started', %s, NULL)",
                    (ids["hourly"], first, ids["hourly"], ids["hourly"], last),
                )
                cur.execute(
                    "UPDATE schedules SET last_task_id = %s WHERE id = %s", (last, ids["hourly"])
                )
                cur.execute(
                    "UPDATE schedules SET last_task_id = %s, skipped_in_a_row = 2 WHERE id = %s",
                    (first, ids["odd"]),
                )
            conn.close()
            return {**ids, "first_task": first, "last_task": last}

        with ThreadPoolExecutor(1) as pool:  # Playwright's sync API needs a thread of its own
            seen = pool.submit(visit, server, add_schedules).result(timeout=120)

    assert not seen["problems"], seen["problems"]
    assert not seen["offsite"], seen["offsite"]
    assert "No schedule yet" in seen["empty"] and "/api/schedules" in seen["empty"]
    ids = seen["ids"]
    for size in SIZES:
        rows = seen[f"list-{size}"]
        name, groups, often, _next, last, skips, state = rows[ids["hourly"]]
        assert name == f"#{ids['hourly']} hourly"
        assert groups == "10, apiclub, 3, durov … (5)"  # club3 is group 3
        assert (often, skips, state) == ("every 1 h", "0", "active Pause")
        assert last == f"#{ids['last_task']} created", last
        name, groups, often, *_ = rows[ids["nightly"]]
        assert name == f"#{ids['nightly']} {NAME}"  # the markup shown as text
        assert (groups, often) == ("the active groups", "30 2 * * * (Europe/Moscow)")
        assert rows[ids["nightly"]][4] == "none yet"
        odd = rows[ids["odd"]]
        assert (odd[2], odd[4], odd[5]) == ("every 90 s", f"#{ids['first_task']} completed", "2")
        assert seen[f"overflow-list-{size}"] <= 0 and seen[f"overflow-detail-{size}"] <= 0
    assert "&lt;b&gt;" in seen["name_html"] and "<b>" not in seen["name_html"]
    assert seen["after_pause"][6] == "paused Resume" and seen["paused_in_db"]
    assert seen["after_pause"][3] == "paused"  # no next run while paused
    assert seen["after_resume"][6] == "active Pause" and seen["resumed_in_db"]
    assert [(r[1], r[2]) for r in seen["runs"]] == [
        ("started", f"#{ids['last_task']}"),
        ("skipped", ""),
        ("started", f"#{ids['first_task']}"),
    ]  # newest first
    assert seen["runs"][1][3] == "skipped, still running"
    assert "every 1 h" in seen["facts"] and "durov" in seen["facts"]
    assert "paused" in seen["detail_after_pause"] and "Resume" in seen["detail_after_pause"]
    assert seen["missing"][0] == 404 and "schedule 999999 does not exist" in seen["missing"][1]
