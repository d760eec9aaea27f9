"""The unit tier's fence (tests/helpers/isolation.py): every way of reaching PostgreSQL,
Redis or a child process is refused inside it, so an unmarked test that needs one fails."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import psycopg2
import pytest
import redis

from tests.helpers.isolation import ServerRefused, servers_refused


def _nothing() -> None:
    pass


@pytest.mark.parametrize(
    "reach",
    [
        pytest.param(lambda: psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres"),
                     id="postgresql"),
        pytest.param(lambda: redis.Redis.from_url("redis://127.0.0.1:6379/0").ping(), id="redis"),
        pytest.param(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
                     id="subprocess"),
        pytest.param(lambda: multiprocessing.get_context("spawn").Process(target=_nothing).start(),
                     id="multiprocessing-spawn"),
        pytest.param(
            lambda: multiprocessing.get_context("forkserver").Process(target=_nothing).start(),
            id="multiprocessing-forkserver",
        ),
    ],
)  # fmt: skip
def test_servers_and_child_processes_are_refused(reach):
    with servers_refused() as refused:
        with pytest.raises(ServerRefused):
            reach()
    assert refused
