"""The ``rushpy`` command line, and ``python -m rushpy.worker``.

- ``rushpy server [--port N] [--unix-socket] [--appendonly]`` runs a private
  Redis-compatible server in the foreground until Ctrl-C.
- ``rushpy status --network ID [--url URL]`` prints task and worker counts.
- ``rushpy worker --network ID [options]`` (also ``python -m rushpy.worker``)
  runs a worker; its flags are those of :class:`~rushpy.spec.WorkerSpec`.

A worker without ``--fun`` runs the start arguments the controller stored for
the network (``Controller.start_local_workers`` stores them). If there are none
yet it waits up to ``--wait-for-start-args SECONDS`` for them (default 0: it
exits at once with code 2, so a mistyped network id does not hang), so
operators can start workers before the controller. Stored start arguments
are run only if signed with the key the worker holds (``RUSHPY_SIGNING_KEY``
or ``RUSHPY_SIGNING_KEY_FILE``, never a flag) or if their function lies in a
module allowed with ``--allow-module PREFIX`` (or ``RUSHPY_ALLOW_MODULES``);
otherwise the worker exits with code 2 and runs nothing (see
``docs/security.md``). The server comes from ``--url``, else
``RUSHPY_REDIS_URL``, else ``REDIS_URL``; a password missing from the URL is
read from ``RUSHPY_REDIS_PASSWORD``, so it never has to appear on a command
line. TLS settings come from the ``rediss://`` URL's query
(``?ssl_ca_certs=/path/ca.pem&ssl_certfile=...``) or from ``--ssl-*`` flags,
which take precedence.

Worker signals: SIGTERM or a first SIGINT terminate the worker (it finishes the
tasks it runs, then exits); a second SIGINT kills it at once, as does a kill
request from the controller (``stop_workers(type="kill")``): the tasks it ran
go back to the queue (attempts left) or fail. The exit code is 0 after a
termination, 130 after a kill, 2 after an error, 1 when a worker loop raised.
A worker started by a controller gets SIGTERM when that process dies (Linux,
``PR_SET_PDEATHSIG``).

With ``--worker-loop module:function`` the worker runs that loop once
(decentralized mode, ``docs/decentralized.md``) with the loop arguments given
as ``--loop-arg NAME=JSON``; nothing stored is used then. Without ``--fun`` and
``--worker-loop``, stored start arguments may name a worker loop and its
arguments; they are checked like a stored function.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from rushpy.cli import act, look, serve
from rushpy.cli.common import run
from rushpy.cli.serve import build_worker_parser

__all__ = ["build_worker_parser", "main", "worker_main"]


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rushpy.worker``."""
    options = build_worker_parser().parse_args(argv)
    return run(lambda: serve.COMMANDS["worker"](options), "rushpy.worker")


def _version() -> str:
    try:
        return version("rushpy")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rushpy`` (also ``python -m rushpy``)."""
    parser = argparse.ArgumentParser(
        prog="rushpy",
        description="rushpy command line: run servers and workers, look at networks and act on them.",
        epilog="The server comes from --url, else $RUSHPY_REDIS_URL, else $REDIS_URL; a password "
        "missing from the URL is read from $RUSHPY_REDIS_PASSWORD.",
    )
    parser.add_argument("--version", action="version", version=f"rushpy {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parsers(sub)
    look.add_parsers(sub)
    act.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rushpy`` command."""
    options = build_parser().parse_args(argv)
    name = options.command
    command: Callable[[argparse.Namespace], Any]
    if name in serve.COMMANDS:
        command = serve.COMMANDS[name]
        return run(lambda: command(options), "rushpy")
    command = {**look.COMMANDS, **act.COMMANDS}[name]
    with _quiet_library():
        return run(lambda: asyncio.run(command(options)), "rushpy")


@contextmanager
def _quiet_library() -> Iterator[None]:
    """Only errors from rushpy's loggers while a command runs: it reports what happened itself."""
    logger = logging.getLogger("rushpy")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
