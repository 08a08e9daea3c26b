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
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict

from rushpy.acl import ENV_ACL_PASSWORD, acl_setuser
from rushpy.config import TLS_OPTIONS, RedisConfig
from rushpy.controller import Controller
from rushpy.errors import RushError
from rushpy.keys import DEFAULT_PREFIX
from rushpy.lifetime import die_with_parent
from rushpy.logs import configure_cli_logging, get_logger
from rushpy.pickling import ENV_ALLOW_PICKLE
from rushpy.pool import ENV_PARENT_PID
from rushpy.server import EmbeddedServer
from rushpy.signing import ENV_ALLOW_MODULES, parse_allow_modules
from rushpy.spec import WorkerSpec
from rushpy.worker.process import KILLED, run_worker, tune_garbage_collector

__all__ = ["build_worker_parser", "main", "worker_main"]

log = get_logger("rushpy.worker")


# -- connection --------------------------------------------------------------------------------
def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="server URL (default: $RUSHPY_REDIS_URL, then $REDIS_URL)")
    tls = parser.add_argument_group("TLS (rediss:// URLs; these override the URL's query)")
    tls.add_argument("--ssl-ca-certs", metavar="PEM", help="CA file that signed the server's certificate")
    tls.add_argument("--ssl-certfile", metavar="PEM", help="client certificate (tls-auth-clients)")
    tls.add_argument("--ssl-keyfile", metavar="PEM", help="private key of the client certificate")
    tls.add_argument(
        "--ssl-cert-reqs",
        choices=("required", "optional", "none"),
        help="server certificate check (default: required)",
    )
    tls.add_argument(
        "--ssl-check-hostname",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the certificate must name the host (default: yes)",
    )


def _config(options: argparse.Namespace) -> RedisConfig:
    """The server settings of parsed options: ``--url`` (or the environment) and the ``--ssl-*`` flags."""
    tls = {name: value for name in TLS_OPTIONS if (value := getattr(options, name, None)) is not None}
    return RedisConfig.from_url(options.url, **tls) if options.url else RedisConfig.from_env(**tls)


# -- worker ------------------------------------------------------------------------------------
def _add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    _add_connection_arguments(parser)
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
    _add_worker_arguments(parser)
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
    config = _config(options)
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


# -- server and status ---------------------------------------------------------------------------
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
    async with Controller(options.network, _config(options)) as rush:
        status = await rush.status()
        workers = await rush.worker_info()
    for name, value in asdict(status).items():
        print(f"{name:26} {value}")
    if len(workers):
        print()
        print(workers.format(columns=["worker_id", "state", "pid", "hostname"]))
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


# -- entry points ------------------------------------------------------------------------------
def _run(command: Callable[[], int], prog: str) -> int:
    """Run a command: errors print one line (exit 2), a closed pipe ends it quietly (exit 1)."""
    try:
        code = command()
        # Flush here, inside the handler: a pipe closed early (``| head -1``)
        # otherwise raises only at interpreter exit, with a traceback.
        sys.stdout.flush()
    except BrokenPipeError:
        # As the Python docs recommend: send what is left to devnull, so the
        # flush at exit does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        error = _rush_error(exc)
        if error is None:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _rush_error(exc: BaseException) -> RushError | None:
    """``exc`` if it is a :class:`RushError`, or the first one of a group made of them only."""
    if isinstance(exc, RushError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_rush_error(e) for e in exc.exceptions]
        if all(leaves):
            return leaves[0]
    return None


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rushpy.worker``."""
    options = build_worker_parser().parse_args(argv)
    return _run(lambda: _worker(options), "rushpy.worker")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rushpy`` command."""
    parser = argparse.ArgumentParser(prog="rushpy", description="rushpy command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p_server = sub.add_parser("server", help="run an embedded Redis-compatible server")
    p_server.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    p_server.add_argument("--unix-socket", action="store_true", help="listen on a unix socket")
    p_server.add_argument("--appendonly", action="store_true", help="turn on the append-only file")
    p_status = sub.add_parser("status", help="print task and worker counts of a network")
    p_status.add_argument("--network", required=True, help="id of the network")
    _add_connection_arguments(p_status)
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
    p_worker = sub.add_parser(
        "worker",
        help="run a worker (same flags as python -m rushpy.worker)",
        description="Run a rushpy worker that pops tasks of a network and runs a function on them.",
    )
    _add_worker_arguments(p_worker)
    options = parser.parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "acl": _acl,
        "server": _server,
        "status": lambda o: asyncio.run(_status(o)),
        "worker": _worker,
    }
    return _run(lambda: commands[options.command](options), "rushpy")
