"""scrapyd as a real process for the service tests, configured like ``make serve``.

It runs the ``scrapyd`` command of this venv in a directory holding the repository's own
``scrapyd.conf`` (every option and ``[services]`` entry kept; only the port, the folders and the
poll interval changed for the test) and ``scrapy.cfg``, with the repository on PYTHONPATH — the
same as ``make serve`` in the repository, minus the fixed port.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRAPYD = Path(sys.executable).with_name("scrapyd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scrapyd:
    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str,
        token: str,
        auth: tuple[str, str] | None = None,
        poll_interval: float = 0.2,
        project_dir: bool = True,
        services: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = auth
        workdir.mkdir(parents=True, exist_ok=True)
        conf = configparser.ConfigParser()
        conf.read(REPO / "scrapyd.conf")
        section = conf["scrapyd"]
        section["http_port"] = str(self.port)
        section["poll_interval"] = str(poll_interval)
        for name in ("logs_dir", "dbs_dir", "eggs_dir"):
            section[name] = str(workdir / name)
        if auth:
            section["username"], section["password"] = auth
        conf["services"].update(services or {})
        with open(workdir / "scrapyd.conf", "w") as f:
            conf.write(f)
        if project_dir:  # else, like a remote scrapyd, it knows only deployed eggs
            shutil.copy(REPO / "scrapy.cfg", workdir / "scrapy.cfg")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("VK_", "SCRAPY"))}
        self.env.update(
            PYTHONPATH=str(REPO), VK_ACCESS_TOKEN=token, DATABASE_URL=database_url,
            PYTHONUNBUFFERED="1",
            # the operator's trust: the emulators on local ports, at the tests' fast rate
            VKSCRAPER_API_URLS="http://127.0.0.1:*", VKSCRAPER_MAX_RPS="1000",
        )  # fmt: skip
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Scrapyd:
        self.log = open(self.workdir / "scrapyd.out", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(SCRAPYD)], cwd=self.workdir, env=self.env, stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scrapyd exited at start:\n{self.output()}")
            try:
                self.call("GET", "/daemonstatus.json")
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"scrapyd did not answer within 30 s:\n{self.output()}")

    def output(self) -> str:
        return (self.workdir / "scrapyd.out").read_text(errors="replace")

    def job_logs(self, jobid: str = "") -> str:
        """Every job's log, or one job's."""
        logs = sorted((self.workdir / "logs_dir").rglob(f"{jobid or '*'}.log"))
        return "\n".join(p.read_text(errors="replace") for p in logs)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Scrapyd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, Any] | list[tuple[str, str]] | None = None,
        json_body: Any = None,
        auth: tuple[str, str] | None | bool = True,
        raw: bool = False,
        timeout: float = 30,
    ) -> tuple[int, Any]:
        """``(HTTP status, decoded JSON)`` (or the body as text with ``raw``); ``auth=True``
        sends the server's credentials, a pair sends those, None sends none."""
        body, headers = None, {}
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        creds = self.auth if auth is True else (auth or None)
        if creds:
            headers["Authorization"] = (
                "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            )
        request = urllib.request.Request(self.url + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        text = payload.decode()
        if raw:
            return status, text
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def wait_task(self, task_id: int, until: tuple[str, ...] = ("completed", "failed"),
                  timeout: float = 120) -> dict[str, Any]:  # fmt: skip
        """Poll ``task.json`` until the task's status is in ``until`` and its job is over."""
        deadline = time.monotonic() + timeout
        task: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, answer = self.call("GET", f"/task.json?task_id={task_id}")
            assert status == 200, answer
            task = answer["task"]
            if task["status"] in until and task["job"]["state"] not in (
                "pending",
                "running",
                "stopping",
            ):
                return task
            time.sleep(0.3)
        raise AssertionError(
            f"task {task_id} still {task.get('status')} after {timeout} s; "
            f"scrapyd:\n{self.output()[-3000:]}\njobs:\n{self.job_logs()[-5000:]}"
        )
