"""The task page, mounted at ``/tasks`` (``scrapyd.conf``: ``tasks = …page.TasksPage``)::

    /tasks                         the newest tasks: status, a progress bar, counts, timing
    /tasks/N                       one task: figures, a bar per group, errors, downloads
    /tasks/N/posts.jsonl           the task's rows, streamed (also comments.jsonl, posts.csv,
                                   comments.csv: the formats of `python -m vkscraper export`)
    /tasks/schedules               the schedules: what, how often, next run, last task,
                                   pause / resume
    /tasks/schedules/N             one schedule and its newest runs
    /tasks/static/tasks.{css,js}   the page's only assets

Server-rendered HTML; ``tasks.js`` re-fetches the page's ``<main>`` (``?partial=1``) every 2 s
while a task on it is queued or running. Every value is HTML-escaped, and the Content Security
Policy allows nothing but this origin (no inline script or style, nothing from the internet).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterable
from importlib import resources as package_files
from typing import Any

from twisted.internet import reactor, threads
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from vkscraper.schedules.spec import describe_every
from vkscraper.service.core import ACTIVE_STATES, RequestError, TaskService
from vkscraper.service.schedules import ScheduleService
from vkscraper.store import export, open_store

log = Logger()

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOWNLOADS = {
    "posts.jsonl": ("jsonl", "posts", "application/x-ndjson; charset=utf-8"),
    "comments.jsonl": ("jsonl", "comments", "application/x-ndjson; charset=utf-8"),
    "posts.csv": ("csv", "posts", "text/csv; charset=utf-8"),
    "comments.csv": ("csv", "comments", "text/csv; charset=utf-8"),
}
STATIC = {"tasks.css": "text/css; charset=utf-8", "tasks.js": "text/javascript; charset=utf-8"}
LIST_SIZE = 30
CHUNK = 64 * 1024
MAX_DOWNLOADS = 4  # at once: each holds a thread of the reactor's pool while it streams
STALL_SECONDS = 120.0  # a client that reads nothing for this long is cut off


# How the page words the job states that are not scrapyd's own (see core.job_state).
JOB_STATE_TEXT = {"unknown": "not known to this scrapyd", "none": "never queued"}


def origin(txrequest: Request) -> str:
    """The service's URL as the browser reached it (the guard admitted its Host), for the
    curl hints: the port is whichever scrapyd listens on (SCRAPYD_HTTP_PORT, http_port)."""
    scheme = "https" if txrequest.isSecure() else "http"
    host = txrequest.getHeader("host") or f"127.0.0.1:{txrequest.getHost().port}"
    return f"{scheme}://{host}"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(value: int | float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}".replace(",", "\u202f")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def bar(done: int, expected: int, css: str = "") -> str:
    value = 100 if expected <= 0 and done > 0 else (0 if expected <= 0 else min(done, expected))
    top = max(expected, 1) if expected > 0 else 100
    pct = 100.0 * value / top
    return (
        f'<progress class="{css}" value="{value}" max="{top}" title="{num(done)} of '
        f'{num(expected)}">{pct:.0f}%</progress>'
    )


def shown_status(task: dict[str, Any]) -> str:
    """What the task is doing: its job's state while it has one queued, running or stopping
    (a cancelled crawl still writes what it has), else its status — ``stopped`` when it did
    not finish and its job is over (cancelled, killed)."""
    state = task["job"]["state"]
    if task["status"] in ("completed", "failed"):
        return str(task["status"])
    if state in ("running", "stopping"):
        return str(state)
    if state == "pending":
        return "queued"
    return "stopped" if task["job"]["jobid"] else str(task["status"])


def badge(task: dict[str, Any]) -> str:
    status = shown_status(task)
    return f'<span class="badge {esc(status)}">{esc(status.replace("_", " "))}</span>'


def bar_class(task: dict[str, Any]) -> str:
    status = shown_status(task)
    return {"completed": "done", "failed": "failed", "stopped": "stopped"}.get(status, "")


def overall_bar(task: dict[str, Any], css: str = "") -> str:
    pct = task["progress"]["percent"]
    return (
        f'<span class="overall {css}"><progress class="{css} {bar_class(task)}" '
        f'data-task="{task["task_id"]}" value="{pct}" max="100">{pct}%</progress>'
        f'<span class="pct">{pct:.0f}%</span></span>'
    )


def is_live(tasks: Iterable[dict[str, Any]]) -> bool:
    return any(t["job"]["state"] in ACTIVE_STATES for t in tasks)


class TasksPage(resource.Resource):
    isLeaf = True

    def __init__(self, root: Any) -> None:
        super().__init__()
        self.root = root
        self.downloads = 0

    def render(self, txrequest: Request) -> bytes | int:
        if txrequest.method not in (b"GET", b"HEAD"):
            txrequest.setResponseCode(405)
            txrequest.setHeader("Allow", "GET, HEAD")
            return self._page(txrequest, "Error", '<div class="card">Use GET.</div>', False)
        return super().render(txrequest)

    def render_GET(self, txrequest: Request) -> bytes | int:
        path = [p.decode("utf-8", "replace") for p in txrequest.postpath or [] if p]
        if len(path) == 2 and path[0] == "static" and path[1] in STATIC:
            return self._static(txrequest, path[1])
        service = TaskService.of(self.root)
        gone: list[bool] = []
        txrequest.notifyFinish().addErrback(lambda _: gone.append(True))

        def respond(result: tuple[Any, ...]) -> None:
            if gone:
                return  # the client left meanwhile
            if result[0] == "download":
                if self.downloads < MAX_DOWNLOADS:
                    self._download(txrequest, *result[1:])
                    return
                busy = f"{MAX_DOWNLOADS} downloads are running; try again soon."
                result = (503, "Error", f'<div class="card">{busy}</div>', False)
            code, title, body, live = result
            txrequest.setResponseCode(code)
            txrequest.write(self._page(txrequest, title, body, live))
            txrequest.finish()

        # The database is read in a pool thread: a slow one must not stall scrapyd.
        threads.deferToThread(
            self._build, service, path, txrequest.uri, origin(txrequest)
        ).addCallback(respond)
        return NOT_DONE_YET

    def _build(
        self, service: TaskService, path: list[str], uri: bytes, base: str
    ) -> tuple[Any, ...]:
        """What to answer: ``(code, title, body, live)`` of a page, or a download to start."""
        try:
            match path:
                case []:
                    return (200, "Tasks", *self._list(service, base))
                case ["schedules"]:
                    return (200, "Schedules", *schedule_list(ScheduleService(service), base))
                case ["schedules", schedule_id]:
                    view = ScheduleService(service).schedule(schedule_id)
                    title = f"Schedule {view['scheduleId']}"
                    return (200, title, *schedule_detail(view))
                case [task_id]:
                    view = service.task(task_id)
                    return (200, f"Task {view['task_id']}", *self._detail(view, base))
                case [task_id, name] if name in DOWNLOADS:
                    service.task(task_id)  # 404 / 400 / 503 before any byte is sent
                    return ("download", int(task_id), name)
            raise RequestError(404, f"no such page: /tasks/{'/'.join(path)}")
        except RequestError as exc:
            return (exc.status, "Error", f'<div class="card">{esc(exc.message)}</div>', False)
        except Exception:  # noqa: BLE001  (logged with its traceback, never shown)
            log.failure("task page failed on {uri}", uri=uri)
            message = '<div class="card">Internal error (see the scrapyd log).</div>'
            return (500, "Error", message, False)

    # ------------------------------------------------------------------ pages
    def _page(self, txrequest: Request, title: str, body: str, live: bool) -> bytes:
        main = f'<main data-live="{int(live)}">{body}</main>'
        if txrequest.args and txrequest.args.get(b"partial") == [b"1"]:
            doc = main
        else:
            doc = (
                "<!doctype html>\n"
                '<html lang="en"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{esc(title)} · vkscraper</title>"
                '<link rel="icon" href="data:,">'
                '<link rel="stylesheet" href="/tasks/static/tasks.css">'
                '<script src="/tasks/static/tasks.js" defer></script></head><body>'
                '<header><a href="/tasks">vkscraper tasks</a>'
                '<a href="/tasks/schedules">schedules</a>'
                '<span class="sub">VK posts and comments → database, run by scrapyd</span>'
                f"</header>{main}</body></html>"
            )
        body_bytes = doc.encode()
        txrequest.setHeader("Content-Type", "text/html; charset=utf-8")
        txrequest.setHeader("Content-Security-Policy", CSP)
        txrequest.setHeader("X-Content-Type-Options", "nosniff")
        txrequest.setHeader("Cache-Control", "no-store")
        txrequest.setHeader("Content-Length", str(len(body_bytes)))
        return body_bytes

    def _list(self, service: TaskService, base: str) -> tuple[str, bool]:
        tasks = service.tasks(LIST_SIZE)
        if not tasks:
            return (
                "<h1>Tasks</h1><div class='card empty'>No task yet. Start one with "
                f"<code>curl -d groups=… {esc(base)}/collect.json</code>.</div>",
                False,
            )
        rows = []
        for t in tasks:
            c, tm = t["counts"], t["timing"]
            groups = ", ".join(str(g) for g in t["groups"][:4]) + (
                " …" if len(t["groups"]) > 4 else ""
            )
            rows.append(
                f'<tr><td><a href="/tasks/{t["task_id"]}">#{t["task_id"]}</a></td>'
                f"<td>{badge(t)}</td><td>{overall_bar(t)}</td>"
                f'<td class="num">{num(c["groups_done"])}/{num(c["groups_total"])}</td>'
                f'<td class="num">{num(c["posts"])}/{num(c["posts_expected"])}</td>'
                f'<td class="num">{num(c["comments"])}/{num(c["comments_expected"])}</td>'
                f'<td class="num">{num(c["errors"])}</td>'
                f'<td class="num">{duration(tm["elapsed_s"])}</td>'
                f'<td class="num">{num(tm["requests_per_s"], 2)}</td>'
                f'<td class="muted">{esc(t["created_at"])}</td>'
                f'<td class="wrap muted">{esc(groups)}</td></tr>'
            )
        live = is_live(tasks)
        note = '<span class="live" id="live-note">refreshing every 2 s</span>' if live else ""
        return (
            f'<h1>Tasks {note}</h1><div class="scroll"><table><thead><tr><th>Task</th>'
            "<th>Status</th>"
            '<th>Progress</th><th class="num">Groups</th><th class="num">Posts</th>'
            '<th class="num">Comments</th><th class="num">Errors</th><th class="num">Time</th>'
            '<th class="num">Req/s</th><th>Created (UTC)</th><th>Groups</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>",
            live,
        )

    def _detail(self, t: dict[str, Any], base: str) -> tuple[str, bool]:
        c, tm, job = t["counts"], t["timing"], t["job"]
        live = job["state"] in ACTIVE_STATES
        tid = t["task_id"]
        figures = [
            ("Groups done", f"{num(c['groups_done'])} / {num(c['groups_total'])}"),
            ("Posts stored", f"{num(c['posts'])} / {num(c['posts_expected'])}"),
            ("Comments stored", f"{num(c['comments'])} / {num(c['comments_expected'])}"),
            ("Errors", num(c["errors"])),
            ("Elapsed", duration(tm["elapsed_s"])),
            ("VK requests", num(c["requests"])),
            ("Avg requests / s", num(tm["requests_per_s"], 2)),
            ("Comments / s", num(tm["comments_per_s"], 1)),
        ]
        fig_html = "".join(
            f'<div class="figure"><div class="v" data-figure="{esc(k)}">{v}</div>'
            f'<div class="k">{esc(k)}</div></div>'
            for k, v in figures
        )
        groups = []
        for g in t["groups_detail"]:
            name = f' <span class="muted">{esc(g["name"])}</span>' if g["name"] else ""
            css = {"done": "done", "failed": "failed", "stopped": "stopped"}.get(g["status"], "")
            groups.append(
                f'<tr data-group="{esc(g["group"])}"><td>{esc(g["group"])}{name}</td>'
                f"<td>{esc(g['status'].replace('_', ' '))}</td>"
                f"<td>{bar(g['posts'], g['posts_expected'], css)}</td>"
                f'<td class="num">{num(g["posts"])}/{num(g["posts_expected"])}</td>'
                f"<td>{bar(g['comments'], g['comments_expected'], css)}</td>"
                f'<td class="num">{num(g["comments"])}/{num(g["comments_expected"])}</td>'
                f'<td class="num">{num(len(g["errors"]))}</td></tr>'
            )
        errors = t["metrics"].get("errors") or []
        error_html = (
            "<ul class='errors'>" + "".join(f"<li>{esc(e)}</li>" for e in errors) + "</ul>"
            if errors
            else '<p class="muted">None.</p>'
        )
        links = " ".join(
            f'<a href="/tasks/{tid}/{name}" download>{esc(name)}</a>' for name in DOWNLOADS
        )
        # Once stopping, a second cancel would only be refused (409): no button.
        buttons = ""
        if job["state"] in ("pending", "running"):
            buttons = f' <button class="cancel" data-cancel="{tid}">Cancel</button>'
        elif t["resumable"]:
            buttons = f' <button class="resume" data-resume="{tid}">Resume</button>'
        when = (
            f"created {esc(t['created_at'])} · started {esc(t['started_at'] or '–')} · "
            f"finished {esc(t['finished_at'] or '–')} · job {esc(job['jobid'] or '–')} "
            f"({esc(JOB_STATE_TEXT.get(job['state'], job['state']))})"
        )
        resume = (
            '<p class="muted">Stopped before the end: <b>Resume</b> crawls what is left (or '
            f"<code>curl -d task_id={tid} {esc(base)}/collect.json</code>).</p>"
            if shown_status(t) == "stopped"
            else ""
        )
        note = '<span class="live" id="live-note">refreshing every 2 s</span>' if live else ""
        return (
            f"<h1>Task #{tid} {badge(t)}{buttons} {note}</h1>"
            f'<p class="muted">{when}</p>{resume}'
            f"{overall_bar(t, 'big')}"
            f'<div class="figures">{fig_html}</div>'
            '<h2>Groups</h2><div class="scroll"><table><thead><tr><th>Group</th>'
            "<th>Status</th><th>Posts</th>"
            '<th class="num"></th><th>Comments</th><th class="num"></th>'
            '<th class="num">Errors</th></tr></thead>'
            f"<tbody>{''.join(groups)}</tbody></table></div>"
            f"<h2>Errors</h2><div class='card'>{error_html}</div>"
            f'<h2>Download</h2><div class="card downloads">{links}</div>',
            live,
        )

    def _static(self, txrequest: Request, name: str) -> bytes:
        data = package_files.files("vkscraper.service").joinpath("static", name).read_bytes()
        txrequest.setHeader("Content-Type", STATIC[name])
        txrequest.setHeader("X-Content-Type-Options", "nosniff")
        txrequest.setHeader("Cache-Control", "no-cache")
        return data

    # ------------------------------------------------------------------ downloads
    def _download(self, txrequest: Request, task_id: int, name: str) -> None:
        fmt, kind, content_type = DOWNLOADS[name]
        txrequest.setHeader("Content-Type", content_type)
        txrequest.setHeader("Content-Disposition", f'attachment; filename="task-{task_id}-{name}"')
        txrequest.setHeader("Cache-Control", "no-store")
        stream = _Stream(txrequest)
        txrequest.registerProducer(stream, True)
        self.downloads += 1

        def run() -> None:
            with open_store() as store:  # its own connection: the export runs in a thread
                export.export(store, task_id, fmt=fmt, kind=kind, out=stream)  # type: ignore[arg-type]
            stream.flush()

        def done(_: object) -> None:
            if not stream.stopped:  # else the client left: the request is gone already
                txrequest.unregisterProducer()
                txrequest.finish()

        def failed(failure: Any) -> None:
            if stream.stopped:
                return  # the client left, or stalled and was cut off
            log.failure("download {name} of task {task} failed", failure, name=name, task=task_id)
            txrequest.unregisterProducer()
            txrequest.loseConnection()  # no final chunk: the client sees it incomplete

        def release(result: object) -> object:
            self.downloads -= 1
            return result

        threads.deferToThread(run).addCallbacks(done, failed).addBoth(release)


class _Closed(Exception):
    """The client went away: stop exporting."""


@implementer(IPushProducer)
class _Stream:
    """A text sink for :func:`vkscraper.store.export.export` running in a thread: it sends UTF-8
    chunks through the reactor and waits while the client's socket is full (memory stays
    flat however big the task)."""

    def __init__(self, txrequest: Request) -> None:
        self._request = txrequest
        self._parts: list[str] = []
        self._size = 0
        self._resumed = threading.Event()
        self._resumed.set()
        self.stopped = False
        txrequest.notifyFinish().addErrback(lambda _: self.stopProducing())

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= CHUNK:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if not self._parts:
            return
        data = "".join(self._parts).encode()
        self._parts, self._size = [], 0
        waited = 0.0
        while not self._resumed.wait(1.0) and not self.stopped:
            waited += 1.0
            if waited >= STALL_SECONDS:  # the client reads nothing: free the thread
                self.stopped = True
                reactor.callFromThread(self._request.loseConnection)
        if self.stopped:
            raise _Closed
        threads.blockingCallFromThread(reactor, self._request.write, data)

    # IPushProducer, called in the reactor thread
    def pauseProducing(self) -> None:
        self._resumed.clear()

    def resumeProducing(self) -> None:
        self._resumed.set()

    def stopProducing(self) -> None:
        self.stopped = True
        self._resumed.set()


# ---------------------------------------------------------------------- schedules
RUN_TEXT = {"claimed": "starting", "started": "started", "skipped": "skipped", "failed": "failed"}


def how_often(schedule: dict[str, Any]) -> str:
    """``every 2 h`` (the largest unit that divides the interval), or the cron and its zone."""
    every = schedule["everySeconds"]
    if every is None:
        return f"<code>{esc(schedule['cron'])}</code> ({esc(schedule['timezone'])})"
    return describe_every(int(every))


def what(schedule: dict[str, Any], limit: int = 4) -> str:
    groups = schedule["groups"]
    if groups is None:
        return '<span class="muted">the active groups</span>'
    shown = ", ".join(str(g) for g in groups[:limit])
    return esc(shown + (f" … ({len(groups)})" if len(groups) > limit else ""))


def schedule_state(schedule: dict[str, Any]) -> str:
    state = "paused" if schedule["paused"] else "active"
    return f'<span class="badge {state}">{state}</span>'


def schedule_button(schedule: dict[str, Any]) -> str:
    sid = schedule["scheduleId"]
    if schedule["paused"]:
        return f'<button class="resume" data-schedule-resume="{sid}">Resume</button>'
    return f'<button class="pause" data-schedule-pause="{sid}">Pause</button>'


def task_link(task_id: int | None) -> str:
    return "" if task_id is None else f'<a href="/tasks/{task_id}">#{task_id}</a>'


def last_task(schedule: dict[str, Any]) -> str:
    last = schedule["lastTask"]
    if last is None:
        return '<span class="muted">none yet</span>'
    return f"{task_link(last['taskId'])} {badge(last)}"


def schedule_name(schedule: dict[str, Any]) -> str:
    sid = schedule["scheduleId"]
    name = f" {esc(schedule['name'])}" if schedule["name"] else ""
    return f'<a href="/tasks/schedules/{sid}">#{sid}</a>{name}'


def when(iso: str | None) -> str:
    """``2026-01-01 12:00:00`` of an API time (``…T…Z``): the headings say UTC."""
    return "–" if iso is None else esc(iso.replace("T", " ").removesuffix("Z"))


def next_run(schedule: dict[str, Any]) -> str:
    if schedule["paused"]:
        return '<span class="muted">paused</span>'
    return when(schedule["nextRunAt"])


def skipped(schedule: dict[str, Any]) -> str:
    n = schedule["skippedInARow"]
    return f'<span class="warn">{num(n)}</span>' if n else num(n)


def schedules_live(schedules: Iterable[dict[str, Any]]) -> bool:
    return is_live(s["lastTask"] for s in schedules if s["lastTask"] is not None)


def schedule_list(service: ScheduleService, base: str) -> tuple[str, bool]:
    schedules = service.schedules()
    if not schedules:
        example = '{"name": "hourly", "groups": ["apiclub"], "every": "1h"}'
        return (
            "<h1>Schedules</h1><div class='card empty'>No schedule yet. Add one with "
            f"<code>curl -H 'Content-Type: application/json' -d '{esc(example)}' "
            f"{esc(base)}/api/schedules</code> or <code>python -m vkscraper schedule add "
            "--groups apiclub --every 1h</code>."
            "</div>",
            False,
        )
    rows = [
        f'<tr data-schedule="{s["scheduleId"]}"><td class="wrap narrow">{schedule_name(s)}</td>'
        f'<td class="wrap narrow">{what(s)}</td><td>{how_often(s)}</td>'
        f'<td class="muted">{next_run(s)}</td><td>{last_task(s)}</td>'
        f'<td class="num">{skipped(s)}</td>'
        f"<td>{schedule_state(s)} {schedule_button(s)}</td></tr>"
        for s in schedules
    ]
    live = schedules_live(schedules)
    note = '<span class="live" id="live-note">refreshing every 2 s</span>' if live else ""
    return (
        f'<h1>Schedules {note}</h1><div class="scroll"><table><thead><tr><th>Schedule</th>'
        "<th>Collects</th><th>How often</th><th>Next run (UTC)</th><th>Last task</th>"
        '<th class="num" title="due runs skipped in a row: the last task was still running">'
        "Skipped</th><th>State</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>",
        live,
    )


def schedule_detail(s: dict[str, Any]) -> tuple[str, bool]:
    settings = ", ".join(f"{k}={v}" for k, v in sorted(s["settings"].items()))
    facts = [
        ("Collects", what(s, limit=50)),
        ("How often", how_often(s)),
        ("Next run (UTC)", next_run(s)),
        ("Last task", last_task(s)),
        ("Skipped in a row", skipped(s)),
        ("Settings", esc(settings) if settings else '<span class="muted">none</span>'),
        ("Created (UTC)", when(s["createdAt"])),
    ]
    facts_html = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
    # What a run did first, when it ran last: on a phone the table scrolls sideways.
    runs = [
        f'<tr data-run="{esc(r["dueAt"])}"><td class="muted">{when(r["dueAt"])}</td>'
        f'<td><span class="badge run-{esc(r["outcome"])}">'
        f"{esc(RUN_TEXT.get(r['outcome'], r['outcome']))}</span></td>"
        f"<td>{task_link(r['taskId'])}</td>"
        f'<td class="wrap">{esc(r["message"] or "")}</td>'
        f'<td class="muted">{when(r["ranAt"])}</td></tr>'
        for r in s["runs"]
    ]
    runs_html = (
        '<div class="scroll"><table><thead><tr><th>Due (UTC)</th><th>Outcome</th>'
        "<th>Task</th><th>Message</th><th>Ran (UTC)</th></tr></thead>"
        f"<tbody>{''.join(runs)}</tbody></table></div>"
        if runs
        else '<div class="card empty">No run yet.</div>'
    )
    live = schedules_live([s])
    note = '<span class="live" id="live-note">refreshing every 2 s</span>' if live else ""
    name = f" {esc(s['name'])}" if s["name"] else ""
    return (
        f"<h1>Schedule #{s['scheduleId']}{name} {schedule_state(s)} {schedule_button(s)} "
        f'{note}</h1><dl class="card facts">{facts_html}</dl>'
        f"<h2>Runs</h2>{runs_html}",
        live,
    )
