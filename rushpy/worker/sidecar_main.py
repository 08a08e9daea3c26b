"""The heartbeat sidecar process: ``python -m rushpy.worker.sidecar_main`` (see :mod:`rushpy.worker.sidecar`).

Started by a worker with a heartbeat, never by hand. Kept apart from
:mod:`rushpy.worker.sidecar`, which the worker package imports, so that
running it with ``-m`` does not import this module twice (a runpy warning).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from rushpy.config import RedisConfig
from rushpy.connection import create_client
from rushpy.keys import Keys
from rushpy.lifetime import die_with_parent
from rushpy.store import Store
from rushpy.worker.sidecar import REFUSED

__all__ = ["main", "parent_stopped"]


def parent_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, a debugger); ``False`` where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    # The name in parentheses may hold spaces and parentheses: the state follows the last ")".
    end = stat.rfind(b")")
    return stat[end + 2 : end + 3] in (b"T", b"t")


def _say(message: str) -> None:
    # Not structlog: its default logger prints to stdout, the pipe to the worker.
    print(f"rushpy heartbeat sidecar: {message}", file=sys.stderr, flush=True)


async def _input_closed() -> None:
    """Return once standard input reaches end-of-file (the worker closed it, or died)."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    closed = asyncio.Event()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            closed.set()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    await closed.wait()


async def _beat(args: argparse.Namespace, config: RedisConfig) -> None:
    """Refresh the heartbeat every period while the parent lives and is not stopped."""
    store = Store(create_client(config), Keys(args.network, args.prefix))
    failing = False
    try:
        while os.getppid() == args.parent:
            if not parent_stopped(args.parent):
                try:
                    beats = [(wid, await store.workers.beat(wid, args.expire)) for wid in args.worker_id]
                    refused = [wid for wid, alive in beats if not alive]
                except Exception as exc:  # connection trouble: try again next period
                    if not failing:
                        _say(f"heartbeat failed, retrying every period: {type(exc).__name__}: {exc}")
                    failing = True
                else:
                    if failing:
                        _say("heartbeat restored")
                    failing = False
                    if refused:  # one line per refused beat
                        sys.stdout.buffer.write((REFUSED + b"\n") * len(refused))
                        sys.stdout.buffer.flush()
            await anyio.sleep(args.period)
    finally:
        with anyio.CancelScope(shield=True):
            await store.client.aclose()


async def _run(args: argparse.Namespace, config: RedisConfig) -> None:
    async with anyio.create_task_group() as tg:

        async def until_input_closed() -> None:
            await _input_closed()
            tg.cancel_scope.cancel()

        tg.start_soon(until_input_closed)
        await _beat(args, config)
        tg.cancel_scope.cancel()  # the parent changed: the worker is gone


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rushpy.worker.sidecar_main`` (started by the worker, not by hand)."""
    parser = argparse.ArgumentParser(prog="rushpy.worker.sidecar_main")
    parser.add_argument("--network", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--worker-id", action="append", required=True, help="repeatable")
    parser.add_argument("--period", type=float, required=True)
    parser.add_argument("--expire", type=float, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != args.parent:
        return 0  # the worker died before we asked for its death signal
    try:
        config = RedisConfig.from_env()
    except Exception as exc:  # a bad URL: the worker's own beat goes on
        _say(f"cannot read the server settings: {exc}")
        return 2
    with contextlib.suppress(BrokenPipeError):  # the worker went away while we reported
        asyncio.run(_run(args, config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
