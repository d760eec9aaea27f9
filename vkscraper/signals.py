"""vkscraper's own signals (sent with ``crawler.signals``, like Scrapy's).

``task_opened`` (``store``, ``task_id``): the task extension opened the store and the task
this crawl works for. The store pipeline writes there.

``task_error`` (``message``, ``group``, ``post``: both may be None): a component found
something the task must show (a malformed comment, rows saved to a file instead of the
database). The task extension records it, and a group's error fails that group (and post).
Sent with ``send_catch_log_async``.

``flush_requested``: the task extension is about to record a group as done and needs every
buffered item written first. Handlers (the store pipeline) write what they hold and return
True, or False when the write failed; a Failure or False keeps the group open for later.

``group_finished`` (``group``: its id): the task extension recorded the group as done or
failed; in worker mode the group's entry is acked then.

``task_finished`` (``task_id``, ``status``): the task extension ended the task (``completed``
or ``failed``: its alert event is in the outbox). Sent with ``send_catch_log``.
"""

task_opened = object()
task_error = object()
flush_requested = object()
group_finished = object()
task_finished = object()
