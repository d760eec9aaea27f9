"""The HTTP service: task endpoints, the seed's REST routes and the task page, mounted in
scrapyd (``scrapyd.conf`` ``[services]``) so that tasks run as scrapyd jobs.

* :mod:`.core`       what every endpoint does (create and schedule, status, results, cancel)
* :mod:`.resources`  scrapyd-style ``*.json`` services over :mod:`.core`
* :mod:`.rest`       ``/api/tasks…``, the seed's routes, over the same functions
* :mod:`.page`       the ``/tasks`` HTML page and the streamed downloads
"""
