"""Redis clients built from a :class:`~rushpy.config.RedisConfig`.

:func:`create_client` returns a :class:`RushClient`: a ``redis.asyncio.Redis``
whose commands and pipelines ride out an outage of up to
:attr:`RedisConfig.reconnect_budget <rushpy.config.RedisConfig.reconnect_budget>`
seconds (sent again on a fresh connection, with backoff) and then raise
:class:`~rushpy.errors.ConnectionFailedError`, never a raw
``redis.exceptions`` connection, timeout, authentication or protocol error.
A ``ResponseError`` (the server answered a command with an error: a wrong
key type, out of memory, a read-only replica) becomes
:class:`~rushpy.errors.ServerError`; only ``NoScriptError`` passes through,
because the store answers it by loading its scripts again.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    InvalidResponse,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rushpy.config import RedisConfig
from rushpy.connection.cluster import ClusterTCPConnection, ClusterTLSConnection, SlotRouting
from rushpy.connection.wire import HIREDIS_PACKING, TCPConnection, TLSConnection, UnixConnection
from rushpy.deadline import bounded
from rushpy.errors import ConnectionFailedError, PermissionDeniedError, ServerError, ServerFullError

__all__ = [
    "TRANSLATED_ERRORS",
    "RushClient",
    "RushPipeline",
    "check_connection",
    "connection_failed",
    "create_client",
    "server_error",
    "sharded_pubsub",
]

T = TypeVar("T")

TRANSLATED_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    InvalidResponse,
    OSError,
)
"""Errors that mean "no usable server": :class:`RushClient` raises them as
:class:`~rushpy.errors.ConnectionFailedError` (authentication errors are
connection errors in redis-py)."""

_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 1.0


def connection_failed(config: RedisConfig, exc: BaseException, elapsed: float) -> ConnectionFailedError:
    """The :class:`ConnectionFailedError` that stands for ``exc``.

    Args:
        config: Settings of the server (named without its password).
        exc: The redis-py or socket error.
        elapsed: Seconds spent trying before giving up.

    """
    if isinstance(exc, ConnectionFailedError):
        return exc
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return ConnectionFailedError(
            f"server {config} refused the credentials ({exc}); check the user name and "
            "password (RUSHPY_REDIS_PASSWORD or the URL) and the user's ACL permissions"
        )
    if isinstance(exc, InvalidResponse):
        return ConnectionFailedError(
            f"the service at {config} does not speak the Redis protocol ({exc}); check the host "
            "and port: another program (a web server?) listens there"
        )
    return ConnectionFailedError(
        f"no usable connection to the server at {config} after {elapsed:.1f} s ({exc}); gave up "
        f"after the reconnect budget of {config.reconnect_budget:g} s. Check that the server runs "
        "and this host can reach it, or raise RedisConfig(reconnect_budget=...) to ride out "
        "longer outages"
    )


class _BudgetRetry(Retry):
    """Retry connection errors until ``budget`` seconds passed since the first failure.

    redis-py counts retries; an outage is better bounded in seconds (one
    setting for commands and waiters). Authentication errors are not retried:
    a wrong password does not heal by waiting. Once an attempt has failed,
    later attempts are cut off when the budget is spent, so a hung server
    (every attempt waits ``socket_timeout``) costs at most ``socket_timeout +
    budget`` (plus one backoff pause).
    """

    def __init__(self, budget: float, max_retries: int | None) -> None:
        super().__init__(
            ExponentialWithJitterBackoff(base=_BACKOFF_BASE, cap=_BACKOFF_CAP),
            2**31 if max_retries is None else max_retries,
            (RedisConnectionError, RedisTimeoutError),
        )
        self.budget = budget

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """Run ``do`` until it succeeds, the budget is spent, or an error is not retryable."""
        self._backoff.reset()  # type: ignore[no-untyped-call]
        failures = 0
        first_failure: float | None = None
        while True:
            try:
                if first_failure is None:
                    return await do()
                with anyio.move_on_after(self.budget - (time.monotonic() - first_failure)):
                    return await do()
                raise RedisTimeoutError(f"no answer within the reconnect budget of {self.budget:g} s")
            except self._supported_errors as error:
                if isinstance(error, (AuthenticationError, AuthorizationError)):
                    raise
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                await (fail(error, failures) if with_failure_count else fail(error))
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                left = self.budget - (now - first_failure)
                if left <= 0 or failures > self._retries:
                    raise
                await asyncio.sleep(min(self._backoff.compute(failures), left))


class RushClient(Redis):
    """A ``redis.asyncio.Redis`` that raises :class:`ConnectionFailedError` for connection problems.

    Build it with :func:`create_client`. ``config`` names the server in messages
    and holds the reconnect budget. Commands honour :func:`~rushpy.deadline.call_deadline`.
    """

    config: RedisConfig

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command; connection problems raise :class:`ConnectionFailedError`."""
        started = time.monotonic()
        run = super().execute_command
        command = args[0] if args else "?"
        try:
            return await bounded(self.config, command, lambda: run(*args, **options))  # type: ignore[no-untyped-call]
        except TRANSLATED_ERRORS as exc:
            raise connection_failed(self.config, exc, time.monotonic() - started) from exc
        except NoScriptError:
            raise  # the store loads its scripts again
        except ResponseError as exc:
            raise server_error(self.config, command, exc) from exc

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> RushPipeline:
        """A pipeline whose ``execute`` translates connection problems like the client."""
        pipe = RushPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.config = self.config
        return pipe


