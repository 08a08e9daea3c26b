"""Redis clients built from a :class:`~rushpy.config.RedisConfig`."""

from __future__ import annotations

import ssl
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rushpy.config import RedisConfig
from rushpy.errors import ConnectionFailedError

__all__ = ["COMMAND_RETRIES", "check_connection", "create_client"]

COMMAND_RETRIES = 10
"""Times a command is sent again after a dropped connection or a server restart.

With exponential backoff from 0.05 s capped at 1 s, that rides out about 6 s
of outage before the error reaches the caller. Every rushpy write is safe to
repeat: scripts are first-writer-wins and carry a token, so a repeat after a
lost reply reports what the first run did.
"""

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency, but stay usable without it
    _hiredis_pack = None  # type: ignore[assignment]


class _FastPacking:
    """Pack commands with hiredis's C encoder.

    redis-py's asyncio connections encode arguments in Python; for the long
    argument lists of batched scripts (thousands of keys and values) that was
    the largest CPU cost of a worker. hiredis produces the same bytes.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:
            args = tuple(first.encode().split()) + args[1:]
        elif isinstance(first, bytes) and b" " in first:
            args = tuple(first.split()) + args[1:]
        return [_hiredis_pack(args)]


class _TCPConnection(_FastPacking, Connection):
    pass


class _TLSConnection(_FastPacking, SSLConnection):
    pass


class _UnixConnection(_FastPacking, UnixDomainSocketConnection):
    pass


def create_client(
    config: RedisConfig, *, max_connections: int | None = None, retries: int = COMMAND_RETRIES
) -> Redis:
    """Create an asyncio Redis client (bytes responses, hiredis parser if installed).

    Connections open lazily; call :func:`check_connection` to fail fast. A
    command that fails on a dropped connection is sent again up to ``retries``
    times on a fresh connection, with exponential backoff.
    """
    kwargs: dict[str, Any] = {
        "db": config.db,
        "username": config.username,
        "password": config.password.get_secret_value() if config.password else None,
        "socket_timeout": config.socket_timeout,
        "socket_connect_timeout": config.connect_timeout,
        "decode_responses": False,
        "client_name": "rushpy",
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    connection_class: type[Connection] | type[UnixDomainSocketConnection]
    if config.scheme == "unix":
        connection_class = _UnixConnection if _hiredis_pack is not None else UnixDomainSocketConnection
        kwargs["path"] = config.path
        kwargs.pop("socket_connect_timeout")
    else:
        kwargs["host"] = config.host
        kwargs["port"] = config.port
        kwargs["socket_keepalive"] = True
        if config.scheme == "rediss":
            connection_class = _TLSConnection if _hiredis_pack is not None else SSLConnection
            kwargs["ssl_cert_reqs"] = (
                ssl.CERT_REQUIRED if config.ssl_cert_reqs == "required" else ssl.CERT_NONE
            )
            kwargs["ssl_ca_certs"] = config.ssl_ca_certs
        else:
            connection_class = _TCPConnection if _hiredis_pack is not None else Connection
    pool = ConnectionPool(connection_class=connection_class, max_connections=max_connections, **kwargs)
    # from_pool: the client owns the pool, so aclose() disconnects every connection.
    return Redis.from_pool(pool)


async def check_connection(config: RedisConfig) -> None:
    """Ping the server once, without retries (a wrong address fails at once).

    Raises:
        ConnectionFailedError: the server is unreachable or refused the credentials;
            the message names the URL (without password) and what to check.

    """
    probe = create_client(config, max_connections=1, retries=0)
    try:
        await probe.ping()
    except AuthenticationError as exc:
        raise ConnectionFailedError(
            f"server {config} refused the credentials ({exc}); check the user name and "
            "password (RUSHPY_REDIS_PASSWORD or the URL)"
        ) from exc
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise ConnectionFailedError(
            f"cannot reach Redis at {config} ({exc}); start a server there, set "
            "RUSHPY_REDIS_URL to one that runs, or use rushpy.EmbeddedServer"
        ) from exc
    except ResponseError as exc:
        raise ConnectionFailedError(f"server {config} answered PING with an error: {exc}") from exc
    finally:
        await probe.aclose()
