"""Run a plain function in a child process that can be killed at a deadline.

Threads cannot be stopped from outside, so a plain (non-``async``) function
whose task has a timeout runs in a child process instead: ``python -m
rushpy.worker.child_main <function path>``. The child imports the function once and
then runs one task per request, so starting it is paid once per worker slot,
not per task. At the deadline, or when the task is cancelled, the worker kills
the child with SIGKILL and starts a fresh one for the next task; the worker
itself stays alive.

Protocol on the child's stdin and stdout: frames of a 4-byte big-endian length
and a msgpack body (:mod:`rushpy.codec`). Once it has imported the function the
child sends ``["ready"]``; the worker waits for that before it sends a task, so
a task's deadline covers the function's run, not the child's start (imports
can take longer than a short timeout). The request is ``[kwargs, seed]``: the
call's keyword arguments and the task's seed, from which the child builds the
``rng`` argument when the function declares one (a generator does not travel
through msgpack), and whether to capture the call's output; the reply is
``["ok", ys]`` or ``["error", condition]``, with the captured output
(:mod:`rushpy.worker.capture`) as a third element when asked for. The child moves the
function's own prints from stdout to stderr so they cannot corrupt the frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
from typing import Any

from rushpy.codec import decode, encode
from rushpy.logs import get_logger
from rushpy.models import Condition

__all__ = ["CLOSE_TIMEOUT", "HEADER", "READY", "START_TIMEOUT", "ChildProcess", "ChildResult"]

log = get_logger("rushpy.worker")

HEADER = struct.Struct(">I")
"""Frame header: the body length as a 4-byte big-endian unsigned integer."""
READY = "ready"
"""First frame a child sends: it imported the function and waits for tasks."""
START_TIMEOUT = 300.0
"""Seconds a child may take to import the function before it counts as failed."""

CLOSE_TIMEOUT = 1.0
"""Seconds a closing child gets to exit at the end of its input before it is killed."""

ChildResult = tuple[str, Any]
"""``("ok", ys)``, ``("error", Condition)``, ``("timeout", None)`` or ``("cancelled", None)``."""


class ChildProcess:
    """A reusable child process that runs one plain function.

    Args:
        fun_path: The function as ``module:function`` or ``file.py:function``.

    """

    def __init__(self, fun_path: str) -> None:
        self.fun_path = fun_path
        self._process: asyncio.subprocess.Process | None = None
        self._interrupted = False
        self.output: dict[str, Any] | None = None
        """The output the last :meth:`run` captured (``stdout``, ``warnings``), if it asked for it."""

    async def _ensure(self) -> asyncio.subprocess.Process:
        """The running child; a new one is started and awaited until it is ready."""
        if self._process is None or self._process.returncode is not None:
            self._process = process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "rushpy.worker.child_main",
                self.fun_path,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,  # the worker's own stderr (its log)
            )
            assert process.stdout is not None
            async with asyncio.timeout(START_TIMEOUT):
                size = HEADER.unpack(await process.stdout.readexactly(HEADER.size))[0]
                hello = decode(await process.stdout.readexactly(size))
            if hello != [READY]:
                raise ConnectionError(f"unexpected first frame from the child: {hello!r:.80}")
        return self._process

    async def run(
        self, xs: dict[str, Any], timeout: float | None, *, seed: int | None = None, capture: bool = False
    ) -> ChildResult:
        """Run the function on ``xs`` with a deadline of ``timeout`` seconds.

        ``seed`` seeds the ``rng`` argument, if the function declares one. With
        ``capture``, the call's stdout and warnings are in :attr:`output` afterwards.

        A timed-out or interrupted run kills the child; the next run starts a
        new one. A child that dies on its own (crash, ``os._exit``) fails the
        task with a condition giving its exit code.
        """
        self._interrupted = False
        self.output = None
        try:
            process = await self._ensure()
        except TimeoutError:
            await self.kill()
            return (
                "error",
                Condition(
                    "ChildProcessDied",
                    f"the process running {self.fun_path} did not start within {START_TIMEOUT:g} s",
                ),
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            if self._interrupted:
                await self._reap_interrupted()
                return ("cancelled", None)
            code = await self._reap()
            return (
                "error",
                Condition(
                    "ChildProcessDied",
                    f"the process running {self.fun_path} exited with code {code} while starting "
                    "(could the function not be imported? see the worker log)",
                ),
            )
        except BaseException:
            await asyncio.shield(self.kill())
            raise
        if self._interrupted:
            # Cancelled while the child started: do not run the task.
            return ("cancelled", None)
        assert process.stdin is not None and process.stdout is not None
        body = encode([xs, seed, capture])
        try:
            async with asyncio.timeout(timeout):
                process.stdin.write(HEADER.pack(len(body)) + body)
                await process.stdin.drain()
                size = HEADER.unpack(await process.stdout.readexactly(HEADER.size))[0]
                reply = decode(await process.stdout.readexactly(size))
        except TimeoutError:
            await self.kill()
            return ("timeout", None)
        except (asyncio.IncompleteReadError, ConnectionError):
            if self._interrupted:
                await self._reap_interrupted()
                return ("cancelled", None)
            code = await process.wait()
            return (
                "error",
                Condition(
                    "ChildProcessDied",
                    f"the process running {self.fun_path} exited with code {code} before returning",
                ),
            )
        except BaseException:
            # Cancelled from outside (worker killed): do not leave the child running.
            await asyncio.shield(self.kill())
            raise
        if len(reply) > 2:
            self.output = reply[2]
        if reply[0] == "ok":
            return ("ok", reply[1])
        return ("error", Condition.coerce(reply[1]))

    def interrupt(self) -> None:
        """Kill the child now (the task was cancelled); the running call returns ``cancelled``."""
        self._interrupted = True
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def _reap_interrupted(self) -> None:
        """Wait for the child that :meth:`interrupt` killed, and drop it.

        Until it is reaped it looks alive, and the next task would be sent to it
        (and fail). Not signalled again: signalling an exited child through its
        handle reaps it behind asyncio's back.
        """
        process, self._process = self._process, None
        if process is not None:
            await process.wait()

    async def _reap(self) -> int | None:
        """Kill (if needed) and reap the child; its exit code."""
        process = self._process
        await self.kill()
        return None if process is None else process.returncode

    async def kill(self) -> None:
        """Kill the child and reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()

    async def close(self) -> None:
        """Stop the child: end of input lets it exit; kill it if it does not within :data:`CLOSE_TIMEOUT`."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), CLOSE_TIMEOUT)
        except TimeoutError:
            self._process = process
            await self.kill()
