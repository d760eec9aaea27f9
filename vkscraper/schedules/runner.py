"""What runs the schedules: one tick claims the due ones and launches their tasks.

A tick (:meth:`ScheduleRunner.tick`) asks its launcher which jobs it knows, claims the due
schedules in one transaction (:func:`vkscraper.store.schedules.claim_due`: exactly once across
processes on PostgreSQL; one process per SQLite database), then launches each claimed task
outside that transaction and records the run ``started`` (or ``failed`` with the reason). Runs
left ``claimed`` longer than the grace period by a process that died before launching are
claimed again and launched by the next tick of any runner.

Three launchers, one per way to run: :class:`ServiceLauncher` (inside scrapyd: a scrapyd job,
or the workers' feed with ``VK_DISTRIBUTED=1``), :class:`WorkersLauncher` (the workers' Redis
feed, from ``vkscraper schedule run --launch workers``) and :class:`LocalLauncher` (``scrapy
crawl vk -a task_id=N`` child processes, one at a time).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vkscraper import defaults
from vkscraper.exceptions import VkscraperError
from vkscraper.store import Store
from vkscraper.store.schedules import Claimed, JobStates
from vkscraper.tokens.access import load_tokens, scrub

logger = logging.getLogger(__name__)


class Launcher(Protocol):
    """Starts a task's crawl and tells which of its jobs are queued or running."""

    name: str

    def job_states(self) -> dict[str, str]:
        """Job id → ``pending``, ``running``, ``stopping`` or ``finished``, of the jobs this
        launcher knows."""

    def launch(self, task_id: int, settings: dict[str, str]) -> str:
        """Queue the task's crawl with the schedule's (checked) settings; return its job id.
        Raises with a reason the run's history shows."""


@dataclass
class TickReport:
    claimed: int = 0
    started: int = 0
    failed: int = 0


def env_seconds(name: str) -> float:
    """A ``VK_SCHEDULE_*`` time from the environment, else its default."""
    raw = os.environ.get(name, "").strip()
    default = float(getattr(defaults, name))
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise VkscraperError(f"{name}: not a number of seconds: {raw[:40]!r}") from None
    if not value > 0:
        raise VkscraperError(f"{name}: must be positive, got {raw[:40]!r}")
    return value


class ScheduleRunner:
    """Claims due schedules and launches their tasks, one tick at a time (blocking: call it
    off the reactor thread)."""

    def __init__(
        self,
        store: Store | Callable[[], Store],
        launcher: Launcher,
        *,
        stale_after: float | None = None,
        grace: float | None = None,
    ) -> None:
        self._store = store if isinstance(store, Store) else None
        self._open = None if isinstance(store, Store) else store
        self.launcher = launcher
        self.stale_after = (
            env_seconds("VK_SCHEDULE_STALE_AFTER") if stale_after is None else stale_after
        )
        self.grace = env_seconds("VK_SCHEDULE_CLAIM_GRACE") if grace is None else grace

    @property
    def store(self) -> Store:
        if self._store is None:
            assert self._open is not None
            store = self._open()
            store.migrate()
            self._store = store
        return self._store

    def tick(self) -> TickReport:
        """One round: claim what is due, launch it. Raises StoreError when the database is
        away (nothing claimed then); a failed launch is recorded on the run, not raised."""
        store = self.store
        jobs = JobStates(self.launcher.job_states(), self.stale_after)
        claimed = store.reclaim_stale_runs(self.grace)
        claimed += store.claim_due_schedules(jobs)
        report = TickReport(claimed=len(claimed))
        for run in claimed:
            if self._launch(store, run):
                report.started += 1
            else:
                report.failed += 1
        return report

    def _launch(self, store: Store, run: Claimed) -> bool:
        from vkscraper.service.core import RequestError, check_task_settings

        try:
            settings = check_task_settings(run.settings)
            job = self.launcher.launch(run.task_id, settings)
        except Exception as exc:  # anything: the run says why, the loop goes on
            reason = (
                exc.message if isinstance(exc, RequestError) else str(exc) or type(exc).__name__
            )
            reason = scrub(reason, load_tokens())
            logger.warning(
                "schedule %s: task %s not launched: %s", run.schedule_id, run.task_id, reason
            )
            store.set_run_outcome(run.run_id, "failed", f"not launched: {reason}"[:2000])
            return False
        store.set_run_outcome(run.run_id, "started", f"job {job}")
        logger.info(
            "schedule %s: task %s started (%s job %s)",
            run.schedule_id, run.task_id, self.launcher.name, job,
        )  # fmt: skip
        return True

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class ServiceLauncher:
    """Inside scrapyd: the task service queues the task as a collect would."""

    name = "scrapyd"

    def __init__(self, service: Any) -> None:
        self.service = service
        if service.distributed:
            self.name = "workers"

    def job_states(self) -> dict[str, str]:
        return dict(self.service.job_states())

    def launch(self, task_id: int, settings: dict[str, str]) -> str:
        return str(self.service.queue_task(task_id, settings)["jobid"])


