"""What every ``rushpy`` command shares: the server options, the network options, errors and exit codes.

Exit codes: 0 done; 1 the output pipe closed early; 2 an error (bad
arguments, unreachable server, unknown network or task: one line on standard
error that says what to do); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from rushpy.config import TLS_OPTIONS, RedisConfig
from rushpy.connection import RushClient, check_connection, create_client
from rushpy.controller import Controller
from rushpy.errors import ConfigError, ConnectionFailedError, RushError
from rushpy.keys import DEFAULT_PREFIX, Keys
from rushpy.store import Store

__all__ = [
    "ERROR",
    "UnknownNetworkError",
    "add_connection_arguments",
    "add_network_arguments",
    "config_of",
    "open_client",
    "open_network",
    "run",
]

ERROR = 2
"""Exit code of a command that failed (the message is on standard error)."""


class UnknownNetworkError(ConfigError):
    """The server holds nothing of the network a command names."""


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and the TLS flags."""
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


def add_network_arguments(parser: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    """The network (``NETWORK``, or ``--network`` as before), ``--prefix``, ``--json`` and the server."""
    parser.add_argument("network", nargs="?", metavar="NETWORK", help="id of the network")
    parser.add_argument("--network", dest="network_flag", metavar="NETWORK", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix (default: {DEFAULT_PREFIX})")
    if json_output:
        parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_connection_arguments(parser)


def config_of(options: argparse.Namespace) -> RedisConfig:
    """The server settings of parsed options: ``--url`` (or the environment) and the ``--ssl-*`` flags."""
    tls = {name: value for name in TLS_OPTIONS if (value := getattr(options, name, None)) is not None}
    return RedisConfig.from_url(options.url, **tls) if options.url else RedisConfig.from_env(**tls)


def _network_id(options: argparse.Namespace) -> str:
    network = options.network or getattr(options, "network_flag", None)
    if not network:
        raise ConfigError("name the network: rushpy COMMAND NETWORK (see `rushpy list` for the networks)")
    return str(network)


@asynccontextmanager
async def open_client(options: argparse.Namespace) -> AsyncIterator[RushClient]:
    """A client of the server the options name, closed afterwards.

    The server is checked once first, without retries: a wrong address, password or
    certificate fails at once with a message that names the fix.
    """
    config = config_of(options)
    await check_connection(config)
    client = create_client(config)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def open_network(options: argparse.Namespace, *, must_exist: bool = True) -> AsyncIterator[Controller]:
    """A controller of the network the options name; an unknown network raises first (nothing is written).

    Raises:
        UnknownNetworkError: ``must_exist`` and the server holds nothing of the network.

    """
    keys = Keys(_network_id(options), options.prefix)
    if must_exist:
        async with open_client(options) as client:
            if not await Store(client, keys).network_exists():
                raise UnknownNetworkError(
                    f"no network {keys.network_id!r} (prefix {keys.prefix!r}) on the server at "
                    f"{config_of(options)}: check the id with `rushpy list`, or --prefix"
                )
    async with Controller(keys.network_id, config_of(options), prefix=keys.prefix) as rush:
        yield rush


def run(command: Callable[[], int], prog: str) -> int:
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
        error = rush_error(exc)
        if error is None:
            raise
        hint = ""
        if isinstance(error, ConnectionFailedError):
            hint = " (the server comes from --url, else $RUSHPY_REDIS_URL, else $REDIS_URL)"
        print(f"{prog}: error: {error}{hint}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        return 130
    return code


def rush_error(exc: BaseException) -> RushError | None:
    """``exc`` if it is a :class:`RushError`, or the first one of a group made of them only."""
    if isinstance(exc, RushError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [rush_error(e) for e in exc.exceptions]
        if all(leaves):
            return leaves[0]
    return None
