"""The adapter interface every peer implements, and helpers for worker subprocesses."""

from __future__ import annotations

import abc
import asyncio
import importlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import ClassVar

#: Repository root: worker subprocesses run from here so that ``benchmarks`` imports.
ROOT = Path(__file__).resolve().parents[2]


class Adapter(abc.ABC):
    """One peer framework, driven through its public API.

    Life cycle of one run: :meth:`setup`, :meth:`start_workers`, any number of
    :meth:`run_batch` / :meth:`run_one` calls, :meth:`teardown`. ``run_one`` may be
    called from several coroutines at once (W3 keeps several evaluations in flight).
    """

    #: Name on the command line and in the table.
    name: ClassVar[str]
    #: Python packages the adapter imports (checked by :func:`benchmarks.peers.registry.available`).
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.url = ""
        self.procs: list[subprocess.Popen[bytes]] = []

    async def setup(self, server_url: str) -> None:
        """Connect to ``server_url`` (``redis://host:port/db``; the database is this peer's own)."""
        self.url = server_url

    @abc.abstractmethod
    async def start_workers(self, n: int) -> None:
        """Start ``n`` workers, each running one task at a time, and wait until they are ready."""

    @abc.abstractmethod
    async def run_batch(self, xs: Sequence[int]) -> list[int]:
        """Push one no-op task per ``x`` at once; return every result (any order) once all are seen."""

    @abc.abstractmethod
    async def run_one(self, x: int, sleep: float) -> int:
        """Push one task that sleeps ``sleep`` s; return its result once the producer sees it."""

    async def wait_ready(self, n: int, timeout: float = 60.0, settle: float = 1.0) -> None:
        """Wait for a worker to answer, for peers with no registry of live workers, then ``settle`` s more.

        One answered no-op proves the app, the broker and a worker work; the other
        ``n - 1`` workers started at the same moment get ``settle`` s to connect.
        (Proving ``n`` workers by running ``n`` sleeps side by side fails on peers
        that prefetch several messages into one worker.)
        """
        async with asyncio.timeout(timeout):
            if await self.run_one(-1, 0.0) != -2:
                raise AssertionError(f"{self.name}: the warm-up task returned a wrong result")
        await asyncio.sleep(settle)

    async def teardown(self) -> None:
        """Stop the workers and close connections (the driver flushes the database)."""
        stop_procs(self.procs)
        self.procs = []

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start one worker subprocess from the repository root, quietly, and remember it."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        quiet = os.environ.get("BENCH_VERBOSE") is None
        out = subprocess.DEVNULL if quiet else None
        proc = subprocess.Popen(list(argv), cwd=ROOT, env=env, stdout=out, stderr=out)
        self.procs.append(proc)
        return proc


def python_argv(*args: str) -> list[str]:
    """Command line of this interpreter with ``args``."""
    return [sys.executable, *args]


def stop_procs(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """Terminate worker subprocesses, killing any that outlive ``timeout``."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def load_app(module: str, url: str) -> ModuleType:
    """Import a peer's app module configured for ``url`` (re-imported when ``url`` changed).

    Peers bind tasks to an app object at import time, so the URL travels in
    ``BENCH_URL``: worker subprocesses inherit it, and this process re-imports
    the module when a run uses another server or database.
    """
    os.environ["BENCH_URL"] = url
    loaded = importlib.import_module(module)
    if getattr(loaded, "URL", None) != url:
        loaded = importlib.reload(loaded)
    return loaded
