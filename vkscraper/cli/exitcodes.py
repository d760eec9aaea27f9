"""Exit statuses of ``scrapy crawl vk`` (set by the project's ``crawl`` command).

cron, scrapyd and CI see whether a crawl did its job:

* ``OK`` (0): the task ended ``completed``;
* ``TARGET_ERRORS`` (1): every group was handled, but some target could not be read (a closed
  wall, comments closed, an unknown or deleted community): the task ended ``failed``;
* ``BAD_ARGUMENTS`` (2): bad ``-a``/``-s`` values or token; nothing was written;
* ``NOT_DONE`` (3): the crawl could not do its job: a fatal VK error, no usable token (the
  task stays resumable), the database unavailable, groups left unfinished, or a stop for
  another reason;
* ``INTERRUPTED`` (4): stopped by Ctrl-C or SIGTERM; the task stays resumable.
"""

OK = 0
TARGET_ERRORS = 1
BAD_ARGUMENTS = 2
NOT_DONE = 3
INTERRUPTED = 4
