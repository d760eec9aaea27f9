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

from fakevk import FakeVk, expected_rows, generate_dataset, wall_readable
from testkit.pg import temporary_database
from tests.helpers.crawl import TOKEN
from tests.helpers.scrapyd import REPO, Scrapyd
from vkscraper.store import open_store

pytestmark = pytest.mark.integration

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


# ---------------------------------------------------------------- the page's states

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
STATE_TIMEOUT = 60


def states_dataset() -> dict:
    """Two readable walls and one closed one (a crawl of all three fails with partial data);
    the generator gives every community an emoji in its name."""
    return generate_dataset(seed=5, groups=2, posts_per_group=4, max_comments=8, max_replies=3,
                            closed_groups=1, closed_comments=False, author_groups=0)  # fmt: skip


def read_state(page) -> dict:
    """What a user sees of a task page, and whether it overflows sideways."""
    return {
        "badge": page.locator("h1 .badge").inner_text(),
        "cancel": page.locator("button[data-cancel]").count(),
        "resume": page.locator("button[data-resume]").count(),
        "pct": page.locator(".overall .pct").inner_text(),
        "bar": float(page.locator("progress.big").get_attribute("value") or 0),
        "bar_class": page.locator("progress.big").get_attribute("class") or "",
        "groups": [c.inner_text() for c in page.locator("tr[data-group] td:nth-child(2)").all()],
        "overflow": page.evaluate(
            "document.documentElement.scrollWidth - window.innerWidth"
        ),  # fmt: skip
        # The percentage sits on the bar's line (not wrapped under it).
        "pct_beside": page.evaluate(
            """() => { const b = document.querySelector('progress.big').getBoundingClientRect();
                       const pct = document.querySelector('.overall .pct');
                       const p = pct.getBoundingClientRect();
                       const line = parseFloat(getComputedStyle(pct).lineHeight);
                       return p.left >= b.right && p.top < b.bottom && p.bottom > b.top
                              && p.height < 1.5 * line; }"""
        ),
        # Every figure card on a row that is full (no lone card on the last row).
        "figure_rows": page.evaluate(
            """() => { const rows = {};
                       for (const f of document.querySelectorAll('.figure')) {
                         const y = Math.round(f.getBoundingClientRect().top);
                         rows[y] = (rows[y] || 0) + 1; }
                       return Object.values(rows); }"""
        ),
    }


def shoot(pages: dict, name: str, base: str, task_id: int) -> dict:
    """Load the task on the desktop and the phone page; screenshot both; what each shows."""
    out = {}
    for size, page in pages.items():
        page.goto(f"{base}/tasks/{task_id}")
        out[size] = read_state(page)
        page.screenshot(path=str(ARTIFACTS / f"state-{name}-{size}.png"), full_page=True)
    return out


def wait_badge(page, texts: tuple[str, ...], timeout: float = STATE_TIMEOUT) -> str:
    """The page refreshes itself while live: wait until its badge reads one of ``texts``."""
    deadline = time.monotonic() + timeout
    while True:
        badge = page.locator("h1 .badge").inner_text()
        if badge in texts or time.monotonic() > deadline:
            return badge
        time.sleep(0.1)


def visit_states(server: Scrapyd, tasks: dict[str, int]) -> dict:
    base = server.url
    seen: dict = {"problems": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        pages = {}
        for size, viewport in (("1280", DESKTOP), ("390", PHONE)):
            context = browser.new_context(
                viewport=viewport, http_credentials={"username": "ops", "password": "pw"}
            )
            page = context.new_page()
            page.on("pageerror", lambda e: seen["problems"].append(str(e)))
            pages[size] = page
        for name in ("completed", "failed-partial", "failed-early"):
            seen[name] = shoot(pages, name, base, tasks[name])
        for size, page in pages.items():  # the list: its wide table scrolls in its box
            page.goto(f"{base}/tasks")
            page.screenshot(path=str(ARTIFACTS / f"state-list-{size}.png"), full_page=True)
            seen[f"list-{size}"] = page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth"
            )

        live, desk, phone = tasks["live"], pages["1280"], pages["390"]
        for page in pages.values():
            page.goto(f"{base}/tasks/{live}")
        # Running, with a group begun (its wall answered, slowly).
        deadline = time.monotonic() + STATE_TIMEOUT
        while time.monotonic() < deadline:
            groups = [c.inner_text() for c in desk.locator("tr[data-group] td:nth-child(2)").all()]
            if "in progress" in groups and desk.locator("h1 .badge").inner_text() == "running":
                break
            time.sleep(0.2)
        seen["running"] = shoot(pages, "running", base, live)

        # Cancel asks first; dismissed, nothing happens.
        dialogs: list[str] = []

        def answer(dialog, accept: bool) -> None:
            dialogs.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        desk.once("dialog", lambda d: answer(d, False))
        desk.click("button[data-cancel]")
        time.sleep(0.5)
        seen["after_dismiss"] = desk.locator("h1 .badge").inner_text()
        desk.once("dialog", lambda d: answer(d, True))
        with desk.expect_navigation():
            desk.click("button[data-cancel]")  # the page reloads once the cancel is sent
        seen["dialogs"] = dialogs
        seen["stopping"] = {"1280": read_state(desk)}
        desk.screenshot(path=str(ARTIFACTS / "state-stopping-1280.png"), full_page=True)
        phone.goto(f"{base}/tasks/{live}")
        seen["stopping"]["390"] = read_state(phone)
        phone.screenshot(path=str(ARTIFACTS / "state-stopping-390.png"), full_page=True)

        seen["stopped_badge"] = wait_badge(desk, ("stopped",))
        seen["stopped"] = shoot(pages, "stopped", base, live)
        with desk.expect_navigation():
            desk.click("button[data-resume]")
        seen["resumed_badge"] = wait_badge(desk, ("queued", "running"), timeout=10)
        browser.close()
    return seen


