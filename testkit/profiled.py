"""Run a module as ``python -m`` would, under cProfile, for the benchmarks.

    python path/to/profiled.py OUT MODULE [ARG ...]

OUT gets the main thread's stats (``python -m cProfile -o OUT -m MODULE`` would give the same),
OUT.threads those of the work done in ``concurrent.futures`` pool threads, where
``asyncio.to_thread`` runs the store pipeline's writes (cProfile alone sees one thread). A pool
thread is profiled only while it runs a work item, not while it waits for one. Times are wall
clock (cProfile's own timer, the cheapest): the main thread's include its waits in epoll.

Run by path, not with ``-m``, so that nothing of this checkout comes before the package being
measured: the script's directory on ``sys.path`` is replaced by the working directory, as
``python -m`` has it. Stdlib only.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import runpy
import sys
import threading
from concurrent.futures import thread
from typing import Any


def main() -> None:
    out, module, *args = sys.argv[1:]
    sys.path[0] = os.getcwd()
    sys.argv = [module, *args]
    profiles: list[cProfile.Profile] = []
    local = threading.local()
    item_run = thread._WorkItem.run

    def profiled_run(self: Any) -> None:
        prof = getattr(local, "prof", None)
        if prof is None:
            prof = local.prof = cProfile.Profile()
            profiles.append(prof)  # list.append is atomic
        prof.enable()
        try:
            item_run(self)
        finally:
            prof.disable()

    thread._WorkItem.run = profiled_run  # type: ignore[method-assign]
    main_prof = cProfile.Profile()
    code: int | str | None = 0
    main_prof.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        main_prof.disable()
        main_prof.dump_stats(out)
        if profiles:
            threads = pstats.Stats(profiles[0])
            for prof in profiles[1:]:
                threads.add(prof)
            threads.dump_stats(f"{out}.threads")
    sys.exit(code)


if __name__ == "__main__":
    main()