class RushPipeline(Pipeline):
    """Pipeline of a :class:`RushClient`: connection problems raise :class:`ConnectionFailedError`.

    ``execute`` and immediate commands (``WATCH`` mode) honour :func:`~rushpy.deadline.call_deadline`.
    """

    config: RedisConfig

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands; connection problems raise :class:`ConnectionFailedError`."""
        started = time.monotonic()
        run = super().execute
        try:
            return await bounded(self.config, "a pipeline", lambda: run(raise_on_error))
        except TRANSLATED_ERRORS as exc:
            raise connection_failed(self.config, exc, time.monotonic() - started) from exc
        except NoScriptError:
            raise  # the store loads its scripts again
        except ResponseError as exc:
            raise server_error(self.config, "a pipelined command", exc) from exc

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        """Run a command at once (``WATCH`` mode), bounded by :func:`~rushpy.deadline.call_deadline`."""
        run = super().immediate_execute_command
        command = args[0] if args else "?"
        return await bounded(self.config, command, lambda: run(*args, **options))  # type: ignore[no-untyped-call]


def server_error(config: RedisConfig, command: object, exc: ResponseError) -> ServerError:
    """``exc`` (the server answered ``command`` with an error) as a :class:`ServerError`.

    A ``NOPERM`` reply (an ACL user without the permission) names the rules to give the user.

    An ``OOM`` reply (``maxmemory`` reached, nothing to evict) becomes
    :class:`ServerFullError`: callers that wait for memory tell it apart.
    """
    name = command.decode() if isinstance(command, bytes) else str(command)
    if isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM"):
        return ServerFullError(
            f"the server at {config} is out of memory and refused {name} ({exc}): its maxmemory "
            "limit is reached and its maxmemory-policy evicts nothing. Free memory (reset() "
            "finished networks, delete other data) or raise the limit (CONFIG SET maxmemory ...); "
            "rushpy's workers wait and retry meanwhile"
        )
    # An ACL refusal: of the command itself (NOPERM, redis-py's NoPermissionError) or of a
    # command a script ran (the server says the script's user "can't run this command").
    if isinstance(exc, NoPermissionError) or _SCRIPT_REFUSAL in str(exc):
        return PermissionDeniedError(
            f"the server at {config} refused {name} to this user ({exc}): the ACL user lacks a "
            "permission rushpy needs, or the key belongs to another network. Give the user the rules "
            f"`rushpy acl NETWORK --user USER{' --cluster' if config.cluster_nodes else ''}` prints for its "
            "network (see the security guide)"
        )
    return ServerError(
        f"the server at {config} answered {name} with an error: {exc}; check the server's log, "
        "its memory (maxmemory) and whether it accepts writes (a read-only replica)"
    )


def sharded_pubsub(client: Redis) -> bool:
    """Whether ``client`` publishes on sharded channels (``SPUBLISH``): it talks to a Redis Cluster."""
    return isinstance(client, RushClient) and bool(client.config.cluster_nodes)


_DRIVER_INFO = DriverInfo()

_SCRIPT_REFUSAL = "can't run this command"
"""How the server words an ACL refusal of a command a script ran (a command's own is ``NOPERM``)."""

_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def create_client(
    config: RedisConfig, *, max_connections: int | None = None, retries: int | None = None
) -> RushClient:
    """Create an asyncio Redis client (bytes responses, hiredis parser if installed).

    Connections open lazily; call :func:`check_connection` to fail fast. A
    command that fails on a dropped connection or a timeout is sent again on a
    fresh connection, with exponential backoff (0.05 s doubling, capped at
    1 s), until ``config.reconnect_budget`` seconds have passed since its first
    failure; then it raises :class:`ConnectionFailedError`.

    Args:
        config: Server settings.
        max_connections: Size limit of the connection pool (``None``: no limit).
        retries: At most this many retries as well (``0``: fail at the first
            error); ``None`` bounds retries by the budget only.

    """
    kwargs: dict[str, Any] = {
        "db": config.db,
        "username": config.username,
        "password": config.password.get_secret_value() if config.password else None,
        "socket_timeout": config.socket_timeout,
        "socket_connect_timeout": config.connect_timeout,
        "decode_responses": False,
        "client_name": "rushpy",
        # Resolved once: redis-py otherwise looks its own version up in the package
        # metadata for every new connection (milliseconds each, a thousand workers' pools).
        "driver_info": _DRIVER_INFO,
        "retry": _BudgetRetry(config.reconnect_budget, retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    connection_class: type[Connection] | type[UnixDomainSocketConnection]
    if config.scheme == "unix":
        connection_class = UnixConnection if HIREDIS_PACKING else UnixDomainSocketConnection
        kwargs["path"] = config.path
        kwargs.pop("socket_connect_timeout")
    else:
        kwargs["host"] = config.host
        kwargs["port"] = config.port
        kwargs["socket_keepalive"] = True
        if config.scheme == "rediss":
            connection_class = TLSConnection if HIREDIS_PACKING else SSLConnection
            kwargs["ssl_cert_reqs"] = _CERT_REQS[config.ssl_cert_reqs]
            kwargs["ssl_ca_certs"] = config.ssl_ca_certs
            kwargs["ssl_certfile"] = config.ssl_certfile
            kwargs["ssl_keyfile"] = config.ssl_keyfile
            # Python's ssl refuses hostname checks without certificate checks.
            kwargs["ssl_check_hostname"] = config.ssl_check_hostname and config.ssl_cert_reqs != "none"
        else:
            connection_class = TCPConnection if HIREDIS_PACKING else Connection
    if config.cluster_nodes:
        connection_class, kwargs = _routed(connection_class, kwargs, config.cluster_nodes)
    pool = ConnectionPool(connection_class=connection_class, max_connections=max_connections, **kwargs)
    # The client owns the pool, so aclose() disconnects every connection.
    client = RushClient(connection_pool=pool)
    client.auto_close_connection_pool = True
    client.config = config
    return client


def _routed(
    connection_class: type[Any], kwargs: dict[str, Any], seeds: tuple[str, ...]
) -> tuple[type[Any], dict[str, Any]]:
    """Connection class and settings of a Redis Cluster client (see :mod:`rushpy.connection.cluster`)."""
    plain = {k: v for k, v in kwargs.items() if k not in ("host", "port", "retry", "retry_on_error")}

    def probe(host: str, port: int) -> Any:
        return connection_class(host=host, port=port, **plain)

    routed = ClusterTLSConnection if issubclass(connection_class, SSLConnection) else ClusterTCPConnection
    return routed, {**kwargs, "routing": SlotRouting(seeds, probe)}


async def check_connection(config: RedisConfig) -> None:
    """Ping the server once, without retries (a wrong address fails at once).

    Raises:
        ConnectionFailedError: the server is unreachable, refused the credentials,
            or does not speak the Redis protocol; the message names the URL
            (without password) and what to check.

    """
    probe = create_client(config, max_connections=1, retries=0)
    try:
        await probe.ping()
    except ConnectionFailedError as exc:
        cause = exc.__cause__
        if isinstance(cause, (AuthenticationError, AuthorizationError, InvalidResponse)):
            raise
        if config.scheme == "rediss":
            raise ConnectionFailedError(
                f"no TLS connection to Redis at {config} ({cause or exc}); {_tls_hint(config, exc)}"
            ) from cause
        raise ConnectionFailedError(
            f"cannot reach Redis at {config} ({cause or exc}); start a server there, set "
            "RUSHPY_REDIS_URL to one that runs, or use rushpy.EmbeddedServer"
        ) from cause
    except ServerError as exc:
        raise ConnectionFailedError(f"server {config} answered PING with an error: {exc.__cause__}") from exc
    finally:
        await probe.aclose()


def _tls_hint(config: RedisConfig, exc: BaseException) -> str:
    """What to check when a ``rediss`` connection failed with ``exc``."""
    missing = [
        f"{name}={path!r}"
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
        if (path := getattr(config, name)) and not os.path.isfile(path)
    ]
    if missing:
        return f"no such file: {', '.join(missing)}; point the setting at the PEM file"
    chain: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and len(chain) < 10:
        chain.append(error)
        error = error.__cause__ or error.__context__
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or "CERTIFICATE_VERIFY" in str(exc):
        return (
            "the server's certificate was not accepted: set ssl_ca_certs to the CA file that signed "
            "it (URL query ?ssl_ca_certs=/path/ca.pem, or --ssl-ca-certs); on a name or IP address "
            "'mismatch' connect by a name the certificate lists, or set ssl_check_hostname=false"
        )
    return (
        "check that a TLS port listens there (redis-server --tls-port) and, if it requires client "
        "certificates (tls-auth-clients yes, the default), set ssl_certfile and ssl_keyfile to a "
        "certificate signed by a CA that the server trusts"
    )
