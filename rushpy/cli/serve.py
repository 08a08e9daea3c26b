"""Commands that run something: ``worker`` (also ``python -m rushpy.worker``), ``server``, ``acl``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading

from rushpy.acl import ENV_ACL_PASSWORD, acl_setuser
from rushpy.cli.common import add_connection_arguments, config_of
from rushpy.errors import ConfigError
from rushpy.keys import DEFAULT_PREFIX
from rushpy.lifetime import die_with_parent
from rushpy.logs import configure_cli_logging
from rushpy.pickling import ENV_ALLOW_PICKLE
from rushpy.pool import ENV_PARENT_PID
from rushpy.server import EmbeddedServer
from rushpy.signing import ENV_ALLOW_MODULES, parse_allow_modules
from rushpy.spec import WorkerSpec
from rushpy.worker.process import KILLED, run_worker, tune_garbage_collector

__all__ = ["COMMANDS", "add_parsers", "add_worker_arguments", "build_worker_parser"]


# -- worker ------------------------------------------------------------------------------------
def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's flags (those of :class:`~rushpy.spec.WorkerSpec`), the server's, ``--allow-module``."""
    add_connection_arguments(parser)
    WorkerSpec.add_arguments(parser)
    parser.add_argument(
        "--allow-module",
        action="append",
        default=[],
        metavar="PREFIX",
        help="run stored start arguments whose function lies in this module or below it, even "
        f"unsigned (repeatable; also ${ENV_ALLOW_MODULES}, comma-separated)",
    )


def build_worker_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m rushpy.worker``."""
    parser = argparse.ArgumentParser(
        prog="python -m rushpy.worker",
        description="Run a rushpy worker that pops tasks of a network and runs a function on them.",
    )
    add_worker_arguments(parser)
    return parser


def _tie_to_parent() -> int | None:
    """Ask for SIGTERM when the controller that started us dies; returns its pid (``None``: no such)."""
    parent = os.environ.pop(ENV_PARENT_PID, None)  # not for our own children
    if not parent:
        return None
    die_with_parent(signal.SIGTERM)
    return int(parent)


def _worker(options: argparse.Namespace) -> int:
    spec = WorkerSpec.from_namespace(options)
    if spec.allow_pickle:
        # The trampoline (and the child processes of timed tasks) read the opt-in from here.
        os.environ[ENV_ALLOW_PICKLE] = "1"
    allow_modules = parse_allow_modules(options.allow_module)
    config = config_of(options)
    configure_cli_logging(spec.log_level)
    parent = _tie_to_parent()
    if parent is not None and os.getppid() != parent:
        # It died before we asked for the signal: nobody would ever stop us.
        print("rushpy.worker: the controller that started this worker is gone; exiting", file=sys.stderr)
        return 1
    tune_garbage_collector()
    code = asyncio.run(run_worker(spec, config, parent=parent, allow_modules=allow_modules))
    if code == KILLED:
        # Killed: the worker's cleanup has run; do not wait for a thread still
        # running a plain function (threads cannot be interrupted).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(KILLED)
    return code


# -- server and acl -----------------------------------------------------------------------------
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


def _acl(options: argparse.Namespace) -> int:
    # The password comes from the environment only: argv is visible to every user of the host.
    password = os.environ.get(ENV_ACL_PASSWORD) or None
    line = acl_setuser(
        options.user,
        options.network,
        prefix=options.prefix,
        password=password,
        aclfile=options.aclfile,
        cluster=options.cluster,
    )
    print(line)
    if password is None:
        print(
            f"{ENV_ACL_PASSWORD} is not set: the user has no password and cannot log in until you add "
            "one (set the variable and run this again, or append >PASSWORD to the rules)",
            file=sys.stderr,
        )
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the commands of this module to ``rushpy``'s subparsers."""
    p_server = sub.add_parser("server", help="run an embedded Redis-compatible server")
    p_server.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    p_server.add_argument("--unix-socket", action="store_true", help="listen on a unix socket")
    p_server.add_argument("--appendonly", action="store_true", help="turn on the append-only file")
    p_acl = sub.add_parser(
        "acl",
        help="print the ACL rules of a Redis user limited to one network",
        description=f"Print an ACL SETUSER line (or, with --aclfile, an ACL file line) for a user that may "
        f"use one network only; the password's SHA-256 is included when {ENV_ACL_PASSWORD} is set.",
    )
    p_acl.add_argument("network", help="id of the network")
    p_acl.add_argument("--user", default="rushpy", help="ACL user name (default: rushpy)")
    p_acl.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default: {DEFAULT_PREFIX})")
    p_acl.add_argument("--aclfile", action="store_true", help="print a line for the server's ACL file")
    p_acl.add_argument(
        "--cluster",
        action="store_true",
        help="for a Redis Cluster: allow sharded pub/sub (set the user on every node)",
    )
    p_dash = sub.add_parser(
        "dashboard",
        help="serve the live web dashboard (the dashboard extra)",
        description="Serve a web page showing networks live. Read-only unless $RUSHPY_DASHBOARD_TOKEN "
        "is set: then stop, cancel and retry work for requests that send that token.",
    )
    p_dash.add_argument("--network", help="the network shown first (default: the page's chooser)")
    p_dash.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p_dash.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p_dash.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default: {DEFAULT_PREFIX})")
    add_connection_arguments(p_dash)
    p_worker = sub.add_parser(
        "worker",
        help="run a worker (same flags as python -m rushpy.worker)",
        description="Run a rushpy worker that pops tasks of a network and runs a function on them.",
    )
    add_worker_arguments(p_worker)


def _dashboard(options: argparse.Namespace) -> int:
    try:
        from rushpy.dashboard import ENV_TOKEN, serve  # noqa: PLC0415 - an optional extra
    except ImportError as exc:
        raise ConfigError(
            f"the dashboard needs the dashboard extra ({exc.name} is missing): "
            "pip install 'rushpy[dashboard]'"
        ) from exc
    token = os.environ.get(ENV_TOKEN) or None
    mode = "actions on (token from $RUSHPY_DASHBOARD_TOKEN)" if token else "read-only"
    print(f"rushpy dashboard at http://{options.host}:{options.port}/ ({mode}); Ctrl-C stops it", flush=True)
    serve(
        config_of(options),
        host=options.host,
        port=options.port,
        network=options.network,
        prefix=options.prefix,
        token=token,
    )
    return 0


COMMANDS = {"acl": _acl, "dashboard": _dashboard, "server": _server, "worker": _worker}
"""Each command's function, by name."""
