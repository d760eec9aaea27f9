"""Worker mode: a task's work shared through Redis by worker processes (``vkscraper worker``)."""
