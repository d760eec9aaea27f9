"""The task services in scrapyd's conventions, mounted by ``scrapyd.conf``::

    [services]
    collect.json     = vkscraper.service.resources.Collect     POST groups=… [setting=K=V]
                                                                    or task_id=N
    task.json        = vkscraper.service.resources.TaskStatus  GET  task_id=N
    tasks.json       = vkscraper.service.resources.TaskList    GET  [limit=20]
    results.json     = vkscraper.service.resources.Results     GET  task_id=N [kind limit after]
    cancel-task.json = vkscraper.service.resources.CancelTask  POST task_id=N

Answers are ``{"status": "ok", "node_name": …, …}`` like scrapyd's own. Unlike scrapyd's (HTTP 200
for every error), a refusal carries its HTTP status — 400 bad or missing parameter, 404
unknown task, 405 wrong method, 409 conflicting job, 413 body over 1 MiB or more than
50,000 groups, 503 database unavailable — with
``{"status": "error", "message": …}``, and an unexpected failure is a 500 with a short message
(the traceback goes to scrapyd's log, never to the client).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

from scrapyd.webservice import WsResource
from twisted.internet import threads
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from vkscraper.service.core import MAX_BODY, RequestError, TaskService, bad_request
from vkscraper.tokens.trust import split_authority

log = Logger()


def json_response(txrequest: Request, code: int, data: dict[str, Any]) -> bytes:
    body = json.dumps(data, ensure_ascii=False).encode() + b"\n"
    txrequest.setResponseCode(code)
    txrequest.setHeader("Content-Type", "application/json; charset=utf-8")
    txrequest.setHeader("Cache-Control", "no-store")
    txrequest.setHeader("Content-Length", str(len(body)))
    return body


Work = Callable[[], dict[str, Any]]


def outcome(txrequest: Request, step: Callable[[], Any], extra: dict[str, Any]) -> tuple:
    """``(True, result)``, or ``(False, (code, error answer))`` for what ``step`` raised."""
    try:
        return True, step()
    except RequestError as exc:
        return False, (exc.status, {"status": "error", **extra, "message": exc.message})
    except Exception:  # noqa: BLE001  (a bug: logged with its traceback, not sent)
        log.failure("task service failed on {uri}", uri=txrequest.uri)
        message = "internal error (see the scrapyd log)"
        return False, (500, {"status": "error", **extra, "message": message})


def answer(txrequest: Request, check: Callable[[], Work], **extra: Any) -> bytes | int:
    """Answer with JSON: ``check`` runs now, in the reactor thread (method, parameters, body),
    and returns the work, which runs in a thread of the reactor's pool so that a slow or
    unreachable database never stalls scrapyd (its own endpoints, the launcher); the answer
    is the work's dict (HTTP 200) or the error either step raised."""
    ok, checked = outcome(txrequest, check, extra)
    if not ok:
        return json_response(txrequest, *checked)
    gone: list[bool] = []
    txrequest.notifyFinish().addErrback(lambda _: gone.append(True))

    def work() -> tuple[int, dict[str, Any]]:
        done, result = outcome(txrequest, checked, extra)
        return (200, {"status": "ok", **extra, **result}) if done else result

    def send(result: tuple[int, dict[str, Any]]) -> None:
        if not gone:  # else the client left meanwhile
            txrequest.write(json_response(txrequest, *result))
            txrequest.finish()

    threads.deferToThread(work).addCallback(send)
    return NOT_DONE_YET


ALLOWED_HOSTS_ENV = "VKSCRAPER_ALLOWED_HOSTS"  # names (host or host:port) a proxy uses for us
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _host_port(value: str) -> tuple[str, int | None] | None:
    """``(name, port or None)`` of a ``Host`` header, an Origin's netloc or an allowlist
    entry; None when malformed (user-info included)."""
    authority = split_authority(value.strip())
    if authority is None or authority[1] == "*":
        return None
    name, port = authority
    return name, int(port) if port else None


def _single(txrequest: Request, name: bytes) -> str | None:
    """A header that must come once: a repeated Host or Origin (which no browser sends) is
    refused, since Twisted's ``getHeader`` would take the last and a proxy may read the
    first."""
    values = txrequest.requestHeaders.getRawHeaders(name) or []
    if len(values) > 1:
        raise RequestError(400, f"the {name.decode()} header is given more than once")
    return values[0].decode("latin-1") if values else None


def check_host(txrequest: Request) -> tuple[str, int | None]:
    """Refuse a request whose ``Host`` is not a name this service answers to: the bind
    address, localhost, 127.0.0.1 or [::1] with the port it listens on, or an entry of
    ``VKSCRAPER_ALLOWED_HOSTS`` (comma-separated ``host`` or ``host:port``). A browser sends
    the name it resolved, so a DNS-rebinding page (its own name now pointing at us) is
    refused, reads included. Returns the Host's ``(name, port or None)``."""
    raw = (_single(txrequest, b"Host") or "").strip()
    host = _host_port(raw)
    local = txrequest.getHost()
    listening = getattr(local, "port", None)
    if listening is None and host is not None:  # a Unix socket: no browser reaches it
        return host
    if host is not None:
        address = getattr(local, "host", "")
        names = {*LOCAL_NAMES, f"[{address}]" if ":" in address else address}
        if host[0] in names and (host[1] or 80) == listening:
            return host
        for entry in os.environ.get(ALLOWED_HOSTS_ENV, "").split(","):
            allowed = _host_port(entry) if entry.strip() else None
            if allowed is not None and allowed[0] == host[0] and allowed[1] in (None, host[1]):
                return host
    raise RequestError(
        403,
        f"Host {raw[:80]!r} is not a name of this service (the operator adds names with "
        f"{ALLOWED_HOSTS_ENV})",
    )


