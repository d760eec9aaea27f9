"""``scrapy settings``, showing what a crawl uses: the project's settings and ``-s`` values
after the add-on has applied them (``DOWNLOAD_DELAY`` follows ``VK_REQUESTS_PER_SECOND``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from scrapy.commands.settings import Command as ScrapySettings

from vkscraper.addon import VkAddon

if TYPE_CHECKING:
    import argparse


class Command(ScrapySettings):
    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        try:
            VkAddon().update_settings(self.settings)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = 2
            return
        super().run(args, opts)
