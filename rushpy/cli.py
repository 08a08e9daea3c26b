"""The ``rushpy`` command: run an embedded server, inspect a network.

- ``rushpy server [--port N] [--unix-socket]`` runs a private Redis-compatible
  server in the foreground until Ctrl-C.
- ``rushpy status --network ID [--url URL]`` prints task and worker counts.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict

from rushpy.config import RedisConfig
from rushpy.errors import RushError
from rushpy.reader import NetworkClient
from rushpy.server import EmbeddedServer

__all__ = ["main"]


def _server(options: argparse.Namespace) -> int:
    server = EmbeddedServer(port=options.port, unix_socket=options.unix_socket, appendonly=options.appendonly)
    # Handlers first: a signal that arrives while starting or printing must stop cleanly.
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    try:
        print(f"rushpy server running at {server.url} (pid {server.pid}); Ctrl-C stops it", flush=True)
        while not stop.wait(0.5):
            if not server.running:
                print("rushpy server exited unexpectedly", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


async def _status(options: argparse.Namespace) -> int:
    config = RedisConfig.from_url(options.url) if options.url else RedisConfig.from_env()
    async with NetworkClient(options.network, config) as client:
        status = await client.status()
        for name, value in asdict(status).items():
            print(f"{name:26} {value}")
        workers = await client.worker_info()
        if len(workers):
            print()
            print(workers.format(columns=["worker_id", "state", "pid", "hostname"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rushpy`` command."""
    parser = argparse.ArgumentParser(prog="rushpy", description="rushpy command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p_server = sub.add_parser("server", help="run an embedded Redis-compatible server")
    p_server.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    p_server.add_argument("--unix-socket", action="store_true", help="listen on a unix socket")
    p_server.add_argument("--appendonly", action="store_true", help="turn on the append-only file")
    p_status = sub.add_parser("status", help="print task and worker counts of a network")
    p_status.add_argument("--network", required=True)
    p_status.add_argument("--url", default=None)
    options = parser.parse_args(argv)
    try:
        if options.command == "server":
            return _server(options)
        return asyncio.run(_status(options))
    except RushError as exc:
        print(f"rushpy: error: {exc}", file=sys.stderr)
        return 2
