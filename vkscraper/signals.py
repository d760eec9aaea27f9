"""vkscraper's own signals (sent with ``crawler.signals``, like Scrapy's).

``flush_requested``: the task extension is about to record a group as done and needs every
buffered item written first. Handlers (the store pipeline) write what they hold and return
True, or False when the write failed; a Failure or False keeps the group open for later.

``group_finished`` (``group``: its id): the task extension recorded the group as done or
failed; in worker mode the group's entry is acked then.
"""

flush_requested = object()
group_finished = object()
