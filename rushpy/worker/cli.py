"""Command line of a worker: ``python -m rushpy.worker --network ID [options]``.

Without ``--fun`` the worker uses the start arguments the controller stored
for the network (``Controller.start_local_workers`` stores them). The server
comes from ``--url``, else ``RUSHPY_REDIS_URL``, else ``REDIS_URL``; a password
missing from the URL is read from ``RUSHPY_REDIS_PASSWORD``, so it never has
to appear on a command line.

Signals: SIGTERM or a first SIGINT terminate the worker (it finishes the tasks
it runs, then exits); a second SIGINT kills it at once, as does a kill request
from the controller (``stop_workers(type="kill")``): the tasks it ran go back
to the queue (attempts left) or fail. The exit code is 0 after a termination
and 130 after a kill.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from rushpy.config import RedisConfig
from rushpy.connection import check_connection, create_client
from rushpy.errors import NoStartArgumentsError, RushError
from rushpy.functions import resolve_function
from rushpy.keys import DEFAULT_PREFIX, Keys
from rushpy.logs import configure_cli_logging, get_logger
from rushpy.store import Store
from rushpy.worker.core import Worker
from rushpy.worker.runner import run_function

__all__ = ["build_parser", "main"]

log = get_logger("rushpy.worker")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m rushpy.worker``."""
    parser = argparse.ArgumentParser(
        prog="python -m rushpy.worker",
        description="Run a rushpy worker that pops tasks of a network and runs a function on them.",
    )
    parser.add_argument("--network", required=True, help="id of the network to join")
    parser.add_argument("--url", help="server URL (default: $RUSHPY_REDIS_URL, then $REDIS_URL)")
    parser.add_argument("--fun", help="function to run, as module:function or file.py:function")
    parser.add_argument("--worker-id", help="id to register under (default: generated)")
    parser.add_argument("--concurrency", type=int, default=None, help="tasks in flight at once")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix (default: rush)")
    parser.add_argument("--heartbeat-period", type=float, default=None, help="seconds between heartbeats")
    parser.add_argument(
        "--heartbeat-expire",
        type=float,
        default=None,
        help="seconds until the heartbeat key expires (default: 3 periods)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="exit once the queue stayed empty for this many seconds (elastic pools)",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return parser


async def _start_args(config: RedisConfig, network: str, prefix: str) -> dict[str, Any]:
    client = create_client(config)
    try:
        await check_connection(config)
        args = await Store(client, Keys(network, prefix)).get_start_args()
    finally:
        await client.aclose()
    if not args:
        raise NoStartArgumentsError(
            f"network {network!r} stores no start arguments and no --fun was given: pass "
            "--fun module:function, or start workers once with Controller.start_local_workers()"
        )
    return args


async def run(options: argparse.Namespace) -> int:
    """Run one worker until it is terminated; returns the exit code."""
    config = RedisConfig.from_url(options.url) if options.url else RedisConfig.from_env()
    if options.fun:
        stored: dict[str, Any] = {"fun": options.fun}
    else:
        stored = await _start_args(config, options.network, options.prefix)
    fun = resolve_function(str(stored["fun"]))
    concurrency = (
        options.concurrency if options.concurrency is not None else int(stored.get("concurrency") or 1)
    )
    if concurrency < 1:
        raise RushError(f"invalid --concurrency {concurrency}: use 1 or more")

    loop = asyncio.get_running_loop()
    period = options.heartbeat_period
    expire = options.heartbeat_expire
    if period is None and expire is None:
        period, expire = stored.get("heartbeat_period"), stored.get("heartbeat_expire")
    worker = Worker(
        options.network,
        config,
        worker_id=options.worker_id,
        prefix=options.prefix,
        heartbeat_period=period,
        heartbeat_expire=expire,
    )
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            log.warning("SIGINT: terminating after running tasks; press Ctrl-C again to kill")
            worker.set_terminated()
        else:
            log.warning("second SIGINT: killing the worker")
            worker.mark_killed()

    idle_timeout = options.idle_timeout if options.idle_timeout is not None else stored.get("idle_timeout")
    loop.add_signal_handler(signal.SIGTERM, worker.set_terminated)
    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        async with worker:
            # A kill (second SIGINT, or the controller's kill key) makes run_function
            # cancel the tasks in flight and return; leaving the block settles them.
            await run_function(
                worker,
                fun,
                concurrency=concurrency,
                fun_path=str(stored["fun"]),
                idle_timeout=idle_timeout,
            )
        if worker.killed:
            return 130
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the worker; errors print one clear line and exit 2."""
    options = build_parser().parse_args(argv)
    configure_cli_logging(options.log_level)
    try:
        code = asyncio.run(run(options))
    except RushError as exc:
        print(f"rushpy.worker: error: {exc}", file=sys.stderr)
        return 2
    if code == 130:
        # Killed: the worker's cleanup has run; do not wait for a thread still
        # running a plain function (threads cannot be interrupted).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return code