class WorkersLauncher:
    """The workers' Redis feed (``python -m vkscraper worker`` processes crawl it)."""

    name = "workers"

    def __init__(self, store: Store, server: Any) -> None:
        self.store = store
        self.server = server

    def job_states(self) -> dict[str, str]:
        from vkscraper.distributed import workqueue
        from vkscraper.service.core import worker_job

        return {worker_job(t): s for t, s in workqueue.task_states(self.server).items()}

    def launch(self, task_id: int, settings: dict[str, str]) -> str:
        from vkscraper.distributed import workqueue
        from vkscraper.service.core import worker_job

        if settings:
            raise VkscraperError(
                "a schedule's settings do not apply to workers (their own -s settings do): "
                "remove them from the schedule"
            )
        job = worker_job(task_id)
        self.store.set_job(task_id, job, {})
        workqueue.enqueue(self.server, task_id)
        return job


class LocalLauncher:
    """``scrapy crawl vk -a task_id=N -s NAME=VALUE…`` child processes of this runner, one at
    a time (as scrapyd's ``max_proc = 1``): the others wait in order."""

    name = "local"

    def __init__(self, store: Store, database_url: str, python: str = sys.executable) -> None:
        self.store = store
        self.database_url = database_url
        self.python = python
        self._waiting: deque[tuple[int, dict[str, str]]] = deque()
        self._running: tuple[int, subprocess.Popen[bytes]] | None = None
        self._finished: set[int] = set()

    @staticmethod
    def job(task_id: int) -> str:
        return f"local:{task_id}"

    def job_states(self) -> dict[str, str]:
        self.poll()
        states = {self.job(t): "finished" for t in self._finished}
        states.update({self.job(t): "pending" for t, _ in self._waiting})
        if self._running is not None:
            states[self.job(self._running[0])] = "running"
        return states

    def launch(self, task_id: int, settings: dict[str, str]) -> str:
        self.store.set_job(task_id, self.job(task_id), settings)
        self._waiting.append((task_id, settings))
        self.poll()
        return self.job(task_id)

    @property
    def busy(self) -> bool:
        self.poll()
        return self._running is not None or bool(self._waiting)

    def poll(self) -> None:
        """Start the next waiting crawl when none runs."""
        if self._running is not None:
            task_id, proc = self._running
            code = proc.poll()
            if code is None:
                return
            logger.info("task %s: crawl exited with status %s", task_id, code)
            self._finished.add(task_id)
            self._running = None
        if self._waiting:
            task_id, settings = self._waiting.popleft()
            argv = [self.python, "-m", "scrapy", "crawl", "vk", "-a", f"task_id={task_id}"]
            for name, value in settings.items():
                argv += ["-s", f"{name}={value}"]
            env = dict(os.environ, DATABASE_URL=self.database_url)
            env.setdefault("SCRAPY_SETTINGS_MODULE", "vkscraper.settings")
            self._running = (task_id, subprocess.Popen(argv, env=env))  # noqa: S603
            logger.info("task %s: crawl started (pid %s)", task_id, self._running[1].pid)

    def stop(self) -> None:
        """Interrupt the running crawl (it stays resumable) and forget the waiting ones."""
        self._waiting.clear()
        if self._running is not None:
            proc = self._running[1]
            if proc.poll() is None:
                proc.send_signal(2)  # SIGINT: the crawl stops gracefully
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._running = None
