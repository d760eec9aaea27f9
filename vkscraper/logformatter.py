"""VkLogFormatter: Scrapy's, without the per-item "Scraped from" record unless it is shown.

Scrapy builds that DEBUG record for every item and lets the handler drop it when ``LOG_LEVEL``
is higher; with every record also scrubbed for the token (:mod:`vkscraper.tokens.logscrub`), that
costs a fifth of the crawler's CPU at 20,000 comments/s. With ``LOG_LEVEL=DEBUG`` it is logged as
Scrapy logs it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.logformatter import LogFormatter

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.logformatter import LogFormatterResult
    from scrapy.spiders import Spider
    from twisted.python.failure import Failure


class VkLogFormatter(LogFormatter):
    def __init__(self, log_scraped: bool = True) -> None:
        self.log_scraped = log_scraped

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        level = crawler.settings.get("LOG_LEVEL") or "DEBUG"
        number = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
        return cls(log_scraped=not isinstance(number, int) or number <= logging.DEBUG)

    def scraped(  # type: ignore[override]
        self, item: Any, response: Response | Failure | None, spider: Spider
    ) -> LogFormatterResult | None:
        return super().scraped(item, response, spider) if self.log_scraped else None
