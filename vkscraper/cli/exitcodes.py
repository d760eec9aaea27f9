"""Exit statuses of the project's commands: ``scrapy crawl vk`` (the project's ``crawl``
command), ``vkscraper`` (``python -m vkscraper``) and its ``task watch``.

cron, scrapyd, CI and shell scripts see whether a command did its job. 0 and 2 mean the same
everywhere; 1 and 3 are read with the command that returned them.
"""

# Every command.
OK = 0  # done: the crawl's task completed, the command did its job, the watched task completed
BAD_ARGUMENTS = 2  # bad options, arguments or token, or no such task: nothing was written

# `scrapy crawl vk`.
TARGET_ERRORS = 1  # every group handled, but some target was unreadable: the task ended failed
NOT_DONE = 3  # fatal VK error, no usable token, database down, groups unfinished or other stop
INTERRUPTED = 4  # stopped by Ctrl-C or SIGTERM: the task stays resumable

# `vkscraper` (every subcommand but `task watch`).
FAILED = 1  # the command could not do its job: database error, file not written, worker alive

# `vkscraper task watch N`: the outcome of task N, which another process runs.
TASK_FAILED = 1  # the task ended failed (its errors are listed)
WATCH_DATABASE_ERROR = NOT_DONE  # the database unreachable at start or for too long
WATCH_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it): the task goes on
