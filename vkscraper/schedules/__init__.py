"""Recurring collection: what a schedule is (:mod:`.spec`) and what runs it (:mod:`.runner`)."""

from vkscraper.schedules.spec import ScheduleError, ScheduleSpec, next_due, parse_every, parse_spec

__all__ = ["ScheduleError", "ScheduleSpec", "next_due", "parse_every", "parse_spec"]
