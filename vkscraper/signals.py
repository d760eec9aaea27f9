"""vkscraper's own signals (sent with ``crawler.signals``, like Scrapy's).

``task_opened`` (``store``, ``task_id``, ``run_began``): the task extension opened the store and
the task this crawl works for (``run_began``: this crawl began a run of it; a worker joining a
task another one opened did not). The store pipeline writes there.

``task_closing`` (``store``, ``task_id``, ``outcome``): the task extension is about to close the
store; handlers write what they still hold (sent with ``send_catch_log_async``, awaited).
``outcome`` is how the run ended when this crawl ended it (``completed``, ``failed``,
``interrupted``: left resumable), else None (a worker's part of a task).

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
or ``failed``: its alert event is in the outbox), or left it resumable after a stop only the
operator can fix (``stopped``: no usable access token; a ``stopped`` event is in the outbox).
Sent with ``send_catch_log``.
"""

task_opened = object()
task_closing = object()
task_error = object()
flush_requested = object()
group_finished = object()
task_finished = object()