def test_the_task_page_in_each_state(tmp_path, pg_admin_url):
    """Running, stopping, stopped, failed early, failed with partial data and completed, at
    1280 and 390 px: the badge follows the job, Cancel (confirmed) only while it can act,
    Resume when resumable, groups never claim work that nothing does, a failed task's bar
    shows how far it got, and nothing overflows the phone's width."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make browser`"
    ARTIFACTS.mkdir(exist_ok=True)
    data = states_dataset()
    readable = [g["id"] for g in data["groups"] if wall_readable(g)]
    closed = [g["id"] for g in data["groups"] if not wall_readable(g)]
    fast = [("setting", "VK_REQUESTS_PER_SECOND=50")]
    with (
        temporary_database(pg_admin_url, "vkstates") as url,
        FakeVk(data, tokens=[TOKEN]) as vk,
        # Every request answered after 3 s: the task stays running, and a cancelled crawl
        # stays stopping while it waits for the answers in flight (4 at a time: one sent
        # every 0.75 s, so the newest has over 2 s to go when the page cancels).
        FakeVk(data, tokens=[TOKEN], faults={"slow": 1.0}, slow_seconds=3,
               max_faults_per_request=1) as slow_vk,
        Scrapyd(tmp_path, database_url=url, token=TOKEN, auth=("ops", "pw")) as server,
    ):  # fmt: skip

        def collect(groups: list[int], api: str, settings=()) -> int:
            body = [("groups", ",".join(map(str, groups))), ("setting", f"VK_API_URL={api}")]
            status, answer = server.call("POST", "/collect.json", data=[*body, *settings])
            assert status == 200, answer
            return int(answer["task_id"])

        tasks = {"completed": collect(readable, vk.url, fast)}
        assert server.wait_task(tasks["completed"])["status"] == "completed"
        tasks["failed-partial"] = collect(readable + closed, vk.url, fast)
        assert server.wait_task(tasks["failed-partial"])["status"] == "failed"
        with open_store(url) as store:  # failed before crawling anything
            early = store.create_task(readable)
            store.begin_run(early)
            store.add_error(early, "no usable token: VK refused every token (error 5)")
            assert store.finish_task(early) == "failed"
        tasks["failed-early"] = early
        tasks["live"] = collect(readable, slow_vk.url, [("setting", "VK_EXECUTE_CALLS=1")])

        with ThreadPoolExecutor(1) as pool:
            seen = pool.submit(visit_states, server, tasks).result(timeout=240)
        # The resumed run is stopped before its database goes; on a loaded machine it may
        # have finished its few remaining requests already (completed).
        server.call("POST", "/cancel-task.json", data={"task_id": tasks["live"]})
        server.wait_task(tasks["live"], until=("in_progress", "completed"))

    assert not seen["problems"], seen["problems"]
    assert seen["list-1280"] <= 0 and seen["list-390"] <= 0
    for name in ("completed", "failed-partial", "failed-early", "running", "stopping", "stopped"):
        for size, state in seen[name].items():
            where = f"{name} at {size} px: {state}"
            assert state["overflow"] <= 0, where
            assert state["pct_beside"], where
            assert len(set(state["figure_rows"])) == 1, where  # full rows only
    for size in ("1280", "390"):
        done = seen["completed"][size]
        assert (done["badge"], done["pct"], done["cancel"], done["resume"]) == (
            "completed", "100%", 0, 0,
        )  # fmt: skip
        assert done["groups"] == ["done", "done"]

        early = seen["failed-early"][size]
        assert early["badge"] == "failed" and early["bar"] == 0 and early["pct"] == "0%", early
        assert early["groups"] == ["not started", "not started"]
        assert early["cancel"] == early["resume"] == 0

        partial = seen["failed-partial"][size]
        assert partial["badge"] == "failed" and "failed" in partial["bar_class"]
        assert partial["groups"] == ["done", "done", "failed"]

        running = seen["running"][size]
        assert running["badge"] == "running" and running["cancel"] == 1, running
        assert "in progress" in running["groups"] and running["bar"] < 100

        stopping = seen["stopping"][size]
        assert stopping["badge"] == "stopping", stopping
        assert stopping["cancel"] == stopping["resume"] == 0, stopping

        stopped = seen["stopped"][size]
        assert stopped["badge"] == "stopped" and stopped["resume"] == 1, stopped
        assert stopped["cancel"] == 0
        assert not {"in progress", "waiting"} & set(stopped["groups"]), stopped
        assert "stopped" in stopped["groups"], stopped
    assert seen["after_dismiss"] == "running"  # a dismissed confirmation cancels nothing
    assert len(seen["dialogs"]) == 2 and "Cancel task" in seen["dialogs"][0]
    assert seen["stopped_badge"] == "stopped"
    assert seen["resumed_badge"] in ("queued", "running")


# ---------------------------------------------------------------- progress across a resume


def test_a_resumed_tasks_progress_never_goes_back(tmp_path, pg_admin_url):
    """A crawl stopped mid-way (Cancel: SIGINT, as Ctrl-C) and resumed: the progress read
    every 0.1 s never drops — the resumed groups keep their counts until their new wall
    answers replace the expected ones — and no poll shows comments stored against 0 expected."""
    data = open_dataset()
    with (
        temporary_database(pg_admin_url, "vkresume") as url,
        FakeVk(data, tokens=[TOKEN]) as vk,
        Scrapyd(tmp_path, database_url=url, token=TOKEN) as server,
    ):
        groups = ",".join(str(g["id"]) for g in data["groups"] if wall_readable(g))
        # Twice VK's pace (the emulator enforces none): the resumed run still asks for each
        # group's wall again many polls after it starts.
        settings = [("setting", f"VK_API_URL={vk.url}"), ("setting", "VK_EXECUTE_CALLS=1"),
                    ("setting", "VK_REQUESTS_PER_SECOND=6")]  # fmt: skip
        status, answer = server.call("POST", "/collect.json", data=[("groups", groups), *settings])
        assert status == 200, answer
        task_id = answer["task_id"]
        samples: list[tuple[str, float, list[int], str]] = []

        def poll(run: str) -> dict:
            status, answer = server.call("GET", f"/task.json?task_id={task_id}")
            assert status == 200, answer
            task = answer["task"]
            progress = task["progress"]
            samples.append((run, progress["percent"], progress["comments"], task["status"]))
            return task

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # well into the comments
            progress = poll("first")["progress"]
            if progress["percent"] >= 20 and progress["comments"][0] > 0:
                break
            time.sleep(0.1)
        status, answer = server.call("POST", "/cancel-task.json", data={"task_id": task_id})
        assert status == 200 and answer["prevstate"] == "running", answer
        while poll("first")["job"]["state"] in ("pending", "running", "stopping"):
            time.sleep(0.1)
        assert samples[-1][3] == "in_progress", samples[-1]  # stopped, resumable

        status, answer = server.call("POST", "/collect.json", data={"task_id": task_id})
        assert status == 200, answer
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            task = poll("resumed")
            if task["status"] in ("completed", "failed") and task["job"]["state"] == "finished":
                break
            time.sleep(0.1)

    before = [p for run, p, _, _ in samples if run == "first"]
    after = [p for run, p, _, _ in samples if run == "resumed"]
    assert 20 <= before[-1] < 100, before
    assert after[0] >= before[-1], (before[-5:], after[:10])
    percents = before + after
    drops = [(a, b) for a, b in zip(percents, percents[1:], strict=False) if b < a]
    assert not drops, f"progress went back: {drops}; resumed run: {after[:20]}"
    assert not [s for s in samples if s[2][0] > 0 and s[2][1] == 0], samples
    assert samples[-1][3] == "completed" and samples[-1][1] == 100.0
    assert samples[-1][2][0] == samples[-1][2][1]