def check_origin(txrequest: Request) -> None:
    """Refuse a request to a name the service does not answer to (:func:`check_host`, DNS
    rebinding), and one sent by a page of another origin (a browser names its Origin on
    every POST and cross-origin read): it would start or cancel crawls with the operator's
    token (cross-site request forgery), or read what scrapyd's own routes let any origin
    read. Origin and Host must agree on host AND port: another port of the same host is
    another site. Clients that are not browsers send no Origin and pass."""
    name, port = check_host(txrequest)
    origin = _single(txrequest, b"Origin")
    if origin is None:
        return
    parts = urlsplit(origin)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    seen = _host_port(parts.netloc) if default else None
    # A Host without a port (behind a TLS proxy) means the default port of the Origin's scheme.
    if seen is None or (seen[0], seen[1] or default) != (name, port or default):
        raise RequestError(403, f"cross-site request refused (Origin {origin[:80]})")


def check_body_size(txrequest: Request) -> None:
    """Refuse a body over :data:`MAX_BODY` (413): by its announced ``Content-Length`` first,
    before anything reads it, else (chunked) by what Twisted stored."""
    announced = txrequest.getHeader("Content-Length")
    if announced is not None and announced.strip().isdigit() and int(announced) > MAX_BODY:
        raise RequestError(413, f"the body is larger than {MAX_BODY // (1 << 20)} MiB")
    content = txrequest.content
    if content is not None:
        here = content.tell()
        size = content.seek(0, 2)
        content.seek(here)
        if size > MAX_BODY:
            raise RequestError(413, f"the body is larger than {MAX_BODY // (1 << 20)} MiB")


def check_method(txrequest: Request, allowed: str | tuple[str, ...]) -> None:
    """405 unless the request's method is ``allowed`` (one or several); HEAD is a GET
    without the body (Twisted drops the body of a HEAD answer)."""
    methods = (allowed,) if isinstance(allowed, str) else allowed
    method = txrequest.method.decode("latin-1")
    if method not in methods and not ("GET" in methods and method == "HEAD"):
        named = [m for a in methods for m in ((a, "HEAD") if a == "GET" else (a,))]
        raise method_not_allowed(txrequest, ", ".join(named))


def check_params(
    txrequest: Request, accepted: tuple[str, ...], repeatable: tuple[str, ...] = ()
) -> None:
    """Refuse a parameter the route does not take, and one given twice that it takes once
    (rather than silently dropping it)."""
    given = {k.decode("latin-1"): len(v) for k, v in (txrequest.args or {}).items()}
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise bad_request(
            f"unknown parameter(s): {', '.join(unknown)} (accepted: {', '.join(accepted)})"
        )
    for name, count in given.items():
        if count > 1 and name not in repeatable:
            raise bad_request(f"'{name}' is given more than once")


def method_not_allowed(txrequest: Request, allowed: str) -> RequestError:
    txrequest.setHeader("Allow", allowed)
    method = txrequest.method.decode("latin-1")
    return RequestError(405, f"{method} is not allowed here: use {allowed}")


def arg(txrequest: Request, name: str) -> str | None:
    """The first value of a query or form parameter, or None."""
    values = args(txrequest, name)
    return values[0] if values else None


def args(txrequest: Request, name: str) -> list[str]:
    try:
        return [v.decode() for v in (txrequest.args or {}).get(name.encode(), [])]
    except UnicodeDecodeError:
        raise bad_request(f"'{name}' is not valid UTF-8") from None


class TaskResource(WsResource):
    """One endpoint: ``GET`` or ``POST`` (``method``) with the parameters ``params``."""

    isLeaf = True
    method: ClassVar[str] = "GET"
    params: ClassVar[tuple[str, ...]] = ()

    def render(self, txrequest: Request) -> bytes | int:
        service = TaskService.of(self.root)

        def check() -> Work:
            if txrequest.postpath:
                raise RequestError(404, f"no such route: {txrequest.path.decode('latin-1')}")
            check_method(txrequest, self.method)
            check_body_size(txrequest)
            check_origin(txrequest)
            check_params(txrequest, self.params, repeatable=("setting",))
            return lambda: self.handle(service, txrequest)

        return answer(txrequest, check, node_name=self.root.node_name)

    def handle(self, service: TaskService, txrequest: Request) -> dict[str, Any]:
        raise NotImplementedError


class Collect(TaskResource):
    """Create a task and queue its crawl; answers ``task_id`` and ``jobid``."""

    method = "POST"
    params = ("groups", "setting", "task_id")

    def handle(self, service: TaskService, txrequest: Request) -> dict[str, Any]:
        return service.collect(
            arg(txrequest, "groups"), args(txrequest, "setting"), arg(txrequest, "task_id")
        )


class TaskStatus(TaskResource):
    params = ("task_id",)

    def handle(self, service: TaskService, txrequest: Request) -> dict[str, Any]:
        return {"task": service.task(arg(txrequest, "task_id"))}


class TaskList(TaskResource):
    params = ("limit",)

    def handle(self, service: TaskService, txrequest: Request) -> dict[str, Any]:
        return {"tasks": service.tasks(arg(txrequest, "limit"))}


class Results(TaskResource):
    params = ("task_id", "kind", "limit", "after")

    def handle(self, service: TaskService, txrequest: Request) -> dict[str, Any]:
        return service.results(*(arg(txrequest, p) for p in self.params))


class CancelTask(TaskResource):
    method = "POST"
    params = ("task_id",)

    def handle(self, service: TaskService, txrequest: Request) -> dict[str, Any]:
        return service.cancel(arg(txrequest, "task_id"))
