"""Scrub access tokens from every log record, whatever logger made it and whatever handler
writes it.

A token can reach the log through any library (an exception message, a header dump at DEBUG).
A ``logging.Filter`` on the root logger would miss records of child loggers (logger filters do
not propagate), and handler filters would miss handlers created later (Scrapy's, pytest's
``caplog``). Every record, however, is made by logging's record factory, so
:func:`install_log_scrubber` wraps that factory: the message is rendered, scrubbed with
:func:`vkscraper.tokens.access.scrub` and, if it held a token, stored pre-rendered (``args =
()``); an exception's traceback is pre-rendered into ``exc_text``, which ``logging.Formatter``
prints instead of formatting ``exc_info`` again. Fields passed with ``extra=`` are set after the
factory runs and are not scrubbed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from vkscraper.tokens.access import scrub

_FORMATTER = logging.Formatter()


class ScrubbingRecordFactory:
    """Wraps a record factory; ``tokens`` may be replaced at any time."""

    def __init__(self, wrapped: Callable[..., logging.LogRecord], tokens: Iterable[str]) -> None:
        self.wrapped = wrapped
        self.tokens = list(tokens)

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.wrapped(*args, **kwargs)
        if self.tokens:
            scrub_record(record, self.tokens)
        return record

    def __repr__(self) -> str:  # never show the tokens themselves
        return f"<{type(self).__name__} of {self.wrapped!r}, {len(self.tokens)} token(s)>"


def scrub_record(record: logging.LogRecord, tokens: list[str]) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string; logging would print msg and args to stderr
        message = f"{record.msg} {record.args!r}"
    scrubbed = scrub(message, tokens)
    if scrubbed != message:
        record.msg, record.args = scrubbed, ()
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = _FORMATTER.formatException(record.exc_info)
        scrubbed = scrub(text, tokens)
        if scrubbed != text:
            record.exc_text = scrubbed


def install_log_scrubber(tokens: Iterable[str]) -> ScrubbingRecordFactory:
    """Scrub ``tokens`` from every log record from now on. Idempotent: a second call replaces
    the tokens of the installed factory instead of wrapping it again."""
    current = logging.getLogRecordFactory()
    if isinstance(current, ScrubbingRecordFactory):
        current.tokens = list(tokens)
        return current
    factory = ScrubbingRecordFactory(current, tokens)
    logging.setLogRecordFactory(factory)
    return factory
