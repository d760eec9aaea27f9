"""A faithful VK API emulator running as a subprocess, plus its dataset tools.

Usage in tests::

    from fakevk import FakeVk, expected_rows, generate_dataset

    data = generate_dataset(seed=7, big_post=True)
    with FakeVk(data) as vk:          # vk.url == "http://127.0.0.1:PORT/method/"
        run_crawl(api_base=vk.url, token="test-token")
        assert vk.requests()          # parsed --log lines, the token only as a hash tag
    posts, comments = expected_rows(data, posts_per_group=10)

The server is a separate process (``python -m fakevk``) so it cannot share a
reactor or a GIL with the code under test and can be killed like a real remote service. This
module only imports the stdlib.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from .dataset import (
    Dataset,
    expected_rows,
    generate_dataset,
    heavy_dataset,
    load_dataset,
    save_dataset,
    wall_readable,
)

__all__ = [
    "Dataset",
    "FakeVk",
    "expected_rows",
    "generate_dataset",
    "heavy_dataset",
    "load_dataset",
    "save_dataset",
    "wall_readable",
]

logger = logging.getLogger(__name__)

_START_TIMEOUT = 10.0
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


class FakeVk:
    """Context manager that runs the emulator subprocess on a free port.

    ``dataset`` is a dict (written to a temp file), a path to a dataset JSON, or None to
    generate one from ``generate_seed`` (seed 1 when that is None too). ``rate_limit``
    defaults to 0 here (tests run without enforcement), unlike the CLI's 3. ``faults`` is a
    spec string (``"500:0.1,drop:0.1"``) or a ``{kind: probability}`` dict.
    """

    def __init__(
        self,
        dataset: Dataset | str | Path | None = None,
        *,
        generate_seed: int | None = None,
        rate_limit: int = 0,
        tokens: Iterable[str] = ("test-token",),
        faults: str | dict[str, float] | None = None,
        seed: int = 0,
        retry_after: int = 1,
        slow_seconds: float = 2,
        max_faults_per_request: int = 2,
        drift: int = 0,
        log_path: str | Path | None = None,
        no_execute_tokens: Iterable[str] = (),
        execute_max_bytes: int | None = None,
        token_errors: dict[str, tuple[int, str | None]] | None = None,
    ) -> None:
        self._tmp = tempfile.mkdtemp(prefix="fakevk-")
        # The log outlives stop() so tests can inspect it; the directory goes with this object.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        self.dataset = dataset
        self.generate_seed = generate_seed
        self.rate_limit = rate_limit
        self.tokens = tuple(tokens)
        if isinstance(faults, dict):
            faults = ",".join(f"{kind}:{prob}" for kind, prob in faults.items())
        self.faults = faults or ""
        self.seed = seed
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.max_faults_per_request = max_faults_per_request
        self.drift = drift
        self.no_execute_tokens = tuple(no_execute_tokens)
        self.execute_max_bytes = execute_max_bytes
        self.token_errors = dict(token_errors or {})
        self.log_path = Path(log_path) if log_path else Path(self._tmp) / "requests.jsonl"
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._stderr_path = Path(self._tmp) / "stderr.txt"

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "fakevk", "--port", "0"]
        if isinstance(self.dataset, dict):
            path = Path(self._tmp) / "dataset.json"
            save_dataset(self.dataset, path)
            cmd += ["--dataset", str(path)]
        elif self.dataset is not None:
            cmd += ["--dataset", str(self.dataset)]
        else:
            cmd += ["--generate", str(1 if self.generate_seed is None else self.generate_seed)]
        cmd += [
            "--tokens",
            ",".join(self.tokens),
            "--rate-limit",
            str(self.rate_limit),
            "--seed",
            str(self.seed),
            "--retry-after",
            str(self.retry_after),
            "--slow-seconds",
            str(self.slow_seconds),
            "--max-faults-per-request",
            str(self.max_faults_per_request),
            "--drift",
            str(self.drift),
            "--log",
            str(self.log_path),
        ]
        if self.faults:
            cmd += ["--faults", self.faults]
        if self.no_execute_tokens:
            cmd += ["--no-execute-tokens", ",".join(self.no_execute_tokens)]
        if self.execute_max_bytes is not None:
            cmd += ["--execute-max-bytes", str(self.execute_max_bytes)]
        if self.token_errors:
            spec = [
                f"{token}:{code}" + (f":{method}" if method else "")
                for token, (code, method) in self.token_errors.items()
            ]
            cmd += ["--token-errors", ",".join(spec)]
        return cmd

    def start(self) -> FakeVk:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        stderr = open(self._stderr_path, "w", encoding="utf-8")  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                self._command(), stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
            )
        finally:
            stderr.close()
        lines: queue.Queue[str] = queue.Queue()
        stdout = self._proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=_START_TIMEOUT)
        except queue.Empty:
            line = ""
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(
                f"fake VK did not start (no URL line within {_START_TIMEOUT}s); "
                f"stderr:\n{self._read_stderr()}"
            )
        self.url = line.strip()
        logger.debug("fake VK at %(url)s", {"url": self.url})
        return self

    def _read_stderr(self) -> str:
        try:
            return self._stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate the server and wait for it; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def requests(self) -> list[dict[str, Any]]:
        """The request log so far, one dict per request (see the server's ``--log``)."""
        try:
            text = self.log_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def __enter__(self) -> FakeVk:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
