"""A heartbeat that does not depend on the worker's event loop: a sidecar process.

The worker's own heartbeat runs on its event loop. A plain task function that
holds the GIL in one long C call (``ctypes.PyDLL``, some numpy and extension
calls), or an ``async def`` function that computes without awaiting, stops
that loop, and with it the beat: a healthy worker is then declared lost and
its tasks run twice. So a worker with a heartbeat also starts a small process,
``python -m rushpy.worker.sidecar_main``, that refreshes the heartbeat key every
period while the worker process lives, as rush does.

Why a process, and not the alternatives:

- a thread of the worker beats only when it gets the GIL, which is exactly
  what a long C call withholds;
- running every plain function in a child process would isolate the GIL too,
  but costs a round trip through a pipe per task (no-op tasks run by the
  thousand per second in a thread), cannot help ``async def`` functions that
  block the loop, and needs every function to be importable by path;
- a sidecar costs one small process per worker and nothing per task, and
  covers both cases.

The sidecar beats only while the worker is alive and able to run:

- its standard input is a pipe from the worker, never written to: when the
  worker process dies (SIGKILL included) the kernel closes it, the sidecar
  sees end-of-file and exits at once; it also exits when its parent process
  changes (re-parented after the worker died) and, on Linux, gets SIGKILL
  with its parent (``PR_SET_PDEATHSIG``). No sidecar outlives its worker;
- it does not beat while the worker process is stopped (SIGSTOP, a debugger),
  so a frozen worker is still declared lost;
- it runs ``heartbeat.lua`` like the worker, so a worker that no longer counts
  as running is never refreshed; it reports each refused beat on its standard
  output (one line, ``refused``) and the worker decides what to do
  (:mod:`rushpy.worker.registration`: come back, or stop).

It connects with the worker's own :class:`~rushpy.config.RedisConfig`, handed
over as a URL in its environment (``RUSHPY_REDIS_URL``), never on its command
line, which every user of the host can read. On a clean exit the worker
closes the pipe and waits for the sidecar before it deletes its heartbeat key,
so a late beat cannot bring the key back.

What it cannot tell: a worker process that lives but hangs for ever (a
deadlock) keeps its heartbeat. Give tasks a ``timeout`` (plain functions then
run in a child process that is killed at the deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio

from rushpy.config import ENV_URL, RedisConfig
from rushpy.keys import Keys
from rushpy.logs import get_logger

__all__ = ["CLOSE_TIMEOUT", "REFUSED", "HeartbeatSidecar"]

log = get_logger("rushpy.worker")

REFUSED = b"refused"
"""Line the sidecar writes when a beat was refused (the worker is not running)."""
CLOSE_TIMEOUT = 2.0
"""Seconds a closing sidecar gets to exit after its input closes before it is killed."""


class HeartbeatSidecar:
    """The worker's handle on its sidecar process.

    Args:
        config: The worker's server settings (handed over in the environment).
        keys: Key names of the network (its id and prefix are handed over).
        worker_id: Id of the worker, or the ids of every worker of the process
            (one sidecar beats for all; each worker's own beat acts on refusals).
        period: Seconds between beats.
        expire: Seconds after a beat at which the key expires.

    """

    def __init__(
        self,
        config: RedisConfig,
        keys: Keys,
        worker_id: str | Sequence[str],
        *,
        period: float,
        expire: float,
    ) -> None:
        self._config = config
        ids = [worker_id] if isinstance(worker_id, str) else list(worker_id)
        self._argv = [
            sys.executable,
            "-m",
            "rushpy.worker.sidecar_main",
            "--network",
            keys.network_id,
            "--prefix",
            keys.prefix,
            *(arg for wid in ids for arg in ("--worker-id", wid)),
            "--period",
            repr(period),
            "--expire",
            repr(expire),
            "--parent",
            str(os.getpid()),
        ]
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the sidecar (``None`` before :meth:`start`)."""
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start the sidecar process (call it on the event loop's thread).

        Raises:
            OSError: the process could not be started.

        """
        env = dict(os.environ)
        env[ENV_URL] = self._config.to_url(include_password=True, include_options=True)
        # The sidecar imports only rushpy: make this very copy of it importable.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in [root, env.get("PYTHONPATH", "")] if p)
        self._process = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the worker's own stderr (its log)
            env=env,
            # Its own session: a Ctrl-C in the worker's terminal must not end it
            # while the worker finishes its tasks.
            start_new_session=True,
        )

    async def watch(self, on_refused: Callable[[], Awaitable[bool]]) -> bool:
        """Call ``on_refused`` for every refused beat the sidecar reports.

        ``on_refused`` returns whether the worker counts as running again.
        Returns ``True`` once it says no (the worker stops), ``False`` when the
        sidecar exited (the worker's own beat goes on).
        """
        process = self._process
        if process is None or process.stdout is None:
            return False
        while line := await process.stdout.readline():
            if line.strip() == REFUSED and not await on_refused():
                return True
        return False

    def kill(self) -> None:
        """SIGKILL the sidecar at once (no more beats from it), without waiting."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def close(self) -> None:
        """Stop the sidecar and wait until it has exited (no beat comes after this returns)."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # end-of-file: the sidecar exits
        with anyio.move_on_after(CLOSE_TIMEOUT):
            await process.wait()
        if process.returncode is None:
            self.kill()
            await process.wait()
