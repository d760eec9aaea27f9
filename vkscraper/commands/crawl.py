"""``scrapy crawl``, refined for the vk spider: arguments are checked before anything starts
(one line naming the problem, exit status 2, nothing written but that line, also to
``LOG_FILE`` when set) and the exit status tells
whether the crawl did its job (:mod:`vkscraper.cli.exitcodes`). Other spiders run as usual."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from scrapy.commands.crawl import Command as ScrapyCrawl

from vkscraper._internals import create_crawler, on_shutdown_signal
from vkscraper.addon import VkAddon
from vkscraper.cli import exitcodes
from vkscraper.exceptions import StoreError
from vkscraper.extensions.task import VkTaskExtension
from vkscraper.spiders.vk import VkSpider, check_arguments
from vkscraper.store import open_store
from vkscraper.tokens.access import check_tokens, load_tokens

if TYPE_CHECKING:
    import argparse


class Command(ScrapyCrawl):
    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        # Before Scrapy starts (and logs anything): one line, exit status 2, nothing written.
        if args == [VkSpider.name] and (problem := self._problem(opts)):
            print(f"error: {problem}", file=sys.stderr)
            self._log_refusal(problem)
            raise SystemExit(exitcodes.BAD_ARGUMENTS)

    def _log_refusal(self, problem: str) -> None:
        """Also into ``LOG_FILE`` when one is set: scrapyd's job log is where its users (and
        ScrapydWeb) look for why a job ended at once; the stderr line goes to scrapyd's own."""
        path = self.settings.get("LOG_FILE") if self.settings is not None else None
        if path:
            try:
                with open(path, "a", encoding="utf-8") as log:
                    log.write(f"[vkscraper] ERROR: crawl refused: {problem}\n")
            except OSError:
                pass  # stderr has it

    def _problem(self, opts: argparse.Namespace) -> str | None:
        if problem := check_tokens(load_tokens()):
            return problem
        assert self.settings is not None
        settings = self.settings.copy()
        # scrapyd adds its own arguments, all starting with "_" (such as _job).
        unknown = sorted(k for k in opts.spargs if k not in ("task_id", "groups") and k[:1] != "_")
        if unknown:
            return (
                f"unknown argument -a {unknown[0]}: the vk spider takes -a groups=… "
                "or -a task_id=…"
            )
        try:
            # What the add-on will do (defaults, checks, components and their wiring check),
            # on a copy: a refusal is one line here, not a traceback from inside Scrapy.
            VkAddon().update_settings(settings)
            task_id, _ = check_arguments(opts.spargs.get("task_id"), opts.spargs.get("groups"))
        except (TypeError, ValueError) as exc:
            return str(exc)
        if task_id is not None and not _task_exists(settings.get("DATABASE_URL"), task_id):
            return f"task {task_id} does not exist"
        return None

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if args != [VkSpider.name]:
            super().run(args, opts)
            return
        assert self.crawler_process
        crawler = create_crawler(self, args[0])
        # A second Ctrl-C / SIGTERM ends the process before the task extension can say so;
        # remember the signal so the status still says "interrupted, resumable" rather than
        # "could not do its job".
        signals_seen: list[int] = []
        on_shutdown_signal(self.crawler_process, signals_seen.append)
        self.crawler_process.crawl(crawler, **opts.spargs)
        self.crawler_process.start()
        ext = crawler.get_extension(VkTaskExtension) if hasattr(crawler, "extensions") else None
        if self.crawler_process.bootstrap_failed or ext is None:
            self.exitcode = exitcodes.NOT_DONE
        elif signals_seen and ext.exit_code == exitcodes.NOT_DONE:
            self.exitcode = exitcodes.INTERRUPTED
        else:
            self.exitcode = ext.exit_code


def _task_exists(database_url: str | None, task_id: int) -> bool:
    """False only when the database answers that there is no such task; a database that
    cannot be asked is the crawl's to report (exit status 3)."""
    try:
        with open_store(database_url) as store:
            return store.get_task(task_id) is not None
    except StoreError:
        return True
